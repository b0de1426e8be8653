//! The replay's findings: per-domain verdicts, divergences, page totals and what-if rows,
//! printed for people (`Display`) or serialized for `--json`.

use std::fmt;

use serde::Serialize;

use super::{PageRun, ReplayOptions};
use crate::events::{DomainKind, KernelPtr};

/// The outcome for one domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// Every operation's page allocations and frees matched the model.
    Verified,
    /// The kernel did something the model did not predict (see `divergence`).
    Diverged,
    /// The domain could not be checked: unknown configuration, no model for its driver,
    /// allocated before the capture started, or a path the model does not reproduce.
    Unverifiable(String),
}

/// One event shown around a divergence.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ContextEvent {
    /// Index (0-based) of the event in the stream.
    pub index: u64,
    pub event: String,
    /// This is the event where the divergence was found.
    pub here: bool,
}

/// The first place where the kernel and the model disagreed.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Divergence {
    /// Index (0-based, in the stream) of the event at which the mismatch was found.
    pub event_index: u64,
    /// What disagreed, in words.
    pub reason: String,
    /// Page runs the model predicted for that operation.
    pub predicted: Vec<PageRun>,
    /// Page runs observed for it.
    pub observed: Vec<PageRun>,
    /// A few events of this domain around it.
    pub context: Vec<ContextEvent>,
}

/// Pages allocated without a memory-cgroup charge, split by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Uncharged {
    /// Uncharged by kernel policy: the top-level table allocated with the domain
    /// (GFP_KERNEL in `paging_domain_alloc`, `arm_64_lpae_alloc_pgtable_s1/s2`,
    /// `pt_iommu_*_init`), tables of a split block (GFP_ATOMIC in
    /// `arm_lpae_split_blk_unmap`), or a non-iommufd caller's gfp.
    pub policy: u64,
    /// Uncharged where iommufd asked for GFP_KERNEL_ACCOUNT (tables allocated by
    /// `iommu_map` from iommufd): a defect.
    pub unexpected: u64,
    /// Index of the first event with unexpected uncharged pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unexpected_index: Option<u64>,
}

/// Page totals, observed or predicted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PageTotals {
    /// Pages allocated.
    pub allocated: u64,
    /// Pages freed.
    pub freed: u64,
    /// Most pages held at once.
    pub peak: u64,
}

/// Everything the replay found about one domain.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct DomainReport {
    /// The domain.
    pub domain: KernelPtr,
    /// Its driver (`intel`, `amd`, `arm-smmu-v3`, `mock`).
    pub driver: String,
    /// Paging, nested or auto (absent when the allocation was not seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<DomainKind>,
    /// The id of the HWPT whose domain this is, when the capture saw it published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hwpt: Option<u32>,
    /// The model and configuration used, e.g. "VT-d legacy 4-level gaw 48 4K+2M+1G ...".
    pub model: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Index of its `domain_alloc` event (null: allocated before the capture).
    pub alloc_index: Option<u64>,
    /// Index of its `domain_free` event (null: not freed in the capture).
    pub free_index: Option<u64>,
    /// Maps and unmaps replayed.
    pub maps: u64,
    /// Unmaps replayed.
    pub unmaps: u64,
    /// Page-table pages the kernel allocated and freed.
    pub observed: PageTotals,
    /// Model totals while verification ran (up to a divergence).
    pub predicted: PageTotals,
    /// Pages never freed: still held at the end of the capture (domain alive), or left
    /// after the domain was freed.
    pub never_freed: u64,
    /// The domain was still alive at the end of the capture.
    pub alive_at_end: bool,
    /// Pages not charged to a memory cgroup, by cause.
    pub uncharged: Uncharged,
    /// `pt_grow` events: times the table grew its top, and its levels after the last.
    #[serde(skip_serializing_if = "is_zero")]
    pub top_growths: u64,
    /// The table's levels after its last growth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_levels: Option<u32>,
    /// The first place the kernel and the model disagreed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// Things worth knowing that are not a divergence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One format replayed in `--what-if`.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct WhatIfRow {
    /// The page-table format and shape, e.g. "VT-d 4-level 4K+2M+1G".
    pub format: String,
    /// The format the kernel actually used.
    pub actual: bool,
    /// Most page-table pages held at once.
    pub peak_pages: u64,
    /// Pages held after the last operation (before the domain free, if any).
    pub final_pages: u64,
    /// Maps or unmaps this format could not do (alignment, range).
    pub failed_ops: u64,
    /// Modelling stopped: an operation could have taken the replay past its memory budget
    /// (the page counts are up to there).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub beyond_budget: bool,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct WhatIfDomain {
    /// The domain whose maps and unmaps were replayed.
    pub domain: KernelPtr,
    /// One row per format.
    pub rows: Vec<WhatIfRow>,
}

