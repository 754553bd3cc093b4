//! Test harness shared by the black-box tests: spawn a real `meridian serve` process on
//! a free loopback port with a data dir, learn its address, stop it by PID.
#![allow(dead_code, clippy::disallowed_methods)] // tests may read the real clock

pub mod etcd;
pub mod mesh;
pub mod process;
pub mod redis;
pub mod skew;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian::api::pb::scheduler_client::SchedulerClient;
use tonic::transport::Channel;

/// A running `meridian serve` process, killed on drop if still alive.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// Start `meridian serve` on 127.0.0.1:0 with `data_dir` and extra args; wait until
    /// it prints its address (bounded).
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("MERIDIAN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn meridian serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("meridian listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("meridian serve printed its address within 30 s");
        Server { child, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> SchedulerClient<Channel> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match SchedulerClient::connect(self.endpoint()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("connect {}: {e}", self.addr),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(mut self) {
        unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for a graceful exit; returns the exit code.
    pub fn terminate(mut self, within: Duration) -> Option<i32> {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                unsafe { libc::kill(self.pid(), libc::SIGKILL) };
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Poll `check` every 100 ms until it returns Some or `within` passes.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long `retry` keeps retrying retryable port errors (a server restarting).
pub const RETRY_WITHIN: Duration = Duration::from_secs(15);

/// Call `f` until it succeeds, retrying retryable port errors for up to `RETRY_WITHIN`.
pub async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, meridian::ports::Error>>,
{
    let deadline = Instant::now() + RETRY_WITHIN;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("gave up: {e}"),
        }
    }
}
