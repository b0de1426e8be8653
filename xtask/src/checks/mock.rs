//! The `mock` scenario: the iommufd selftest's mock driver as the only IOMMU.

use std::path::Path;

use serde_json::Value;

use super::capture::capture_checks;
use super::{ensure, jsonl, pins, read, scenario_ran, Outcome};
use crate::kernel::Arch;

/// The selftest mock driver alone (no VT-d): its domains of every kind.
pub fn mock(dir: &Path, _arch: Arch) -> Vec<Outcome> {
    let mut out = vec![
        Outcome::from("scenario_ran", scenario_ran(dir)),
        Outcome::from(
            "mock_domains_allocated",
            (|| {
                let p = read(dir, "probes.txt")?;
                ensure(p.contains("+ mock_domain_alloc"), || {
                    format!("the mock op is not in the plan:\n{p}")
                })?;
                let r: Value = serde_json::from_str(&read(dir, "exercise.json")?)
                    .map_err(|e| format!("exercise.json: {e}"))?;
                ensure(r["mock"]["available"].as_bool() == Some(true), || {
                    format!("the mock driver was not usable: {}", r["mock"])
                })?;
                let allocs = &r["totals"]["expected_domain_allocations"];
                for k in ["mock_auto", "mock_paging", "mock_nested"] {
                    ensure(allocs[k].as_u64().unwrap_or(0) > 0, || {
                        format!("no {k} domain: {allocs}")
                    })?;
                }
                Ok(())
            })(),
        ),
    ];
    capture_checks(dir, &mut out, false);
    out.push(Outcome::from(
        "pin_sharing_matches_the_kernel",
        pin_sharing(dir),
    ));
    out.push(Outcome::from("pin_limits_run", limits_run(dir)));
    out
}

/// The exercise's pin-sharing phases against VmPin, and its pins unaccounted (root).
fn pin_sharing(dir: &Path) -> Result<(), String> {
    let x = super::capture::Exercise::load(dir)?;
    pins::pin_sharing_matches_the_kernel(&x.report, x.pid, &x.events)
}

/// The unprivileged pinned-memory limits run, in the same capture: its IOAS calls, its
/// `VmPin` / `VmLck` and the cause of each of its ENOMEMs.
fn limits_run(dir: &Path) -> Result<(), String> {
    let log = read(dir, "limits.log").unwrap_or_default();
    ensure(read(dir, "limits.rc")?.trim() == "0", || {
        format!("the limits run failed:\n{log}")
    })?;
    let report: Value = serde_json::from_str(&read(dir, "limits.json")?)
        .map_err(|e| format!("limits.json: {e}"))?;
    let pid = read(dir, "limits.pid")?
        .trim()
        .parse()
        .map_err(|e| format!("limits.pid: {e}"))?;
    let events = jsonl(dir, "exercise.jsonl")?;
    pins::ioas_ops_match_the_workload(&report, pid, &events)?;
    pins::pinned_memory_matches_the_kernel(&report, pid, &events)?;
    pins::enomem_explained(&report, pid, &events)?;
    pins::exit_uncharge_fails_and_unpins(pid, &events)?;
    let has_change_process = read(dir, "change-process.txt")?.trim() == "yes";
    pins::change_process_moves_the_charge(&report, pid, &events, has_change_process)?;
    // The front end says why, in words, for both accountings, of every refusal.
    let refusals = report["steps"]
        .as_array()
        .map_or(0, |st| st.iter().filter(|st| st["errno"] == 12).count());
    let summary = read(dir, "summary.txt")?;
    ensure(
        summary.contains(&format!("pinned-memory refusals ({refusals};"))
            && summary.contains("take uid 65534 (per-user accounting")
            && summary.contains("take the creator's mm (per-mm accounting")
            && summary.contains("of 64.0 KiB: raise that limit by at least")
            // ... and with what the traced mappings held of the total the kernel compared.
            && summary.contains("this process's iommufd mappings"),
        || format!("inspect --summary does not explain the {refusals} refusals:\n{summary}"),
    )
}
