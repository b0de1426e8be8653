//! The Prometheus exporter over `state/`: metric families built from the live aggregate at
//! scrape time, and the HTTP server that serves them (`http`).
//!
//! Labels are bounded (docs/design-notes.md §1): driver, domain kind, flag names (known bits plus
//! `OTHER`), errno names, page-table cause, charged; never a pid or a domain pointer.
//! Per-cgroup series are limited to the top N owner cgroups plus `other`.

pub mod http;
mod metrics;

pub use metrics::{encode, families, render, MetricDef, METRICS};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::replay::{Report, Verdict};
pub use crate::session::{ProbeStatus, ProgramRunStats as BpfProgramStats};
use crate::state::State;

/// The replay's verdicts, when `serve --from FILE --verify` replayed the capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// (verdict, domains): `verified`, `diverged`, `unverifiable`.
    pub domains_by_verdict: Vec<(String, u64)>,
    /// Pages not charged where iommufd asked for GFP_KERNEL_ACCOUNT.
    pub unexpected_uncharged_pages: u64,
}

impl ReplaySummary {
    /// Domains counted by verdict: with a probe point the verification needs missing, events
    /// lost or the capture not read whole, every domain is unverifiable (`iommu-trace replay`
    /// does not pass such a capture either).
    pub fn of(report: &Report) -> ReplaySummary {
        let capture_wide_gap = report.capture_wide_gap();
        let mut by = [("verified", 0u64), ("diverged", 0), ("unverifiable", 0)];
        for d in &report.domains {
            let i = match d.verdict {
                _ if capture_wide_gap => 2,
                Verdict::Verified => 0,
                Verdict::Diverged => 1,
                Verdict::Unverifiable(_) => 2,
            };
            by[i].1 += 1;
        }
        ReplaySummary {
            domains_by_verdict: by.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
            unexpected_uncharged_pages: report.unexpected_uncharged(),
        }
    }
}

/// What the exporter says about itself and where its events come from.
#[derive(Clone, Debug, Default)]
pub struct ExporterInfo {
    /// `live` or `capture`.
    pub source: String,
    pub kernel_release: String,
    pub probes: Vec<ProbeStatus>,
    pub bpf_programs: Vec<BpfProgramStats>,
    pub replay: Option<ReplaySummary>,
}

/// The state and metadata shared by the ingesting side and the HTTP side. Each lock is
/// held only to apply one event or to build one scrape's families (never across I/O).
#[derive(Default)]
pub struct Exported {
    pub state: Mutex<State>,
    pub meta: Mutex<ExporterInfo>,
}

impl Exported {
    pub fn new(meta: ExporterInfo) -> Arc<Exported> {
        Arc::new(Exported {
            state: Mutex::new(State::new()),
            meta: Mutex::new(meta),
        })
    }
}

/// Turns a cgroup id into the `cgroup` label value.
pub trait CgroupNamer: Send + Sync {
    fn name(&self, id: u64) -> String;
}

/// Labels cgroups by their numeric id (captures from another host).
pub struct CgroupIds;

impl CgroupNamer for CgroupIds {
    fn name(&self, id: u64) -> String {
        id.to_string()
    }
}

/// Labels cgroups by their path under the cgroup v2 mount (a cgroup's id is its
/// directory's inode number), falling back to the id. Re-reads the tree when it meets an
/// unknown id, at most every 10 s.
pub struct CgroupPaths {
    root: std::path::PathBuf,
    cache: Mutex<(HashMap<u64, String>, Option<Instant>)>,
}

impl CgroupPaths {
    pub fn new(root: impl Into<std::path::PathBuf>) -> CgroupPaths {
        CgroupPaths {
            root: root.into(),
            cache: Mutex::new((HashMap::new(), None)),
        }
    }

    fn walk(&self) -> HashMap<u64, String> {
        use std::os::unix::fs::MetadataExt;
        let mut out = HashMap::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(md) = std::fs::metadata(&dir) {
                let rel = dir.strip_prefix(&self.root).unwrap_or(&dir);
                out.insert(md.ino(), format!("/{}", rel.display()));
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out
    }
}

impl CgroupNamer for CgroupPaths {
    fn name(&self, id: u64) -> String {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.0.contains_key(&id)
            && cache
                .1
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            cache.0 = self.walk();
            cache.1 = Some(Instant::now());
        }
        cache.0.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }
}

/// How the families are built.
pub struct ExportOptions {
    /// Owner cgroups given their own series; the rest are summed into `cgroup="other"`.
    pub top_cgroups: usize,
    pub cgroups: Box<dyn CgroupNamer>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            top_cgroups: 10,
            cgroups: Box::new(CgroupIds),
        }
    }
}

#[cfg(test)]
mod tests;
