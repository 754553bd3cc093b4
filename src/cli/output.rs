//! How client commands print results: aligned tables for people (times in local and
//! UTC) and JSON for programs. The JSON shapes are a contract for scripts: times are
//! RFC 3339 (`..._time` in UTC with `Z`, `..._local` with the zone's offset), enums are
//! lowercase snake_case names, durations are whole `_ms`.
//!
//! Must not call the server or decide anything: it renders what it is given.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::Output;
use crate::api::pb;

/// Prints results in one format.
pub struct Printer {
    output: Output,
}

// ------------------------------------------------------------------ values

/// A proto timestamp as RFC 3339 UTC with `Z`.
pub fn utc(t: Option<&prost_types::Timestamp>) -> Option<String> {
    let t = t?;
    DateTime::<Utc>::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn time_utc(t: Option<&pb::Time>) -> Option<String> {
    utc(t?.utc.as_ref())
}

fn time_local(t: Option<&pb::Time>) -> Option<String> {
    t.map(|t| t.local.clone())
}

fn duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    let d = d?;
    Some(Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    ))
}

fn ms(d: Option<&prost_types::Duration>) -> Option<u64> {
    duration(d).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds with microsecond precision: lateness is usually well under 1 ms.
fn ms_precise(d: Option<&prost_types::Duration>) -> Option<f64> {
    duration(d).map(|d| d.as_micros() as f64 / 1000.0)
}

/// `1h30m`, `30s`, `250ms`, `0s`: the inverse of the CLI's duration flags.
pub fn human(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".into();
    }
    if total_ms < 1000 || !total_ms.is_multiple_of(1000) && total_ms < 60_000 {
        return format!("{total_ms}ms");
    }
    let mut s = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            let _ = write!(out, "{}{unit}", s / len);
            s %= len;
        }
    }
    out
}

/// The lowercase name of a proto enum value: `RUN_STATE_WORKER_LOST` -> `worker_lost`.
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn run_state(v: i32) -> String {
    pb::RunState::try_from(v).map_or_else(
        |_| v.to_string(),
        |s| enum_name(s.as_str_name(), "RUN_STATE_"),
    )
}

pub fn attempt_status(v: i32) -> String {
    match pb::AttemptStatus::try_from(v) {
        Ok(pb::AttemptStatus::Unspecified) => "running".into(),
        Ok(s) => enum_name(s.as_str_name(), "ATTEMPT_STATUS_"),
        Err(_) => v.to_string(),
    }
}

pub fn dst_decision(v: i32) -> String {
    pb::DstDecision::try_from(v).map_or_else(
        |_| v.to_string(),
        |s| enum_name(s.as_str_name(), "DST_DECISION_"),
    )
}

fn overlap(v: i32) -> String {
    match pb::Overlap::try_from(v) {
        Ok(pb::Overlap::Unspecified) => "skip".into(),
        Ok(o) => enum_name(o.as_str_name(), "OVERLAP_"),
        Err(_) => v.to_string(),
    }
}

fn dst_gap(v: i32) -> String {
    match pb::DstGap::try_from(v) {
        Ok(pb::DstGap::Unspecified) => "shift".into(),
        Ok(g) => enum_name(g.as_str_name(), "DST_GAP_"),
        Err(_) => v.to_string(),
    }
}

fn dst_fold(v: i32) -> String {
    match pb::DstFold::try_from(v) {
        Ok(pb::DstFold::Unspecified) => "first".into(),
        Ok(f) => enum_name(f.as_str_name(), "DST_FOLD_"),
        Err(_) => v.to_string(),
    }
}

// ------------------------------------------------------------------ JSON

pub fn time_json(t: Option<&pb::Time>) -> Value {
    match t {
        None => Value::Null,
        Some(t) => json!({
            "utc": utc(t.utc.as_ref()),
            "local": t.local,
            "time_zone": t.time_zone,
        }),
    }
}

pub fn firing_json(f: &pb::Firing) -> Value {
    let t = f.time.as_ref();
    json!({
        "utc": time_utc(t),
        "local": time_local(t),
        "time_zone": t.map(|t| t.time_zone.clone()),
        "dst_decision": dst_decision(f.dst_decision),
    })
}

