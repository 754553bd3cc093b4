//! The client commands (`jobs`, `runs`, `preview`, `status`): their flags, turning
//! flags into API requests, calling a node over gRPC, and turning failures into a
//! message and an exit code.
//!
//! Flag values are parsed here (humane durations, RFC 3339 instants, local times),
//! and a bad one is reported naming the flag; every other rule is the server's, so
//! the CLI and the API can never disagree. Must not touch the store or print tables
//! (`output` does).

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::output::Printer;
use super::{EXIT_FAILURE, EXIT_INVALID, EXIT_OK, Output};
use crate::api::pb;
use crate::api::pb::scheduler_client::SchedulerClient;

/// Region assumed when a job is named by its id alone.
pub const REGION_DEFAULT: &str = "local";
/// How long connecting to a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pages `jobs list --all` follows at most (a loop guard, not a product limit).
const LIST_PAGES_MAX: usize = 100_000;
/// Largest response accepted (as the server's limit).
const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest page asked for.
const PAGE_SIZE_MAX: i32 = 1000;

/// What every client command is given.
pub struct Ctx {
    pub endpoint: String,
    pub output: Output,
}

/// Why a client command failed, deciding its message and exit code.
#[derive(Debug)]
pub enum Failure {
    /// Input refused: by the CLI (`field` is the flag) or by the server (`field` is
    /// the request field). Exit 2.
    Invalid(Vec<(String, String)>),
    /// Anything else. Exit 1.
    Other(String),
}

impl Failure {
    fn flag(flag: &str, message: impl Into<String>) -> Self {
        Failure::Invalid(vec![(flag.to_owned(), message.into())])
    }
}

/// Print a failure on stderr and map the outcome to an exit code.
pub fn finish(r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(Failure::Invalid(violations)) => {
            for (field, message) in violations {
                if field.is_empty() {
                    eprintln!("error: {message}");
                } else {
                    eprintln!("error: {field}: {message}");
                }
            }
            ExitCode::from(EXIT_INVALID)
        }
        Err(Failure::Other(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The innermost cause of an error: for a refused connection, "Connection refused"
/// rather than "transport error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn from_status(s: Status, endpoint: &str) -> Failure {
    if let Some(bad) = s.get_details_bad_request()
        && !bad.field_violations.is_empty()
    {
        return Failure::Invalid(
            bad.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect(),
        );
    }
    match s.code() {
        Code::InvalidArgument => Failure::Invalid(vec![(String::new(), s.message().to_owned())]),
        Code::Unavailable if s.message().contains("connect") => Failure::Other(format!(
            "cannot reach meridian at {endpoint}: {}",
            s.message()
        )),
        // These messages say what happened on their own.
        Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
            Failure::Other(s.message().to_owned())
        }
        code => Failure::Other(format!("{} ({code:?})", s.message())),
    }
}

/// A connected client.
pub struct Client {
    inner: SchedulerClient<Channel>,
    endpoint: String,
}

impl Client {
    pub async fn connect(endpoint: &str) -> Result<Self, Failure> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Failure::flag(
                "--endpoint",
                format!("{endpoint:?} is not a url like {}", super::ENDPOINT_DEFAULT),
            ));
        }
        let ep = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| {
                Failure::flag(
                    "--endpoint",
                    format!(
                        "{endpoint:?} is not a url like {}: {e}",
                        super::ENDPOINT_DEFAULT
                    ),
                )
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let channel = ep.connect().await.map_err(|e| {
            Failure::Other(format!(
                "cannot connect to meridian at {endpoint}: {} (is `meridian serve` running \
                 there? set --endpoint or MERIDIAN_ENDPOINT)",
                root_cause(&e)
            ))
        })?;
        Ok(Self {
            inner: SchedulerClient::new(channel).max_decoding_message_size(MESSAGE_BYTES_MAX),
            endpoint: endpoint.to_owned(),
        })
    }

    fn fail(&self, s: Status) -> Failure {
        from_status(s, &self.endpoint)
    }
}

// ------------------------------------------------------------------ flag values

/// A humane duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`,
/// `d` (`30s`, `5m`, `1h30m`, `1d`, `250ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("is empty; write e.g. 30s, 5m, 1h30m or 1d".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{s:?} is not a duration like 30s, 5m, 1h30m or 1d"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "" => return Err(format!("{s:?} needs a unit (ms, s, m, h or d), e.g. {n}s")),
            u => {
                return Err(format!(
                    "{s:?} has an unknown unit {u:?} (use ms, s, m, h or d)"
                ));
            }
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| format!("{s:?} is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{s:?} is too large"))?;
    }
    Ok(total)
}

