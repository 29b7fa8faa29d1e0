//! A Language Server Protocol client: starts a language server, opens a Python document with a
//! syntax error and prints what the server diagnoses.
//!
//! ```sh
//! cargo run --example lsp_client -- pylsp
//! ```
//!
//! The server runs as a child process (the process transport) speaking JSON-RPC 2.0 with
//! `Content-Length` framing over its stdin and stdout. The client sends `initialize` and
//! `initialized`, opens the document (`textDocument/didOpen`), prints each diagnostic the server
//! publishes as a line `DIAGNOSTIC <line>:<column> <message>` (1-based, as editors show them),
//! answers the server's own requests (`window/workDoneProgress/create`,
//! `client/registerCapability`, `workspace/configuration`, ...), then sends `shutdown` and
//! `exit` and exits with the server's exit status.
//!
//! It waits up to 30 s for the document's diagnostics; everything but the diagnostics goes to
//! stderr.

use std::process::ExitCode;
use std::time::Duration;

use rpc_codecs::jsonrpc::{Json, JsonRpcCodec};
use rpc_core::handler::raw;
use rpc_core::{Client, Payload, Request, Router};
use rpc_transports::process;
use rpc_transports::stream::{Connection, Framing};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The document opened: a function whose parameter list is never closed.
const DOCUMENT: &str = "import os\n\ndef broken(:\n    return os.getcwd()\n";

type Lsp = Client<Connection<JsonRpcCodec>>;

/// Calls `method` with `params` (an object: LSP names its parameters) and gives the result.
async fn request(client: &Lsp, method: &str, params: Value) -> Result<Value, rpc_core::Error> {
    let req = Request::new(method.to_owned(), Payload::encode(&Json, &params)?);
    client.send(req).await?.decode()
}

/// Sends the notification `method` with `params`.
async fn notify(client: &Lsp, method: &str, params: Value) -> Result<(), rpc_core::Error> {
    let req = Request::notification(method.to_owned(), Payload::encode(&Json, &params)?);
    client.send(req).await.map(drop)
}

/// The params of a request or notification from the server, as JSON.
fn params(req: &Request) -> Value {
    req.args().decode().unwrap_or(Value::Null)
}

/// What the client answers and hears: diagnostics go to `diagnosed` as they are printed.
fn handlers(uri: String, diagnosed: mpsc::UnboundedSender<usize>) -> Router {
    let ignore = || raw(|_: Request| async {});
    Router::new()
        .route(
            "textDocument/publishDiagnostics",
            raw(move |req: Request| {
                let (uri, diagnosed) = (uri.clone(), diagnosed.clone());
                async move {
                    let p = params(&req);
                    if p["uri"] != uri.as_str() {
                        return;
                    }
                    let diagnostics = p["diagnostics"].as_array().cloned().unwrap_or_default();
                    for d in &diagnostics {
                        let start = &d["range"]["start"];
                        println!(
                            "DIAGNOSTIC {}:{} {}",
                            start["line"].as_u64().unwrap_or(0) + 1,
                            start["character"].as_u64().unwrap_or(0) + 1,
                            d["message"].as_str().unwrap_or("")
                        );
                    }
                    let _ = diagnosed.send(diagnostics.len());
                }
            }),
        )
        // Requests a client must answer; null is "done" for each.
        .route(
            "window/workDoneProgress/create",
            raw(|_: Request| async { Value::Null }),
        )
        .route(
            "client/registerCapability",
            raw(|_: Request| async { Value::Null }),
        )
        .route(
            "client/unregisterCapability",
            raw(|_: Request| async { Value::Null }),
        )
        .route(
            "window/showMessageRequest",
            raw(|_: Request| async { Value::Null }),
        )
        // No settings: one null per item asked for.
        .route(
            "workspace/configuration",
            raw(|req: Request| async move {
                let items = params(&req)["items"].as_array().map_or(0, Vec::len);
                Value::Array(vec![Value::Null; items])
            }),
        )
        .route(
            "window/logMessage",
            raw(|req: Request| async move {
                eprintln!("server: {}", params(&req)["message"].as_str().unwrap_or(""));
            }),
        )
        .route("window/showMessage", ignore())
        .route("$/progress", ignore())
        .route("telemetry/event", ignore())
}

async fn run(command: Vec<String>) -> Result<u8, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("lsp-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("broken.py");
    std::fs::write(&file, DOCUMENT)?;
    let root = format!("file://{}", dir.display());
    let uri = format!("file://{}", file.display());

    let (diagnosed, mut diagnoses) = mpsc::unbounded_channel();
    let mut program = std::process::Command::new(&command[0]);
    program.args(&command[1..]);
    let server = process::builder()
        .framing(Framing::ContentLength)
        .timeout(Duration::from_secs(30))
        .serve(handlers(uri.clone(), diagnosed))
        .spawn(program, JsonRpcCodec::new())?;
    let client = server.client();

    let init = request(
        &client,
        "initialize",
        json!({
            "processId": std::process::id(),
            "clientInfo": {"name": "rpc-stack lsp_client"},
            "rootUri": root,
            "workspaceFolders": [{"uri": root, "name": "lsp-client"}],
            "capabilities": {
                "textDocument": {"publishDiagnostics": {"relatedInformation": false}},
                "window": {"workDoneProgress": true},
                "workspace": {"configuration": true, "workspaceFolders": true},
            },
        }),
    )
    .await?;
    eprintln!(
        "initialized {}",
        init["serverInfo"]["name"].as_str().unwrap_or("a server")
    );
    notify(&client, "initialized", json!({})).await?;
    notify(
        &client,
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": DOCUMENT}}),
    )
    .await?;
    // The first diagnostics published for the document, or none within 30 s.
    match tokio::time::timeout(Duration::from_secs(30), diagnoses.recv()).await {
        Ok(Some(n)) => eprintln!("{n} diagnostic(s)"),
        _ => eprintln!("no diagnostics within 30 s"),
    }

    // No params at all (JSON-RPC has no `"params": null`).
    let () = client.call("shutdown", ()).await?;
    client.notify("exit", ()).await?;
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Ok(status) => {
            let status = status?;
            eprintln!("the server {status}");
            Ok(status.code().map_or(1, |c| c as u8))
        }
        Err(_) => {
            server.kill();
            Err("the server did not exit within 10 s of `exit`".into())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let command: Vec<String> = std::env::args().skip(1).collect();
    if command.is_empty() {
        eprintln!("usage: lsp_client COMMAND [ARGS...]   (for example: lsp_client pylsp)");
        return ExitCode::from(2);
    }
    match run(command).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lsp_client: {e}");
            ExitCode::from(1)
        }
    }
}
