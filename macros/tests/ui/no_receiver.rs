#[rpc_stack::service]
trait Greeter {
    async fn sayhi(name: String) -> String;
}

fn main() {}
