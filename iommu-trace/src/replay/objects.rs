//! The iommufd object graph over a capture, and its invariants (docs/kernel-facts.md §7.2):
//! an id is not published again in a context while its object lives; an object is destroyed
//! at most once (a second destroy of a pointer not published again); a HWPT's domain is freed when the HWPT is destroyed, not before; and once
//! an iommufd is closed every object of it is destroyed. A broken one is reported like a
//! page-table divergence: what, and at which event.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::events::{DestroyHow, KernelPtr, ObjectAlloc, ObjectDestroy};

/// A live object, as published.
#[derive(Clone, Debug)]
struct Live {
    object: String,
    ictx: u64,
    id: u32,
    created_at: u64,
    domain: Option<u64>,
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GraphFinding {
    /// The event where it shows.
    pub event_index: u64,
    /// The invariant broken, in words.
    pub what: String,
}

/// What the replay found about the object graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ObjectsReport {
    /// Objects published, per type.
    pub created: BTreeMap<String, u64>,
    /// Objects destroyed, per type.
    pub destroyed: BTreeMap<String, u64>,
    /// Objects allocated and never published (failed creates).
    pub aborted: u64,
    /// Object allocations that failed.
    pub failed_allocs: u64,
    /// Destroyed objects whose creation the capture did not see (made before it started).
    pub created_before_capture: u64,
    /// Objects alive when the capture ended, per type (their iommufd still open).
    pub alive_at_end: BTreeMap<String, u64>,
    /// Broken invariants, in stream order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<GraphFinding>,
    /// Why the graph was not checked (an object probe point recorded nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
}

impl ObjectsReport {
    pub(super) fn write_text(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |m: &BTreeMap<String, u64>| {
            let parts: Vec<String> = m.iter().map(|(t, n)| format!("{t} {n}")).collect();
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            }
        };
        let verdict = match (&self.unchecked, self.findings.is_empty()) {
            (Some(why), _) => format!("not checked: {why}"),
            (None, true) => "consistent".to_string(),
            (None, false) => "BROKEN".to_string(),
        };
        writeln!(f, "iommufd objects: {verdict}")?;
        writeln!(f, "  created: {}", list(&self.created))?;
        writeln!(f, "  destroyed: {}", list(&self.destroyed))?;
        writeln!(
            f,
            "  aborted {}, allocation failed {}, destroyed but created before the capture {}",
            self.aborted, self.failed_allocs, self.created_before_capture
        )?;
        if !self.alive_at_end.is_empty() {
            writeln!(f, "  alive at the end: {}", list(&self.alive_at_end))?;
        }
        for g in &self.findings {
            writeln!(f, "  at event {}: {}", g.event_index, g.what)?;
        }
        Ok(())
    }

    /// An object probe point recorded nothing: the graph is incomplete, so not checked.
    pub fn set_unchecked(&mut self, why: String) {
        self.findings.clear();
        self.unchecked = Some(why);
    }
}

/// Builds the graph event by event.
#[derive(Default)]
pub(super) struct ObjectGraph {
    /// By object pointer (unique while the object lives).
    live: FxHashMap<u64, Live>,
    /// (ictx, id) -> object pointer.
    ids: FxHashMap<(u64, u32), u64>,
    /// Live HWPTs' domains -> their object pointer.
    hwpt_of_domain: FxHashMap<u64, u64>,
    /// Domains of destroyed HWPTs not yet freed: domain -> (hwpt id, destroy event).
    awaiting_free: FxHashMap<u64, (u32, u64)>,
    /// Domains whose allocation the capture saw (only those have a traced free), with the
    /// event of that allocation.
    allocated: FxHashMap<u64, u64>,
    /// Contexts whose file was released. A context pointer is reused by the next open.
    closed: BTreeSet<u64>,
    /// Objects destroyed in the capture and not published again.
    gone: FxHashSet<u64>,
    /// The HWPT id of each domain lifetime (domain, its allocation event), for the reports.
    hwpt_ids: FxHashMap<(u64, u64), u32>,
    seen: bool,
    report: ObjectsReport,
}

impl ObjectGraph {
    fn finding(&mut self, event_index: u64, what: String) {
        // Bounded: a crafted capture could break an invariant at every event.
        if self.report.findings.len() < 100 {
            self.report
                .findings
                .push(GraphFinding { event_index, what });
        }
    }

