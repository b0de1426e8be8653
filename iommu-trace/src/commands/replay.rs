//! `iommu-trace replay`: a capture through the reference page-table models.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Result;

use crate::capture::CaptureReader;
use crate::model::{KernelBehaviour, ModelSelect, SmmuBehaviour, VtdBehaviour};
use crate::replay::{replay_with_progress, ReplayOptions, Report, POINTS_VERIFIED};

/// What the user chose; unset behaviours come from the capture.
pub struct Options {
    pub model: ModelSelect,
    pub vtd: Option<VtdBehaviour>,
    pub smmu: Option<SmmuBehaviour>,
    pub what_if: bool,
}

/// The page-table behaviour of the traced kernel, from the features its probe plan
/// detected (probe::plan::detect_features): symbols and BTF, never the version number.
pub fn behaviour_from_features(features: &[&str]) -> KernelBehaviour {
    let has = |f: &str| features.contains(&f);
    KernelBehaviour {
        // Whole-range unmap exists only in the generic page table's API (7.0+), and VT-d
        // moved onto it before (6.19): it implies the generic-pt VT-d even on a kernel
        // without VT-d, whose generic-pt domains (the selftest mock) follow it too.
        vtd: match (has("vtd_generic_pt"), has("generic_pt_whole_range_unmap")) {
            (_, true) => VtdBehaviour::GenericPtWholeRange,
            (true, false) => VtdBehaviour::GenericPt,
            _ => VtdBehaviour::Legacy,
        },
        smmu: if has("io_pgtable_arm_concat_mandatory") {
            SmmuBehaviour::V7
        } else {
            SmmuBehaviour::V6_12
        },
    }
}

/// Captures larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 8 << 20;

/// Replays `path`. Events after a damaged frame are not read; the warning (with its byte
/// offset) goes to stderr and the report covers what was read.
pub fn run(path: &Path, options: &Options) -> Result<Report> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut reader = CaptureReader::open(path)?;
    let missing_points: Vec<_> = reader
        .header()
        .missing_points()
        .into_iter()
        .filter(|m| POINTS_VERIFIED.contains(&m.point.as_str()))
        .collect();
    let features: Vec<&str> = reader.header().probe_plan["features"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let detected = behaviour_from_features(&features);
    let opts = ReplayOptions {
        model: options.model,
        behaviour: KernelBehaviour {
            vtd: options.vtd.unwrap_or(detected.vtd),
            smmu: options.smmu.unwrap_or(detected.smmu),
        },
        what_if: options.what_if,
        ..Default::default()
    };
    let bar = (size >= PROGRESS_MIN_BYTES && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg}: {human_pos} events ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(format!("replaying {}", path.display()));
        bar
    });
    let events = reader.by_ref().map_while(Result::ok);
    let mut report = replay_with_progress(events, &opts, |done| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report.missing_points = missing_points;
    if let Some(warning) = reader.ending().and_then(|e| e.warning()) {
        eprintln!("warning: {}: {warning}", path.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_follows_the_detected_features() {
        let b = behaviour_from_features(&[]);
        assert_eq!(
            (b.vtd, b.smmu),
            (VtdBehaviour::Legacy, SmmuBehaviour::V6_12)
        );
        let b = behaviour_from_features(&["vtd_generic_pt"]);
        assert_eq!(b.vtd, VtdBehaviour::GenericPt);
        let b = behaviour_from_features(&[
            "vtd_generic_pt",
            "generic_pt_whole_range_unmap",
            "io_pgtable_arm_concat_mandatory",
        ]);
        assert_eq!(
            (b.vtd, b.smmu),
            (VtdBehaviour::GenericPtWholeRange, SmmuBehaviour::V7)
        );
    }
}
