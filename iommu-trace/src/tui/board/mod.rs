//! What the TUI draws: `state::State` (the live aggregate the exporter also uses) plus what
//! only a screen needs: freed domains lingering for a while, each domain's recent events and
//! page-table growth (and enough of its history to replay it against the reference model),
//! per-second rates for the sparklines, per-process failures, and a clock.
//!
//! Memory is bounded whatever the event rate: histories have a per-domain and a global cap,
//! freed domains are kept for [`LINGER_NS`] and at most [`MAX_FREED`] of them, rates keep
//! [`RATE_SECONDS`] seconds.
//!
//! Here: the [`Model`] and how each event updates it, and the rows the views list. Beside it:
//! `rates` (per-second counters), `history` (what is kept per domain), `verdict` (the
//! replay of a domain's history through the reference model, for the detail view).

mod history;
mod objects;
mod rates;
mod self_cost;
mod verdict;

pub use self_cost::SelfCost;

pub use history::{DomainExtra, FreedDomain, Kept, KeptBody};
pub use objects::ObjectLine;
pub use rates::{Rates, RATE_NAMES};
pub use verdict::{DomainVerdict, Judgement};

use std::collections::{HashMap, VecDeque};

use crate::capture::CaptureHeader;
use crate::events::{Event, EventBody, KernelPtr};
use crate::procfs::MemoryHeld;
use crate::replay::{
    capture_gaps, options_for, options_for_session, verification_gaps, Choice, ReplayOptions,
};
use crate::session::{MissingPoint, Session};
use crate::state::{LiveDomain, Reconciliation, State};
use history::PtrMap;
use rates::{R_ALLOCS, R_EVENTS, R_FREES, R_LOST, R_MAPS, R_PT_ALLOC, R_PT_FREE, R_UNMAPS};

/// How long a freed domain stays in the table, marked, in the model's clock.
pub const LINGER_NS: u64 = 10_000_000_000;
/// Freed domains kept (for `f`, "show all freed") at most.
pub const MAX_FREED: usize = 256;
/// Events of one domain kept for its replay verdict.
pub const HISTORY_PER_DOMAIN: usize = 10_000;
/// Events kept for replay verdicts over all domains.
pub const HISTORY_TOTAL: usize = 100_000;
/// Recent events shown in the detail view.
pub const RECENT: usize = 16;
/// Points of a domain's page-table growth curve.
pub const GROWTH_POINTS: usize = 240;
/// Seconds of rate history.
pub const RATE_SECONDS: usize = 300;
/// Processes with failure counts kept (those holding nothing are forgotten first).
const MAX_PROCS: usize = 4096;

/// Where the events come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Live,
    /// A capture replayed at `speed` times real time (0: as fast as possible).
    Replay {
        file: String,
        speed: f64,
    },
}

/// Facts about the session that do not come from events.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    pub mode: Mode,
    pub kernel_release: String,
    /// Probe attachments made (live) or recorded as made (capture).
    pub probes_attached: usize,
    /// Logical probe points with nothing attached.
    pub probes_missing: Vec<String>,
    /// How verdicts replay a domain: the kernel behaviour the session detected, as
    /// `iommu-trace replay` uses it (`replay::options_for`).
    pub replay: ReplayOptions,
    /// Probe points the verification needs that recorded nothing: no domain verifies.
    pub verification_gaps: Vec<MissingPoint>,
}

impl SessionInfo {
    /// For a capture: what its header recorded.
    pub fn for_capture(header: &CaptureHeader, file: &str, speed: f64) -> SessionInfo {
        let (attached, missing) = match &header.session {
            Some(session) => (session.attached_count(), missing_names(session)),
            None => (0, Vec::new()),
        };
        SessionInfo {
            mode: Mode::Replay {
                file: file.to_string(),
                speed,
            },
            kernel_release: header.kernel_release.clone(),
            probes_attached: attached,
            probes_missing: missing,
            replay: options_for(header, &Choice::default()),
            verification_gaps: capture_gaps(header),
        }
    }

    /// For this host's live session.
    pub fn for_live(session: &Session) -> SessionInfo {
        SessionInfo {
            mode: Mode::Live,
            kernel_release: session.kernel_release().to_string(),
            probes_attached: session.attached_count(),
            probes_missing: missing_names(session),
            replay: options_for_session(Some(session), &Choice::default()),
            verification_gaps: verification_gaps(Ok(session)),
        }
    }
}

