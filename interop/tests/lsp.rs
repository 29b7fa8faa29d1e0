//! The `lsp_client` example against a real language server: python-lsp-server with pyflakes,
//! pinned in the interop environment, started through the process transport with
//! `Content-Length` framing.

use std::process::Command;
use std::time::Duration;

#[test]
fn lsp_client_prints_pylsps_diagnostics_and_exits_with_its_status() {
    // `python -m pylsp`: the environment is built elsewhere and moved into place, so its
    // scripts' `#!` lines name a directory that is gone.
    let child = Command::new(interop::example("lsp_client"))
        .arg(interop::python())
        .args(["-m", "pylsp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("lsp_client starts");
    // Bounded: the example waits 30 s for diagnostics and 10 s for the server's exit at most.
    // Its output is read as it comes (a full pipe would stop it).
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("lsp_client did not finish within 90 s");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // The document's third line, `def broken(:`, does not parse; nothing else is printed.
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(!lines.is_empty(), "no diagnostics:\n{stderr}");
    assert!(
        lines.iter().all(|l| l.starts_with("DIAGNOSTIC ")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("DIAGNOSTIC 3:") && l.contains("invalid syntax")),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("initialized pylsp"), "{stderr}");
}

#[test]
fn lsp_client_fails_clearly_when_the_server_cannot_start() {
    let out = Command::new(interop::example("lsp_client"))
        .arg("/nonexistent/language-server")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/language-server"));
}
