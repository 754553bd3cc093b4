//! The command executor: runs argv directly (no shell) in its own process group, with
//! the attempt's `MERIDIAN_*` variables, stdin closed, and stdout and stderr sharing
//! one pipe (as `2>&1` does) read into one bounded tail.
//!
//! The attempt owns its whole process group: on timeout or cancel the group is killed
//! with SIGKILL and the child reaped; after a normal exit, whatever the child left
//! running in its group is killed too (an attempt ends with its processes, like a
//! systemd unit's control group). A dropped attempt future kills the group as well.
//! This module must not use a shell, retry, or keep more than the tail in memory.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Attempt, OUTPUT_TAIL_BYTES_MAX, Outcome, Status, Tail};
use crate::core::action::{
    Command, ENV_ATTEMPT, ENV_FIRING_ID, ENV_JOB, ENV_RESERVED_PREFIX, ENV_SCHEDULED_AT,
};

/// How long to wait for the output pipe to close after the child exited or the group
/// was killed: a process that left the group (`setsid`) may hold it open forever.
const DRAIN_MAX: Duration = Duration::from_secs(1);

/// Bytes read from the output pipe at a time.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Why we stopped the group before it finished by itself.
#[derive(Clone, Copy)]
enum Stop {
    TimedOut,
    Cancelled,
}

pub(super) async fn execute(
    command: &Command,
    attempt: &Attempt<'_>,
    cancel: &CancellationToken,
) -> Outcome {
    let Some((program, args)) = command.argv.split_first() else {
        return Outcome::new(Status::Failed { retryable: false }, "argv is empty");
    };
    // One pipe for stdout and stderr: the tail then shows both in the order they were
    // written, which two pipes read concurrently cannot promise.
    let (output, out_writer, err_writer) = match output_pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            return Outcome::new(
                Status::Failed { retryable: true },
                format!("cannot create the output pipe: {e}"),
            );
        }
    };
    let spawned = {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args);
        // The worker's own MERIDIAN_* (its configuration, perhaps credentials) are not
        // the job's business: in the child, MERIDIAN_* are exactly the attempt's.
        for (name, _) in std::env::vars_os() {
            if name
                .as_encoded_bytes()
                .starts_with(ENV_RESERVED_PREFIX.as_bytes())
            {
                cmd.env_remove(name);
            }
        }
        cmd.envs(command.env.iter().map(|(k, v)| (k, v)))
            // After the user's: ours win even if validation was bypassed.
            .env(ENV_FIRING_ID, attempt.firing_id)
            .env(ENV_SCHEDULED_AT, attempt.scheduled_at_rfc3339())
            .env(ENV_ATTEMPT, attempt.attempt.to_string())
            .env(ENV_JOB, attempt.job)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_writer))
            .stderr(Stdio::from(err_writer))
            // Its own group, so that one kill reaches everything it started.
            .process_group(0);
        if let Some(dir) = &command.working_dir {
            cmd.current_dir(dir);
        }
        cmd.spawn()
        // `cmd` drops here, and with it our copies of the pipe's write end: the read
        // end sees EOF once the child and everything it started have closed theirs.
    };
    let child = match spawned {
        Ok(child) => child,
        Err(e) => return spawn_failure(command, &e),
    };
    let Some(pid) = child.id() else {
        // Only after the child was reaped, which nothing has done yet.
        return Outcome::new(Status::Failed { retryable: true }, "child has no pid");
    };
    let mut group = Group {
        child,
        // process_group(0): the group id is the child's pid.
        pgid: pid as libc::pid_t,
        reaped: false,
        firing: attempt.firing_id.to_owned(),
    };
    let mut output = Some(output);
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    let mut tail = Tail::new(OUTPUT_TAIL_BYTES_MAX);

    let deadline = tokio::time::sleep(attempt.timeout);
    tokio::pin!(deadline);
    // Armed once the child exited or was killed: bounds the wait for the pipe.
    let mut drain: Option<Pin<Box<Sleep>>> = None;
    let mut stop: Option<Stop> = None;
    let mut exit: Option<io::Result<ExitStatus>> = None;

    while exit.is_none() || output.is_some() {
        tokio::select! {
            // Stop requests first, so that a child flooding its output cannot starve them.
            biased;
            () = cancel.cancelled(), if stop.is_none() => {
                stop = Some(Stop::Cancelled);
                group.kill();
                arm(&mut drain);
            }
            () = &mut deadline, if stop.is_none() => {
                stop = Some(Stop::TimedOut);
                group.kill();
                arm(&mut drain);
            }
            () = drained(&mut drain) => break,
            n = read_some(&mut output, &mut buf) => match n {
                Ok(0) | Err(_) => output = None,
                Ok(n) => tail.push(&buf[..n]),
            },
            status = group.child.wait(), if exit.is_none() => {
                group.reaped = true;
                // The leader is gone; anything it left in its group goes too. It also
                // closes the pipe a background grandchild would otherwise hold open.
                group.kill_leftovers();
                exit = Some(status);
                arm(&mut drain);
            }
        }
    }

    let mut outcome = match (stop, exit) {
        (Some(Stop::Cancelled), _) => Outcome::cancelled(),
        (Some(Stop::TimedOut), _) => Outcome::timed_out(attempt.timeout),
        (None, Some(Ok(status))) => exited(status),
        (None, Some(Err(e))) => Outcome::new(
            Status::Failed { retryable: true },
            format!("wait failed: {e}"),
        ),
        // The loop only ends early through the drain, armed by a stop or an exit.
        (None, None) => Outcome::new(Status::Failed { retryable: true }, "lost the child"),
    };
    outcome.output_tail = tail.into_string();
    outcome
}

