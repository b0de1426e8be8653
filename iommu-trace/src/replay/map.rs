//! `map` and `unmap`: replay the operation on the model (and the what-if variants) and
//! compare its predicted page runs with the pages buffered for that thread.

use super::budget::{self, Budget};
use super::domain::{take_pending, CompactBody};
use super::runs::{fmt_runs, runs_into, runs_of};
use super::Replayer;
use crate::events::{Event, MapOp, PtCause};
use crate::model::Model;

impl Replayer {
    /// A `map` (`is_map`) or `unmap` event (`index` in the stream).
    pub(super) fn map_unmap(&mut self, index: u64, ev: &Event, m: &MapOp, is_map: bool) {
        let body = if is_map {
            CompactBody::Map {
                iova: m.iova,
                size: m.size,
                done: m.done,
                errno: m.errno,
            }
        } else {
            CompactBody::Unmap {
                iova: m.iova,
                size: m.size,
                done: m.done,
            }
        };
        let st = Self::ensure(&mut self.active, &mut self.reports, m.domain.0);
        Self::remember(st, &self.opts, index, ev.tid, body, &mut self.reports);
        Self::close_alloc(st, &mut self.reports, &self.opts, index);
        let r = &mut self.reports[st.report];
        if is_map {
            r.maps += 1;
        } else {
            r.unmaps += 1;
        }
        let observed = take_pending(st, ev.tid);
        let expect_cause = if is_map { PtCause::Map } else { PtCause::Unmap };
        // What an operation could add to a model's tables: a map its size, an unmap at most
        // a table split (LPAE) per level.
        let worst = |model: &Model| {
            let bytes = if is_map { m.size } else { 0 };
            budget::worst_case_bytes(bytes, model)
        };
        // The domain's own model comes first: what-if rows only use what it leaves.
        let main_worst = match (&st.model, st.stopped) {
            (Some(model), false) => worst(model),
            _ => 0,
        };
        let op_name = || {
            format!(
                "event {index}: {} iova {:#x} size {:#x}",
                if is_map { "map" } else { "unmap" },
                m.iova,
                m.size
            )
        };
        // what-if: the same successful operations under other formats.
        for w in st.whatif.iter_mut() {
            let Some(model) = w.model.as_mut() else {
                continue;
            };
            if !self.budget.admits(worst(model).saturating_add(main_worst)) {
                self.budget.remove(model);
                w.model = None;
                continue;
            }
            w.log.clear();
            let log = &mut w.log;
            let failed = self.budget.run(model, |model| {
                if is_map {
                    m.errno == 0 && model.map(m.iova, m.paddr, m.size, log).is_err()
                } else {
                    model.unmap(m.iova, m.size, log) == 0 && m.done != 0
                }
            });
            if failed {
                w.failed += 1;
            }
        }
        if st.stopped {
            return;
        }
        let Some(model) = st.model.as_mut() else {
            return;
        };
        if !self.budget.admits(main_worst) {
            let why = Budget::refusal(&op_name(), main_worst);
            Self::beyond_budget(&mut self.budget, st, &mut self.reports, why);
            return;
        }
        st.log.clear();
        let levels_before = model.top_levels();
        let (what, predicted_done) = if is_map {
            let log = &mut st.log;
            let res = self
                .budget
                .run(model, |model| model.map(m.iova, m.paddr, m.size, log));
            match (res, m.errno) {
                (Ok(_), 0) => ("map", m.done),
                (Err(e), k) if e == k => ("map", m.done),
                (Ok(_), k) => {
                    Self::unverifiable(
                        st,
                        &mut self.reports,
                        format!(
                            "event {index}: the kernel's map failed (errno {k}) where the model \
                                 succeeds (e.g. -ENOMEM): the failure path is not modelled"
                        ),
                    );
                    return;
                }
                (Err(e), k) => {
                    let reason =
                        format!("the model's map fails with errno {e}, the kernel's returned {k}");
                    let pred = runs_of(&st.log.ops);
                    let obs = observed.map(|p| p.runs).unwrap_or_default();
                    Self::diverge(st, &mut self.reports, &self.opts, index, reason, pred, obs);
                    return;
                }
            }
        } else {
            let log = &mut st.log;
            let done = self
                .budget
                .run(model, |model| model.unmap(m.iova, m.size, log));
            ("unmap", done)
        };
        if let Some(why) = model.unsupported() {
            let why = why.to_string();
            Self::unverifiable(
                st,
                &mut self.reports,
                format!("event {index}: {why} (kernel behaviour the model does not reproduce)"),
            );
            return;
        }
        // A table whose top grows: the kernel's pt_grow events say to how many levels.
        let predicted_growth = match (levels_before, model.top_levels()) {
            (Some(before), Some(after)) if after != before => Some(after),
            _ => None,
        };
        let observed_growth = observed.as_ref().and_then(|p| p.grew_to);
        let mut pred = std::mem::take(&mut st.pred_buf);
        runs_into(&st.log.ops, &mut pred);
        let r = &mut self.reports[st.report];
        r.predicted.allocated = st.log.allocated;
        r.predicted.freed = st.log.freed;
        r.predicted.peak = st.log.peak;
        let (obs, cause_ok) = match observed {
            Some(p) => {
                let ok = !p.mixed_causes && p.cause == Some(expect_cause);
                (p.runs, ok)
            }
            None => (Vec::new(), true),
        };
        let reason = if !is_map && predicted_done != m.done {
            Some(format!(
                "the model unmapped {predicted_done:#x} bytes, the kernel {:#x}",
                m.done
            ))
        } else if pred != obs {
            Some(format!(
                "{what} iova {:#x} size {:#x}: the model predicts {}, the kernel did {}",
                m.iova,
                m.size,
                fmt_runs(&pred),
                fmt_runs(&obs)
            ))
        } else if !cause_ok {
            Some(format!(
                "page events before this {what} were attributed to another cause"
            ))
        } else if self.opts.top_growth
            && levels_before.is_some()
            && predicted_growth != observed_growth
        {
            let said =
                |g: Option<u32>| g.map_or("not grow".into(), |l| format!("grow to {l} levels"));
            Some(format!(
                "{what} iova {:#x}: the model's table would {}, the kernel's did {} (pt_grow)",
                m.iova,
                said(predicted_growth),
                said(observed_growth)
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                Self::diverge(st, &mut self.reports, &self.opts, index, reason, pred, obs)
            }
            None => {
                // Keep both buffers for the next operations.
                st.pred_buf = pred;
                if obs.capacity() > 0 {
                    st.spare_runs = obs;
                    st.spare_runs.clear();
                }
            }
        }
    }
}
