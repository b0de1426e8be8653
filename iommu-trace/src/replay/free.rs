//! `domain_free` and the end of the stream: the model's final frees, pages never freed,
//! page events left without an operation, and the report.

use super::domain::{take_pending, whatif_of, CompactBody};
use super::runs::{fmt_runs, runs_of};
use super::{DomainState, Replayer, Report};
use crate::events::{DomainFree, Event, PtCause};

impl Replayer {
    /// A `domain_free` event (`index` in the stream).
    pub(super) fn domain_free(&mut self, index: u64, ev: &Event, f: &DomainFree) {
        let mut st = match self.active.remove(&f.domain.0) {
            Some(st) => st,
            None => Self::unknown_domain(&mut self.reports, f.domain.0),
        };
        Self::remember(
            &mut st,
            &self.opts,
            index,
            ev.tid,
            CompactBody::Free,
            &mut self.reports,
        );
        Self::close_alloc(&mut st, &mut self.reports, &self.opts, index);
        self.reports[st.report].free_index = Some(index);
        let observed = take_pending(&mut st, ev.tid);
        if !st.stopped {
            if let Some(model) = st.model.as_mut() {
                st.log.clear();
                model.domain_free(&mut st.log);
                let left = model.live_pages();
                let pred = runs_of(&st.log.ops);
                let r = &mut self.reports[st.report];
                r.predicted.allocated = st.log.allocated;
                r.predicted.freed = st.log.freed;
                r.predicted.peak = st.log.peak;
                if left != 0 {
                    r.notes.push(format!(
                        "the model itself keeps {left} page(s) after domain free"
                    ));
                }
                let (obs, cause_ok) = match observed {
                    Some(p) => (p.runs, !p.mixed_causes && p.cause == Some(PtCause::Free)),
                    None => (Vec::new(), true),
                };
                if pred != obs {
                    let reason = format!(
                        "domain free: the model predicts {}, the kernel did {}",
                        fmt_runs(&pred),
                        fmt_runs(&obs)
                    );
                    Self::diverge(
                        &mut st,
                        &mut self.reports,
                        &self.opts,
                        index,
                        reason,
                        pred,
                        obs,
                    );
                } else if !cause_ok {
                    Self::diverge(
                        &mut st,
                        &mut self.reports,
                        &self.opts,
                        index,
                        "page events before this domain_free were attributed to another cause"
                            .into(),
                        pred,
                        obs,
                    );
                }
            }
        }
        // Any pending pages of other threads: see close_domain.
        self.close_domain(st, None);
    }

    /// Close a domain leaving the table (freed, or its pointer allocated again): note
    /// pending pages without an operation, and keep its what-if rows.
    pub(super) fn close_domain(&mut self, mut st: DomainState, note: Option<String>) {
        let index = self.index.saturating_sub(1);
        let r_whatif =
            (!st.whatif.is_empty()).then(|| whatif_of(self.reports[st.report].domain, &st.whatif));
        Self::drop_models(&mut self.budget, &mut st);
        Self::close_alloc(&mut st, &mut self.reports, &self.opts, index);
        let r = &mut self.reports[st.report];
        if let Some(n) = note {
            r.notes.push(n);
        }
        for p in &st.pending {
            if !p.runs.is_empty() {
                r.notes.push(format!(
                    "page events from event {} (tid {}: {}) had no operation event",
                    p.first_index,
                    p.tid,
                    fmt_runs(&p.runs)
                ));
            }
        }
        r.never_freed = st.observed_live;
        if let Some(w) = r_whatif {
            self.done_whatif.push(w);
        }
    }

    /// Finish: domains still alive are reported with what they still hold.
    pub fn finish(mut self) -> Report {
        let mut alive: Vec<_> = self.active.drain().map(|(_, st)| st).collect();
        alive.sort_by_key(|st| st.report);
        let index = self.index.saturating_sub(1);
        for mut st in alive {
            Self::close_alloc(&mut st, &mut self.reports, &self.opts, index);
            let r = &mut self.reports[st.report];
            r.alive_at_end = true;
            for p in &st.pending {
                if !p.runs.is_empty() {
                    r.notes.push(format!(
                        "page events from event {} (tid {}: {}) had no operation event before the capture ended",
                        p.first_index, p.tid, fmt_runs(&p.runs)
                    ));
                }
            }
            r.never_freed = st.observed_live;
            if !st.whatif.is_empty() {
                self.done_whatif.push(whatif_of(r.domain, &st.whatif));
            }
        }
        for r in &mut self.reports {
            r.hwpt = self.objects.hwpt_id(r.domain, r.alloc_index);
        }
        let objects = std::mem::take(&mut self.objects).finish(index);
        let pins = std::mem::take(&mut self.pins).finish();
        Report {
            objects,
            pins,
            options: self.opts,
            events: self.index,
            lost_events: self.lost_events,
            lost_contexts: self.lost_contexts,
            failed_allocs: self.failed_allocs,
            domains: self.reports,
            what_if: self.done_whatif,
            missing_points: Vec::new(),
            incomplete: Vec::new(),
        }
    }
}