fn missing_names(session: &Session) -> Vec<String> {
    session
        .missing_points()
        .into_iter()
        .map(|m| m.point)
        .collect()
}

/// Failures caused by one process (allocations fail before a domain exists, so `state/`
/// has no owner for them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    pub comm: String,
    pub cgroup_id: u64,
    pub allocs: u64,
    pub alloc_failures: u64,
    pub hwpt_failures: u64,
}

/// One row of the per-process or per-cgroup view.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnerRow {
    /// pid or cgroup id.
    pub id: u64,
    /// comm (processes) or empty.
    pub name: String,
    pub domains: u64,
    pub mapped_bytes: u64,
    pub pt_charged: u64,
    pub pt_uncharged: u64,
    pub allocs: u64,
    pub failures: u64,
    /// Guest memory its iommufd mappings hold pinned (processes: the mappings it created;
    /// cgroups: those charged from it).
    pub pinned_bytes: u64,
    /// Processes: (limit - locked) / limit of the accounting target with the least
    /// headroom its mappings charge; `None` when unlimited or not charged.
    pub memlock_headroom: Option<f64>,
    /// Live processes: the kernel's `VmPin` as last read, and how the ledger compares.
    pub kernel_pinned: Option<(u64, Reconciliation)>,
}

/// A domain row: a live domain or a lingering freed one.
#[derive(Clone, Copy, Debug)]
pub struct DomainRow<'a> {
    pub d: &'a LiveDomain,
    pub extra: Option<&'a DomainExtra>,
    pub freed_ts_ns: Option<u64>,
}

impl DomainRow<'_> {
    /// Identifies a domain across pointer reuse: (pointer, first-seen time).
    pub fn key(&self) -> DomainKey {
        (self.d.domain, self.d.alloc_ts_ns)
    }

    pub fn parent(&self) -> KernelPtr {
        self.extra.map_or(KernelPtr(0), |e| e.parent)
    }
}

pub type DomainKey = (KernelPtr, u64);

/// The TUI's model: everything a frame is drawn from.
#[derive(Clone, Debug)]
pub struct Model {
    pub meta: SessionInfo,
    state: State,
    extras: PtrMap<DomainExtra>,
    freed: VecDeque<FreedDomain>,
    rates: Rates,
    procs: HashMap<u32, ProcStats>,
    cgroup_failures: HashMap<u64, (u64, u64)>,
    history_total: usize,
    now_ns: u64,
    start_ns: Option<u64>,
    /// The source has nothing more to give (end of a capture).
    pub finished: bool,
    /// A problem with the source worth showing (damaged capture, collection error).
    pub warning: Option<String>,
    /// The last verdict computed, by (domain, history length): a detail view open for a
    /// while replays its domain once, not once per frame.
    verdict_cache: std::cell::RefCell<Option<((DomainKey, usize), DomainVerdict)>>,
    /// `freed[..expired_upto]` are past their linger time (histories dropped).
    expired_upto: usize,
    /// Our eBPF programs' cost (live, where the kernel keeps run-time statistics).
    self_cost: self_cost::SelfCostMeter,
}

impl Model {
    pub fn new(meta: SessionInfo) -> Model {
        Model {
            meta,
            state: State::new(),
            extras: PtrMap::default(),
            freed: VecDeque::new(),
            rates: Rates::default(),
            procs: HashMap::new(),
            cgroup_failures: HashMap::new(),
            history_total: 0,
            now_ns: 0,
            start_ns: None,
            finished: false,
            warning: None,
            verdict_cache: std::cell::RefCell::new(None),
            expired_upto: 0,
            self_cost: self_cost::SelfCostMeter::default(),
        }
    }

    /// A reading of our eBPF programs' cumulative run time (all programs) at `now_ns`.
    pub fn note_bpf_run_time(&mut self, run_ns: u64, now_ns: u64) {
        let ops = self
            .state
            .events_by_type()
            .filter(|(name, _)| matches!(*name, "map" | "unmap"))
            .map(|(_, n)| n)
            .sum();
        self.self_cost.note(run_ns, ops, now_ns);
    }

    /// What our eBPF programs cost over the last interval, once two readings exist.
    pub fn self_cost(&self) -> Option<SelfCost> {
        self.self_cost.cost
    }