fn schedule_json(s: &pb::Schedule) -> Value {
    let mut v = json!({
        "time_zone": s.time_zone,
        "dst_gap": dst_gap(s.dst_gap),
        "dst_fold": dst_fold(s.dst_fold),
        "start_time": utc(s.start_time.as_ref()),
        "end_time": utc(s.end_time.as_ref()),
    });
    let o = v.as_object_mut().expect("an object");
    match &s.kind {
        Some(pb::schedule::Kind::Cron(expr)) => {
            o.insert("cron".into(), json!(expr));
        }
        Some(pb::schedule::Kind::Interval(d)) => {
            o.insert("interval_ms".into(), json!(ms(Some(d))));
            o.insert(
                "interval_anchor".into(),
                json!(utc(s.interval_anchor.as_ref())),
            );
        }
        Some(pb::schedule::Kind::Once(once)) => match &once.at {
            Some(pb::once::At::LocalTime(t)) => {
                o.insert("once_local".into(), json!(t));
            }
            Some(pb::once::At::UtcTime(t)) => {
                o.insert("once_utc".into(), json!(utc(Some(t))));
            }
            None => {}
        },
        None => {}
    }
    v
}

fn action_json(a: Option<&pb::Action>) -> Value {
    match a.and_then(|a| a.kind.as_ref()) {
        Some(pb::action::Kind::Http(h)) => json!({"http": {
            "method": h.method,
            "url": h.url,
            "headers": h.headers.iter().map(|h| json!({"name": h.name, "value": h.value})).collect::<Vec<_>>(),
            "body": h.body,
        }}),
        Some(pb::action::Kind::Command(c)) => {
            let env: std::collections::BTreeMap<_, _> = c.env.iter().collect();
            json!({"command": {"argv": c.argv, "env": env, "working_dir": c.working_dir}})
        }
        Some(pb::action::Kind::Noop(_)) => json!({"noop": {}}),
        None => Value::Null,
    }
}

fn policy_json(p: Option<&pb::Policy>) -> Value {
    let Some(p) = p else { return Value::Null };
    let c = p.catchup.unwrap_or_default();
    let r = p.retry.unwrap_or_default();
    json!({
        "overlap": overlap(p.overlap),
        "catchup": {
            "window_ms": ms(c.window.as_ref()),
            "max": c.max,
            "coalesce": c.coalesce,
        },
        "retry": {
            "attempts_max": r.attempts_max,
            "backoff_initial_ms": ms(r.backoff_initial.as_ref()),
            "backoff_max_ms": ms(r.backoff_max.as_ref()),
            "backoff_multiplier": r.backoff_multiplier,
            "jitter": r.jitter,
            "timeout_ms": ms(r.timeout.as_ref()),
        },
        "spread_window_ms": ms(p.spread_window.as_ref()).unwrap_or(0),
    })
}

pub fn job_json(j: &pb::Job) -> Value {
    let labels: std::collections::BTreeMap<_, _> = j.labels.iter().collect();
    json!({
        "name": j.name,
        "uid": j.uid,
        "description": j.description,
        "labels": labels,
        "schedule": j.schedule.as_ref().map(schedule_json),
        "action": action_json(j.action.as_ref()),
        "policy": policy_json(j.policy.as_ref()),
        "paused": j.paused,
        "create_time": utc(j.create_time.as_ref()),
        "update_time": utc(j.update_time.as_ref()),
        "etag": j.etag,
        "tzdb_version": j.tzdb_version,
        "warnings": j.warnings,
        "next_firing": j.next_firing.as_ref().map(firing_json),
    })
}

fn attempt_json(a: &pb::Attempt) -> Value {
    json!({
        "number": a.number,
        "status": attempt_status(a.status),
        "node": a.node,
        "epoch": a.epoch,
        "start_time": time_utc(a.start_time.as_ref()),
        "start_time_local": time_local(a.start_time.as_ref()),
        "end_time": time_utc(a.end_time.as_ref()),
        "end_time_local": time_local(a.end_time.as_ref()),
        "lateness_ms": ms_precise(a.lateness.as_ref()),
        "summary": a.summary,
        "exit_code": a.exit_code,
        "http_status": a.http_status,
        "output_tail": a.output_tail,
    })
}

