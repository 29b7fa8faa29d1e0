#[rpc_stack::service]
trait Greeter {
    async fn sayhi(&mut self, name: String) -> String;
}

fn main() {}
