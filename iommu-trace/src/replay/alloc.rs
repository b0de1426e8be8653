//! `domain_alloc`: a new domain's state, its model and what-if variants, and the
//! top-level table the model predicts for it.

use super::domain::CompactBody;
use super::runs::runs_of;
use super::{budget, OpenAlloc, Replayer, Verdict, WhatIfState};
use crate::events::{DomainAlloc, Event};
use crate::model::{ModelConfig, PageLog};

impl Replayer {
    /// A `domain_alloc` event (`index` in the stream).
    pub(super) fn domain_alloc(&mut self, index: u64, ev: &Event, a: &DomainAlloc) {
        if a.errno != 0 {
            self.failed_allocs += 1;
            return;
        }
        let domain = a.domain.0;
        if let Some(old) = self.active.remove(&domain) {
            self.close_domain(
                old,
                Some("the domain pointer was allocated again without a domain_free event".into()),
            );
        }
        let mut st = Self::new_domain(&mut self.reports, domain, &a.driver, Some(a.kind));
        let r = &mut self.reports[st.report];
        r.alloc_index = Some(index);
        match ModelConfig::from_alloc(a, self.opts.model, self.opts.behaviour) {
            Ok(cfg) => {
                r.model = Some(cfg.describe());
                let mut model = cfg.build();
                st.log.clear();
                model.domain_alloc(&mut st.log);
                st.open_alloc = Some(OpenAlloc {
                    predicted: runs_of(&st.log.ops),
                    observed: Vec::new(),
                });
                if self.opts.what_if {
                    let mut rows = vec![(cfg.describe(), true, cfg.build())];
                    for v in cfg.what_if_variants() {
                        if v != cfg {
                            rows.push((v.describe(), false, v.build()));
                        }
                    }
                    st.whatif = rows
                        .into_iter()
                        .map(|(format, actual, mut model)| {
                            let mut log = PageLog::new();
                            model.domain_alloc(&mut log);
                            self.budget.add(&model);
                            WhatIfState {
                                format,
                                actual,
                                model: Some(model),
                                log,
                                failed: 0,
                            }
                        })
                        .collect();
                }
                self.budget.add(&model);
                st.model = Some(model);
                if !self.budget.admits(0) {
                    // Too many domains alive at once: this one is not modelled.
                    let bytes = st.model.as_ref().map_or(0, |m| m.model_bytes());
                    let why =
                        budget::Budget::refusal(&format!("event {index}: domain_alloc"), bytes);
                    Self::beyond_budget(&mut self.budget, &mut st, &mut self.reports, why);
                }
            }
            Err(e) => {
                r.verdict = Verdict::Unverifiable(e.to_string());
                st.stopped = true;
            }
        }
        Self::remember(
            &mut st,
            &self.opts,
            index,
            ev.tid,
            CompactBody::Alloc,
            &mut self.reports,
        );
        self.active.insert(domain, st);
    }
}