pub fn run_json(r: &pb::Run) -> Value {
    json!({
        "name": r.name,
        "firing_id": r.firing_id,
        "job": r.job,
        "scheduled_time": time_utc(r.scheduled_time.as_ref()),
        "scheduled_time_local": time_local(r.scheduled_time.as_ref()),
        "time_zone": r.scheduled_time.as_ref().map(|t| t.time_zone.clone()),
        "due_time": time_utc(r.due_time.as_ref()),
        "state": run_state(r.state),
        "reason": r.reason,
        "trigger": r.trigger,
        "epoch": r.epoch,
        "attempts": r.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        "next_attempt_time": time_utc(r.next_attempt_time.as_ref()),
        "lateness_ms": ms_precise(r.lateness.as_ref()),
        "missed_count": r.missed_count,
        "missed_until": time_utc(r.missed_until.as_ref()),
        "create_time": utc(r.create_time.as_ref()),
        "update_time": utc(r.update_time.as_ref()),
    })
}

pub fn status_json(s: &pb::NodeStatus) -> Value {
    json!({
        "node": s.node,
        "version": s.version,
        "regions": s.regions,
        "epoch": s.epoch,
        "jobs_indexed": s.jobs_indexed,
        "next_due": time_utc(s.next_due.as_ref()),
        "pending_dispatches": s.pending_dispatches,
        "clock": clock_json(s.clock.as_ref()),
        "region_status": s.region_status.iter().map(|r| json!({
            "region": r.region,
            "workers": r.workers,
            "busy": r.busy,
            "waiting": r.waiting,
            "started": r.started,
            "succeeded": r.succeeded,
            "failed": r.failed,
            "skipped": r.skipped,
            "workers_lost": r.workers_lost,
            "refused_stale_epoch": r.refused_stale_epoch,
        })).collect::<Vec<_>>(),
    })
}

pub fn clock_json(c: Option<&pb::ClockStatus>) -> Value {
    let Some(c) = c else { return Value::Null };
    json!({
        "gate": if c.gate_open { "open" } else { "closed" },
        "reason": c.reason,
        "since": utc(c.since.as_ref()),
        "offset_us": c.offset_us,
        "bound_us": c.bound_us,
        "sources": c.sources,
        "no_source": c.no_source,
        "jumps": c.jumps,
    })
}

/// `open`, `closed (reason)`, or `?` when the node did not say.
fn gate_text(c: Option<&pb::ClockStatus>) -> String {
    match c {
        None => "?".into(),
        Some(c) if c.gate_open && c.no_source => "open (no source)".into(),
        Some(c) if c.gate_open => "open".into(),
        Some(c) => format!("closed ({})", c.reason),
    }
}

/// Offset ± bound in milliseconds.
fn skew_text(c: Option<&pb::ClockStatus>) -> String {
    match c {
        Some(c) if !c.no_source => format!(
            "{:+.1} ± {:.1} ms",
            c.offset_us as f64 / 1000.0,
            c.bound_us as f64 / 1000.0
        ),
        _ => "-".into(),
    }
}

pub fn cluster_json(s: &pb::ClusterStatus) -> Value {
    json!({
        "mode": s.mode,
        "answered_by": s.answered_by,
        "regions": s.regions.iter().map(|r| json!({
            "name": r.name,
            "live": r.live,
            "nodes": r.nodes,
        })).collect::<Vec<_>>(),
        "nodes": s.nodes.iter().map(|n| json!({
            "node": n.node,
            "regions": n.regions,
            "endpoint": n.endpoint,
            "clock": clock_json(n.clock.as_ref()),
        })).collect::<Vec<_>>(),
        "shards": s.shards.iter().map(|o| json!({
            "shard": o.shard,
            "node": (!o.node.is_empty()).then_some(&o.node),
            "epoch": o.epoch,
            "lease_left_ms": o.lease_left.as_ref().map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000),
        })).collect::<Vec<_>>(),
    })
}

// ------------------------------------------------------------------ tables

/// Left-aligned columns separated by two spaces, a header row first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines with the values aligned.
fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (k, v) in pairs {
        let _ = writeln!(out, "{:<w$} {v}", format!("{k}:"));
    }
    out
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

