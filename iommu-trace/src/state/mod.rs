//! Events -> the live aggregate: the domains alive now (driver, kind, flags, owner, mapped
//! bytes, page-table pages held), totals per driver and per owner cgroup, allocation
//! counts by result, latency histograms, loss, the iommufd objects (`objects.rs`) and the
//! pinned-memory ledger (`pins.rs`).
//!
//! Pure data, no I/O and no Prometheus: the exporter (`export/`) renders it as metrics and a
//! TUI can draw it. Every update is O(1) per event; memory grows with the number of live
//! domains and of distinct (driver, kind, flags, errno) keys, never with the event count.

mod histogram;
mod objects;
mod pins;

pub use histogram::{Histogram, LATENCY_BOUNDS_NS, LIFETIME_BOUNDS_NS};
pub use objects::{bounded_object, LiveObject, Objects};
pub use pins::{
    headroom_ratio, PinTarget, Pins, ProcessPins, Reconciliation, RefusalCause, TargetLedger,
};

use std::collections::HashMap;

use crate::events::{
    AllocOp, DomainKind, Event, EventBody, KernelPtr, MapOp, PtCause, PtGrow, PtPages,
};
use crate::procfs::MemoryHeld;

/// Index of a driver name in [`State::drivers`] (a handful per host).
pub type DriverId = u16;

/// The `IOMMU_HWPT_ALLOC_*` bits with names; any other bit is folded into [`FLAGS_OTHER`]
/// so that user-chosen flag values cannot create unbounded label values.
pub const FLAGS_KNOWN: u32 = crate::uapi::HWPT_ALLOC_FLAGS_KNOWN;
/// Stands for "some unknown flag bits were set".
pub const FLAGS_OTHER: u32 = 1 << 31;

/// Bounds the flags a user passed to the known bits plus one "other" marker.
pub fn bounded_flags(flags: u32) -> u32 {
    (flags & FLAGS_KNOWN)
        | if flags & !FLAGS_KNOWN != 0 {
            FLAGS_OTHER
        } else {
            0
        }
}

/// `map` or `unmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapDir {
    Map,
    Unmap,
}

impl MapDir {
    pub fn name(self) -> &'static str {
        match self {
            MapDir::Map => "map",
            MapDir::Unmap => "unmap",
        }
    }
}

/// A domain alive now (allocated and not yet freed), or first seen through a later event
/// when its allocation happened before tracing started.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveDomain {
    pub domain: KernelPtr,
    pub driver: DriverId,
    /// `None` when the allocation was not seen.
    pub op: Option<AllocOp>,
    pub kind: DomainKind,
    /// `IOMMU_HWPT_ALLOC_*` flags as allocated.
    pub flags: u32,
    /// Owner: the process that allocated it (or that first touched it, if not seen).
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub alloc_ts_ns: u64,
    /// The allocation event was seen.
    pub seen_alloc: bool,
    pub alloc_latency_ns: u64,
    /// Bytes mapped now (mapped minus unmapped, as far as seen).
    pub mapped_bytes: u64,
    pub maps: u64,
    pub unmaps: u64,
    /// Page-table pages held now, charged to a memory cgroup or not.
    pub pt_charged: u64,
    pub pt_uncharged: u64,
    /// Page-table pages allocated and freed over the domain's life.
    pub pt_allocated: u64,
    pub pt_freed: u64,
    /// Levels of its table after the last growth of the top (`pt_grow`), and how often it
    /// grew (AMD tables start at 3 levels and grow as IOVAs rise).
    pub top_levels: Option<u32>,
    pub top_growths: u64,
}

impl LiveDomain {
    pub fn pt_pages(&self) -> u64 {
        self.pt_charged + self.pt_uncharged
    }
}

/// What live domains hold, summed (per driver, per owner cgroup).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveTotals {
    pub domains: u64,
    pub mapped_bytes: u64,
    pub pt_charged: u64,
    pub pt_uncharged: u64,
}

