//! Mistakes in a service trait are compile errors that point at the item.

#[test]
fn mistakes_in_a_service_trait_are_compile_errors_at_the_item() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
