#[rpc_stack::service]
trait Greeter {
    #[rpc(id = 1)]
    async fn hello(&self, name: String) -> String;
    #[rpc(id = 1)]
    async fn goodbye(&self, name: String) -> String;
}

fn main() {}
