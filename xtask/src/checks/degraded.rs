//! The `exercise` scenario's degraded-kernel part: the page-table hook refused, and every
//! consumer (probes, summary, replay, exporter) names the gap.

use std::path::Path;

use super::exporter::metric_sum;
use super::{ensure, rc, read};

/// The page-table hook refused (`--deny-symbol`, as on a kernel that lacks it): the other
/// points attach and record, and every consumer names the gap instead of showing zero
/// page-table pages as if measured.
pub(super) fn degraded_kernel(dir: &Path) -> Result<(), String> {
    let probes = read(dir, "degraded-probes.txt")?;
    let line = |point: &str| {
        probes
            .lines()
            .find(|l| l.starts_with(point))
            .unwrap_or("")
            .to_string()
    };
    ensure(
        line("pt_pages").split_whitespace().nth(1) == Some("missing"),
        || format!("probes does not show pt_pages missing:\n{probes}"),
    )?;
    ensure(probes.contains("refused by --deny-symbol"), || {
        format!("probes does not say why:\n{probes}")
    })?;
    for point in ["driver_alloc", "map", "unmap", "domain_free"] {
        ensure(line(point).split_whitespace().nth(1) == Some("ok"), || {
            format!("{point} did not stay attached:\n{probes}")
        })?;
    }
    ensure(rc(dir, "degraded-record.rc")? == 0, || {
        format!(
            "record with a refused symbol failed: {}",
            read(dir, "degraded-record.log").unwrap_or_default()
        )
    })?;
    let summary = read(dir, "degraded-summary.txt")?;
    ensure(
        summary.contains("MISSING probe point (nothing recorded): pt_pages"),
        || format!("inspect --summary does not name the gap:\n{summary}"),
    )?;
    let maps = summary
        .lines()
        .find_map(|l| l.strip_prefix("map "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    ensure(maps > 0, || {
        format!("the other points recorded nothing:\n{summary}")
    })?;
    let replay = read(dir, "degraded-replay.txt")?;
    ensure(
        // 3: nothing diverged, but not everything could be verified.
        rc(dir, "degraded-replay.rc")? == 3
            && replay.contains("pt_pages")
            && replay.contains("recorded nothing"),
        || format!("replay verified a capture without page-table events:\n{replay}"),
    )?;
    let metrics = read(dir, "degraded-metrics.txt")?;
    let attached = metrics
        .lines()
        .find(|l| l.starts_with("iommu_trace_probe_attached{") && l.contains("point=\"pt_pages\""))
        .unwrap_or("");
    ensure(attached.ends_with(" 0"), || {
        format!("the exporter does not show pt_pages unattached: {attached:?}")
    })?;
    ensure(
        metric_sum(
            &metrics,
            "iommu_trace_replay_domains",
            "verdict=\"verified\"",
        ) == 0.0
            && metric_sum(
                &metrics,
                "iommu_trace_replay_domains",
                "verdict=\"unverifiable\"",
            ) > 0.0,
        || {
            "the exporter's --verify counts domains of a capture without page-table events as verified".into()
        },
    )
}
