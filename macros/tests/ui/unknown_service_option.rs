#[rpc_stack::service(prefix = "greeter")]
trait Greeter {
    async fn sayhi(&self, name: String) -> String;
}

fn main() {}
