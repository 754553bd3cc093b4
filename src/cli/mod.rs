//! The `meridian` command: the clap command tree, logging and runtime setup, and
//! dispatch to the server (`serve`), the benchmark (`bench`) and the client commands
//! (`jobs`, `runs`, `preview`, `status`).
//!
//! Exit codes: 0 on success, 2 for invalid input (a bad flag, or a request the server
//! refused as INVALID_ARGUMENT), 1 for any other failure. Must not hold scheduling
//! logic, and client commands must not touch the store: they speak gRPC only.

pub mod bench;
pub mod client;
pub mod output;
pub mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use self::bench::BenchCmd;
use self::client::{JobsCmd, PreviewArgs, RunsCmd};
use self::serve::ServeArgs;

/// Where client commands connect when neither `--endpoint` nor `MERIDIAN_ENDPOINT`
/// says otherwise.
pub const ENDPOINT_DEFAULT: &str = "http://127.0.0.1:7070";

/// Exit code of a success.
pub const EXIT_OK: u8 = 0;
/// Exit code of any failure other than invalid input.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of invalid input (clap uses it for its own usage errors too).
pub const EXIT_INVALID: u8 = 2;

/// Meridian: a multi-region job scheduler.
#[derive(Parser, Debug)]
#[command(name = "meridian", version, about, propagate_version = true)]
pub struct Cli {
    /// The gRPC endpoint of a Meridian node (client commands).
    #[arg(long, global = true, env = "MERIDIAN_ENDPOINT", default_value = ENDPOINT_DEFAULT)]
    pub endpoint: String,
    /// How client commands print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Output format of client commands.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people, times in local and UTC.
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a node: the embedded store, the scheduler and the gRPC API.
    Serve(ServeArgs),
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// Create, inspect, pause, resume, trigger and delete jobs.
    Jobs {
        #[command(subcommand)]
        cmd: JobsCmd,
    },
    /// Inspect the runs of a job.
    Runs {
        #[command(subcommand)]
        cmd: RunsCmd,
    },
    /// Show the next firings of a schedule in UTC and local time, with DST decisions.
    Preview(PreviewArgs),
    /// Show the node's status: regions, owner term, queues and workers.
    Status,
    /// Deterministic chaos runs of a scenario (simulations/*.toml) in virtual time,
    /// with the guarantees checked; exits 1 on a violation and prints how to replay it.
    Simulate(crate::sim::SimulateArgs),
    /// The cluster: regions and their live nodes, shard owners, epochs, leases.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Regions, nodes, and which node owns which shard (epoch, lease time left).
    Status,
}

impl Cmd {
    /// The log level when `MERIDIAN_LOG` is not set: a server logs its life, a
    /// client command stays quiet unless something is wrong.
    fn default_log(&self) -> &'static str {
        match self {
            Cmd::Serve(_) | Cmd::Bench { .. } => "info",
            Cmd::Simulate(_) => "error",
            _ => "warn",
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Logs go to stderr: stdout carries results (and `serve`'s address line).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for people: files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Parse the command line, run the command, and return its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_INVALID));
        }
    };
    init_logging(cli.command.default_log());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let ctx = client::Ctx {
        endpoint: cli.endpoint,
        output: cli.output,
    };
    let server_side = match cli.command {
        Cmd::Serve(args) => serve::serve(args).await,
        Cmd::Simulate(args) => {
            let json = ctx.output == Output::Json;
            // The simulator builds its own (virtual-time) runtime per seed.
            return match tokio::task::spawn_blocking(move || crate::sim::simulate(args, json)).await
            {
                Ok(Ok(true)) => ExitCode::from(EXIT_OK),
                Ok(Ok(false)) => ExitCode::from(EXIT_FAILURE),
                Ok(Err(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_INVALID)
                }
                Err(e) => {
                    eprintln!("error: the simulation panicked: {e}");
                    ExitCode::from(EXIT_FAILURE)
                }
            };
        }
        Cmd::Bench { cmd } => bench::run(cmd).await,
        Cmd::Jobs { cmd } => return client::finish(client::jobs(&ctx, cmd).await),
        Cmd::Runs { cmd } => return client::finish(client::runs(&ctx, cmd).await),
        Cmd::Preview(args) => return client::finish(client::preview(&ctx, args).await),
        Cmd::Status => return client::finish(client::status(&ctx).await),
        Cmd::Cluster {
            cmd: ClusterCmd::Status,
        } => return client::finish(client::cluster_status(&ctx).await),
    };
    match server_side {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("meridian").chain(args.iter().copied()))
    }

    #[test]
    fn documented_forms_parse() {
        for args in [
            &[
                "jobs", "create", "--region", "local", "--id", "a", "--every", "30s", "--", "true",
            ][..],
            &[
                "jobs",
                "create",
                "--id",
                "a",
                "--cron",
                "0 9 * * MON-FRI",
                "--tz",
                "Europe/Paris",
                "--http",
                "https://example.com/hook",
                "--header",
                "A: b",
                "--overlap",
                "buffer-one",
            ],
            &[
                "jobs",
                "create",
                "--id",
                "a",
                "--at",
                "2027-03-14T02:30",
                "--tz",
                "America/New_York",
                "--noop",
            ],
            &["jobs", "get", "regions/local/jobs/a"],
            &["jobs", "list", "--region", "-", "--page-size", "2", "--all"],
            &["jobs", "pause", "a", "--region", "local"],
            &["jobs", "trigger", "a", "--override-overlap"],
            &[
                "runs",
                "list",
                "--job",
                "regions/local/jobs/a",
                "--limit",
                "5",
                "--output",
                "json",
            ],
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
            &["status"],
        ] {
            parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        let e = parse(&["jobs", "create", "--id", "a", "--every", "5x", "--noop"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(EXIT_INVALID));
        assert!(e.to_string().contains("--every"), "{e}");
        let e = parse(&["jobs", "create", "--id", "a", "--noop"]).unwrap_err();
        assert_eq!(e.exit_code(), i32::from(EXIT_INVALID));
        let e = parse(&[
            "jobs",
            "create",
            "--id",
            "a",
            "--cron",
            "* * * * *",
            "--every",
            "1s",
            "--noop",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), i32::from(EXIT_INVALID));
    }
}