/// The replay's findings.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Report {
    /// The models and behaviours the replay used.
    pub options: ReplayOptions,
    /// Events read.
    pub events: u64,
    /// Events dropped because the ring buffer was full (`lost` events).
    pub lost_events: u64,
    /// Operations not attributed because a per-thread context table was full.
    pub lost_contexts: u64,
    /// Failed `domain_alloc` ops (no domain to model).
    pub failed_allocs: u64,
    /// Every domain the capture saw, in order of first appearance.
    pub domains: Vec<DomainReport>,
    /// `--what-if`: each domain under other page-table formats.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what_if: Vec<WhatIfDomain>,
    /// Probe points the verification needs that recorded nothing (from the capture
    /// header): with one missing, a domain that "verifies" proves nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_points: Vec<crate::session::MissingPoint>,
    /// Why the capture could not be read whole (damaged or cut short, loss reported at
    /// close): what was not read cannot verify.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// The iommufd object graph, when the capture has object events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<super::ObjectsReport>,
    /// The pinned-page accounting, when the capture has `pin` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pins: Option<super::PinsReport>,
}

/// The replay's conclusion, as `iommu-trace replay`'s exit status gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every domain verified, and the capture was read whole with nothing lost (exit 0).
    Verified,
    /// A domain diverged from the reference model (exit 1).
    Diverged,
    /// Not everything could be verified: loss, a damaged or truncated capture, probe points
    /// missing (whatever the domains did), or a domain the models cannot check (exit 3).
    Incomplete,
}

impl Outcome {
    /// The exit status `replay` gives (2 is for errors).
    pub fn exit_status(self) -> u8 {
        match self {
            Outcome::Verified => 0,
            Outcome::Diverged => 1,
            Outcome::Incomplete => 3,
        }
    }
}

/// The probe points whose events the replay compares: without any of them a capture
/// cannot verify.
pub const POINTS_VERIFIED: &[&str] = &["driver_alloc", "domain_free", "map", "unmap", "pt_pages"];

/// The probe points the object graph's invariants need: without any of them the graph is
/// not checked (the page tables still are). `iommufd_release` tells a close's destructions.
pub const POINTS_OBJECTS: &[&str] = &[
    "object_alloc",
    "object_publish",
    "object_abort",
    "object_destroy",
    "iommufd_release",
];

impl Report {
    /// True when every domain verified, nothing was lost, and every probe point the
    /// verification needs recorded: the exit status.
    pub fn all_verified(&self) -> bool {
        self.outcome() == Outcome::Verified
    }

    /// Incomplete when the capture itself is (events lost, probe points missing, not read
    /// whole: a divergence may then be the gap's doing); else diverged when any domain
    /// diverged; else incomplete when a domain could not be checked; else verified.
    pub fn outcome(&self) -> Outcome {
        if self.capture_wide_gap() {
            Outcome::Incomplete
        } else if self.domains.iter().any(|d| d.verdict == Verdict::Diverged)
            || self
                .objects
                .as_ref()
                .is_some_and(|o| !o.findings.is_empty())
            || self.pins.as_ref().is_some_and(|p| !p.findings.is_empty())
        {
            Outcome::Diverged
        } else if self.domains.iter().all(|d| d.verdict == Verdict::Verified) {
            Outcome::Verified
        } else {
            Outcome::Incomplete
        }
    }

    /// The capture itself cannot verify, whatever its domains did: events lost, probe points
    /// missing, or not read whole.
    pub fn capture_wide_gap(&self) -> bool {
        self.lost_events > 0
            || self.lost_contexts > 0
            || !self.missing_points.is_empty()
            || !self.incomplete.is_empty()
    }

    /// Domains whose pages were uncharged against iommufd's GFP_KERNEL_ACCOUNT.
    pub fn unexpected_uncharged(&self) -> u64 {
        self.domains.iter().map(|d| d.uncharged.unexpected).sum()
    }

    /// The first divergence in stream order, if any.
    pub fn first_divergence(&self) -> Option<(&DomainReport, &Divergence)> {
        self.domains
            .iter()
            .filter_map(|d| d.divergence.as_ref().map(|v| (d, v)))
            .min_by_key(|(_, v)| v.event_index)
    }
}

// ---- human-readable report ----------------------------------------------------------

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Verified => f.write_str("verified"),
            Verdict::Diverged => f.write_str("DIVERGED"),
            Verdict::Unverifiable(why) => write!(f, "unverifiable: {why}"),
        }
    }
}

/// The report as text for a terminal: driver names, notes and reasons can carry what a
/// capture holds, so control characters are escaped (newlines kept).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Raw<'a>(&'a Report);
        impl fmt::Display for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_text(f)
            }
        }
        f.write_str(&crate::text::printable_lines(&Raw(self).to_string()))
    }
}

