//! Test harness: a real single-member `etcd` on free loopback ports with a temp data
//! dir, for the etcd adapter tests. Starts, stops, kills, pauses and restarts it (same
//! data dir and ports), and kills it by PID on drop. Must not be used by production code
//! and must not assume an etcd service is running on the machine.
#![allow(dead_code, clippy::disallowed_methods)] // tests may read the real clock

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{self, free_port};

/// How long `start`/`restart` wait for etcd to answer its health check.
const READY_WITHIN_MAX: Duration = Duration::from_secs(15);
/// How often `start` picks new ports after a port conflict.
const PORT_TRIES_MAX: u32 = 5;

/// A running etcd process, killed on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Start etcd on free loopback ports and wait (bounded) until it is healthy.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: 0,
            peer_port: 0,
        };
        for attempt in 1..=PORT_TRIES_MAX {
            etcd.client_port = free_port();
            etcd.peer_port = free_port();
            if etcd.client_port == etcd.peer_port {
                continue;
            }
            // A failed first start may leave a half-made member dir behind.
            let _ = std::fs::remove_dir_all(etcd.data_dir());
            etcd.spawn();
            match etcd.wait_ready() {
                Ok(()) => return etcd,
                Err(log) if log.contains("address already in use") && attempt < PORT_TRIES_MAX => {
                    etcd.kill9();
                }
                Err(log) => panic!("etcd did not start: {log}"),
            }
        }
        panic!("etcd did not start: no free ports after {PORT_TRIES_MAX} tries")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let child = Command::new(etcd_binary())
            .args(["--name", "meridian-test"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("meridian-test={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "meridian-test"])
            // Faster raft ticks: a single member elects itself sooner after a (re)start.
            // The shortest lease etcd grants stays 1-2 s, so lease tests keep their TTLs.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd (is the etcd-server package installed?)");
        self.child = Some(child);
    }

    /// Wait until `/health` answers true; on failure, the log tail.
    fn wait_ready(&mut self) -> Result<(), String> {
        let port = self.client_port;
        let log = self.log_path();
        process::wait_ready(&mut self.child, READY_WITHIN_MAX, &log, || {
            process::probe(
                port,
                b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
                Duration::from_secs(1),
            )
            .is_some_and(|body| String::from_utf8_lossy(&body).contains("\"health\":\"true\""))
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:23791`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The etcd process id (panics when not running).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("etcd is running").id() as i32
    }

    pub fn data_path(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM and wait (bounded); SIGKILL if it does not exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
    }

    /// SIGKILL: etcd gets no chance to clean up.
    pub fn kill9(&mut self) {
        process::kill9(&mut self.child);
    }

    /// SIGSTOP: etcd stops answering but keeps its sockets open (a silent partition).
    pub fn pause(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGSTOP) };
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        unsafe { libc::kill(self.pid(), libc::SIGCONT) };
    }

    /// Stop (gracefully) and start again with the same data dir and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(log) = self.wait_ready() {
            panic!("etcd did not restart: {log}");
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // Continue first, in case a test paused it and then failed.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
        }
        self.kill9();
    }
}

/// `etcd` from `$MERIDIAN_TEST_ETCD`, PATH, or Debian's `/usr/bin/etcd`.
fn etcd_binary() -> PathBuf {
    process::binary("MERIDIAN_TEST_ETCD", "etcd")
}
