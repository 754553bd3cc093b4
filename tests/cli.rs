//! The `meridian` command, black-box: a real `meridian serve` process on 127.0.0.1:0,
//! driven by the real binary's client commands. Checks the documented forms work as
//! written, their JSON shapes, exit codes (0 ok, 2 invalid input, 1 other failures)
//! and that error messages name the offending field or flag.
#![allow(clippy::disallowed_methods)] // tests measure deadlines with the real clock

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

/// Longest one CLI invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Run `meridian --endpoint ENDPOINT ARGS...`, bounded in time.
fn meridian(endpoint: &str, args: &[&str]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env_remove("MERIDIAN_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meridian");
    // Read both pipes on threads so that a full pipe cannot stall the child.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meridian {args:?} did not finish within {CLI_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Poll `check` until it returns Some, at most `within`.
fn eventually<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cli_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("fired.txt");
    let server = Server::start(&dir.path().join("data"), &[]);
    let ep = server.endpoint();
    let ep = ep.as_str();

    // A command job every second, appending its firing id to a file.
    let script = format!("echo \"$MERIDIAN_FIRING_ID\" >> {}", out_file.display());
    let created = meridian(
        ep,
        &[
            "jobs", "create", "--region", "local", "--id", "tick", "--every", "1s", "--output",
            "json", "--", "sh", "-c", &script,
        ],
    )
    .ok()
    .json();
    assert_eq!(created["name"], "regions/local/jobs/tick");
    assert_eq!(created["schedule"]["interval_ms"], 1000);
    assert_eq!(created["action"]["command"]["argv"][0], "sh");

    // Runs show up, and one succeeds (bounded wait).
    let runs = eventually(Duration::from_secs(30), || {
        let out = meridian(
            ep,
            &[
                "runs",
                "list",
                "--job",
                "regions/local/jobs/tick",
                "--limit",
                "5",
                "--output",
                "json",
            ],
        )
        .ok()
        .json();
        let runs = out.as_array().expect("a JSON array").clone();
        runs.iter()
            .any(|r| r["state"] == "succeeded")
            .then_some(runs)
    })
    .expect("a run succeeded within 30 s");
    let ok = runs.iter().find(|r| r["state"] == "succeeded").unwrap();
    let scheduled = ok["scheduled_time"].as_str().unwrap();
    assert!(scheduled.ends_with('Z'), "{scheduled}");
    assert!(chrono::DateTime::parse_from_rfc3339(scheduled).is_ok());
    assert!(
        ok["scheduled_time_local"]
            .as_str()
            .unwrap()
            .ends_with("+00:00")
    );
    assert_eq!(ok["job"], "regions/local/jobs/tick");
    assert!(
        ok["name"]
            .as_str()
            .unwrap()
            .starts_with("regions/local/jobs/tick/runs/")
    );
    let attempt = &ok["attempts"][0];
    assert_eq!(attempt["number"], 1);
    assert_eq!(attempt["status"], "succeeded");
    assert_eq!(attempt["exit_code"], 0);
    assert!(attempt["lateness_ms"].as_f64().is_some_and(|l| l >= 0.0));
    assert!(ok["lateness_ms"].as_f64().is_some_and(|l| l >= 0.0));
    let fired = std::fs::read_to_string(&out_file).unwrap_or_default();
    assert!(
        fired
            .lines()
            .any(|l| l == ok["firing_id"].as_str().unwrap()),
        "the command saw its firing id"
    );

    // One run by name, in both formats.
    let run_name = ok["name"].as_str().unwrap();
    let one = meridian(ep, &["runs", "get", run_name, "--output", "json"])
        .ok()
        .json();
    assert_eq!(one["firing_id"], ok["firing_id"]);
    let table = meridian(ep, &["runs", "get", run_name]).ok().stdout;
    assert!(table.contains("succeeded"), "{table}");

    // Pause and resume, by id (default region `local`).
    let paused = meridian(ep, &["jobs", "pause", "tick", "--output", "json"])
        .ok()
        .json();
    assert_eq!(paused["paused"], true);
    let resumed = meridian(ep, &["jobs", "resume", "tick", "--output", "json"])
        .ok()
        .json();
    assert_eq!(resumed["paused"], false);

    // Tables are readable: the job is listed with its schedule.
    let listed = meridian(ep, &["jobs", "list"]).ok().stdout;
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(listed.contains("regions/local/jobs/tick"), "{listed}");
    assert!(listed.contains("every 1s"), "{listed}");
    let got = meridian(ep, &["jobs", "get", "regions/local/jobs/tick"])
        .ok()
        .stdout;
    assert!(got.contains("sh -c"), "{got}");

    // Preview across the New York spring-forward gap.
    let preview = meridian(
        ep,
        &[
            "preview",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--count",
            "3",
            "--from",
            "2026-03-07T00:00:00Z",
            "--output",
            "json",
        ],
    )
    .ok()
    .json();
    let items = preview.as_array().expect("a JSON array");
    assert_eq!(items.len(), 3);
    let gap = items
        .iter()
        .find(|i| i["utc"].as_str().unwrap().starts_with("2026-03-08"))
        .expect("the 2026-03-08 firing");
    assert_eq!(gap["utc"], "2026-03-08T07:00:00Z");
    assert_eq!(gap["local"], "2026-03-08T03:00:00-04:00");
    assert_eq!(gap["time_zone"], "America/New_York");
    assert_eq!(gap["dst_decision"], "gap_shifted");
    assert_eq!(items[0]["dst_decision"], "none");

    // Bad input refused by the server: the message names the field, exit code 2,
    // nothing stored.
    let bad = meridian(
        ep,
        &[
            "jobs",
            "create",
            "--id",
            "bad",
            "--cron",
            "61 * * * *",
            "--noop",
        ],
    );
    assert_eq!(bad.code, 2, "stderr: {}", bad.stderr);
    assert!(
        bad.stderr.contains("error: job.schedule.cron: "),
        "{}",
        bad.stderr
    );
    let bad = meridian(
        ep,
        &[
            "jobs",
            "create",
            "--id",
            "bad",
            "--every",
            "1m",
            "--tz",
            "Mars/Base",
            "--noop",
        ],
    );
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("job.schedule.time_zone"),
        "{}",
        bad.stderr
    );
    // Bad input refused by the CLI itself names the flag.
    let bad = meridian(
        ep,
        &["jobs", "create", "--id", "bad", "--every", "5x", "--noop"],
    );
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("--every"), "{}", bad.stderr);
    let all = meridian(ep, &["jobs", "list", "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "the bad jobs were not stored"
    );

    // Missing things are failures, not invalid input.
    let missing = meridian(ep, &["jobs", "get", "nope"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);

    let status = meridian(ep, &["status", "--output", "json"]).ok().json();
    assert_eq!(status["regions"][0], "local");

    // Manual trigger and delete.
    let run = meridian(
        ep,
        &[
            "jobs",
            "trigger",
            "tick",
            "--override-overlap",
            "--output",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(run["trigger"], "manual");
    let deleted = meridian(ep, &["jobs", "delete", "tick"]).ok().stdout;
    assert!(
        deleted.contains("deleted regions/local/jobs/tick"),
        "{deleted}"
    );

    assert_eq!(
        server.terminate(Duration::from_secs(10)),
        Some(0),
        "SIGTERM exits 0"
    );

    // Nobody listening: a clear message naming the endpoint, exit code 1.
    let refused = meridian("http://127.0.0.1:1", &["jobs", "list"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("http://127.0.0.1:1"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.to_lowercase().contains("refused"),
        "{}",
        refused.stderr
    );
}