impl LiveTotals {
    pub fn pt_pages(&self) -> u64 {
        self.pt_charged + self.pt_uncharged
    }

    fn is_empty(&self) -> bool {
        *self == LiveTotals::default()
    }

    fn add(&mut self, d: &LiveDomain) {
        self.domains += 1;
        self.mapped_bytes += d.mapped_bytes;
        self.pt_charged += d.pt_charged;
        self.pt_uncharged += d.pt_uncharged;
    }

    fn sub(&mut self, d: &LiveDomain) {
        self.domains = self.domains.saturating_sub(1);
        self.mapped_bytes = self.mapped_bytes.saturating_sub(d.mapped_bytes);
        self.pt_charged = self.pt_charged.saturating_sub(d.pt_charged);
        self.pt_uncharged = self.pt_uncharged.saturating_sub(d.pt_uncharged);
    }
}

/// Key of the allocation counters: what the exporter labels them with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub driver: DriverId,
    pub kind: DomainKind,
    /// Bounded with [`bounded_flags`].
    pub flags: u32,
    /// 0 for success.
    pub errno: i32,
}

/// Key of the map/unmap counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapKey {
    pub driver: DriverId,
    pub dir: MapDir,
    pub errno: i32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapTotals {
    pub ops: u64,
    /// Bytes asked for.
    pub bytes_requested: u64,
    /// Bytes mapped or unmapped.
    pub bytes_done: u64,
}

/// Key of the page-table page counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PtKey {
    pub driver: DriverId,
    pub cause: PtCause,
    pub charged: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtTotals {
    pub allocated: u64,
    pub freed: u64,
}

/// Events lost before they reached us, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LostCounts {
    pub ringbuf_full: u64,
    pub context_full: u64,
}

/// Names of the event types, in the order of [`State::events_by_type`].
pub const EVENT_NAMES: [&str; 19] = [
    "domain_alloc",
    "hwpt_alloc",
    "domain_free",
    "map",
    "unmap",
    "pt_alloc",
    "pt_free",
    "lost",
    "object_alloc",
    "object_abort",
    "object_destroy",
    "ioas_map",
    "ioas_map_file",
    "ioas_copy",
    "ioas_unmap",
    "ioas_change_process",
    "option",
    "pin",
    "pt_grow",
];

/// The driver name used for domains whose allocation was not seen.
pub const UNKNOWN_DRIVER: &str = "unknown";