    /// Starts the clock (live: now; a capture starts at its first event).
    pub fn start_clock(&mut self, now_ns: u64) {
        self.start_ns = Some(now_ns);
        self.now_ns = now_ns;
    }

    /// Moves the clock forward (rates roll, freed domains expire) without an event.
    pub fn advance(&mut self, now_ns: u64) {
        if now_ns > self.now_ns {
            self.now_ns = now_ns;
        }
        self.rates.roll_to(self.now_ns / 1_000_000_000);
        self.expire();
    }

    /// Counts records that could not be decoded.
    pub fn note_decode_errors(&mut self, n: u64) {
        self.state.note_decode_errors(n);
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Live: the kernel's figures of the ledger's processes (`State::reconcile_pins`).
    pub fn reconcile_pins(&mut self, readings: &[(u32, Option<MemoryHeld>)], now_ns: u64) {
        self.state.reconcile_pins(readings, now_ns);
    }

    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Time since the clock started (live) or since the capture's first event.
    pub fn uptime_ns(&self) -> u64 {
        self.now_ns
            .saturating_sub(self.start_ns.unwrap_or(self.now_ns))
    }

    pub fn events_per_sec(&self) -> u64 {
        self.rates.last(R_EVENTS)
    }

    /// Adds one event.
    pub fn apply(&mut self, ev: Event) {
        let ts = ev.ts_ns;
        let is_lost = matches!(ev.body, EventBody::Lost(_));
        if !is_lost {
            if self.start_ns.is_none() {
                self.start_ns = Some(ts);
            }
            self.now_ns = self.now_ns.max(ts);
        }
        let rate_ts = if is_lost { self.now_ns } else { ts };
        self.rates.add(rate_ts, R_EVENTS, 1);
        // The domain as it was before its free, for the lingering row.
        let before_free = match &ev.body {
            EventBody::DomainFree(f) => self.state.domain(f.domain).cloned(),
            _ => None,
        };
        self.state.apply(&ev);
        match &ev.body {
            EventBody::DomainAlloc(a) => {
                self.rates.add(ts, R_ALLOCS, 1);
                let p = self.proc_entry(&ev);
                p.allocs += 1;
                if a.errno != 0 {
                    p.alloc_failures += 1;
                    self.cgroup_failures.entry(ev.cgroup_id).or_default().1 += 1;
                } else if a.domain.0 != 0 {
                    let old = self.extras.insert(
                        a.domain,
                        DomainExtra {
                            parent: a.parent,
                            ..DomainExtra::default()
                        },
                    );
                    if let Some(old) = old {
                        self.history_total -= old.history.len();
                    }
                }
                self.cgroup_failures.entry(ev.cgroup_id).or_default().0 += 1;
            }
            EventBody::HwptAlloc(h) => {
                if h.errno != 0 {
                    self.proc_entry(&ev).hwpt_failures += 1;
                    self.cgroup_failures.entry(ev.cgroup_id).or_default().1 += 1;
                }
            }
            EventBody::DomainFree(_) => self.rates.add(ts, R_FREES, 1),
            EventBody::Map(_) => self.rates.add(ts, R_MAPS, 1),
            EventBody::Unmap(_) => self.rates.add(ts, R_UNMAPS, 1),
            EventBody::PtAlloc(p) => self.rates.add(ts, R_PT_ALLOC, p.pages),
            EventBody::PtFree(p) => self.rates.add(ts, R_PT_FREE, p.pages),
            EventBody::PtGrow(_) => {}
            EventBody::Lost(l) => self
                .rates
                .add(rate_ts, R_LOST, l.ringbuf_full + l.context_full),
            EventBody::ObjectAlloc(_)
            | EventBody::ObjectAbort(_)
            | EventBody::ObjectDestroy(_)
            | EventBody::IoasMap(_)
            | EventBody::IoasMapFile(_)
            | EventBody::IoasCopy(_)
            | EventBody::IoasUnmap(_)
            | EventBody::IoasChangeProcess(_)
            | EventBody::Option(_)
            | EventBody::Pin(_) => {}
        }
        if let Some(ptr) = ev.body.domain().map(KernelPtr) {
            let is_pt = matches!(ev.body, EventBody::PtAlloc(_) | EventBody::PtFree(_));
            let is_free = matches!(ev.body, EventBody::DomainFree(_));
            let held = if is_pt {
                self.state.domain(ptr).map_or(0, LiveDomain::pt_pages)
            } else {
                0
            };
            let extra = self.extras.entry(ptr).or_default();
            if is_pt {
                extra.growth.push_back(held);
                if extra.growth.len() > GROWTH_POINTS {
                    extra.growth.pop_front();
                }
                extra.pt_peak = extra.pt_peak.max(held);
            }
            if !extra.truncated && !extra.history_dropped {
                if extra.history.len() >= HISTORY_PER_DOMAIN || self.history_total >= HISTORY_TOTAL
                {
                    extra.truncated = true;
                    let skip = extra.history.len().saturating_sub(RECENT);
                    extra.recent = extra.history.iter().skip(skip).cloned().collect();
                } else {
                    self.history_total += 1;
                    extra.history.push(Kept::new(ev));
                    return self.after_domain_event(ptr, is_free, before_free, ts);
                }
            }
            extra.recent.push_back(Kept::new(ev));
            if extra.recent.len() > RECENT {
                extra.recent.pop_front();
            }
            self.after_domain_event(ptr, is_free, before_free, ts);
        }
    }

    fn after_domain_event(
        &mut self,
        ptr: KernelPtr,
        is_free: bool,
        before_free: Option<LiveDomain>,
        ts: u64,
    ) {
        if !is_free {
            return;
        }
        let extra = self.extras.remove(&ptr).unwrap_or_default();
        match before_free {
            Some(d) => {
                self.freed.push_back(FreedDomain {
                    domain: d,
                    freed_ts_ns: ts,
                    extra,
                });
                while self.freed.len() > MAX_FREED {
                    if let Some(f) = self.freed.pop_front() {
                        self.history_total -= f.extra.history.len();
                        self.expired_upto = self.expired_upto.saturating_sub(1);
                    }
                }
            }
            None => self.history_total -= extra.history.len(),
        }
        self.expire();
    }

    fn proc_entry(&mut self, ev: &Event) -> &mut ProcStats {
        if self.procs.len() >= MAX_PROCS && !self.procs.contains_key(&ev.pid) {
            let holding: std::collections::HashSet<u32> =
                self.state.domains().map(|d| d.pid).collect();
            self.procs.retain(|pid, _| holding.contains(pid));
            if self.procs.len() >= MAX_PROCS {
                self.procs.clear();
            }
        }
        let p = self.procs.entry(ev.pid).or_default();
        if p.comm != ev.comm {
            p.comm.clone_from(&ev.comm);
        }
        p.cgroup_id = ev.cgroup_id;
        p
    }

    /// Drops the histories of freed domains past their linger time. Their verdict is not
    /// computed here: replaying every freed domain would cost the ingest path more than
    /// the rest of the TUI (`iommu-trace record` + `replay` verifies every domain).
    fn expire(&mut self) {
        let now = self.now_ns;
        // Oldest first; those before `expired_upto` were handled by an earlier call.
        while self.expired_upto < self.freed.len() {
            let f = &mut self.freed[self.expired_upto];
            if f.freed_ts_ns + LINGER_NS > now {
                break;
            }
            self.expired_upto += 1;
            if !f.extra.history_dropped {
                let n = f.extra.history.len();
                let skip = n.saturating_sub(RECENT);
                f.extra.recent = f.extra.history.drain(..).skip(skip).collect();
                f.extra.history = Vec::new();
                f.extra.history_dropped = true;
                self.history_total -= n;
            }
        }
    }

    /// Live domains, then freed ones (lingering, or all kept when `all_freed`).
    pub fn domain_rows(&self, all_freed: bool) -> Vec<DomainRow<'_>> {
        let mut rows: Vec<DomainRow> = self
            .state
            .domains()
            .map(|d| DomainRow {
                d,
                extra: self.extras.get(&d.domain),
                freed_ts_ns: None,
            })
            .collect();
        for f in self.freed.iter().rev() {
            if all_freed || f.freed_ts_ns + LINGER_NS > self.now_ns {
                rows.push(DomainRow {
                    d: &f.domain,
                    extra: Some(&f.extra),
                    freed_ts_ns: Some(f.freed_ts_ns),
                });
            }
        }
        rows
    }