/// The read end (non-blocking, for tokio) and two write ends (stdout, stderr) of one
/// pipe. std creates it close-on-exec, so the child only gets what it is given.
fn output_pipe() -> io::Result<(pipe::Receiver, std::io::PipeWriter, std::io::PipeWriter)> {
    let (reader, writer) = std::io::pipe()?;
    let writer_too = writer.try_clone()?;
    let reader = pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
    Ok((reader, writer, writer_too))
}

/// The attempt's process group. Dropping it before the child was reaped (a timeout
/// that could not reap, or the attempt's future dropped by its caller) kills the group;
/// tokio reaps the dropped child in the background.
struct Group {
    child: Child,
    pgid: libc::pid_t,
    reaped: bool,
    firing: String,
}

impl Group {
    /// SIGKILL the whole group. Safe from pid reuse: the leader is not reaped yet, so
    /// its pid (the group id) cannot have been given to anyone else.
    fn kill(&self) {
        if !self.reaped {
            self.signal_group();
        }
    }

    /// SIGKILL what the reaped leader left in its group. While any member lives, the
    /// group id cannot be reused; once none does, the id could in theory be reused by
    /// a new group leader in the microseconds since the reap, which Linux's sequential
    /// pid allocation makes practically impossible.
    fn kill_leftovers(&self) {
        self.signal_group();
    }

