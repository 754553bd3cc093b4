//! Test harness: a real `redis-server` on a free loopback port with a temp dir, for the
//! Redis adapter tests. Persistence as the mesh needs it (`appendonly yes`,
//! `appendfsync always`, no RDB snapshots), so a SIGKILL loses nothing Redis
//! acknowledged. Starts, kills and restarts it (same dir and port: the data comes back
//! from the AOF), and kills it by PID on drop. Must not be used by production code and
//! must not assume a Redis service is running on the machine.
#![allow(dead_code, clippy::disallowed_methods)] // tests may read the real clock

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start`/`restart` wait for Redis to answer PING.
const READY_WITHIN_MAX: Duration = Duration::from_secs(15);
/// How often `start` picks a new port after a port conflict.
const PORT_TRIES_MAX: u32 = 5;

/// A running redis-server process, killed on drop.
pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

/// A loopback port free right now (bound to port 0, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

impl Redis {
    /// Start redis-server on a free loopback port and wait (bounded) until it answers.
    pub fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut redis = Redis {
            child: None,
            dir,
            port: 0,
        };
        for attempt in 1..=PORT_TRIES_MAX {
            redis.port = free_port();
            redis.spawn();
            match redis.wait_ready() {
                Ok(()) => return redis,
                Err(log) if log.contains("Address already in use") && attempt < PORT_TRIES_MAX => {
                    redis.kill9();
                }
                Err(log) => panic!("redis did not start: {log}"),
            }
        }
        panic!("redis did not start: no free port after {PORT_TRIES_MAX} tries")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        let child = Command::new(redis_binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--daemonize", "no"])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--save", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is the redis-server package installed?)");
        self.child = Some(child);
    }

    /// Wait until PING answers PONG (not `LOADING`); on failure, the log tail.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN_MAX;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("exited with {status}: {}", self.log_tail()));
            }
            if self.pong() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no PONG within {READY_WITHIN_MAX:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pong(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let mut start = text.len().saturating_sub(2000);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_string()
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The redis-server process id (panics when not running).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("redis is running").id() as i32
    }

    pub fn data_path(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL: Redis gets no chance to write anything more.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Start again with the same dir and port (SIGKILL first if still running): the
    /// data comes back from the AOF. Waits (bounded) until loading is done.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        if let Err(log) = self.wait_ready() {
            panic!("redis did not restart: {log}");
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `redis-server` from `$MERIDIAN_TEST_REDIS`, PATH, or Debian's `/usr/bin/redis-server`.
fn redis_binary() -> PathBuf {
    if let Ok(p) = std::env::var("MERIDIAN_TEST_REDIS") {
        return PathBuf::from(p);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("redis-server");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/bin/redis-server")
}
