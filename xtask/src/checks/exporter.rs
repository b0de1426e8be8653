//! The `exercise` scenario's live-exporter part: `/metrics` and a real Prometheus agree with
//! the capture.

use std::path::Path;

use serde_json::Value;

use super::{ensure, jsonl, rc, read, s, u};

/// Sum of a metric's samples in a Prometheus text exposition, optionally only the samples
/// whose labels contain `filter`.
pub(super) fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `iommu-trace serve`, tracing live beside the recorder, exposes the counts the capture
/// holds: allocations, page-table pages, no loss, every probe point attached.
pub(super) fn live_exporter(dir: &Path) -> Result<(), String> {
    ensure(rc(dir, "serve.rc")? == 0, || {
        format!(
            "serve failed: {}",
            read(dir, "serve.log").unwrap_or_default()
        )
    })?;
    let m = read(dir, "metrics.txt")?;
    let events = jsonl(dir, "exercise.jsonl")?;
    let count = |kind: &str| events.iter().filter(|e| s(e, "event") == kind).count() as f64;
    let pages = |kind: &str| -> f64 {
        events
            .iter()
            .filter(|e| s(e, "event") == kind)
            .map(|e| u(e, "pages") as f64)
            .sum()
    };
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: f64, want: f64| {
        if got != want {
            problems.push(format!("{what}: /metrics says {got}, the capture {want}"));
        }
    };
    expect(
        "domain allocations",
        metric_sum(&m, "iommu_trace_domain_allocations_total", ""),
        count("domain_alloc"),
    );
    expect(
        "domain frees",
        metric_sum(&m, "iommu_trace_domain_frees_total", ""),
        count("domain_free"),
    );
    expect(
        "hwpt allocations",
        metric_sum(&m, "iommu_trace_hwpt_allocations_total", ""),
        count("hwpt_alloc"),
    );
    expect(
        "page-table pages allocated",
        metric_sum(&m, "iommu_trace_page_table_pages_allocated_total", ""),
        pages("pt_alloc"),
    );
    expect(
        "page-table pages freed",
        metric_sum(&m, "iommu_trace_page_table_pages_freed_total", ""),
        pages("pt_free"),
    );
    expect(
        "events lost",
        metric_sum(&m, "iommu_trace_events_lost_total", ""),
        0.0,
    );
    // The same counts through a real Prometheus that scraped the live exporter in the VM.
    let prom = |file: &str| -> Result<f64, String> {
        let v: Value =
            serde_json::from_str(&read(dir, file)?).map_err(|e| format!("{file}: {e}"))?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse().ok())
            .ok_or_else(|| format!("{file}: no sample in {v}"))
    };
    expect(
        "Prometheus: domain allocations",
        prom("prom-domain-allocs.json")?,
        count("domain_alloc"),
    );
    expect(
        "Prometheus: page-table pages allocated",
        prom("prom-pt-allocated.json")?,
        pages("pt_alloc"),
    );
    expect(
        "Prometheus: hwpt allocations",
        prom("prom-hwpt-allocs.json")?,
        count("hwpt_alloc"),
    );
    expect("Prometheus: target up", prom("prom-up.json")?, 1.0);
    for point in [
        "hwpt_alloc_ioctl",
        "driver_alloc",
        "domain_free",
        "map",
        "unmap",
        "pt_pages",
    ] {
        let filter = format!("point=\"{point}\"");
        if metric_sum(&m, "iommu_trace_probe_attached", &filter) < 1.0 {
            problems.push(format!("probe point {point} not reported attached"));
        }
    }
    ensure(problems.is_empty(), || problems.join("\n"))
}

/// While the workload held its pins (`--hold-file`), the live exporter's ledger, and its own
/// reading of the kernel's figures, equal `VmPin` as the scenario read it from
/// `/proc/PID/status`, and the reconciliation calls the one process that pins a match.
pub(super) fn ledger_reconciled_with_vm_pin(dir: &Path) -> Result<(), String> {
    let status = read(dir, "status-hold.txt").map_err(|e| {
        format!("{e}: the workload never held its pins (no --hold-file at the VFIO flow's peak)")
    })?;
    let vm_pin = status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|kib| kib * 1024.0)
        .ok_or_else(|| format!("no VmPin in the workload's status:\n{status}"))?;
    ensure(vm_pin > 0.0, || "the workload held no pins".into())?;
    let m = read(dir, "metrics-hold.txt")?;
    let cgroup = "cgroup=\"/exercise\"";
    let ledger = metric_sum(&m, "iommu_trace_pinned_bytes", cgroup);
    let kernel = metric_sum(&m, "iommu_trace_vm_pin_bytes", cgroup);
    let verdict = |v: &str| {
        metric_sum(
            &m,
            "iommu_trace_pin_reconciliation_processes",
            &format!("verdict=\"{v}\""),
        )
    };
    ensure(ledger == vm_pin && kernel == vm_pin, || {
        format!(
            "VmPin {vm_pin} bytes; the exporter's ledger {ledger}, its reading of VmPin {kernel}"
        )
    })?;
    ensure(
        verdict("matches") == 1.0 && verdict("ledger_exceeds") == 0.0,
        || {
            format!(
                "reconciliation: matches {}, kernel_pins_more {}, ledger_exceeds {}, unchecked {}",
                verdict("matches"),
                verdict("kernel_pins_more"),
                verdict("ledger_exceeds"),
                verdict("unchecked")
            )
        },
    )
}
