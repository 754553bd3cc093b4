//! What the server harnesses (etcd, redis-server) share: free loopback ports, finding a
//! binary, waiting (bounded) until a freshly spawned server answers, a one-shot TCP
//! probe, the tail of its log, and killing it by PID. Must not know any one server's
//! protocol beyond the probe bytes it is given.
#![allow(dead_code, clippy::disallowed_methods)] // tests may read the real clock

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A loopback port free right now (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// `name` from `$env`, PATH, or Debian's `/usr/bin/{name}`.
pub fn binary(env: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/bin").join(name)
}

/// The last 2,000 bytes of a log file (for failure messages).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = text.len().saturating_sub(2000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// Wait until `ready()` holds, the child exits, or `within` passes; on failure, why
/// and the log's tail.
pub fn wait_ready(
    child: &mut Option<Child>,
    within: Duration,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            *child = None;
            return Err(format!("exited with {status}: {}", log_tail(log)));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ready within {within:?}: {}", log_tail(log)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `request` to 127.0.0.1:`port` and read what comes back (bounded by `timeout`);
/// None when nothing answers.
pub fn probe(port: u16, request: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .ok()?;
    let _ = s.set_read_timeout(Some(timeout));
    s.write_all(request).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    // Read until EOF or the first quiet timeout: enough for a health line or a PONG.
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            break;
        }
    }
    Some(buf)
}

/// SIGKILL the child (if any) and reap it.
pub fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
        let _ = c.wait();
    }
}
