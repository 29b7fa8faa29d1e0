#[rpc_stack::service]
trait Greeter {
    #[rpc(notification)]
    async fn log(&self, line: String) -> u32;
}

fn main() {}