fn schedule_summary(s: Option<&pb::Schedule>) -> String {
    let Some(s) = s else { return "-".into() };
    match &s.kind {
        Some(pb::schedule::Kind::Cron(expr)) => format!("cron {expr}"),
        Some(pb::schedule::Kind::Interval(d)) => {
            format!("every {}", human(duration(Some(d)).unwrap_or_default()))
        }
        Some(pb::schedule::Kind::Once(o)) => match &o.at {
            Some(pb::once::At::LocalTime(t)) => format!("once {t}"),
            Some(pb::once::At::UtcTime(t)) => format!("once {}", or_dash(utc(Some(t)))),
            None => "once".into(),
        },
        None => "-".into(),
    }
}

fn action_summary(a: Option<&pb::Action>) -> String {
    match a.and_then(|a| a.kind.as_ref()) {
        Some(pb::action::Kind::Http(h)) => format!("{} {}", h.method, h.url),
        Some(pb::action::Kind::Command(c)) => c.argv.join(" "),
        Some(pb::action::Kind::Noop(_)) => "noop".into(),
        None => "-".into(),
    }
}

fn local_and_utc(t: Option<&pb::Time>) -> String {
    match t {
        None => "-".into(),
        Some(t) => format!("{} ({})", t.local, or_dash(utc(t.utc.as_ref()))),
    }
}

fn lateness(d: Option<&prost_types::Duration>) -> String {
    duration(d).map_or_else(
        || "-".into(),
        |d| format!("{:.3} ms", d.as_micros() as f64 / 1000.0),
    )
}

fn run_rows(runs: &[pb::Run]) -> Vec<Vec<String>> {
    runs.iter()
        .map(|r| {
            let t = r.scheduled_time.as_ref();
            let note = if !r.reason.is_empty() {
                r.reason.clone()
            } else {
                r.attempts
                    .last()
                    .map(|a| a.summary.clone())
                    .unwrap_or_default()
            };
            vec![
                r.firing_id.clone(),
                or_dash(time_local(t)),
                or_dash(time_utc(t)),
                run_state(r.state),
                r.trigger.clone(),
                r.attempts.len().to_string(),
                lateness(r.lateness.as_ref()),
                note,
            ]
        })
        .collect()
}

impl Printer {
    pub fn new(output: Output) -> Self {
        Self { output }
    }

