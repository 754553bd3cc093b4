//! Test harness: a real `redis-server` on a free loopback port with a temp dir, for the
//! Redis adapter tests. Persistence as the mesh needs it (`appendonly yes`,
//! `appendfsync always`, no RDB snapshots), so a SIGKILL loses nothing Redis
//! acknowledged. Starts, kills and restarts it (same dir and port: the data comes back
//! from the AOF), and kills it by PID on drop. Must not be used by production code and
//! must not assume a Redis service is running on the machine.
#![allow(dead_code, clippy::disallowed_methods)] // tests may read the real clock

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::process::{self, free_port};

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
        let port = self.port;
        let log = self.log_path();
        process::wait_ready(&mut self.child, READY_WITHIN_MAX, &log, || {
            process::probe(port, b"PING\r\nQUIT\r\n", Duration::from_millis(500))
                .is_some_and(|reply| reply.starts_with(b"+PONG"))
        })
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
        process::kill9(&mut self.child);
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
    process::binary("MERIDIAN_TEST_REDIS", "redis-server")
}