    fn signal_group(&self) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        let r = unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        if r != 0 {
            let e = io::Error::last_os_error();
            // ESRCH: nothing left in the group, the usual case after a clean exit.
            if e.raw_os_error() != Some(libc::ESRCH) {
                warn!(firing = %self.firing, pgid = self.pgid, error = %e, "cannot kill process group");
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start the drain bound, once.
fn arm(drain: &mut Option<Pin<Box<Sleep>>>) {
    if drain.is_none() {
        *drain = Some(Box::pin(tokio::time::sleep(DRAIN_MAX)));
    }
}

/// Until the drain bound, once armed; never before.
async fn drained(drain: &mut Option<Pin<Box<Sleep>>>) {
    match drain {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// Read from the pipe while it is open; a closed one (`None`) never yields.
async fn read_some(pipe: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> io::Result<usize> {
    match pipe {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Exit 0 succeeds. Any other exit code is a retryable failure: Meridian cannot tell a
/// transient failure from a permanent one in a program's status, and the job's retry
/// policy (`max_attempts`) bounds the cost of guessing "transient". A death by signal
/// (the OOM killer, an operator) is retryable too.
fn exited(status: ExitStatus) -> Outcome {
    if let Some(code) = status.code() {
        let s = if code == 0 {
            Status::Succeeded
        } else {
            Status::Failed { retryable: true }
        };
        Outcome {
            exit_code: Some(code),
            ..Outcome::new(s, format!("exit {code}"))
        }
    } else {
        let signal = status.signal().unwrap_or(0);
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        let summary = match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name}{core})"),
            None if core.is_empty() => format!("killed by signal {signal}"),
            None => format!("killed by signal {signal} (core dumped)"),
        };
        Outcome::new(Status::Failed { retryable: true }, summary)
    }
}

/// A failure to start. Missing or unrunnable programs and directories are permanent
/// (the next attempt would meet them too); exhausted resources (processes, memory,
/// file descriptors) and a busy executable are retryable.
fn spawn_failure(command: &Command, e: &io::Error) -> Outcome {
    let program = &command.argv[0];
    let retryable = matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE | libc::ETXTBSY)
    );
    // The child reports a failed chdir and a failed exec with the same errno: check
    // the directory (only on this error path) to say which one it was.
    let bad_dir = command
        .working_dir
        .as_deref()
        .filter(|dir| !std::path::Path::new(dir).is_dir());
    let summary = match (e.kind(), bad_dir) {
        (io::ErrorKind::NotFound, Some(dir)) => {
            format!("working directory {dir:?} does not exist or is not a directory")
        }
        (io::ErrorKind::NotFound, None) => format!("program {program:?} not found"),
        (io::ErrorKind::PermissionDenied, _) => {
            format!("program {program:?} cannot be run: permission denied")
        }
        _ => format!("cannot start {program:?}: {}", lower_first(&e.to_string())),
    };
    Outcome::new(Status::Failed { retryable }, summary)
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

/// The usual name of a signal, for summaries.
fn signal_name(signal: i32) -> Option<&'static str> {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::core::action::Action;
    use crate::exec::{Executors, within};

    fn attempt(timeout: Duration) -> Attempt<'static> {
        Attempt {
            job: "regions/eu-west/jobs/backup",
            firing_id: "0195f0b6-7c1a-5d3e-9a4b-1c2d3e4f5a6b",
            scheduled_at: Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap(),
            attempt: 2,
            timeout,
            traceparent: None,
        }
    }

    fn sh(script: &str) -> Command {
        Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![],
            working_dir: None,
        }
    }

    async fn run_with(command: Command, timeout: Duration, cancel: CancellationToken) -> Outcome {
        Executors::new()
            .unwrap()
            .execute(&Action::Command(command), &attempt(timeout), cancel)
            .await
    }

    async fn run(command: Command, timeout: Duration) -> Outcome {
        run_with(command, timeout, CancellationToken::new()).await
    }

    /// Whether `pid` is gone: no such process, or a zombie waiting for a reaper (a
    /// container's pid 1 may not reap orphans).
    fn is_gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        }
    }

    async fn assert_gone_soon(pid: i32) {
        within(Duration::from_secs(2), async {
            while !is_gone(pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// The first line of the tail as a pid.
    fn first_pid(o: &Outcome) -> i32 {
        o.output_tail
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {:?}", o.output_tail))
    }

    #[tokio::test]
    async fn sets_meridian_env_user_env_and_working_dir() {
        let mut c = sh(
            r#"echo "$MERIDIAN_FIRING_ID|$MERIDIAN_SCHEDULED_AT|$MERIDIAN_ATTEMPT|$MERIDIAN_JOB|$GREETING|$(pwd)|$HOME""#,
        );
        c.env = vec![("GREETING".into(), "hello world".into())];
        c.working_dir = Some("/tmp".into());
        let o = run(c, Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_eq!(o.summary, "exit 0");
        assert_eq!(o.exit_code, Some(0));
        assert_eq!(o.http_status, None);
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(
            o.output_tail,
            format!(
                "0195f0b6-7c1a-5d3e-9a4b-1c2d3e4f5a6b|2026-10-25T00:30:00.000Z|2|regions/eu-west/jobs/backup|hello world|/tmp|{home}\n"
            ),
            "the parent's environment (HOME) is inherited"
        );
    }

    #[tokio::test]
    async fn stdin_is_null_and_stderr_is_captured() {
        let o = run(
            sh("cat; echo out; echo err >&2; exit 3"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(o.status, Status::Failed { retryable: true }, "{o:?}");
        assert_eq!(o.summary, "exit 3");
        assert_eq!(o.exit_code, Some(3));
        // One pipe for both: exactly the order of writing.
        assert_eq!(o.output_tail, "out\nerr\n");
    }

    #[tokio::test]
    async fn death_by_signal_is_reported() {
        let o = run(sh("kill -TERM $$"), Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Failed { retryable: true }, "{o:?}");
        assert_eq!(o.summary, "killed by signal 15 (SIGTERM)");
        assert_eq!(o.exit_code, None);
    }

    #[tokio::test]
    async fn missing_program_is_a_permanent_failure() {
        let c = Command {
            argv: vec!["/nonexistent/meridian-test-program".into()],
            env: vec![],
            working_dir: None,
        };
        let o = run(c, Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Failed { retryable: false }, "{o:?}");
        assert_eq!(
            o.summary,
            r#"program "/nonexistent/meridian-test-program" not found"#
        );
    }

    #[tokio::test]
    async fn missing_working_dir_is_named() {
        let mut c = sh("true");
        c.working_dir = Some("/nonexistent/meridian-dir".into());
        let o = run(c, Duration::from_secs(5)).await;
        assert_eq!(o.status, Status::Failed { retryable: false }, "{o:?}");
        assert_eq!(
            o.summary,
            r#"working directory "/nonexistent/meridian-dir" does not exist or is not a directory"#
        );
    }

    #[tokio::test]
    async fn non_executable_program_is_a_permanent_failure() {
        // Mode 0644: not runnable, even by root.
        let path =
            std::env::temp_dir().join(format!("meridian-exec-noexec-{}", std::process::id()));
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        let c = Command {
            argv: vec![path.to_string_lossy().into_owned()],
            env: vec![],
            working_dir: None,
        };
        let o = run(c, Duration::from_secs(5)).await;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(o.status, Status::Failed { retryable: false }, "{o:?}");
        assert!(o.summary.contains("permission denied"), "{}", o.summary);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        // The grandchild prints its pid, then both sleep.
        let o = within(
            Duration::from_secs(3),
            run(
                sh("sleep 30 & echo $!; sleep 30"),
                Duration::from_millis(500),
            ),
        )
        .await;
        assert_eq!(o.status, Status::TimedOut, "{o:?}");
        assert_eq!(o.summary, "timed out after 500ms");
        assert_gone_soon(first_pid(&o)).await;
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.cancel();
        });
        let o = within(
            Duration::from_secs(3),
            run_with(
                sh("sleep 30 & echo $!; sleep 30"),
                Duration::from_secs(30),
                cancel,
            ),
        )
        .await;
        assert_eq!(o.status, Status::Cancelled, "{o:?}");
        assert_gone_soon(first_pid(&o)).await;
    }

    #[tokio::test]
    async fn leftovers_of_a_finished_child_are_killed_without_waiting_for_them() {
        // The background sleep holds stdout open: without the group kill, reading to
        // EOF would wait for it.
        let o = within(
            Duration::from_secs(3),
            run(sh("sleep 30 & echo $!"), Duration::from_secs(10)),
        )
        .await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert_gone_soon(first_pid(&o)).await;
    }

    #[tokio::test]
    async fn output_tail_is_bounded_for_a_loud_child() {
        // 1 MiB on stdout, some on stderr, then a marker: only the end is kept.
        let o = run(
            sh("head -c 1048576 /dev/zero | tr '\\0' x; yes e | head -c 65536 >&2; echo END"),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(o.status, Status::Succeeded, "{o:?}");
        assert!(
            o.output_tail.len() <= OUTPUT_TAIL_BYTES_MAX,
            "{}",
            o.output_tail.len()
        );
        assert!(
            o.output_tail.ends_with("e\ne\nEND\n"),
            "{:?}",
            &o.output_tail[o.output_tail.len() - 20..]
        );
    }

    #[tokio::test]
    async fn dropping_the_attempt_kills_the_group() {
        let dir = std::env::temp_dir().join(format!("meridian-exec-drop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let fut = run(sh(&script), Duration::from_secs(30));
        // Give it time to start, then drop the future mid-run.
        let _ = tokio::time::timeout(Duration::from_millis(500), fut).await;
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_gone_soon(pid).await;
    }

    #[test]
    fn exit_statuses_are_classified() {
        let ok = exited(ExitStatus::from_raw(0));
        assert_eq!(
            (ok.status, ok.summary.as_str()),
            (Status::Succeeded, "exit 0")
        );
        let two = exited(ExitStatus::from_raw(2 << 8));
        assert_eq!(two.status, Status::Failed { retryable: true });
        assert_eq!((two.summary.as_str(), two.exit_code), ("exit 2", Some(2)));
        let killed = exited(ExitStatus::from_raw(libc::SIGKILL));
        assert_eq!(killed.summary, "killed by signal 9 (SIGKILL)");
        let rt = exited(ExitStatus::from_raw(libc::SIGRTMIN() + 1));
        assert_eq!(
            rt.summary,
            format!("killed by signal {}", libc::SIGRTMIN() + 1)
        );
        assert_eq!(rt.status, Status::Failed { retryable: true });
    }
}
