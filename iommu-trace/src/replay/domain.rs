//! Per-domain bookkeeping shared by the operations: a domain's state and report, the
//! context ring, divergence and unverifiable verdicts, the end of the allocation phase.

use std::fmt;

use super::budget::Budget;
use super::runs::fmt_runs;
use super::{
    ContextEvent, Divergence, DomainMap, DomainReport, DomainState, PageRun, PageTotals, Pending,
    ReplayOptions, Replayer, Uncharged, Verdict, WhatIfDomain, WhatIfRow, WhatIfState,
};
use crate::events::{DomainKind, KernelPtr, PtCause};
use crate::model::PageLog;

/// A compact event of one domain, kept for context (no heap per event).
#[derive(Clone, Copy, Debug)]
pub(super) struct Compact {
    index: u64,
    tid: u32,
    body: CompactBody,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum CompactBody {
    Alloc,
    Free,
    Map {
        iova: u64,
        size: u64,
        done: u64,
        errno: i32,
    },
    Unmap {
        iova: u64,
        size: u64,
        done: u64,
    },
    Pt {
        alloc: bool,
        pages: u64,
        charged: bool,
        cause: PtCause,
    },
    Grow {
        levels: u32,
    },
}

impl fmt::Display for Compact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tid {} ", self.tid)?;
        match self.body {
            CompactBody::Alloc => write!(f, "domain_alloc"),
            CompactBody::Free => write!(f, "domain_free"),
            CompactBody::Map {
                iova,
                size,
                done,
                errno,
            } => {
                write!(f, "map iova {iova:#x} size {size:#x} done {done:#x}")?;
                if errno != 0 {
                    write!(f, " errno {errno}")?;
                }
                Ok(())
            }
            CompactBody::Unmap { iova, size, done } => {
                write!(f, "unmap iova {iova:#x} size {size:#x} done {done:#x}")
            }
            CompactBody::Grow { levels } => write!(f, "pt_grow to {levels} levels"),
            CompactBody::Pt {
                alloc,
                pages,
                charged,
                cause,
            } => write!(
                f,
                "{} {} page(s) cause {:?}{}",
                if alloc { "pt_alloc" } else { "pt_free" },
                pages,
                cause,
                if alloc && !charged {
                    " (uncharged)"
                } else {
                    ""
                }
            ),
        }
    }
}

impl Replayer {
    pub(super) fn new_domain(
        reports: &mut Vec<DomainReport>,
        domain: u64,
        driver: &str,
        kind: Option<DomainKind>,
    ) -> DomainState {
        reports.push(DomainReport {
            domain: KernelPtr(domain),
            driver: driver.to_string(),
            kind,
            hwpt: None,
            model: None,
            verdict: Verdict::Verified,
            alloc_index: None,
            free_index: None,
            maps: 0,
            unmaps: 0,
            observed: PageTotals::default(),
            predicted: PageTotals::default(),
            never_freed: 0,
            alive_at_end: false,
            uncharged: Uncharged::default(),
            top_growths: 0,
            top_levels: None,
            divergence: None,
            notes: Vec::new(),
        });
        DomainState {
            report: reports.len() - 1,
            model: None,
            stopped: false,
            open_alloc: None,
            pending: Vec::new(),
            pred_buf: Vec::new(),
            spare_runs: Vec::new(),
            log: PageLog::new(),
            ring: std::collections::VecDeque::new(),
            after: 0,
            observed_live: 0,
            whatif: Vec::new(),
        }
    }