    /// The row of a domain, live or freed.
    pub fn find(&self, key: DomainKey) -> Option<DomainRow<'_>> {
        if let Some(d) = self.state.domain(key.0).filter(|d| d.alloc_ts_ns == key.1) {
            return Some(DomainRow {
                d,
                extra: self.extras.get(&key.0),
                freed_ts_ns: None,
            });
        }
        self.freed
            .iter()
            .rev()
            .find(|f| (f.domain.domain, f.domain.alloc_ts_ns) == key)
            .map(|f| DomainRow {
                d: &f.domain,
                extra: Some(&f.extra),
                freed_ts_ns: Some(f.freed_ts_ns),
            })
    }

    /// Per-process rows: what live domains hold, by owner pid, with allocations and failures.
    pub fn process_rows(&self) -> Vec<OwnerRow> {
        let mut m: HashMap<u32, OwnerRow> = HashMap::new();
        for d in self.state.domains() {
            let r = m.entry(d.pid).or_insert_with(|| OwnerRow {
                id: d.pid as u64,
                name: d.comm.clone(),
                ..OwnerRow::default()
            });
            r.domains += 1;
            r.mapped_bytes += d.mapped_bytes;
            r.pt_charged += d.pt_charged;
            r.pt_uncharged += d.pt_uncharged;
        }
        for (pid, p) in &self.procs {
            let r = m.entry(*pid).or_insert_with(|| OwnerRow {
                id: *pid as u64,
                name: p.comm.clone(),
                ..OwnerRow::default()
            });
            r.allocs = p.allocs;
            r.failures = p.alloc_failures + p.hwpt_failures;
        }
        let pins = self.state.pins();
        for (pid, p) in pins.processes() {
            let r = m.entry(*pid).or_insert_with(|| OwnerRow {
                id: *pid as u64,
                name: p.comm.clone(),
                ..OwnerRow::default()
            });
            r.pinned_bytes = p.pinned_pages.saturating_mul(pins.page_size());
            r.memlock_headroom = pins
                .tightest_target_of(*pid)
                .map(|(_, headroom, limit)| crate::state::headroom_ratio(headroom, limit));
            r.kernel_pinned = p
                .kernel()
                .map(|k| (k.pinned_bytes, p.reconciliation(pins.page_size())));
        }
        let mut v: Vec<OwnerRow> = m.into_values().collect();
        sort_owners(&mut v);
        v
    }

    /// Per-cgroup rows (owner cgroup of live domains), with allocations and failures.
    pub fn cgroup_rows(&self) -> Vec<OwnerRow> {
        let mut m: HashMap<u64, OwnerRow> = HashMap::new();
        for (id, t) in self.state.per_cgroup() {
            if t.domains == 0 && t.pt_pages() == 0 && t.mapped_bytes == 0 {
                continue;
            }
            m.insert(
                *id,
                OwnerRow {
                    id: *id,
                    domains: t.domains,
                    mapped_bytes: t.mapped_bytes,
                    pt_charged: t.pt_charged,
                    pt_uncharged: t.pt_uncharged,
                    ..OwnerRow::default()
                },
            );
        }
        for (id, (allocs, failures)) in &self.cgroup_failures {
            let r = m.entry(*id).or_insert_with(|| OwnerRow {
                id: *id,
                ..OwnerRow::default()
            });
            r.allocs = *allocs;
            r.failures = *failures;
        }
        let (pinned, _) = self.state.pins().pinned_bytes_by_cgroup(usize::MAX);
        for (id, bytes) in pinned {
            m.entry(id)
                .or_insert_with(|| OwnerRow {
                    id,
                    ..OwnerRow::default()
                })
                .pinned_bytes = bytes;
        }
        let mut v: Vec<OwnerRow> = m.into_values().collect();
        sort_owners(&mut v);
        v
    }

    /// Events kept for verdicts (the memory tests read it).
    #[cfg(test)]
    pub fn history_len(&self) -> usize {
        self.history_total
    }

    /// Freed domains kept.
    #[cfg(test)]
    pub fn freed_len(&self) -> usize {
        self.freed.len()
    }
}

fn sort_owners(v: &mut [OwnerRow]) {
    v.sort_by(|a, b| {
        (
            b.pt_charged + b.pt_uncharged,
            b.domains,
            b.mapped_bytes,
            b.pinned_bytes,
            b.failures,
            a.id,
        )
            .cmp(&(
                a.pt_charged + a.pt_uncharged,
                a.domains,
                a.mapped_bytes,
                a.pinned_bytes,
                a.failures,
                b.id,
            ))
    });
}
