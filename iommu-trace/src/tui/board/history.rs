//! What the board keeps per domain: its events (compactly, for the replay verdict and the
//! recent-events list), page-table growth, and freed domains as they were before the free.

use std::collections::VecDeque;

use crate::events::{DomainFree, Event, EventBody, KernelPtr, MapOp, PtPages};
use crate::state::LiveDomain;

/// Looked up for every event: FxHash, not SipHash (a visible share of the ingest cost).
pub(super) type PtrMap<V> = rustc_hash::FxHashMap<KernelPtr, V>;

/// One event of a domain, kept compactly for its replay verdict and the recent-events
/// list: no comm, and the frequent bodies inline (about 80 bytes instead of about 300).
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub ts_ns: u64,
    pub cpu: u32,
    pub pid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
    pub body: KeptBody,
}

#[derive(Clone, Debug, PartialEq)]
pub enum KeptBody {
    Map(MapOp),
    Unmap(MapOp),
    PtAlloc(PtPages),
    PtFree(PtPages),
    DomainFree(DomainFree),
    Other(Box<EventBody>),
}

impl Kept {
    pub(super) fn new(ev: Event) -> Kept {
        let body = match ev.body {
            EventBody::Map(m) => KeptBody::Map(m),
            EventBody::Unmap(m) => KeptBody::Unmap(m),
            EventBody::PtAlloc(p) => KeptBody::PtAlloc(p),
            EventBody::PtFree(p) => KeptBody::PtFree(p),
            EventBody::DomainFree(f) => KeptBody::DomainFree(f),
            other => KeptBody::Other(Box::new(other)),
        };
        Kept {
            ts_ns: ev.ts_ns,
            cpu: ev.cpu,
            pid: ev.pid,
            tid: ev.tid,
            cgroup_id: ev.cgroup_id,
            body,
        }
    }

    /// The event again (without its comm).
    pub fn event(&self) -> Event {
        Event {
            ts_ns: self.ts_ns,
            cpu: self.cpu,
            pid: self.pid,
            tid: self.tid,
            comm: String::new(),
            cgroup_id: self.cgroup_id,
            body: match &self.body {
                KeptBody::Map(m) => EventBody::Map(m.clone()),
                KeptBody::Unmap(m) => EventBody::Unmap(m.clone()),
                KeptBody::PtAlloc(p) => EventBody::PtAlloc(p.clone()),
                KeptBody::PtFree(p) => EventBody::PtFree(p.clone()),
                KeptBody::DomainFree(f) => EventBody::DomainFree(f.clone()),
                KeptBody::Other(b) => (**b).clone(),
            },
        }
    }
}

/// What the TUI keeps about one domain beyond `state::LiveDomain`.
#[derive(Clone, Debug, Default)]
pub struct DomainExtra {
    /// The domain's events from its allocation (or first sighting), for the replay verdict.
    pub history: Vec<Kept>,
    /// The history stopped growing at a cap (verdict covers only its beginning).
    pub truncated: bool,
    /// The history was dropped (domain expired from the table, or the global cap).
    pub history_dropped: bool,
    /// Recent events (kept once the history stops growing).
    pub(super) recent: VecDeque<Kept>,
    /// Page-table pages held after each page-table event, oldest first.
    pub growth: VecDeque<u64>,
    pub pt_peak: u64,
    pub parent: KernelPtr,
}

impl DomainExtra {
    /// The last `n` events of this domain, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        if self.truncated || self.history_dropped {
            let skip = self.recent.len().saturating_sub(n);
            self.recent.iter().skip(skip).map(Kept::event).collect()
        } else {
            let skip = self.history.len().saturating_sub(n);
            self.history.iter().skip(skip).map(Kept::event).collect()
        }
    }
}

/// A freed domain, as it was just before its free.
#[derive(Clone, Debug)]
pub struct FreedDomain {
    pub domain: LiveDomain,
    pub freed_ts_ns: u64,
    pub extra: DomainExtra,
}