    fn json(&self, v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("values serialize")
        );
    }

    pub fn job(&self, j: &pb::Job) {
        if self.output == Output::Json {
            return self.json(&job_json(j));
        }
        let s = j.schedule.as_ref();
        let p = j.policy.as_ref();
        let next = j.next_firing.as_ref();
        let mut pairs = vec![
            ("name", j.name.clone()),
            ("uid", j.uid.clone()),
            ("schedule", schedule_summary(s)),
            ("time zone", or_dash(s.map(|s| s.time_zone.clone()))),
            (
                "dst",
                s.map_or("-".into(), |s| {
                    format!("gap {}, fold {}", dst_gap(s.dst_gap), dst_fold(s.dst_fold))
                }),
            ),
            ("action", action_summary(j.action.as_ref())),
            ("overlap", p.map_or("-".into(), |p| overlap(p.overlap))),
            (
                "retry",
                p.and_then(|p| p.retry.as_ref()).map_or("-".into(), |r| {
                    let timeout = human(duration(r.timeout.as_ref()).unwrap_or_default());
                    match r.attempts_max.unwrap_or(1) {
                        1 => format!("no retry (1 attempt), timeout {timeout}"),
                        n => format!(
                            "{n} attempts, backoff {} to {}, timeout {timeout}",
                            human(duration(r.backoff_initial.as_ref()).unwrap_or_default()),
                            human(duration(r.backoff_max.as_ref()).unwrap_or_default()),
                        ),
                    }
                }),
            ),
            ("state", if j.paused { "paused" } else { "active" }.into()),
            (
                "next firing",
                next.map_or("-".into(), |f| {
                    format!(
                        "{} [{}]",
                        local_and_utc(f.time.as_ref()),
                        dst_decision(f.dst_decision)
                    )
                }),
            ),
            ("created", or_dash(utc(j.create_time.as_ref()))),
            ("updated", or_dash(utc(j.update_time.as_ref()))),
            ("etag", j.etag.clone()),
            ("tzdb", j.tzdb_version.clone()),
        ];
        if !j.description.is_empty() {
            pairs.insert(1, ("description", j.description.clone()));
        }
        print!("{}", fields(&pairs));
    }

    pub fn jobs(&self, jobs: &[pb::Job]) {
        if self.output == Output::Json {
            return self.json(&Value::Array(jobs.iter().map(job_json).collect()));
        }
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                let next = j.next_firing.as_ref().and_then(|f| f.time.as_ref());
                vec![
                    j.name.clone(),
                    schedule_summary(j.schedule.as_ref()),
                    or_dash(j.schedule.as_ref().map(|s| s.time_zone.clone())),
                    action_summary(j.action.as_ref()),
                    if j.paused { "paused" } else { "active" }.into(),
                    or_dash(time_local(next)),
                    or_dash(time_utc(next)),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "NAME",
                    "SCHEDULE",
                    "ZONE",
                    "ACTION",
                    "STATE",
                    "NEXT (LOCAL)",
                    "NEXT (UTC)"
                ],
                &rows
            )
        );
    }

    pub fn deleted(&self, name: &str) {
        if self.output == Output::Json {
            return self.json(&json!({ "deleted": name }));
        }
        println!("deleted {name}");
    }

    pub fn run(&self, r: &pb::Run) {
        if self.output == Output::Json {
            return self.json(&run_json(r));
        }
        let pairs = [
            ("name", r.name.clone()),
            ("job", r.job.clone()),
            ("scheduled", local_and_utc(r.scheduled_time.as_ref())),
            ("due", local_and_utc(r.due_time.as_ref())),
            ("state", run_state(r.state)),
            ("reason", or_dash(Some(r.reason.clone()))),
            ("trigger", r.trigger.clone()),
            ("lateness", lateness(r.lateness.as_ref())),
            ("epoch", r.epoch.to_string()),
        ];
        print!("{}", fields(&pairs));
        if !r.attempts.is_empty() {
            let rows: Vec<Vec<String>> = r
                .attempts
                .iter()
                .map(|a| {
                    vec![
                        a.number.to_string(),
                        attempt_status(a.status),
                        local_and_utc(a.start_time.as_ref()),
                        or_dash(time_utc(a.end_time.as_ref())),
                        lateness(a.lateness.as_ref()),
                        a.exit_code
                            .map(|c| format!("exit {c}"))
                            .or(a.http_status.map(|s| format!("http {s}")))
                            .unwrap_or_else(|| "-".into()),
                        a.summary.clone(),
                    ]
                })
                .collect();
            println!();
            print!(
                "{}",
                table(
                    &[
                        "ATTEMPT",
                        "STATUS",
                        "STARTED (LOCAL, UTC)",
                        "ENDED (UTC)",
                        "LATENESS",
                        "RESULT",
                        "SUMMARY"
                    ],
                    &rows
                )
            );
        }
    }

    pub fn runs(&self, runs: &[pb::Run]) {
        if self.output == Output::Json {
            return self.json(&Value::Array(runs.iter().map(run_json).collect()));
        }
        print!(
            "{}",
            table(
                &[
                    "RUN",
                    "SCHEDULED (LOCAL)",
                    "SCHEDULED (UTC)",
                    "STATE",
                    "TRIGGER",
                    "ATTEMPTS",
                    "LATENESS",
                    "NOTE"
                ],
                &run_rows(runs)
            )
        );
    }

    pub fn firings(&self, firings: &[pb::Firing]) {
        if self.output == Output::Json {
            return self.json(&Value::Array(firings.iter().map(firing_json).collect()));
        }
        let rows: Vec<Vec<String>> = firings
            .iter()
            .map(|f| {
                let t = f.time.as_ref();
                vec![
                    or_dash(time_utc(t)),
                    or_dash(time_local(t)),
                    or_dash(t.map(|t| t.time_zone.clone())),
                    dst_decision(f.dst_decision),
                ]
            })
            .collect();
        print!("{}", table(&["UTC", "LOCAL", "ZONE", "DST"], &rows));
    }

    pub fn cluster(&self, s: &pb::ClusterStatus) {
        if self.output == Output::Json {
            return self.json(&cluster_json(s));
        }
        println!("mode: {} (answered by {})", s.mode, s.answered_by);
        println!();
        let rows: Vec<Vec<String>> = s
            .regions
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    if r.live { "live" } else { "LOST" }.to_owned(),
                    r.nodes.join(", "),
                ]
            })
            .collect();
        print!("{}", table(&["REGION", "STATE", "NODES"], &rows));
        println!();
        let rows: Vec<Vec<String>> = s
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.regions.join(", "),
                    n.endpoint.clone(),
                    gate_text(n.clock.as_ref()),
                    skew_text(n.clock.as_ref()),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "NODE",
                    "REGIONS",
                    "ENDPOINT",
                    "CLOCK GATE",
                    "OFFSET ± BOUND"
                ],
                &rows
            )
        );
        println!();
        let rows: Vec<Vec<String>> = s
            .shards
            .iter()
            .map(|o| {
                vec![
                    o.shard.to_string(),
                    if o.node.is_empty() {
                        "-".to_owned()
                    } else {
                        o.node.clone()
                    },
                    o.epoch.to_string(),
                    o.lease_left
                        .as_ref()
                        .map_or("-".to_owned(), |d| format!("{} s", d.seconds)),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["SHARD", "OWNER", "EPOCH", "LEASE LEFT"], &rows)
        );
    }

    pub fn status(&self, s: &pb::NodeStatus) {
        if self.output == Output::Json {
            return self.json(&status_json(s));
        }
        let pairs = [
            ("node", s.node.clone()),
            ("version", s.version.clone()),
            ("regions", s.regions.join(", ")),
            ("epoch", s.epoch.to_string()),
            ("jobs indexed", s.jobs_indexed.to_string()),
            ("next due", local_and_utc(s.next_due.as_ref())),
            ("pending dispatches", s.pending_dispatches.to_string()),
            ("clock gate", gate_text(s.clock.as_ref())),
            ("clock offset", skew_text(s.clock.as_ref())),
        ];
        print!("{}", fields(&pairs));
        let rows: Vec<Vec<String>> = s
            .region_status
            .iter()
            .map(|r| {
                vec![
                    r.region.clone(),
                    format!("{}/{}", r.busy, r.workers),
                    r.waiting.to_string(),
                    r.started.to_string(),
                    r.succeeded.to_string(),
                    r.failed.to_string(),
                    r.skipped.to_string(),
                    r.workers_lost.to_string(),
                ]
            })
            .collect();
        println!();
        print!(
            "{}",
            table(
                &[
                    "REGION",
                    "BUSY",
                    "WAITING",
                    "STARTED",
                    "SUCCEEDED",
                    "FAILED",
                    "SKIPPED",
                    "LOST"
                ],
                &rows
            )
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xxxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A     LONGER\nxxxx  1\ny     22\n");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::from_secs(86_400)), "1d");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn enum_names_are_lowercase() {
        assert_eq!(
            run_state(pb::RunState::DeadLettered as i32),
            "dead_lettered"
        );
        assert_eq!(
            attempt_status(pb::AttemptStatus::WorkerLost as i32),
            "worker_lost"
        );
        assert_eq!(attempt_status(0), "running");
        assert_eq!(
            dst_decision(pb::DstDecision::GapShifted as i32),
            "gap_shifted"
        );
        assert_eq!(dst_decision(pb::DstDecision::None as i32), "none");
    }

    #[test]
    fn firing_json_shape() {
        let f = pb::Firing {
            time: Some(pb::Time {
                utc: Some(prost_types::Timestamp {
                    seconds: 1_772_953_200,
                    nanos: 0,
                }),
                local: "2026-03-08T03:00:00-04:00".into(),
                time_zone: "America/New_York".into(),
            }),
            dst_decision: pb::DstDecision::GapShifted as i32,
        };
        assert_eq!(
            firing_json(&f),
            json!({
                "utc": "2026-03-08T07:00:00Z",
                "local": "2026-03-08T03:00:00-04:00",
                "time_zone": "America/New_York",
                "dst_decision": "gap_shifted",
            })
        );
    }
}
