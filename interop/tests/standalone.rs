//! A program whose Cargo.toml names `rpc-stack` alone: it builds, with the service macro and
//! the runtime the facade re-exports, and serves the real Python rpcudp.

use std::process::Command;

use interop::{workspace_root, Program};

const MAIN: &str = r#"
use rpc_stack::{codecs::msgpack::RpcudpCodec, transports::udp, Context};

#[rpc_stack::service]
trait Greeter {
    async fn sayhi(&self, ctx: Context, name: String) -> String;
}

#[derive(Clone)]
struct Hello;

impl Greeter for Hello {
    async fn sayhi(&self, ctx: Context, name: String) -> String {
        let peer = ctx.peer_addr().expect("over UDP");
        format!("Hello {name} you live at {}:{}", peer.ip(), peer.port())
    }
}

#[rpc_stack::tokio::main(crate = "rpc_stack::tokio")]
async fn main() -> std::io::Result<()> {
    let server = udp::Builder::new()
        .serve(Hello.into_router())
        .bind("127.0.0.1:0", RpcudpCodec::new())
        .await?;
    println!("listening on {}", server.local_addr());
    // Serves for a minute at most; the test kills it before.
    rpc_stack::tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    Ok(())
}
"#;

#[test]
fn a_program_that_depends_on_rpc_stack_alone_serves_python_rpcudp() {
    let root = workspace_root();
    let app = root.join("target").join("standalone-app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"standalone-app\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\nrpc-stack = {{ path = {:?} }}\n\n\
         # Not a member of the workspace it sits under.\n[workspace]\n",
        root.join("rpc-stack")
    );
    std::fs::write(app.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(app.join("src").join("main.rs"), MAIN).unwrap();
    // The workspace's lock file: the same versions, and nothing to fetch.
    std::fs::copy(root.join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    let target = root.join("target").join("standalone");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--quiet", "--offline", "--manifest-path"])
        .arg(app.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(built.success(), "the program does not build");

    let server = Program::start(&target.join("debug").join("standalone-app"), &[]);
    let addr = server
        .first_line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", server.first_line))
        .to_owned();
    let out = Command::new(interop::python())
        .arg(interop::py_dir().join("rpcudp_peer.py"))
        .args(["sayhi", &addr])
        .output()
        .expect("the Python client runs");
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.starts_with("Hello Snake Plissken you live at 127.0.0.1:"),
        "{answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_published_package_can_be_packaged() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for package in [
        "rpc-stack",
        "rpc-stack-core",
        "rpc-stack-codecs",
        "rpc-stack-transports",
        "rpc-stack-middleware",
        "rpc-stack-macros",
    ] {
        let out = Command::new(&cargo)
            .args([
                "package",
                "--list",
                "--offline",
                "--allow-dirty",
                "-p",
                package,
            ])
            .current_dir(workspace_root())
            .output()
            .expect("cargo runs");
        let files = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && files.lines().any(|l| l == "src/lib.rs"),
            "{package}: {files}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
