//! What the TUI draws: `state::State` (the live aggregate the exporter also uses) plus what
//! only a screen needs: freed domains lingering for a while, each domain's recent events and
//! page-table growth (and enough of its history to replay it against the reference model),
//! per-second rates for the sparklines, per-process failures, and a clock.
//!
//! Memory is bounded whatever the event rate: histories have a per-domain and a global cap,
//! freed domains are kept for [`LINGER_NS`] and at most [`MAX_FREED`] of them, rates keep
//! [`RATE_SECONDS`] seconds.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::events::{DomainFree, Event, EventBody, KernelPtr, MapOp, PtPages};
use crate::replay::{ReplayOptions, Replayer, Verdict};
use crate::state::{LiveDomain, State};

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
pub struct Meta {
    pub mode: Mode,
    pub kernel_release: String,
    /// Probe attachments made (live) or recorded as made (capture).
    pub probes_attached: usize,
    /// Logical probe points with nothing attached.
    pub probes_missing: Vec<String>,
}

/// The rate series, in [`Rates`] order.
pub const RATE_NAMES: [&str; 8] = [
    "events", "allocs", "frees", "maps", "unmaps", "pt+", "pt-", "lost",
];
const R_EVENTS: usize = 0;
const R_ALLOCS: usize = 1;
const R_FREES: usize = 2;
const R_MAPS: usize = 3;
const R_UNMAPS: usize = 4;
const R_PT_ALLOC: usize = 5;
const R_PT_FREE: usize = 6;
const R_LOST: usize = 7;

/// Per-second counters in the model's clock: the current second and those before it.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    cur_sec: Option<u64>,
    cur: [u64; RATE_NAMES.len()],
    /// Completed seconds, oldest first.
    hist: VecDeque<[u64; RATE_NAMES.len()]>,
}

impl Rates {
    fn roll_to(&mut self, sec: u64) {
        match self.cur_sec {
            None => self.cur_sec = Some(sec),
            Some(c) if sec > c => {
                let gap = (sec - c).min(RATE_SECONDS as u64 + 1);
                self.hist.push_back(self.cur);
                for _ in 1..gap {
                    self.hist.push_back([0; RATE_NAMES.len()]);
                }
                while self.hist.len() > RATE_SECONDS {
                    self.hist.pop_front();
                }
                self.cur = [0; RATE_NAMES.len()];
                self.cur_sec = Some(sec);
            }
            // Late by a little (events of other CPUs): counted in the current second.
            Some(_) => {}
        }
    }

    fn add(&mut self, ts_ns: u64, series: usize, n: u64) {
        self.roll_to(ts_ns / 1_000_000_000);
        self.cur[series] += n;
    }

    /// The last `n` completed seconds of one series, oldest first.
    pub fn series(&self, idx: usize, n: usize) -> Vec<u64> {
        let skip = self.hist.len().saturating_sub(n);
        self.hist.iter().skip(skip).map(|s| s[idx]).collect()
    }

    /// The last completed second of a series (the current one if none completed yet).
    pub fn last(&self, idx: usize) -> u64 {
        self.hist.back().map_or(self.cur[idx], |s| s[idx])
    }

    /// The highest one-second value of a series over the history.
    pub fn peak(&self, idx: usize) -> u64 {
        self.hist
            .iter()
            .map(|s| s[idx])
            .chain(std::iter::once(self.cur[idx]))
            .max()
            .unwrap_or(0)
    }
}

/// A cheap hasher for kernel pointers (multiply, then bring the mixed high bits down):
/// the extras map is looked up for every event, and SipHash was a visible share of it.
#[derive(Clone, Copy, Default)]
pub struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

type PtrMap<V> = HashMap<KernelPtr, V, BuildHasherDefault<PtrHasher>>;

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
    fn new(ev: Event) -> Kept {
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
    recent: VecDeque<Kept>,
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

/// The reference model's verdict on one domain, as the detail view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainVerdict {
    /// "verified", "diverged", "unverifiable: ..." or why there is none.
    pub verdict: String,
    /// Model used, and what it saw.
    pub detail: Vec<String>,
}

/// The TUI's model: everything a frame is drawn from.
#[derive(Clone, Debug)]
pub struct Model {
    pub meta: Meta,
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
}

impl Model {
    pub fn new(meta: Meta) -> Model {
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
        }
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
            EventBody::Lost(l) => self
                .rates
                .add(rate_ts, R_LOST, l.ringbuf_full + l.context_full),
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

    /// The reference model's verdict on a domain (replays its kept history).
    pub fn verdict(&self, row: &DomainRow) -> DomainVerdict {
        match row.extra {
            Some(e) if e.history_dropped => DomainVerdict {
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
                let v = verdict_of(&e.history, e.truncated, row.d.seen_alloc);
                *self.verdict_cache.borrow_mut() = Some((key, v.clone()));
                v
            }
            None => DomainVerdict {
                verdict: "none: no events kept".into(),
                detail: Vec::new(),
            },
        }
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
        let mut v: Vec<OwnerRow> = m.into_values().collect();
        sort_owners(&mut v);
        v
    }

    /// Events kept for verdicts (for tests and the memory benchmark).
    pub fn history_len(&self) -> usize {
        self.history_total
    }

    /// Freed domains kept.
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
            b.failures,
            a.id,
        )
            .cmp(&(
                a.pt_charged + a.pt_uncharged,
                a.domains,
                a.mapped_bytes,
                a.failures,
                b.id,
            ))
    });
}

/// Replays one domain's events through the reference model.
fn verdict_of(history: &[Kept], truncated: bool, seen_alloc: bool) -> DomainVerdict {
    if history.is_empty() {
        return DomainVerdict {
            verdict: "none: no events kept".into(),
            detail: Vec::new(),
        };
    }
    let mut r = Replayer::new(ReplayOptions::default());
    for e in history {
        r.push(&e.event());
    }
    let report = r.finish();
    let Some(d) = report.domains.first() else {
        return DomainVerdict {
            verdict: "none: nothing to model".into(),
            detail: Vec::new(),
        };
    };
    let mut verdict = match &d.verdict {
        Verdict::Verified => "verified".to_string(),
        Verdict::Diverged => "DIVERGED".to_string(),
        Verdict::Unverifiable(why) => format!("unverifiable: {why}"),
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
    DomainVerdict { verdict, detail }
}
