//! Child processes as peers, with `sh` as the child: answers, exits, exit statuses, children
//! that hold the pipe open after their parent exits, kills, garbage.
#![cfg(all(unix, feature = "process"))]

use std::process::Command;
use std::time::{Duration, Instant};

use rpc_codecs::jsonrpc::JsonRpcCodec;
use rpc_core::Error;
use rpc_transports::process;
use rpc_transports::stream::Framing;

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

fn newline() -> rpc_transports::stream::Builder<rpc_transports::stream::Stream<()>> {
    process::builder()
        .framing(Framing::Newline)
        .timeout(Duration::from_secs(20))
}

#[tokio::test]
async fn a_child_answers_in_any_order_and_its_exit_status_is_kept() {
    // Reads two calls, answers the second first, then exits 7.
    let child = newline()
        .spawn(
            sh(r#"read -r a; read -r b
                  id() { echo "$1" | sed 's/.*"id":\([0-9]*\).*/\1/'; }
                  echo "{\"jsonrpc\":\"2.0\",\"id\":$(id "$b"),\"result\":\"second\"}"
                  echo "{\"jsonrpc\":\"2.0\",\"id\":$(id "$a"),\"result\":\"first\"}"
                  exit 7"#),
            JsonRpcCodec::new(),
        )
        .unwrap();
    assert!(child.id().is_some());
    assert!(child
        .connection()
        .peer()
        .to_string()
        .starts_with("stream:sh["));
    let client = child.client();
    let (a, b) = tokio::join!(
        client.call::<String>("one", ()),
        client.call::<String>("two", ())
    );
    assert_eq!((a.unwrap(), b.unwrap()), ("first".into(), "second".into()));
    assert_eq!(child.wait().await.unwrap().code(), Some(7));
    assert_eq!(child.try_wait().and_then(|s| s.code()), Some(7));
}

#[tokio::test]
async fn calls_waiting_on_a_child_that_exits_fail_at_once() {
    let child = newline()
        .spawn(sh("read -r call; exit 3"), JsonRpcCodec::new())
        .unwrap();
    let started = Instant::now();
    let e = child
        .client()
        .call::<String>("never", ())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(child.wait().await.unwrap().code(), Some(3));
    // Later calls fail at once too.
    assert!(child.client().call::<String>("again", ()).await.is_err());
}

#[tokio::test]
async fn a_child_whose_own_child_holds_its_stdout_still_fails_the_calls_when_it_exits() {
    // The background `sleep` keeps the pipe open after `sh` exits.
    let child = newline()
        .spawn(sh("sleep 5 & read -r call; exit 4"), JsonRpcCodec::new())
        .unwrap();
    let started = Instant::now();
    let e = child
        .client()
        .call::<String>("never", ())
        .await
        .unwrap_err();
    let Error::Transport(io) = &e else {
        panic!("{e:?}")
    };
    assert!(io.to_string().contains("exited"), "{io}");
    assert!(io.to_string().contains("exit status: 4"), "{io}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_killed_child_fails_its_calls_and_reports_its_signal() {
    use std::os::unix::process::ExitStatusExt;
    let child = newline()
        .spawn(sh("exec sleep 30"), JsonRpcCodec::new())
        .unwrap();
    let call = tokio::spawn({
        let client = child.client();
        async move { client.call::<String>("never", ()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    child.kill();
    assert_eq!(child.wait().await.unwrap().signal(), Some(9));
    let e = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call failed at once")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
}

#[tokio::test]
async fn a_program_that_cannot_start_says_which() {
    let e = newline()
        .spawn(Command::new("/nonexistent/program"), JsonRpcCodec::new())
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/program"), "{e}");
}

#[tokio::test]
async fn garbage_from_a_child_ends_its_connection_with_the_reason() {
    let child = process::builder()
        .framing(Framing::ContentLength)
        .spawn(
            sh("read -r call; printf 'Content-Length: nope\\r\\n\\r\\n'; sleep 5"),
            JsonRpcCodec::new(),
        )
        .unwrap();
    let e = child.client().call::<String>("x", ()).await.unwrap_err();
    assert!(e.to_string().contains("not a length"), "{e}");
    child.kill();
}

#[tokio::test]
async fn closing_the_connection_ends_a_child_that_reads_to_the_end() {
    // `cat` echoes what it reads and exits at the end of its stdin.
    let child = newline()
        .spawn(Command::new("cat"), JsonRpcCodec::new())
        .unwrap();
    child.connection().close();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("cat exited once its stdin closed")
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_child_that_outlives_every_handle_is_killed() {
    // `sleep` never reads its stdin, so closing it does not end it.
    let mut sleep = Command::new("sleep");
    sleep.arg("60");
    let child = newline().spawn(sleep, JsonRpcCodec::new()).unwrap();
    let pid = child.id().unwrap();
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive());
    drop(child);
    let started = Instant::now();
    while alive() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the child still runs 20 s after its handles went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Not before its grace period: it had its chance to exit on its own.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
