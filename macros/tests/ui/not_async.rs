#[rpc_stack::service]
trait Greeter {
    fn sayhi(&self, name: String) -> String;
}

fn main() {}
