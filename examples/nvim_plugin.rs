//! A neovim remote plugin: a program neovim starts and talks to over its stdin and stdout, in
//! MessagePack-RPC.
//!
//! ```vim
//! :let job = jobstart(['target/debug/examples/nvim_plugin'], {'rpc': v:true})
//! :echo rpcrequest(job, 'add', 1, 2)
//! 3
//! :call rpcrequest(job, 'greet', 'Ada')
//! :echo g:greeting
//! hello Ada
//! :call rpcnotify(job, 'quit')
//! ```
//!
//! `add(a, b)` answers; `greet(name)` calls neovim back, on the same connection, to set
//! `g:greeting` and names the current buffer's line count in its answer; `quit` (a
//! notification) ends the plugin, as does neovim closing the job's stdin. Nothing but the
//! connection may write to stdout: logs go to stderr.

use rpc_codecs::msgpack::neovim::Buffer;
use rpc_codecs::msgpack::MsgpackRpcCodec;
use rpc_core::{Context, Router, ServerError};
use rpc_transports::process;
use rpc_transports::stream::Framing;
use tokio::sync::mpsc;

async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Sets `g:greeting` in the neovim that called, and says how long its current buffer is.
async fn greet(ctx: Context, name: String) -> Result<String, ServerError> {
    let nvim = ctx
        .caller()
        .ok_or_else(|| ServerError::internal("no way back to neovim"))?;
    let failed = |e: rpc_core::Error| ServerError::internal(format!("calling neovim: {e}"));
    nvim.call::<()>("nvim_set_var", ("greeting", format!("hello {name}")))
        .await
        .map_err(failed)?;
    let buf: Buffer = nvim
        .call("nvim_get_current_buf", ())
        .await
        .map_err(failed)?;
    let lines: i64 = nvim
        .call("nvim_buf_line_count", (buf,))
        .await
        .map_err(failed)?;
    Ok(format!(
        "greeted {name}; buffer {} has {lines} line(s)",
        buf.0
    ))
}

#[tokio::main]
async fn main() {
    let (quit, mut quitting) = mpsc::unbounded_channel::<()>();
    let router = Router::new()
        .route("add", add)
        .route("greet", greet)
        .route("quit", move || {
            let quit = quit.clone();
            async move {
                let _ = quit.send(());
            }
        });
    let nvim = process::builder()
        .framing(Framing::MsgPack)
        .serve(router)
        .stdio(MsgpackRpcCodec::new());
    tokio::select! {
        _ = nvim.closed() => eprintln!("nvim_plugin: neovim closed the connection"),
        _ = quitting.recv() => eprintln!("nvim_plugin: asked to quit"),
    }
    // tokio reads stdin on a thread of its own, which a shutdown would wait for.
    std::process::exit(0);
}
