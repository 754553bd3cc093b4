//! Tidy: repository rules that no compiler checks.
//! - every source file opens with a `//!` header saying what it owns;
//! - `src/core` imports no tokio, IO, network, storage or proto types, and reads no clock;
//! - no ambient clock reads outside the clock adapter;
//! - no ambient randomness in the code the simulator runs.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files(sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join(sub), &mut out);
    out.sort();
    out
}

/// The code of a file without its `#[cfg(test)]` tail and comments (roughly: tests may
/// use what production code must not).
fn production_code(text: &str) -> String {
    let code = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_source_file_has_a_header() {
    let mut missing = Vec::new();
    for dir in ["src", "tests", "benches"] {
        if !Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).exists() {
            continue;
        }
        for f in files(dir) {
            let text = std::fs::read_to_string(&f).unwrap();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                missing.push(f.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:#?}"
    );
}

#[test]
fn core_is_pure() {
    let banned = [
        "tokio",
        "std::fs",
        "std::net",
        "std::io",
        "std::process",
        "std::thread",
        "redb",
        "reqwest",
        "tonic",
        "ractor",
        "crate::api",
        "crate::adapters",
        "crate::actors",
        "Utc::now",
        "SystemTime",
        "Instant::now",
        "Local::now",
    ];
    let mut bad = Vec::new();
    for f in files("src/core") {
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        for b in banned {
            if code.contains(b) {
                bad.push(format!("{}: {b}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "src/core must stay pure: {bad:#?}");
}

#[test]
fn clock_reads_only_in_the_clock_adapter() {
    let mut bad = Vec::new();
    for f in files("src") {
        if f.ends_with("adapters/clock.rs") {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        for b in ["Utc::now", "SystemTime::now", "Instant::now", "Local::now"] {
            if code.contains(b) {
                bad.push(format!("{}: {b}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "ambient clock reads: {bad:#?}");
}

/// The code the simulator runs (core, actors, the sim adapters, the simulator) draws no
/// ambient randomness and never blocks a thread: a seed must replay the same run.
#[test]
fn simulated_code_has_no_ambient_randomness() {
    let mut bad = Vec::new();
    for dir in ["src/core", "src/actors", "src/sim", "src/adapters/sim"] {
        if !Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).exists() {
            continue;
        }
        for f in files(dir) {
            let code = production_code(&std::fs::read_to_string(&f).unwrap());
            for b in [
                "new_v4",
                "thread_rng",
                "rand::",
                "RandomState::new",
                "std::thread::sleep",
                "getrandom",
            ] {
                if code.contains(b) {
                    bad.push(format!("{}: {b}", f.display()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "ambient randomness or blocking: {bad:#?}");
}
