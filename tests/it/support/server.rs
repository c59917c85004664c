//! The pinned local S3 server (moto) the integration tests talk to.
//!
//! One shared server per test binary, started on first use and never dropped; separate
//! servers with their own environment for tests that need one. The server runs inside a
//! small python launcher that exits as soon as its stdin reaches end of file: the test
//! process holds the write end of that pipe, so when the test process ends, however it
//! ends, the server ends with it. Assertions stay in the tests.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How the tests and the README install the pinned server.
pub const INSTALL_HINT: &str = "python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.1.22' \
     (run in the repository root), or run the README's test command `scripts/test`";

/// Multipart parts as small as this are accepted, so multipart cases use KiB objects.
pub const PART_MIN_SIZE_BYTES: usize = 5120;

/// Longest wait for a starting server to answer HTTP.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs moto_server in this interpreter and leaves (with every thread) when stdin closes.
/// In-process rather than a child of the launcher, so a killed launcher leaves nothing.
const LAUNCHER: &str = r#"
import os, runpy, sys, threading
def _watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)
threading.Thread(target=_watch_stdin, daemon=True).start()
script, port = sys.argv[1], sys.argv[2]
sys.argv = [script, "-H", "127.0.0.1", "-p", port]
runpy.run_path(script, run_name="__main__")
"#;

/// A running moto server. Dropping it stops the server; the shared one is never dropped
/// and stops when the test process exits.
#[derive(Debug)]
pub struct MotoServer {
    endpoint: String,
    port: u16,
    log_path: PathBuf,
    child: Child,
    // Held only so that the pipe closes when the server (or the process) goes away.
    _stdin: ChildStdin,
}

impl MotoServer {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file that holds the server's own log (one line per request).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server shared by every test of this binary, started on first use.
///
/// # Panics
/// When the venv or `moto_server` is missing, or the server does not answer within 30 s;
/// the message says how to install it. A missing server never skips a test.
pub fn shared() -> &'static MotoServer {
    static SHARED: OnceLock<MotoServer> = OnceLock::new();
    SHARED.get_or_init(|| start_with_env("shared", &[]))
}

/// Starts a server of its own (stopped when the value is dropped) with extra environment,
/// e.g. `INITIAL_NO_AUTH_ACTION_COUNT`.
///
/// # Panics
/// As [`shared`].
pub fn start_separate(extra_env: &[(&str, &str)]) -> MotoServer {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    start_with_env(&format!("separate-{}-{n}", std::process::id()), extra_env)
}

/// The venv's `moto_server` script, checked to exist.
fn moto_paths() -> (PathBuf, PathBuf) {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
    let python = venv.join("bin/python");
    let script = venv.join("bin/moto_server");
    for path in [&python, &script] {
        assert!(
            path.exists(),
            "the local S3 server is not installed: {} is missing; install it with: {INSTALL_HINT}",
            path.display()
        );
    }
    (python, script)
}

fn start_with_env(name: &str, extra_env: &[(&str, &str)]) -> MotoServer {
    let (python, script) = moto_paths();
    let log_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let log_path = log_dir.join(format!("moto-{name}.log"));
    // The port is chosen before moto binds it, so another process may take it first:
    // such a start fails fast and is tried again on a new port.
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        match launch(&python, &script, port, &log_path, extra_env) {
            Ok(server) => return server,
            Err(e) => last_error = e,
        }
    }
    panic!("the local S3 server did not start: {last_error}\n(install or repair it with: {INSTALL_HINT})");
}

fn launch(
    python: &Path,
    script: &Path,
    port: u16,
    log_path: &Path,
    extra_env: &[(&str, &str)],
) -> Result<MotoServer, String> {
    let log = File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(LAUNCHER)
        .arg(script)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log_err)
        .env("S3_UPLOAD_PART_MIN_SIZE", PART_MIN_SIZE_BYTES.to_string())
        .env("PYTHONUNBUFFERED", "1");
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.to_ascii_lowercase().ends_with("_proxy"))
        {
            cmd.env_remove(name);
        }
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let server = MotoServer {
        endpoint: format!("http://127.0.0.1:{port}"),
        port,
        log_path: log_path.to_owned(),
        child,
        _stdin: stdin,
    };
    wait_until_answering(server)
}

fn wait_until_answering(mut server: MotoServer) -> Result<MotoServer, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port));
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!(
                "moto_server exited with {status}; its log ({}) ends with:\n{}",
                server.log_path.display(),
                log_tail(&server.log_path)
            ));
        }
        if answers_http(addr) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "moto_server did not answer on {addr} within {START_TIMEOUT:?}; its log ends with:\n{}",
                log_tail(&server.log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