/// An RFC 3339 instant with an offset or `Z`.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::<FixedOffset>::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is not an RFC 3339 instant like 2026-03-07T00:00:00Z"))
}

/// When a one-shot job fires.
#[derive(Clone, Debug, PartialEq)]
pub enum At {
    /// An instant (RFC 3339 with offset or `Z`).
    Instant(DateTime<Utc>),
    /// A wall-clock time in the job's zone.
    Local(NaiveDateTime),
}

/// `--at`: RFC 3339 with an offset (an instant), or `YYYY-MM-DDTHH:MM[:SS]` (a local
/// time in `--tz`).
pub fn parse_at(s: &str) -> Result<At, String> {
    if let Ok(t) = DateTime::<FixedOffset>::parse_from_rfc3339(s) {
        return Ok(At::Instant(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(At::Local(t));
        }
    }
    Err(format!(
        "{s:?} is neither an RFC 3339 instant (2027-03-14T07:30:00Z) nor a local time \
         (2027-03-14T02:30)"
    ))
}

fn parse_pair(s: &str, sep: char, what: &str) -> Result<(String, String), String> {
    match s.split_once(sep) {
        Some((k, v)) if !k.trim().is_empty() => {
            Ok((k.trim().to_owned(), v.trim_start().to_owned()))
        }
        _ => Err(format!("{s:?} is not {what}")),
    }
}

/// `--header NAME:VALUE`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    parse_pair(s, ':', "NAME:VALUE")
}

/// `--env NAME=VALUE`, `--label KEY=VALUE`.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn dur(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A job's full name from a name or an id plus region.
pub fn job_name(name_or_id: &str, region: &str) -> String {
    if name_or_id.contains('/') {
        name_or_id.to_owned()
    } else {
        format!("regions/{region}/jobs/{name_or_id}")
    }
}

