//! `pt_alloc` / `pt_free`: page totals and memory-cgroup charging, the allocation-phase
//! pages checked as they come, and the others buffered per (domain, thread).

use super::domain::CompactBody;
use super::runs::{is_prefix, push_run};
use super::{DomainState, Pending, Replayer};
use crate::events::{DomainKind, Event, PtCause, PtGrow, PtPages};

/// cgroup v2 id of the root cgroup (its kernfs node id).
const ROOT_CGROUP_ID: u64 = 1;

impl Replayer {
    /// A `pt_alloc` (`alloc`) or `pt_free` event (`index` in the stream).
    pub(super) fn pt_pages(&mut self, index: u64, ev: &Event, p: &PtPages, alloc: bool) {
        let st = Self::ensure(&mut self.active, &mut self.reports, p.domain.0);
        let body = CompactBody::Pt {
            alloc,
            pages: p.pages,
            charged: p.charged,
            cause: p.cause,
        };
        Self::remember(st, &self.opts, index, ev.tid, body, &mut self.reports);
        let r = &mut self.reports[st.report];
        // Saturating: a capture's page counts are input, and may be anything.
        if alloc {
            r.observed.allocated = r.observed.allocated.saturating_add(p.pages);
            st.observed_live = st.observed_live.saturating_add(p.pages);
            r.observed.peak = r.observed.peak.max(st.observed_live);
            if !p.charged {
                // Classify by cause (docs/kernel-facts.md §3.3).
                let policy = match p.cause {
                    PtCause::Alloc | PtCause::Unmap => true,
                    // A task in the root cgroup is never charged (the root memcg does
                    // not account kmem, mm/memcontrol.c __memcg_kmem_charge_page).
                    PtCause::Map if ev.cgroup_id == ROOT_CGROUP_ID => true,
                    PtCause::Map => !matches!(
                        r.kind,
                        Some(DomainKind::Paging | DomainKind::Nested | DomainKind::Auto)
                    ),
                    PtCause::Free => false,
                };
                if policy {
                    r.uncharged.policy = r.uncharged.policy.saturating_add(p.pages);
                } else {
                    r.uncharged.unexpected = r.uncharged.unexpected.saturating_add(p.pages);
                    r.uncharged.first_unexpected_index.get_or_insert(index);
                }
            }
        } else {
            r.observed.freed = r.observed.freed.saturating_add(p.pages);
            st.observed_live = st.observed_live.saturating_sub(p.pages);
        }
        if p.cause == PtCause::Alloc {
            if let Some(open) = st.open_alloc.as_mut() {
                push_run(&mut open.observed, alloc, p.pages);
                // Verify as they come: observed must stay a prefix of predicted.
                if !st.stopped && !is_prefix(&open.observed, &open.predicted) {
                    let (pred, obs) = (open.predicted.clone(), open.observed.clone());
                    Self::diverge(
                        st,
                        &mut self.reports,
                        &self.opts,
                        index,
                        "domain-allocation pages differ from the model".into(),
                        pred,
                        obs,
                    );
                }
                return;
            }
            // cause alloc without an open allocation: treat like any pending page.
        }
        Self::close_alloc(st, &mut self.reports, &self.opts, index);
        let pend = pending_of(st, ev.tid, index);
        if pend.runs.is_empty() {
            pend.first_index = index;
        }
        match pend.cause {
            None => pend.cause = Some(p.cause),
            Some(c) if c != p.cause => pend.mixed_causes = true,
            _ => {}
        }
        push_run(&mut pend.runs, alloc, p.pages);
    }

    /// A `pt_grow` event: the table's levels now, kept for the map this thread is in.
    pub(super) fn pt_grow(&mut self, index: u64, ev: &Event, g: &PtGrow) {
        let st = Self::ensure(&mut self.active, &mut self.reports, g.domain.0);
        let body = CompactBody::Grow { levels: g.levels };
        Self::remember(st, &self.opts, index, ev.tid, body, &mut self.reports);
        let r = &mut self.reports[st.report];
        r.top_growths = r.top_growths.saturating_add(1);
        r.top_levels = Some(g.levels);
        Self::close_alloc(st, &mut self.reports, &self.opts, index);
        pending_of(st, ev.tid, index).grew_to = Some(g.levels);
    }
}

/// The events thread `tid` buffered for its operation on this domain (new from `index`).
fn pending_of(st: &mut DomainState, tid: u32, index: u64) -> &mut Pending {
    match st.pending.iter().position(|q| q.tid == tid) {
        Some(i) => &mut st.pending[i],
        None => {
            st.pending.push(Pending {
                tid,
                first_index: index,
                runs: std::mem::take(&mut st.spare_runs),
                ..Default::default()
            });
            st.pending.last_mut().expect("just pushed")
        }
    }
}