impl Report {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed {} events, {} domain(s); VT-d model: {}; SMMUv3 model: {}",
            self.events,
            self.domains.len(),
            self.options.behaviour.vtd,
            self.options.behaviour.smmu
        )?;
        if self.lost_events != 0 || self.lost_contexts != 0 {
            writeln!(
                f,
                "WARNING: {} event(s) lost (ring buffer full), {} operation(s) unattributed: \
                 the capture is incomplete, so it cannot verify",
                self.lost_events, self.lost_contexts
            )?;
        }
        for m in &self.missing_points {
            writeln!(
                f,
                "WARNING: probe point {m} recorded nothing: the capture cannot verify"
            )?;
        }
        for why in &self.incomplete {
            writeln!(
                f,
                "WARNING: the capture is incomplete ({why}): what was not read cannot verify"
            )?;
        }
        if self.failed_allocs > 0 {
            writeln!(
                f,
                "{} domain allocation(s) failed (nothing to model)",
                self.failed_allocs
            )?;
        }
        for d in &self.domains {
            writeln!(f)?;
            writeln!(
                f,
                "domain {} ({}{}): {}",
                d.domain,
                crate::text::printable(&d.driver),
                d.kind
                    .map(|k| format!(", {}", k.name()))
                    .unwrap_or_default()
                    + &d.hwpt.map(|h| format!(", hwpt {h}")).unwrap_or_default(),
                d.verdict
            )?;
            if let Some(m) = &d.model {
                writeln!(f, "  model: {m}")?;
            }
            writeln!(
                f,
                "  {} map(s), {} unmap(s); pages observed: +{} -{} (peak {}); predicted: +{} -{} (peak {})",
                d.maps, d.unmaps, d.observed.allocated, d.observed.freed, d.observed.peak,
                d.predicted.allocated, d.predicted.freed, d.predicted.peak
            )?;
            if let Some(levels) = d.top_levels {
                writeln!(
                    f,
                    "  the table grew its top {} time(s), to {levels} levels",
                    d.top_growths
                )?;
            }
            if d.never_freed > 0 {
                if d.alive_at_end {
                    writeln!(
                        f,
                        "  {} page(s) still held at the end of the capture (domain alive)",
                        d.never_freed
                    )?;
                } else {
                    writeln!(
                        f,
                        "  {} page(s) never freed after the domain was freed",
                        d.never_freed
                    )?;
                }
            }
            if d.uncharged.policy + d.uncharged.unexpected > 0 {
                write!(
                    f,
                    "  not charged to a memory cgroup: {} page(s) by kernel policy",
                    d.uncharged.policy
                )?;
                if d.uncharged.unexpected > 0 {
                    write!(
                        f,
                        ", {} UNEXPECTED (iommufd maps with GFP_KERNEL_ACCOUNT; first at event {})",
                        d.uncharged.unexpected,
                        d.uncharged.first_unexpected_index.unwrap_or(0)
                    )?;
                }
                writeln!(f)?;
            }
            if let Some(v) = &d.divergence {
                writeln!(
                    f,
                    "  first divergence at event {}: {}",
                    v.event_index, v.reason
                )?;
                for c in &v.context {
                    writeln!(
                        f,
                        "    {} {:>8} {}",
                        if c.here { ">" } else { " " },
                        c.index,
                        c.event
                    )?;
                }
            }
            for n in &d.notes {
                writeln!(f, "  note: {n}")?;
            }
        }
        if !self.what_if.is_empty() {
            writeln!(f)?;
            writeln!(f, "what if (page-table pages, peak / final):")?;
            for w in &self.what_if {
                writeln!(f, "  domain {}", w.domain)?;
                for row in &w.rows {
                    write!(
                        f,
                        "    {} {:>8} / {:<8} {}",
                        if row.actual { "*" } else { " " },
                        row.peak_pages,
                        row.final_pages,
                        row.format
                    )?;
                    if row.beyond_budget {
                        write!(f, " (stopped: beyond the replay's budget)")?;
                    }
                    if row.failed_ops > 0 {
                        write!(f, " ({} op(s) impossible in this format)", row.failed_ops)?;
                    }
                    writeln!(f)?;
                }
            }
        }
        if let Some(o) = &self.objects {
            writeln!(f)?;
            o.write_text(f)?;
        }
        if let Some(p) = &self.pins {
            writeln!(f)?;
            p.write_text(f)?;
        }
        writeln!(f)?;
        if self.all_verified() {
            writeln!(f, "result: every domain verified")
        } else {
            let bad = self
                .domains
                .iter()
                .filter(|d| d.verdict != Verdict::Verified)
                .count();
            writeln!(
                f,
                "result: NOT verified ({bad} domain(s) diverged or could not be checked{}{}{}{})",
                match &self.objects {
                    Some(o) if !o.findings.is_empty() => "; object graph broken",
                    _ => "",
                },
                match &self.pins {
                    Some(p) if !p.findings.is_empty() => "; pinned-page accounting diverged",
                    _ => "",
                },
                if self.missing_points.is_empty() {
                    ""
                } else {
                    "; probe points missing"
                },
                if self.incomplete.is_empty() {
                    ""
                } else {
                    "; capture incomplete"
                }
            )
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