    /// The state of a domain, created as "allocated before the capture" when unknown.
    pub(super) fn ensure<'a>(
        active: &'a mut DomainMap,
        reports: &mut Vec<DomainReport>,
        domain: u64,
    ) -> &'a mut DomainState {
        active
            .entry(domain)
            .or_insert_with(|| Self::unknown_domain(reports, domain))
    }

    /// A domain first seen after its allocation: "allocated before the capture".
    pub(super) fn unknown_domain(reports: &mut Vec<DomainReport>, domain: u64) -> DomainState {
        let mut st = Self::new_domain(reports, domain, "unknown", None);
        st.stopped = true;
        reports[st.report].verdict = Verdict::Unverifiable(
            "allocated before the capture started (no domain_alloc event)".into(),
        );
        st
    }

    pub(super) fn remember(
        st: &mut DomainState,
        opts: &ReplayOptions,
        index: u64,
        tid: u32,
        body: CompactBody,
        reports: &mut [DomainReport],
    ) {
        let c = Compact { index, tid, body };
        if st.after > 0 {
            st.after -= 1;
            if let Some(d) = reports[st.report].divergence.as_mut() {
                d.context.push(ContextEvent {
                    index,
                    event: c.to_string(),
                    here: false,
                });
            }
        }
        if opts.context == 0 {
            return;
        }
        if st.ring.len() == opts.context + 1 {
            st.ring.pop_front();
        }
        st.ring.push_back(c);
    }

    pub(super) fn diverge(
        st: &mut DomainState,
        reports: &mut [DomainReport],
        opts: &ReplayOptions,
        index: u64,
        reason: String,
        predicted: Vec<PageRun>,
        observed: Vec<PageRun>,
    ) {
        st.stopped = true;
        let r = &mut reports[st.report];
        r.verdict = Verdict::Diverged;
        let context = st
            .ring
            .iter()
            .map(|c| ContextEvent {
                index: c.index,
                event: c.to_string(),
                here: c.index == index,
            })
            .collect();
        st.after = opts.context;
        r.divergence = Some(Divergence {
            event_index: index,
            reason,
            predicted,
            observed,
            context,
        });
    }

    pub(super) fn unverifiable(st: &mut DomainState, reports: &mut [DomainReport], reason: String) {
        st.stopped = true;
        reports[st.report].verdict = Verdict::Unverifiable(reason);
    }

    /// The domain's models would grow past the replay's budget: unverifiable, and its
    /// models (what-if rows included) dropped to give their memory back.
    pub(super) fn beyond_budget(
        budget: &mut Budget,
        st: &mut DomainState,
        reports: &mut [DomainReport],
        reason: String,
    ) {
        Self::drop_models(budget, st);
        Self::unverifiable(st, reports, reason);
    }

    /// Drops every model of a domain leaving the replay, giving their memory back.
    pub(super) fn drop_models(budget: &mut Budget, st: &mut DomainState) {
        if let Some(m) = st.model.take() {
            budget.remove(&m);
        }
        for w in &mut st.whatif {
            if let Some(m) = w.model.take() {
                budget.remove(&m);
            }
        }
    }

    /// End the domain-allocation phase: every predicted alloc-time page must have come.
    pub(super) fn close_alloc(
        st: &mut DomainState,
        reports: &mut [DomainReport],
        opts: &ReplayOptions,
        index: u64,
    ) {
        if let Some(open) = st.open_alloc.take() {
            if !st.stopped && open.observed != open.predicted {
                let reason = format!(
                    "domain allocation: the model predicts {} (the top-level table), the kernel did {}",
                    fmt_runs(&open.predicted), fmt_runs(&open.observed));
                Self::diverge(
                    st,
                    reports,
                    opts,
                    index,
                    reason,
                    open.predicted,
                    open.observed,
                );
            }
        }
    }
}

pub(super) fn take_pending(st: &mut DomainState, tid: u32) -> Option<Pending> {
    let i = st.pending.iter().position(|p| p.tid == tid)?;
    Some(st.pending.swap_remove(i))
}

pub(super) fn whatif_of(domain: KernelPtr, w: &[WhatIfState]) -> WhatIfDomain {
    WhatIfDomain {
        domain,
        rows: w
            .iter()
            .map(|s| WhatIfRow {
                format: s.format.clone(),
                actual: s.actual,
                peak_pages: s.log.peak,
                final_pages: s.model.as_ref().map_or(s.log.live, |m| m.live_pages()),
                beyond_budget: s.model.is_none(),
                failed_ops: s.failed,
            })
            .collect(),
    }
}
