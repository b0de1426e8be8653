//! The reference model's verdict on one domain: its kept history replayed through
//! `replay::Replayer`, as the detail view shows it (cached per domain and history length).

use super::{DomainRow, Kept, Model, SessionInfo};
use crate::replay::{Replayer, Verdict};

/// The reference model's verdict on one domain, as the detail view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainVerdict {
    /// What the model concluded (drives the colour).
    pub judgement: Judgement,
    /// "verified", "DIVERGED", "unverifiable: ..." or why there is none.
    pub verdict: String,
    /// Model used, and what it saw.
    pub detail: Vec<String>,
}

/// The reference model's conclusion on a domain, as the detail view colours it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judgement {
    Verified,
    Diverged,
    Unverifiable,
    /// No verdict: nothing kept, or nothing to model.
    None,
}

impl Model {
    /// The reference model's verdict on a domain (replays its kept history).
    pub fn verdict(&self, row: &DomainRow) -> DomainVerdict {
        match row.extra {
            Some(e) if e.history_dropped => DomainVerdict {
                judgement: Judgement::None,
                verdict: "not kept: freed over 10 s ago (record and `iommu-trace replay` \
                          verify every domain)"
                    .into(),
                detail: Vec::new(),
            },
            Some(e) => {
                let key = (row.key(), e.history.len());
                if let Some((k, v)) = &*self.verdict_cache.borrow() {
                    if *k == key {
                        return v.clone();
                    }
                }
                let v = verdict_of(&self.meta, &e.history, e.truncated, row.d.seen_alloc);
                *self.verdict_cache.borrow_mut() = Some((key, v.clone()));
                v
            }
            None => DomainVerdict {
                judgement: Judgement::None,
                verdict: "none: no events kept".into(),
                detail: Vec::new(),
            },
        }
    }
}

/// Replays one domain's events through the reference model.
fn verdict_of(
    meta: &SessionInfo,
    history: &[Kept],
    truncated: bool,
    seen_alloc: bool,
) -> DomainVerdict {
    if history.is_empty() {
        return DomainVerdict {
            judgement: Judgement::None,
            verdict: "none: no events kept".into(),
            detail: Vec::new(),
        };
    }
    let mut r = Replayer::new(meta.replay.clone());
    for e in history {
        r.push(&e.event());
    }
    let report = r.finish();
    let Some(d) = report.domains.first() else {
        return DomainVerdict {
            judgement: Judgement::None,
            verdict: "none: nothing to model".into(),
            detail: Vec::new(),
        };
    };
    let (judgement, mut verdict) = match &d.verdict {
        // As `replay` and `serve --verify` judge it: without the events of a point the
        // verification needs, a domain that "verifies" proves nothing.
        _ if !meta.verification_gaps.is_empty() => (
            Judgement::Unverifiable,
            format!(
                "unverifiable: probe point {} recorded nothing",
                meta.verification_gaps[0]
            ),
        ),
        Verdict::Verified => (Judgement::Verified, "verified".to_string()),
        Verdict::Diverged => (Judgement::Diverged, "DIVERGED".to_string()),
        Verdict::Unverifiable(why) => (Judgement::Unverifiable, format!("unverifiable: {why}")),
    };
    if truncated {
        verdict.push_str(&format!(" (first {} events)", history.len()));
    }
    let mut detail = Vec::new();
    if let Some(m) = &d.model {
        detail.push(format!("model: {m}"));
    }
    detail.push(format!(
        "pages observed: +{} -{} peak {}; predicted: +{} -{} peak {}",
        d.observed.allocated,
        d.observed.freed,
        d.observed.peak,
        d.predicted.allocated,
        d.predicted.freed,
        d.predicted.peak
    ));
    if d.uncharged.policy + d.uncharged.unexpected > 0 {
        detail.push(format!(
            "uncharged pages: {} by kernel policy, {} unexpected",
            d.uncharged.policy, d.uncharged.unexpected
        ));
    }
    if let Some(div) = &d.divergence {
        detail.push(format!(
            "first divergence at this domain's event {}: {}",
            div.event_index, div.reason
        ));
    }
    if !seen_alloc {
        detail.push("allocation not seen (before tracing started, or lost)".into());
    }
    detail.extend(d.notes.iter().cloned());
    DomainVerdict {
        judgement,
        verdict,
        detail,
    }
}