    pub(super) fn alloc(&mut self, index: u64, o: &ObjectAlloc) {
        self.seen = true;
        if o.errno != 0 {
            self.report.failed_allocs += 1;
            return;
        }
        *self.report.created.entry(o.object.clone()).or_default() += 1;
        self.gone.remove(&o.obj.0);
        if self.closed.remove(&o.ictx.0) {
            // A new open at the address of a closed context: what the old one left is
            // known to have outlived its close.
            self.outlived_close(o.ictx.0, index);
        }
        let key = (o.ictx.0, o.id);
        if let Some(other) = self.ids.get(&key).and_then(|p| self.live.get(p)) {
            let what = format!(
                "{} id {} published while id {} still names the {} created at event {}",
                o.object, o.id, o.id, other.object, other.created_at
            );
            self.finding(index, what);
        }
        if let Some(old) = self.live.remove(&o.obj.0) {
            // The pointer is live again: its destruction was not seen.
            self.ids.remove(&(old.ictx, old.id));
        }
        let domain = o.domain.map(|d| d.0).filter(|d| *d != 0);
        if let Some(d) = domain {
            self.hwpt_of_domain.insert(d, o.obj.0);
            if let Some(&at) = self.allocated.get(&d) {
                self.hwpt_ids.insert((d, at), o.id);
            }
        }
        self.ids.insert(key, o.obj.0);
        self.live.insert(
            o.obj.0,
            Live {
                object: o.object.clone(),
                ictx: o.ictx.0,
                id: o.id,
                created_at: index,
                domain,
            },
        );
    }

    pub(super) fn abort(&mut self) {
        self.seen = true;
        self.report.aborted += 1;
    }

    pub(super) fn destroy(&mut self, index: u64, o: &ObjectDestroy) {
        self.seen = true;
        *self.report.destroyed.entry(o.object.clone()).or_default() += 1;
        let Some(l) = self.live.remove(&o.obj.0) else {
            if self.gone.contains(&o.obj.0) {
                let what = format!(
                    "{} id {} ({}) destroyed a second time",
                    o.object, o.id, o.obj
                );
                self.finding(index, what);
            } else {
                self.report.created_before_capture += 1;
            }
            return;
        };
        self.gone.insert(o.obj.0);
        self.ids.remove(&(l.ictx, l.id));
        if o.how == DestroyHow::Close {
            self.closed.insert(l.ictx);
        }
        if l.object != o.object || l.id != o.id {
            let what = format!(
                "object {} destroyed as {} id {}, but it was published as {} id {} (event {})",
                o.obj, o.object, o.id, l.object, l.id, l.created_at
            );
            self.finding(index, what);
        }
        if let Some(d) = l.domain {
            self.hwpt_of_domain.remove(&d);
            // Only a domain whose allocation was traced has a traced free (7.3's nested
            // domains from a vIOMMU op are not yet).
            if self.allocated.contains_key(&d) {
                self.awaiting_free.insert(d, (l.id, index));
            }
        }
    }

    /// A successful `domain_alloc`.
    pub(super) fn domain_alloc(&mut self, index: u64, domain: KernelPtr) {
        self.allocated.insert(domain.0, index);
    }

    /// Objects of `ictx` still alive, reported as having outlived its close.
    fn outlived_close(&mut self, ictx: u64, index: u64) {
        let mut left: Vec<_> = self
            .live
            .values()
            .filter(|l| l.ictx == ictx)
            .cloned()
            .collect();
        left.sort_by_key(|l| l.created_at);
        for l in left {
            let what = format!(
                "{} id {} (created at event {}) outlived the close of its iommufd",
                l.object, l.id, l.created_at
            );
            self.finding(index, what);
        }
    }

    /// A `domain_free`: expected after its HWPT's destruction, never before.
    pub(super) fn domain_free(&mut self, index: u64, domain: KernelPtr) {
        self.allocated.remove(&domain.0);
        if self.awaiting_free.remove(&domain.0).is_some() {
            return;
        }
        if let Some(l) = self
            .hwpt_of_domain
            .remove(&domain.0)
            .and_then(|p| self.live.get(&p))
        {
            let what = format!(
                "domain {domain} freed while {} id {} (created at event {}) still holds it",
                l.object, l.id, l.created_at
            );
            self.finding(index, what);
        }
    }

    /// The HWPT id whose domain is `domain` allocated at event `alloc_index`, if the
    /// capture saw it published.
    pub(super) fn hwpt_id(&self, domain: KernelPtr, alloc_index: Option<u64>) -> Option<u32> {
        self.hwpt_ids.get(&(domain.0, alloc_index?)).copied()
    }

    /// The report, with the invariants that need the whole capture; `None` when the capture
    /// has no object events.
    pub(super) fn finish(mut self, last_index: u64) -> Option<ObjectsReport> {
        if !self.seen {
            return None;
        }
        let mut awaiting: Vec<_> = self.awaiting_free.drain().collect();
        awaiting.sort_by_key(|(_, (_, at))| *at);
        for (domain, (id, at)) in awaiting {
            let what = format!(
                "HWPT id {id} was destroyed at event {at}, but its domain {} was never freed",
                KernelPtr(domain)
            );
            self.finding(at, what);
        }
        for ictx in std::mem::take(&mut self.closed) {
            self.outlived_close(ictx, last_index);
        }
        for l in self.live.values() {
            *self
                .report
                .alive_at_end
                .entry(l.object.clone())
                .or_default() += 1;
        }
        Some(self.report)
    }
}
