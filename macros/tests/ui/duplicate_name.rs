#[rpc_stack::service]
trait Greeter {
    async fn sayhi(&self, name: String) -> String;
    #[rpc(name = "sayhi")]
    async fn greet(&self, name: String) -> String;
}

fn main() {}
