//! `meridian simulate`: deterministic chaos runs of a scenario over the real actors and
//! core, on the `sim` adapters in virtual time, with the guarantees checked as
//! invariants. One seed drives every random choice, so a violation comes with the one
//! command that replays it.
//!
//! - [`scenario`]: the TOML scenario files (`simulations/`).
//! - [`runner`]: one run of a scenario with a seed.
//! - [`target`]: the simulated target (latency, failures, worker crashes).
//! - [`check`]: the invariant checkers.
//! - [`report`]: the report and the trace hash.
//!
//! Must not read the wall clock or draw ambient randomness (the code it runs is held to
//! the same rule by clippy.toml and tests/tidy.rs).

pub mod check;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod target;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use self::check::Violation;
use self::report::Report;
use self::runner::{Options, Outcome};
use self::scenario::Scenario;
use crate::adapters::sim::TraceEvent;

/// Seeds one sweep may cover at most.
pub const SEEDS_MAX: u64 = 100_000;

/// `meridian simulate` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The scenario file (TOML), e.g. simulations/owner-failover.toml.
    pub file: PathBuf,
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run a sweep of seeds, `A..B` (B excluded).
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: Option<(u64, u64)>,
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected A..B"))?;
    let a: u64 = a.parse().map_err(|_| format!("{s:?}: A is not a number"))?;
    let b: u64 = b.parse().map_err(|_| format!("{s:?}: B is not a number"))?;
    if b <= a || b - a > SEEDS_MAX {
        return Err(format!("{s:?}: need A < B and at most {SEEDS_MAX} seeds"));
    }
    Ok((a, b))
}

/// The result of one seed: its report and outcome.
pub struct SeedResult {
    pub report: Report,
    pub violations: Vec<Violation>,
    pub outcome: Outcome,
}

/// Run one seed of a scenario and check it.
pub fn run_seed(scenario: &Scenario, seed: u64, options: &Options) -> anyhow::Result<SeedResult> {
    let outcome = runner::run(scenario, seed, options)?;
    let violations = check::all(
        &outcome,
        scenario.lease_ttl_s,
        scenario.visibility_timeout_s,
    );
    let report = report::build(&scenario.name, scenario.lease_ttl_s, &outcome, &violations);
    Ok(SeedResult {
        report,
        violations,
        outcome,
    })
}

/// What led to a violation: the faults and trace events in the seconds before it.
pub fn context(o: &Outcome, v: &Violation) -> Vec<String> {
    let from = v.at - chrono::Duration::seconds(10);
    let mut lines: Vec<(crate::core::Timestamp, String)> = o
        .faults
        .iter()
        .filter(|(at, _)| *at <= v.at)
        .map(|(at, f)| (*at, format!("fault: {f}")))
        .collect();
    for e in &o.trace {
        let (at, text) = match e {
            TraceEvent::TermGranted { at, .. } | TraceEvent::TermEnded { at, .. } => {
                (*at, format!("{e:?}"))
            }
            TraceEvent::Claim { at, .. } if *at >= from => (*at, format!("{e:?}")),
            _ => continue,
        };
        if at >= from && at <= v.at {
            lines.push((at, text));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    let n = lines.len();
    lines
        .into_iter()
        .skip(n.saturating_sub(20))
        .map(|(at, t)| format!("{} {t}", at.format("%H:%M:%S%.3f")))
        .collect()
}

/// Run the command: every seed asked for; print a report per seed (table or JSON
/// lines) and, for a violation, the invariant, the events leading to it and the command
/// that replays it. Exit 1 when any seed broke an invariant.
pub fn simulate(args: SimulateArgs, json: bool) -> anyhow::Result<bool> {
    let scenario = Scenario::load(&args.file)?;
    let (a, b) = match (args.seed, args.seeds) {
        (Some(s), _) => (s, s + 1),
        (None, Some(r)) => r,
        (None, None) => (1, 2),
    };
    let mut ok = true;
    for seed in a..b {
        let r = run_seed(&scenario, seed, &Options::default())
            .with_context(|| format!("seed {seed}"))?;
        if json {
            println!("{}", serde_json::to_string(&r.report)?);
        } else {
            print!("{}", report::table(&r.report));
        }
        if !r.violations.is_empty() {
            ok = false;
            print_violations(&args.file, seed, &r);
        }
    }
    Ok(ok)
}

fn print_violations(file: &Path, seed: u64, r: &SeedResult) {
    for v in &r.violations {
        eprintln!("VIOLATED: {} at {}: {}", v.invariant, v.at, v.detail);
        for line in context(&r.outcome, v) {
            eprintln!("    {line}");
        }
    }
    eprintln!("replay: meridian simulate {} --seed {seed}", file.display());
}