/// The live aggregate of an event stream. Feed it with [`State::apply`].
#[derive(Clone, Debug, Default)]
pub struct State {
    drivers: Vec<String>,
    domains: HashMap<KernelPtr, LiveDomain>,
    per_driver: HashMap<DriverId, LiveTotals>,
    per_cgroup: HashMap<u64, LiveTotals>,
    allocs: HashMap<AllocKey, u64>,
    alloc_latency: HashMap<(DriverId, DomainKind), Histogram>,
    hwpt_allocs: HashMap<i32, u64>,
    hwpt_latency: Histogram,
    frees: HashMap<(DriverId, DomainKind), u64>,
    free_latency: HashMap<DriverId, Histogram>,
    map_ops: HashMap<MapKey, MapTotals>,
    map_latency: HashMap<(DriverId, MapDir), Histogram>,
    pt: HashMap<PtKey, PtTotals>,
    pt_orphaned: HashMap<DriverId, u64>,
    top_growths: HashMap<DriverId, u64>,
    untracked_domains: u64,
    lost: LostCounts,
    decode_errors: u64,
    events: [u64; EVENT_NAMES.len()],
    first_ts_ns: Option<u64>,
    last_ts_ns: u64,
    objects: Objects,
    pins: Pins,
}

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// Adds one event to the aggregate.
    pub fn apply(&mut self, ev: &Event) {
        let idx = EVENT_NAMES
            .iter()
            .position(|n| *n == ev.body.name())
            .expect("every event type is named");
        self.events[idx] += 1;
        if !matches!(ev.body, EventBody::Lost(_)) {
            self.first_ts_ns.get_or_insert(ev.ts_ns);
            self.last_ts_ns = self.last_ts_ns.max(ev.ts_ns);
        }
        match &ev.body {
            EventBody::DomainAlloc(a) => {
                let driver = self.driver_id(&a.driver);
                let key = AllocKey {
                    driver,
                    kind: a.kind,
                    flags: bounded_flags(a.flags),
                    errno: a.errno,
                };
                *self.allocs.entry(key).or_default() += 1;
                self.alloc_latency
                    .entry((driver, a.kind))
                    .or_default()
                    .observe(a.latency_ns);
                if a.errno == 0 && a.domain.0 != 0 {
                    // A pointer reused without a free seen (free lost): forget the old one.
                    self.remove_domain(a.domain);
                    let d = LiveDomain {
                        domain: a.domain,
                        driver,
                        op: Some(a.op),
                        kind: a.kind,
                        flags: a.flags,
                        pid: ev.pid,
                        comm: ev.comm.clone(),
                        cgroup_id: ev.cgroup_id,
                        alloc_ts_ns: ev.ts_ns,
                        seen_alloc: true,
                        alloc_latency_ns: a.latency_ns,
                        mapped_bytes: 0,
                        maps: 0,
                        unmaps: 0,
                        pt_charged: 0,
                        pt_uncharged: 0,
                        pt_allocated: 0,
                        pt_freed: 0,
                        top_levels: None,
                        top_growths: 0,
                    };
                    self.insert_domain(d);
                }
            }
            EventBody::HwptAlloc(h) => {
                *self.hwpt_allocs.entry(h.errno).or_default() += 1;
                self.hwpt_latency.observe(h.latency_ns);
                // The first domain on an IOAS pins its areas (lazy pinning, kernel-facts §8.1).
                let ioas = self
                    .objects
                    .live()
                    .find(|o| o.object == "ioas" && o.id == h.pt_id && o.pid == ev.pid)
                    .map(|o| (o.ictx, o.id));
                self.pins
                    .claim(ev.tid, ev.ts_ns.saturating_sub(h.latency_ns), ioas);
            }
            EventBody::DomainFree(f) => {
                let (driver, kind) = match self.remove_domain(f.domain) {
                    Some(d) => {
                        if d.pt_pages() > 0 {
                            *self.pt_orphaned.entry(d.driver).or_default() += d.pt_pages();
                        }
                        (d.driver, d.kind)
                    }
                    None => {
                        self.untracked_domains += 1;
                        (self.driver_id(UNKNOWN_DRIVER), DomainKind::Other)
                    }
                };
                *self.frees.entry((driver, kind)).or_default() += 1;
                self.free_latency
                    .entry(driver)
                    .or_default()
                    .observe(f.latency_ns);
            }
            EventBody::Map(m) => self.map_op(ev, m, MapDir::Map),
            EventBody::Unmap(m) => self.map_op(ev, m, MapDir::Unmap),
            EventBody::PtAlloc(p) => self.pt_pages(ev, p, true),
            EventBody::PtFree(p) => self.pt_pages(ev, p, false),
            EventBody::PtGrow(g) => self.pt_grow(ev, g),
            EventBody::Lost(l) => {
                self.lost.ringbuf_full = self.lost.ringbuf_full.saturating_add(l.ringbuf_full);
                self.lost.context_full = self.lost.context_full.saturating_add(l.context_full);
            }
            EventBody::ObjectAlloc(o) => {
                // A paging HWPT published on an IOAS: the pins its thread made since its
                // last IOAS operation filled the new domain (a device attach's auto domain,
                // or HWPT_ALLOC's first domain on the IOAS: docs/kernel-facts.md §8.1).
                if o.object == "hwpt_paging" && o.errno == 0 {
                    if let Some(&ioas) = o.refs.get("ioas") {
                        self.pins.claim(ev.tid, 0, Some((o.ictx, ioas)));
                    }
                }
                self.objects.apply(ev)
            }
            EventBody::ObjectAbort(_) | EventBody::ObjectDestroy(_) => self.objects.apply(ev),
            EventBody::Pin(p) => self.pins.apply(ev, p),
            // The pins an IOAS_MAP, MAP_FILE or COPY made while it ran (on its thread,
            // after its start) belong to its IOAS.
            EventBody::IoasMap(o) | EventBody::IoasMapFile(o) | EventBody::IoasCopy(o) => {
                let since = ev.ts_ns.saturating_sub(o.latency_ns);
                self.pins.claim(ev.tid, since, Some((o.ictx, o.ioas)))
            }
            EventBody::IoasChangeProcess(_) => {
                self.pins.claim(ev.tid, 0, None);
                self.pins.change_process_done();
            }
            EventBody::IoasUnmap(_) | EventBody::Option(_) => self.pins.claim(ev.tid, 0, None),
        }
    }

    /// Counts a record that could not be decoded (live ring buffer or damaged capture).
    pub fn note_decode_errors(&mut self, n: u64) {
        self.decode_errors += n;
    }

    fn map_op(&mut self, ev: &Event, m: &MapOp, dir: MapDir) {
        let mut delta = 0i128;
        let driver = {
            let d = self.touch_domain(ev, m.domain);
            match dir {
                MapDir::Map => {
                    d.maps += 1;
                    d.mapped_bytes += m.done;
                    delta += m.done as i128;
                }
                MapDir::Unmap => {
                    d.unmaps += 1;
                    let was = d.mapped_bytes;
                    d.mapped_bytes = was.saturating_sub(m.done);
                    delta -= (was - d.mapped_bytes) as i128;
                }
            }
            (d.driver, d.cgroup_id)
        };
        self.adjust_totals(driver.0, driver.1, |t| {
            t.mapped_bytes = (t.mapped_bytes as i128 + delta).max(0) as u64
        });
        let t = self
            .map_ops
            .entry(MapKey {
                driver: driver.0,
                dir,
                errno: m.errno,
            })
            .or_default();
        t.ops += 1;
        t.bytes_requested += m.size;
        t.bytes_done += m.done;
        self.map_latency
            .entry((driver.0, dir))
            .or_default()
            .observe(m.latency_ns);
    }

    fn pt_grow(&mut self, ev: &Event, g: &PtGrow) {
        let d = self.touch_domain(ev, g.domain);
        d.top_levels = Some(g.levels);
        d.top_growths += 1;
        let driver = d.driver;
        *self.top_growths.entry(driver).or_default() += 1;
    }

    fn pt_pages(&mut self, ev: &Event, p: &PtPages, alloc: bool) {
        let (driver, cgroup, dc, du) = {
            let d = self.touch_domain(ev, p.domain);
            let held = if p.charged {
                &mut d.pt_charged
            } else {
                &mut d.pt_uncharged
            };
            let was = *held;
            if alloc {
                *held += p.pages;
                d.pt_allocated += p.pages;
            } else {
                *held = was.saturating_sub(p.pages);
                d.pt_freed += p.pages;
            }
            let delta = *held as i128 - was as i128;
            let (dc, du) = if p.charged { (delta, 0) } else { (0, delta) };
            (d.driver, d.cgroup_id, dc, du)
        };
        self.adjust_totals(driver, cgroup, |t| {
            t.pt_charged = (t.pt_charged as i128 + dc).max(0) as u64;
            t.pt_uncharged = (t.pt_uncharged as i128 + du).max(0) as u64;
        });
        let t = self
            .pt
            .entry(PtKey {
                driver,
                cause: p.cause,
                charged: p.charged,
            })
            .or_default();
        if alloc {
            t.allocated += p.pages;
        } else {
            t.freed += p.pages;
        }
    }

    /// The live domain `ptr`, created (owner: this event's task) if its allocation was not
    /// seen.
    fn touch_domain(&mut self, ev: &Event, ptr: KernelPtr) -> &mut LiveDomain {
        if !self.domains.contains_key(&ptr) {
            self.untracked_domains += 1;
            let driver = self.driver_id(UNKNOWN_DRIVER);
            let d = LiveDomain {
                domain: ptr,
                driver,
                op: None,
                kind: DomainKind::Other,
                flags: 0,
                pid: ev.pid,
                comm: ev.comm.clone(),
                cgroup_id: ev.cgroup_id,
                alloc_ts_ns: ev.ts_ns,
                seen_alloc: false,
                alloc_latency_ns: 0,
                mapped_bytes: 0,
                maps: 0,
                unmaps: 0,
                pt_charged: 0,
                pt_uncharged: 0,
                pt_allocated: 0,
                pt_freed: 0,
                top_levels: None,
                top_growths: 0,
            };
            self.insert_domain(d);
        }
        self.domains.get_mut(&ptr).expect("inserted above")
    }

    fn insert_domain(&mut self, d: LiveDomain) {
        self.per_driver.entry(d.driver).or_default().add(&d);
        self.per_cgroup.entry(d.cgroup_id).or_default().add(&d);
        self.domains.insert(d.domain, d);
    }

    fn remove_domain(&mut self, ptr: KernelPtr) -> Option<LiveDomain> {
        let d = self.domains.remove(&ptr)?;
        if let Some(t) = self.per_driver.get_mut(&d.driver) {
            t.sub(&d);
        }
        if let Some(t) = self.per_cgroup.get_mut(&d.cgroup_id) {
            t.sub(&d);
            if t.is_empty() {
                self.per_cgroup.remove(&d.cgroup_id);
            }
        }
        Some(d)
    }

    fn adjust_totals(&mut self, driver: DriverId, cgroup: u64, f: impl Fn(&mut LiveTotals)) {
        f(self.per_driver.entry(driver).or_default());
        f(self.per_cgroup.entry(cgroup).or_default());
    }

    fn driver_id(&mut self, name: &str) -> DriverId {
        let name = crate::events::bounded_driver(name);
        if let Some(i) = self.drivers.iter().position(|d| d == name) {
            return i as DriverId;
        }
        self.drivers.push(name.to_string());
        (self.drivers.len() - 1) as DriverId
    }

    // ---- read side ------------------------------------------------------------------

    /// The name of a driver id.
    pub fn driver_name(&self, id: DriverId) -> &str {
        self.drivers
            .get(id as usize)
            .map_or(UNKNOWN_DRIVER, String::as_str)
    }

    /// Every driver seen, with its id.
    pub fn drivers(&self) -> impl Iterator<Item = (DriverId, &str)> {
        self.drivers
            .iter()
            .enumerate()
            .map(|(i, d)| (i as DriverId, d.as_str()))
    }

    /// The domains alive now.
    pub fn domains(&self) -> impl Iterator<Item = &LiveDomain> {
        self.domains.values()
    }

    pub fn domain(&self, ptr: KernelPtr) -> Option<&LiveDomain> {
        self.domains.get(&ptr)
    }

    /// Live domains counted by (driver, kind).
    pub fn live_by_driver_kind(&self) -> HashMap<(DriverId, DomainKind), u64> {
        let mut out = HashMap::new();
        for d in self.domains.values() {
            *out.entry((d.driver, d.kind)).or_default() += 1;
        }
        out
    }

    /// What live domains hold, per driver.
    pub fn per_driver(&self) -> &HashMap<DriverId, LiveTotals> {
        &self.per_driver
    }

    /// What live domains hold, per owner cgroup (the cgroup of the task that allocated the
    /// domain). Cgroups with nothing live are dropped.
    pub fn per_cgroup(&self) -> &HashMap<u64, LiveTotals> {
        &self.per_cgroup
    }

    /// The `n` owner cgroups holding the most page-table pages (ties: more domains, then
    /// the lower id), and the sum of all the others.
    pub fn top_cgroups(&self, n: usize) -> (Vec<(u64, LiveTotals)>, LiveTotals) {
        let mut all: Vec<(u64, LiveTotals)> = self
            .per_cgroup
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(id, t)| (*id, *t))
            .collect();
        all.sort_by(|a, b| {
            (b.1.pt_pages(), b.1.domains, a.0).cmp(&(a.1.pt_pages(), a.1.domains, b.0))
        });
        let mut other = LiveTotals::default();
        for (_, t) in all.iter().skip(n) {
            other.domains += t.domains;
            other.mapped_bytes += t.mapped_bytes;
            other.pt_charged += t.pt_charged;
            other.pt_uncharged += t.pt_uncharged;
        }
        all.truncate(n);
        (all, other)
    }

    pub fn allocs(&self) -> &HashMap<AllocKey, u64> {
        &self.allocs
    }

    /// Failed domain allocations by errno (all drivers and kinds).
    #[cfg(test)]
    pub fn alloc_failures_by_errno(&self) -> Vec<(i32, u64)> {
        let mut m: HashMap<i32, u64> = HashMap::new();
        for (k, n) in &self.allocs {
            if k.errno != 0 {
                *m.entry(k.errno).or_default() += n;
            }
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        v
    }

    pub fn alloc_latency(&self) -> &HashMap<(DriverId, DomainKind), Histogram> {
        &self.alloc_latency
    }

    /// `IOMMU_HWPT_ALLOC` ioctls by errno (0: success).
    pub fn hwpt_allocs(&self) -> &HashMap<i32, u64> {
        &self.hwpt_allocs
    }

    /// The iommufd objects: alive now, and counts by type and outcome.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The pinned-memory ledger.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Live sessions: the kernel's own figures of the ledger's processes, read at `now_ns`
    /// (CLOCK_MONOTONIC; `Pins::reconcile`).
    pub fn reconcile_pins(&mut self, readings: &[(u32, Option<MemoryHeld>)], now_ns: u64) {
        for (pid, held) in readings {
            self.pins.reconcile(*pid, *held, now_ns);
        }
    }

    pub fn hwpt_latency(&self) -> &Histogram {
        &self.hwpt_latency
    }

    pub fn frees(&self) -> &HashMap<(DriverId, DomainKind), u64> {
        &self.frees
    }

    pub fn free_latency(&self) -> &HashMap<DriverId, Histogram> {
        &self.free_latency
    }

    pub fn map_ops(&self) -> &HashMap<MapKey, MapTotals> {
        &self.map_ops
    }

    pub fn map_latency(&self) -> &HashMap<(DriverId, MapDir), Histogram> {
        &self.map_latency
    }

    /// Page-table pages allocated and freed, by (driver, cause, charged).
    pub fn pt(&self) -> &HashMap<PtKey, PtTotals> {
        &self.pt
    }

    /// Pages still held by domains when they were freed, per driver.
    pub fn pt_orphaned(&self) -> &HashMap<DriverId, u64> {
        &self.pt_orphaned
    }

    /// Growths of a page table's top (`pt_grow`), by driver.
    pub fn top_growths(&self) -> &HashMap<DriverId, u64> {
        &self.top_growths
    }

    /// Domains first seen after their allocation (allocated before tracing started, or
    /// the allocation event was lost).
    pub fn untracked_domains(&self) -> u64 {
        self.untracked_domains
    }

    pub fn lost(&self) -> LostCounts {
        self.lost
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Events applied, by type, in [`EVENT_NAMES`] order.
    pub fn events_by_type(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EVENT_NAMES.iter().copied().zip(self.events.iter().copied())
    }

    pub fn events(&self) -> u64 {
        self.events.iter().sum()
    }

    /// Monotonic times of the first and last events (not counting `lost`).
    #[cfg(test)]
    pub fn time_span_ns(&self) -> Option<(u64, u64)> {
        self.first_ts_ns.map(|f| (f, self.last_ts_ns))
    }
}

#[cfg(test)]
pub(crate) mod tests;
