//! What each VM scenario must show. The checks read the scenario's results folder: the
//! workload's own JSON report, the capture as JSON lines (the documented interface), the
//! summaries, and the kernel's counters sampled in the guest.
//!
//! One file per scenario; this one holds the outcome type, the readers of a results folder
//! and the check that a scenario ran at all.

use std::path::Path;

use serde_json::Value;

mod bench;
mod capture;
mod degraded;
mod exercise;
mod exporter;
mod mock;
mod objects;
mod pins;

pub use bench::{bench_capture, bench_has_bpftrace, bench_system};
pub use exercise::exercise;
pub use mock::mock;

pub struct Outcome {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Outcome {
    pub fn pass(name: &str) -> Outcome {
        Outcome {
            name: name.into(),
            ok: true,
            detail: String::new(),
        }
    }
    pub fn fail(name: &str, detail: impl Into<String>) -> Outcome {
        Outcome {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
    fn from(name: &str, r: Result<(), String>) -> Outcome {
        match r {
            Ok(()) => Outcome::pass(name),
            Err(e) => Outcome::fail(name, e),
        }
    }
}

fn read(dir: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))
}

/// A file holding one number (an exit status, an uptime).
fn number<T: std::str::FromStr>(dir: &Path, name: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    read(dir, name)?
        .trim()
        .parse()
        .map_err(|e| format!("{name}: {e}"))
}

fn rc(dir: &Path, name: &str) -> Result<i32, String> {
    number(dir, name)
}

fn jsonl(dir: &Path, name: &str) -> Result<Vec<Value>, String> {
    read(dir, name)?
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{name}:{}: {e}", i + 1)))
        .collect()
}

fn vmstat(dir: &Path, name: &str) -> Result<i64, String> {
    let s = read(dir, name)?;
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{name}: no nr_iommu_pages value in {s:?}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

/// The scenario script, the workload and the recorder all finished cleanly, and the capture
/// was finalized.
fn scenario_ran(dir: &Path) -> Result<(), String> {
    ensure(rc(dir, "scenario.rc")? == 0, || {
        "scenario script failed".into()
    })?;
    ensure(rc(dir, "exercise.rc")? == 0, || {
        format!(
            "exercise failed: {}",
            read(dir, "exercise.log").unwrap_or_default()
        )
    })?;
    ensure(rc(dir, "record.rc")? == 0, || {
        format!(
            "record failed: {}",
            read(dir, "record.log").unwrap_or_default()
        )
    })?;
    let summary = read(dir, "summary.txt")?;
    ensure(summary.contains("file: finalized"), || {
        format!("the capture was not finalized cleanly:\n{summary}")
    })
}