// ------------------------------------------------------------------ flags

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapArg {
    Allow,
    Skip,
    BufferOne,
    CancelPrevious,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstGapArg {
    /// Fire once at the first instant after the gap.
    Shift,
    /// Do not fire.
    Skip,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DstFoldArg {
    First,
    Last,
    Both,
}

/// When a schedule fires: shared by `jobs create` and `preview`.
#[derive(Args, Debug, Clone)]
pub struct ScheduleFlags {
    /// IANA time zone the schedule is written in (default UTC).
    #[arg(long)]
    pub tz: Option<String>,
    /// What a local time that does not exist (spring forward) does.
    #[arg(long, value_enum)]
    pub dst_gap: Option<DstGapArg>,
    /// What a local time that occurs twice (fall back) does.
    #[arg(long, value_enum)]
    pub dst_fold: Option<DstFoldArg>,
    /// Interval anchor (RFC 3339); default the job's creation (or the preview's start).
    #[arg(long, value_parser = parse_instant, requires = "every")]
    pub anchor: Option<DateTime<Utc>>,
    /// No firing before this instant (RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    pub start: Option<DateTime<Utc>>,
    /// No firing at or after this instant (RFC 3339).
    #[arg(long, value_parser = parse_instant)]
    pub end: Option<DateTime<Utc>>,
}

fn schedule(
    cron: Option<String>,
    every: Option<Duration>,
    at: Option<At>,
    f: &ScheduleFlags,
) -> pb::Schedule {
    let kind = if let Some(expr) = cron {
        Some(pb::schedule::Kind::Cron(expr))
    } else if let Some(every) = every {
        Some(pb::schedule::Kind::Interval(dur(every)))
    } else {
        at.map(|at| {
            pb::schedule::Kind::Once(pb::Once {
                at: Some(match at {
                    At::Instant(t) => pb::once::At::UtcTime(ts(t)),
                    At::Local(t) => {
                        pb::once::At::LocalTime(t.format("%Y-%m-%dT%H:%M:%S").to_string())
                    }
                }),
            })
        })
    };
    pb::Schedule {
        kind,
        interval_anchor: f.anchor.map(ts),
        time_zone: f.tz.clone().unwrap_or_default(),
        dst_gap: match f.dst_gap {
            None => pb::DstGap::Unspecified,
            Some(DstGapArg::Shift) => pb::DstGap::Shift,
            Some(DstGapArg::Skip) => pb::DstGap::Skip,
        } as i32,
        dst_fold: match f.dst_fold {
            None => pb::DstFold::Unspecified,
            Some(DstFoldArg::First) => pb::DstFold::First,
            Some(DstFoldArg::Last) => pb::DstFold::Last,
            Some(DstFoldArg::Both) => pb::DstFold::Both,
        } as i32,
        start_time: f.start.map(ts),
        end_time: f.end.map(ts),
    }
}

/// `meridian jobs create`.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("when").required(true).args(["cron", "every", "at"])))]
#[command(group(ArgGroup::new("what").required(true).args(["http", "argv", "noop"])))]
pub struct CreateArgs {
    /// The job's region.
    #[arg(long, default_value = REGION_DEFAULT)]
    pub region: String,
    /// The job's id: lowercase letters, digits and '-', starting with a letter.
    #[arg(long)]
    pub id: String,
    /// A cron expression: 5 fields, or 6 with seconds first.
    #[arg(long)]
    pub cron: Option<String>,
    /// Fire every this long (30s, 5m, 1h30m, 1d), ignoring DST.
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Fire once: an RFC 3339 instant, or a local YYYY-MM-DDTHH:MM[:SS] in --tz.
    #[arg(long, value_parser = parse_at)]
    pub at: Option<At>,
    #[command(flatten)]
    pub schedule: ScheduleFlags,

    /// Call this URL (http or https).
    #[arg(long)]
    pub http: Option<String>,
    /// HTTP method (default POST).
    #[arg(long, requires = "http")]
    pub method: Option<String>,
    /// An HTTP header NAME:VALUE (repeatable).
    #[arg(long = "header", requires = "http", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// HTTP request body.
    #[arg(long, requires = "http")]
    pub body: Option<String>,
    /// Do nothing (for tests and benchmarks).
    #[arg(long)]
    pub noop: bool,
    /// An environment variable NAME=VALUE for the command (repeatable).
    #[arg(long = "env", requires = "argv", value_parser = parse_assignment)]
    pub env: Vec<(String, String)>,
    /// Absolute directory the command runs in.
    #[arg(long, requires = "argv")]
    pub workdir: Option<String>,
    /// The command to run, after `--`: PROGRAM ARGS... (no shell).
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    pub argv: Vec<String>,

    /// What a firing does while the previous run is still going.
    #[arg(long, value_enum)]
    pub overlap: Option<OverlapArg>,
    /// Late firings older than this are recorded missed.
    #[arg(long, value_parser = parse_duration)]
    pub catchup_window: Option<Duration>,
    /// At most this many late firings run.
    #[arg(long)]
    pub catchup_max: Option<u32>,
    /// Run only the latest of several late firings.
    #[arg(long)]
    pub coalesce: bool,
    /// Attempts in all (1 = no retry).
    #[arg(long)]
    pub attempts: Option<u32>,
    /// Delay before the first retry.
    #[arg(long, value_parser = parse_duration)]
    pub backoff: Option<Duration>,
    /// Longest delay between retries.
    #[arg(long, value_parser = parse_duration)]
    pub backoff_max: Option<Duration>,
    /// Longest one attempt may run.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Spread dispatch over a window by a fixed per-job offset.
    #[arg(long, value_parser = parse_duration)]
    pub spread: Option<Duration>,
    /// When the job's region has no live node: `pause` (record firings paused, the
    /// default) or `failover:REGION` (run them there meanwhile).
    #[arg(long, value_parser = parse_region_loss)]
    pub region_loss: Option<pb::RegionLossPolicy>,

    #[arg(long)]
    pub description: Option<String>,
    /// A label KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_assignment)]
    pub labels: Vec<(String, String)>,
    /// Makes a retried create return the job the first call created.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Check everything, store nothing.
    #[arg(long)]
    pub validate_only: bool,
}

/// `pause` or `failover:REGION`.
fn parse_region_loss(s: &str) -> Result<pb::RegionLossPolicy, String> {
    match s.split_once(':') {
        None if s == "pause" => Ok(pb::RegionLossPolicy {
            action: pb::RegionLossAction::Pause as i32,
            failover_region: String::new(),
        }),
        Some(("failover", region)) if !region.is_empty() => Ok(pb::RegionLossPolicy {
            action: pb::RegionLossAction::Failover as i32,
            failover_region: region.to_owned(),
        }),
        _ => Err(format!("{s:?}: expected `pause` or `failover:REGION`")),
    }
}

impl CreateArgs {
    fn request(self) -> pb::CreateJobRequest {
        let action = if let Some(url) = self.http {
            pb::action::Kind::Http(pb::HttpAction {
                method: self.method.unwrap_or_default(),
                url,
                headers: self
                    .headers
                    .into_iter()
                    .map(|(name, value)| pb::Header { name, value })
                    .collect(),
                body: self.body.unwrap_or_default(),
            })
        } else if self.noop {
            pb::action::Kind::Noop(pb::NoopAction {})
        } else {
            pb::action::Kind::Command(pb::CommandAction {
                argv: self.argv,
                env: self.env.into_iter().collect(),
                working_dir: self.workdir.unwrap_or_default(),
            })
        };
        let retry = (self.attempts.is_some()
            || self.backoff.is_some()
            || self.backoff_max.is_some()
            || self.timeout.is_some())
        .then(|| pb::RetryPolicy {
            attempts_max: self.attempts,
            backoff_initial: self.backoff.map(dur),
            backoff_max: self.backoff_max.map(dur),
            timeout: self.timeout.map(dur),
            ..Default::default()
        });
        let catchup = (self.catchup_window.is_some()
            || self.catchup_max.is_some()
            || self.coalesce)
            .then(|| pb::CatchupPolicy {
                window: self.catchup_window.map(dur),
                max: self.catchup_max,
                coalesce: self.coalesce,
            });
        let policy = pb::Policy {
            overlap: match self.overlap {
                None => pb::Overlap::Unspecified,
                Some(OverlapArg::Allow) => pb::Overlap::Allow,
                Some(OverlapArg::Skip) => pb::Overlap::Skip,
                Some(OverlapArg::BufferOne) => pb::Overlap::BufferOne,
                Some(OverlapArg::CancelPrevious) => pb::Overlap::CancelPrevious,
            } as i32,
            catchup,
            retry,
            spread_window: self.spread.map(dur),
            region_loss: self.region_loss,
        };
        pb::CreateJobRequest {
            parent: format!("regions/{}", self.region),
            job_id: self.id,
            job: Some(pb::Job {
                description: self.description.unwrap_or_default(),
                labels: self.labels.into_iter().collect(),
                schedule: Some(schedule(self.cron, self.every, self.at, &self.schedule)),
                action: Some(pb::Action { kind: Some(action) }),
                policy: Some(policy),
                ..Default::default()
            }),
            request_id: self.request_id.unwrap_or_default(),
            validate_only: self.validate_only,
        }
    }
}

/// A job named by its full name or its id (with `--region`).
#[derive(Args, Debug, Clone)]
pub struct JobRef {
    /// regions/R/jobs/ID, or an ID in --region.
    pub name: String,
    /// Region of a job given by id.
    #[arg(long, default_value = REGION_DEFAULT)]
    pub region: String,
}

impl JobRef {
    fn name(&self) -> String {
        job_name(&self.name, &self.region)
    }
}

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// Create a job.
    Create(Box<CreateArgs>),
    /// Show a job.
    Get(JobRef),
    /// List jobs, oldest first.
    List {
        /// A region, or - for every region.
        #[arg(long, default_value = "-")]
        region: String,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        /// Continue a listing from a previous page.
        #[arg(long)]
        page_token: Option<String>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Delete a job and its runs.
    Delete {
        #[command(flatten)]
        job: JobRef,
        /// Delete only if the job is still at this etag.
        #[arg(long)]
        etag: Option<String>,
    },
    /// Stop firing a job (firings due meanwhile are recorded paused).
    Pause {
        #[command(flatten)]
        job: JobRef,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Fire a paused job again.
    Resume {
        #[command(flatten)]
        job: JobRef,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Fire a job now, once.
    Trigger {
        #[command(flatten)]
        job: JobRef,
        /// Start even if the overlap policy would skip it.
        #[arg(long)]
        override_overlap: bool,
        /// Makes a retried trigger return the same run.
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// List a job's runs, newest scheduled first.
    List {
        /// regions/R/jobs/ID, or an ID in --region.
        #[arg(long)]
        job: String,
        #[arg(long, default_value = REGION_DEFAULT)]
        region: String,
        /// Runs to show at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one run with its attempts.
    Get {
        /// regions/R/jobs/ID/runs/RUN, or a RUN id with --job.
        name: String,
        /// The run's job (when NAME is a run id).
        #[arg(long)]
        job: Option<String>,
        #[arg(long, default_value = REGION_DEFAULT)]
        region: String,
    },
}

/// `meridian preview`.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("source").required(true).args(["expr", "every", "at", "job"])))]
pub struct PreviewArgs {
    /// A cron expression.
    pub expr: Option<String>,
    /// An interval instead (30s, 5m, 1h30m, 1d).
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// A one-shot time instead.
    #[arg(long, value_parser = parse_at)]
    pub at: Option<At>,
    /// An existing job's schedule instead (regions/R/jobs/ID, or an ID in --region).
    #[arg(long)]
    pub job: Option<String>,
    /// Region of a job given by id.
    #[arg(long, default_value = REGION_DEFAULT, requires = "job")]
    pub region: String,
    #[command(flatten)]
    pub schedule: ScheduleFlags,
    /// Firings to show.
    #[arg(long, default_value_t = 10)]
    pub count: i32,
    /// Firings strictly after this instant (RFC 3339); default now.
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
}

// ------------------------------------------------------------------ commands

pub async fn jobs(ctx: &Ctx, cmd: JobsCmd) -> Result<(), Failure> {
    let mut c = Client::connect(&ctx.endpoint).await?;
    let p = Printer::new(ctx.output);
    match cmd {
        JobsCmd::Create(args) => {
            let job = c
                .inner
                .create_job(args.request())
                .await
                .map_err(|s| c.fail(s))?
                .into_inner();
            for w in &job.warnings {
                eprintln!("warning: {w}");
            }
            p.job(&job);
        }
        JobsCmd::Get(job) => {
            let req = pb::GetJobRequest { name: job.name() };
            let job = c.inner.get_job(req).await.map_err(|s| c.fail(s))?;
            p.job(job.get_ref());
        }
        JobsCmd::List {
            region,
            page_size,
            page_token,
            all,
        } => {
            if page_size < 0 {
                return Err(Failure::flag("--page-size", "must not be negative"));
            }
            let parent = format!("regions/{region}");
            let mut token = page_token.unwrap_or_default();
            let mut jobs = Vec::new();
            for _ in 0..LIST_PAGES_MAX {
                let req = pb::ListJobsRequest {
                    parent: parent.clone(),
                    page_size: page_size.min(PAGE_SIZE_MAX),
                    page_token: token,
                };
                let page = c
                    .inner
                    .list_jobs(req)
                    .await
                    .map_err(|s| c.fail(s))?
                    .into_inner();
                jobs.extend(page.jobs);
                token = page.next_page_token;
                if !all || token.is_empty() {
                    break;
                }
            }
            p.jobs(&jobs);
            if !all && !token.is_empty() {
                eprintln!("more: --page-token {token}");
            }
        }
        JobsCmd::Delete { job, etag } => {
            let name = job.name();
            let req = pb::DeleteJobRequest {
                name: name.clone(),
                etag: etag.unwrap_or_default(),
            };
            c.inner.delete_job(req).await.map_err(|s| c.fail(s))?;
            p.deleted(&name);
        }
        JobsCmd::Pause { job, etag } => {
            let req = pb::PauseJobRequest {
                name: job.name(),
                etag: etag.unwrap_or_default(),
            };
            let job = c.inner.pause_job(req).await.map_err(|s| c.fail(s))?;
            p.job(job.get_ref());
        }
        JobsCmd::Resume { job, etag } => {
            let req = pb::ResumeJobRequest {
                name: job.name(),
                etag: etag.unwrap_or_default(),
            };
            let job = c.inner.resume_job(req).await.map_err(|s| c.fail(s))?;
            p.job(job.get_ref());
        }
        JobsCmd::Trigger {
            job,
            override_overlap,
            request_id,
        } => {
            let req = pb::TriggerJobRequest {
                name: job.name(),
                override_overlap,
                request_id: request_id.unwrap_or_default(),
            };
            let run = c.inner.trigger_job(req).await.map_err(|s| c.fail(s))?;
            p.run(run.get_ref());
        }
    }
    Ok(())
}

pub async fn runs(ctx: &Ctx, cmd: RunsCmd) -> Result<(), Failure> {
    let mut c = Client::connect(&ctx.endpoint).await?;
    let p = Printer::new(ctx.output);
    match cmd {
        RunsCmd::List { job, region, limit } => {
            let parent = job_name(&job, &region);
            let mut runs = Vec::new();
            let mut token = String::new();
            while runs.len() < limit {
                let want = i32::try_from(limit - runs.len()).unwrap_or(PAGE_SIZE_MAX);
                let req = pb::ListRunsRequest {
                    parent: parent.clone(),
                    page_size: want.min(PAGE_SIZE_MAX),
                    page_token: token,
                };
                let page = c
                    .inner
                    .list_runs(req)
                    .await
                    .map_err(|s| c.fail(s))?
                    .into_inner();
                runs.extend(page.runs);
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            runs.truncate(limit);
            p.runs(&runs);
        }
        RunsCmd::Get { name, job, region } => {
            let name = match (name.contains('/'), job) {
                (true, _) => name,
                (false, Some(job)) => format!("{}/runs/{name}", job_name(&job, &region)),
                (false, None) => {
                    return Err(Failure::flag(
                        "--job",
                        "is required when the run is given by its id alone",
                    ));
                }
            };
            let run = c
                .inner
                .get_run(pb::GetRunRequest { name })
                .await
                .map_err(|s| c.fail(s))?;
            p.run(run.get_ref());
        }
    }
    Ok(())
}

pub async fn preview(ctx: &Ctx, args: PreviewArgs) -> Result<(), Failure> {
    let source = match args.job {
        Some(job) => pb::preview_schedule_request::Source::Job(job_name(&job, &args.region)),
        None => pb::preview_schedule_request::Source::Schedule(schedule(
            args.expr,
            args.every,
            args.at,
            &args.schedule,
        )),
    };
    if args.count < 0 {
        return Err(Failure::flag("--count", "must not be negative"));
    }
    let mut c = Client::connect(&ctx.endpoint).await?;
    let req = pb::PreviewScheduleRequest {
        source: Some(source),
        start_time: args.from.map(ts),
        count: args.count,
    };
    let resp = c
        .inner
        .preview_schedule(req)
        .await
        .map_err(|s| c.fail(s))?
        .into_inner();
    for w in &resp.warnings {
        eprintln!("warning: {w}");
    }
    Printer::new(ctx.output).firings(&resp.firings);
    Ok(())
}

pub async fn status(ctx: &Ctx) -> Result<(), Failure> {
    let mut c = Client::connect(&ctx.endpoint).await?;
    let s = c
        .inner
        .get_node_status(pb::GetNodeStatusRequest {})
        .await
        .map_err(|s| c.fail(s))?;
    Printer::new(ctx.output).status(s.get_ref());
    Ok(())
}

pub async fn cluster_status(ctx: &Ctx) -> Result<(), Failure> {
    let mut c = Client::connect(&ctx.endpoint).await?;
    let s = c
        .inner
        .get_cluster_status(pb::GetClusterStatusRequest {})
        .await
        .map_err(|s| c.fail(s))?;
    Printer::new(ctx.output).cluster(s.get_ref());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humane_durations() {
        for (s, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("1h30m", 5400),
            ("1d", 86_400),
            ("2h", 7200),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in [
            "",
            "30",
            "5x",
            "m5",
            "1h 30m",
            "-5s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn at_is_an_instant_or_a_local_time() {
        assert!(matches!(
            parse_at("2027-03-14T07:30:00Z"),
            Ok(At::Instant(_))
        ));
        assert!(matches!(
            parse_at("2027-03-14T02:30:00-05:00"),
            Ok(At::Instant(_))
        ));
        let At::Local(t) = parse_at("2027-03-14T02:30").unwrap() else {
            panic!("local")
        };
        assert_eq!(
            t.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "2027-03-14T02:30:00"
        );
        assert!(parse_at("tomorrow").is_err());
    }

    #[test]
    fn names_and_pairs() {
        assert_eq!(job_name("a", "eu"), "regions/eu/jobs/a");
        assert_eq!(job_name("regions/x/jobs/a", "eu"), "regions/x/jobs/a");
        assert_eq!(
            parse_header("X-A: b c").unwrap(),
            ("X-A".into(), "b c".into())
        );
        assert!(parse_header("nocolon").is_err());
        assert_eq!(
            parse_assignment("A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert!(parse_assignment("=x").is_err());
    }

    #[test]
    fn field_violations_become_invalid_input() {
        let s = Status::with_error_details(
            Code::InvalidArgument,
            "job.schedule.cron: bad",
            tonic_types::ErrorDetails::with_bad_request_violation("job.schedule.cron", "bad"),
        );
        match from_status(s, "http://x") {
            Failure::Invalid(v) => assert_eq!(v, vec![("job.schedule.cron".into(), "bad".into())]),
            other => panic!("{other:?}"),
        }
        let s = Status::not_found("gone");
        assert!(matches!(from_status(s, "http://x"), Failure::Other(_)));
    }
}
