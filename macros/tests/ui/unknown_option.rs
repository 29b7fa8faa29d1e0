#[rpc_stack::service]
trait Greeter {
    #[rpc(timeout = 5)]
    async fn sayhi(&self, name: String) -> String;
}

fn main() {}
