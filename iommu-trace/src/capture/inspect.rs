//! `iommu-trace inspect`: events as text lines or JSON lines, and a summary of a capture.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{self, Write};

use super::{CaptureSource, Ending, LostTotals};
use crate::events::{
    errno_name, hwpt_flag_names, DestroyHow, Event, EventBody, IoasOp, MapOp, Pin, PtPages,
    UserData,
};
use crate::state::Pins;
use crate::text::printable;

/// Output format of `inspect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: the stable, documented form of [`Event`].
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "jsonl" | "json" => Ok(Format::Jsonl),
            _ => Err(format!("unknown format {s:?}: use text or jsonl")),
        }
    }
}

/// The JSON-lines form of an event: exactly `serde_json::to_string(event)`.
pub fn json_line(ev: &Event) -> serde_json::Result<String> {
    serde_json::to_string(ev)
}

/// Formats events as text lines, times relative to the first event formatted; a refused
/// pin is explained with what the mappings seen so far hold (`state::Pins`).
#[derive(Clone, Debug, Default)]
pub struct TextFormatter {
    base_ts: Option<u64>,
    pins: Pins,
}

impl TextFormatter {
    pub fn new() -> TextFormatter {
        TextFormatter::default()
    }

    pub fn line(&mut self, ev: &Event) -> String {
        let base = *self.base_ts.get_or_insert(ev.ts_ns);
        let EventBody::Pin(p) = &ev.body else {
            return text_line(ev, base);
        };
        let why = self.pins.explain(p);
        self.pins.apply(ev, p);
        text_line_explained(ev, base, why)
    }
}

/// One human-readable line for `ev`, its time relative to `base_ts` (both CLOCK_MONOTONIC):
///
/// ```text
/// +0.000012500 cpu 3 1234/qemu-system-x86 map domain=0xffff888101a2c000 iova=0x1000 size=0x1000 paddr=0x1234000 done=0x1000 OK latency=2.1us
/// ```
pub fn text_line(ev: &Event, base_ts: u64) -> String {
    let why = match &ev.body {
        EventBody::Pin(p) => p.refusal(),
        _ => None,
    };
    text_line_explained(ev, base_ts, why)
}

/// [`text_line`], a refused pin explained by `why`.
fn text_line_explained(ev: &Event, base_ts: u64, why: Option<String>) -> String {
    let mut s = String::with_capacity(160);
    let rel = ev.ts_ns as i128 - base_ts as i128;
    let sign = if rel < 0 { '-' } else { '+' };
    let rel = rel.unsigned_abs();
    let _ = write!(
        s,
        "{sign}{}.{:09} cpu {} {}/{}",
        rel / 1_000_000_000,
        rel % 1_000_000_000,
        ev.cpu,
        ev.pid,
        printable(&ev.comm)
    );
    if ev.tid != ev.pid {
        let _ = write!(s, " tid {}", ev.tid);
    }
    let _ = write!(s, " {}", ev.body.name());
    match &ev.body {
        EventBody::DomainAlloc(a) => {
            let _ = write!(
                s,
                " driver={} op={} kind={} flags={} data_type={:#x} data_len={}",
                printable(&a.driver),
                a.op.name(),
                a.kind.name(),
                flags_text(a.flags),
                a.data_type,
                a.data_len
            );
            if let Some(d) = &a.data {
                let _ = write!(s, " data={}", user_data_text(d));
            }
            let _ = write!(s, " parent={}", a.parent);
            if let Some(v) = a.viommu_id {
                let _ = write!(s, " viommu={v}");
            }
            if a.errno == 0 {
                let _ = write!(s, " domain={} OK", a.domain);
            } else {
                let _ = write!(s, " {}", errno_name(a.errno));
                if a.domain.0 != 0 {
                    let _ = write!(s, " domain={}", a.domain);
                }
            }
            let g = &a.geometry;
            let _ = write!(
                s,
                " latency={} pgsize_bitmap={:#x} aperture={:#x}..={:#x} type={:#x}",
                duration_text(a.latency_ns),
                g.pgsize_bitmap,
                g.aperture_start,
                g.aperture_end,
                g.domain_type
            );
            for (name, v) in &g.driver_fields {
                let _ = write!(s, " {}={v}", printable(name));
            }
        }
        EventBody::HwptAlloc(h) => {
            let _ = write!(
                s,
                " dev_id={} pt_id={} flags={} data_type={:#x} data_len={}",
                h.dev_id,
                h.pt_id,
                flags_text(h.flags),
                h.data_type,
                h.data_len
            );
            if h.errno == 0 {
                let _ = write!(s, " hwpt_id={} OK", h.hwpt_id);
            } else {
                let _ = write!(s, " {}", errno_name(h.errno));
                if h.hwpt_id != 0 {
                    let _ = write!(s, " hwpt_id={}", h.hwpt_id);
                }
            }
            let _ = write!(s, " latency={}", duration_text(h.latency_ns));
        }
        EventBody::DomainFree(f) => {
            let _ = write!(
                s,
                " domain={} latency={}",
                f.domain,
                duration_text(f.latency_ns)
            );
        }
        EventBody::PtGrow(g) => {
            let _ = write!(s, " domain={} levels={}", g.domain, g.levels);
        }
        EventBody::Map(m) => map_text(&mut s, m, true),
        EventBody::Unmap(m) => map_text(&mut s, m, false),
        EventBody::PtAlloc(p) | EventBody::PtFree(p) => pt_text(&mut s, p),
        EventBody::Lost(l) => {
            let _ = write!(
                s,
                " ringbuf_full={} context_full={}",
                l.ringbuf_full, l.context_full
            );
        }
        EventBody::ObjectAlloc(o) => {
            let _ = write!(s, " {} id={}", printable(&o.object), o.id);
            for (role, id) in &o.refs {
                let _ = write!(s, " {}={id}", printable(role));
            }
            if let Some(v) = o.virt_id {
                let _ = write!(s, " virt_id={v:#x}");
            }
            if let Some(d) = o.domain {
                let _ = write!(s, " domain={d}");
            }
            let _ = write!(
                s,
                " obj={} ictx={} size={} {} latency={}",
                o.obj,
                o.ictx,
                o.size,
                errno_name(o.errno),
                duration_text(o.latency_ns)
            );
        }
        EventBody::ObjectAbort(o) => {
            let _ = write!(
                s,
                " {} id={} obj={} ictx={} size={} {}",
                printable(&o.object),
                o.id,
                o.obj,
                o.ictx,
                o.size,
                o.errno.map_or("errno=unknown".into(), errno_name)
            );
        }
        EventBody::ObjectDestroy(o) => {
            let _ = write!(
                s,
                " {} id={} obj={} how={}",
                printable(&o.object),
                o.id,
                o.obj,
                o.how.name()
            );
        }
        EventBody::IoasMap(o)
        | EventBody::IoasMapFile(o)
        | EventBody::IoasCopy(o)
        | EventBody::IoasUnmap(o)
        | EventBody::IoasChangeProcess(o) => ioas_op_text(&mut s, o),
        EventBody::Option(o) => {
            let _ = write!(
                s,
                " option={} op={} object_id={} val64={} ictx={} {} latency={}",
                printable(&o.option),
                printable(&o.op),
                o.object_id,
                o.val64,
                o.ictx,
                errno_name(o.errno),
                duration_text(o.latency_ns)
            );
        }
        EventBody::Pin(p) => pin_text(&mut s, p, why),
    }
    s
}

fn ioas_op_text(s: &mut String, o: &IoasOp) {
    let _ = write!(
        s,
        " ioas={} iova={:#x} length={:#x} flags={:#x}",
        o.ioas, o.iova, o.length, o.flags
    );
    if let Some(v) = o.user_va {
        let _ = write!(s, " user_va={v:#x}");
    }
    if let Some(fd) = o.fd {
        let _ = write!(s, " fd={fd}");
    }
    if let Some(v) = o.start {
        let _ = write!(s, " start={v:#x}");
    }
    if let Some(v) = o.src_ioas {
        let _ = write!(s, " src_ioas={v}");
    }
    if let Some(v) = o.src_iova {
        let _ = write!(s, " src_iova={v:#x}");
    }
    let _ = write!(
        s,
        " ictx={} {} latency={}",
        o.ictx,
        errno_name(o.errno),
        duration_text(o.latency_ns)
    );
}

fn pin_text(s: &mut String, p: &Pin, why: Option<String>) {
    let _ = write!(
        s,
        " iopt_pages={} pages={:+} charged={:+} mode={} target_pid={}",
        p.iopt_pages,
        p.pages,
        p.charged,
        p.mode.name(),
        p.target_pid
    );
    if let Some(uid) = p.target_uid {
        let _ = write!(s, " target_uid={uid}");
    }
    if let Some(mm) = p.target_mm {
        let _ = write!(s, " target_mm={mm}");
    }
    match p.limit_bytes {
        Some(l) => {
            let _ = write!(s, " limit_bytes={l}");
        }
        None => s.push_str(" limit=unlimited"),
    }
    let _ = write!(
        s,
        " locked_bytes={} pinned={}/{} pinned_vm_bytes={} {}",
        p.locked_bytes,
        p.pinned_pages,
        p.total_pages,
        p.pinned_vm_bytes,
        errno_name(p.errno),
    );
    if let Some(ns) = p.latency_ns {
        let _ = write!(s, " latency={}", duration_text(ns));
    }
    if let Some(why) = why {
        let _ = write!(s, " why: {why}");
    }
}

fn map_text(s: &mut String, m: &MapOp, map: bool) {
    let _ = write!(
        s,
        " domain={} iova={:#x} size={:#x}",
        m.domain, m.iova, m.size
    );
    if map || m.paddr != 0 {
        let _ = write!(s, " paddr={:#x}", m.paddr);
    }
    let _ = write!(
        s,
        " done={:#x} {} latency={}",
        m.done,
        errno_name(m.errno),
        duration_text(m.latency_ns)
    );
}

fn pt_text(s: &mut String, p: &PtPages) {
    let _ = write!(
        s,
        " domain={} pages={} cause={}",
        p.domain,
        p.pages,
        p.cause.name()
    );
    if p.charged {
        let _ = write!(s, " charged memcg={}", p.memcg_id);
    } else {
        s.push_str(" uncharged");
        if p.memcg_id != 0 {
            let _ = write!(s, " memcg={}", p.memcg_id);
        }
    }
}

/// `NEST_PARENT|DIRTY_TRACKING`, or `0`.
fn flags_text(flags: u32) -> String {
    let names = hwpt_flag_names(flags);
    if names.is_empty() {
        "0".into()
    } else {
        names.join("|")
    }
}

fn user_data_text(d: &UserData) -> String {
    match d {
        UserData::VtdS1 {
            flags,
            pgtbl_addr,
            addr_width,
        } => format!("vtd_s1(flags={flags:#x},pgtbl_addr={pgtbl_addr:#x},addr_width={addr_width})"),
        UserData::ArmSmmuv3 { ste } => format!("arm_smmuv3(ste={:#x},{:#x})", ste[0], ste[1]),
        UserData::AmdGuest { dte } => format!(
            "amd_guest(dte={:#x},{:#x},{:#x},{:#x})",
            dte[0], dte[1], dte[2], dte[3]
        ),
        UserData::Selftest { iotlb } => format!("selftest(iotlb={iotlb})"),
        UserData::Raw { data_type, hex } => format!("raw(type={data_type:#x},{hex})"),
    }
}

use crate::units::bytes_long as bytes_text;
/// The snake_case name serde gives a unit enum variant.
pub use crate::units::duration_long as duration_text;

/// Domain allocations are counted by these.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocKey {
    pub driver: String,
    /// `DomainKind::name()`.
    pub kind: &'static str,
    /// 0 for success.
    pub errno: i32,
}

/// Map or unmap totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapTotals {
    pub ops: u64,
    pub failed: u64,
    /// Bytes asked for.
    pub requested: u64,
    /// Bytes mapped / unmapped.
    pub done: u64,
}

/// Page-table page totals (4 KiB pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PtTotals {
    pub allocated: u64,
    pub freed: u64,
    /// Allocated pages charged to a memory cgroup.
    pub charged: u64,
    /// Allocated pages charged to none.
    pub uncharged: u64,
}

/// One object type's lifetimes in a capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectTotals {
    pub created: u64,
    /// Allocations that failed, per errno.
    pub failed: BTreeMap<i32, u64>,
    /// Aborted creates, per errno (`None`: outside an iommufd ioctl).
    pub aborted: BTreeMap<Option<i32>, u64>,
    /// Destructions, per path.
    pub destroyed: BTreeMap<DestroyHow, u64>,
}

impl ObjectTotals {
    pub fn destroyed_total(&self) -> u64 {
        self.destroyed.values().sum()
    }
}

/// What a capture holds, in numbers. Feed it events with [`add`](Summary::add), then the
/// reader's [`ending`](CaptureReader::ending) with [`set_ending`](Summary::set_ending).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub events: u64,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// Events per kind (the `event` tag).
    pub per_kind: BTreeMap<&'static str, u64>,
    /// Domain allocations per driver, kind and result.
    pub domain_allocs: BTreeMap<AllocKey, u64>,
    /// `IOMMU_HWPT_ALLOC` calls per result errno.
    pub hwpt_allocs: BTreeMap<i32, u64>,
    pub map: MapTotals,
    pub unmap: MapTotals,
    pub pt: PtTotals,
    /// iommufd objects per type (`object_alloc`, `object_abort`, `object_destroy`).
    pub objects: BTreeMap<String, ObjectTotals>,
    /// Pinned-memory charges refused, explained (`Pin::refusal`), the first `MAX_REFUSALS`; and
    /// how many there were.
    pub refusals: Vec<String>,
    pub refusals_total: u64,
    /// Uncharges that failed (per-mm, the creator's mm gone: the pages are unpinned all
    /// the same), explained the same way.
    pub failed_uncharges: Vec<String>,
    pub failed_uncharges_total: u64,
    /// The ledger the refusals are explained with.
    pins: Pins,
    /// Sum of the `lost` events.
    pub lost: LostTotals,
    /// How the file ended; `None` for a live stream or a file not read to its end.
    pub ending: Option<Ending>,
    /// Probe points that recorded nothing (from the capture header): their events are
    /// absent from the counts above, not zero.
    pub missing_points: Vec<crate::session::MissingPoint>,
}

/// Refusals the summary explains one by one.
const MAX_REFUSALS: usize = 20;

impl Summary {
    pub fn new() -> Summary {
        Summary::default()
    }

    pub fn add(&mut self, ev: &Event) {
        self.events += 1;
        self.first_ts_ns = Some(self.first_ts_ns.map_or(ev.ts_ns, |t| t.min(ev.ts_ns)));
        self.last_ts_ns = Some(self.last_ts_ns.map_or(ev.ts_ns, |t| t.max(ev.ts_ns)));
        *self.per_kind.entry(ev.body.name()).or_default() += 1;
        match &ev.body {
            EventBody::DomainAlloc(a) => {
                let key = AllocKey {
                    driver: a.driver.clone(),
                    kind: a.kind.name(),
                    errno: a.errno,
                };
                *self.domain_allocs.entry(key).or_default() += 1;
            }
            EventBody::HwptAlloc(h) => *self.hwpt_allocs.entry(h.errno).or_default() += 1,
            EventBody::DomainFree(_) | EventBody::PtGrow(_) => {}
            EventBody::Map(m) => add_map(&mut self.map, m),
            EventBody::Unmap(m) => add_map(&mut self.unmap, m),
            EventBody::PtAlloc(p) => {
                self.pt.allocated = self.pt.allocated.saturating_add(p.pages);
                if p.charged {
                    self.pt.charged = self.pt.charged.saturating_add(p.pages);
                } else {
                    self.pt.uncharged = self.pt.uncharged.saturating_add(p.pages);
                }
            }
            EventBody::PtFree(p) => self.pt.freed = self.pt.freed.saturating_add(p.pages),
            EventBody::Lost(l) => {
                self.lost.ringbuf_full = self.lost.ringbuf_full.saturating_add(l.ringbuf_full);
                self.lost.context_full = self.lost.context_full.saturating_add(l.context_full);
            }
            EventBody::ObjectAlloc(o) => {
                let t = self.objects.entry(o.object.clone()).or_default();
                if o.errno == 0 {
                    t.created += 1;
                } else {
                    *t.failed.entry(o.errno).or_default() += 1;
                }
            }
            EventBody::ObjectAbort(o) => {
                let t = self.objects.entry(o.object.clone()).or_default();
                *t.aborted.entry(o.errno).or_default() += 1;
            }
            EventBody::ObjectDestroy(o) => {
                let t = self.objects.entry(o.object.clone()).or_default();
                *t.destroyed.entry(o.how).or_default() += 1;
            }
            EventBody::Pin(p) => {
                let why = self.pins.explain(p);
                self.pins.apply(ev, p);
                if let Some(why) = why {
                    // A charge refused, or an uncharge that failed (the pages are unpinned
                    // all the same: per-mm, the creator's mm gone).
                    let (list, total) = if p.pages > 0 {
                        (&mut self.refusals, &mut self.refusals_total)
                    } else {
                        (&mut self.failed_uncharges, &mut self.failed_uncharges_total)
                    };
                    *total += 1;
                    if list.len() < MAX_REFUSALS {
                        list.push(format!("{} (pid {}): {why}", printable(&ev.comm), ev.pid));
                    }
                }
            }
            // Counted by kind above; the pins they made are in `pins`.
            EventBody::IoasMap(_)
            | EventBody::IoasMapFile(_)
            | EventBody::IoasCopy(_)
            | EventBody::IoasUnmap(_)
            | EventBody::IoasChangeProcess(_)
            | EventBody::Option(_) => {}
        }
    }

    pub fn set_ending(&mut self, ending: Option<&Ending>) {
        self.ending = ending.cloned();
    }
}

fn add_map(t: &mut MapTotals, m: &MapOp) {
    t.ops += 1;
    if m.errno != 0 {
        t.failed += 1;
    }
    t.requested = t.requested.saturating_add(m.size);
    t.done = t.done.saturating_add(m.done);
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let span = match (self.first_ts_ns, self.last_ts_ns) {
            (Some(a), Some(b)) => format!(" over {}", duration_text(b - a)),
            _ => String::new(),
        };
        writeln!(f, "events: {}{span}", self.events)?;
        for (kind, n) in &self.per_kind {
            writeln!(f, "  {kind:<13} {n}")?;
        }
        if !self.domain_allocs.is_empty() {
            writeln!(f, "domain allocations (driver, kind, result):")?;
            for (k, n) in &self.domain_allocs {
                writeln!(
                    f,
                    "  {:<12} {:<7} {:<12} {n}",
                    printable(&k.driver),
                    k.kind,
                    errno_name(k.errno)
                )?;
            }
        }
        if !self.hwpt_allocs.is_empty() {
            let parts: Vec<String> = self
                .hwpt_allocs
                .iter()
                .map(|(e, n)| format!("{} {n}", errno_name(*e)))
                .collect();
            writeln!(f, "hwpt allocations: {}", parts.join(", "))?;
        }
        for (name, t) in [("map", &self.map), ("unmap", &self.unmap)] {
            writeln!(
                f,
                "{name:<6} {} ops ({} failed), {} done of {} requested",
                t.ops,
                t.failed,
                bytes_text(t.done),
                bytes_text(t.requested)
            )?;
        }
        writeln!(
            f,
            "page-table pages: {} allocated ({} charged, {} uncharged), {} freed, {} outstanding",
            self.pt.allocated,
            self.pt.charged,
            self.pt.uncharged,
            self.pt.freed,
            self.pt.allocated as i128 - self.pt.freed as i128
        )?;
        if !self.objects.is_empty() {
            writeln!(
                f,
                "iommufd objects (type: created, destroyed by path, failed):"
            )?;
            for (object, t) in &self.objects {
                write!(f, "  {:<12} created {}", printable(object), t.created)?;
                if !t.destroyed.is_empty() {
                    let how: Vec<String> = t
                        .destroyed
                        .iter()
                        .map(|(h, n)| format!("{} {n}", h.name()))
                        .collect();
                    write!(
                        f,
                        ", destroyed {} ({})",
                        t.destroyed_total(),
                        how.join(", ")
                    )?;
                }
                for (e, n) in &t.failed {
                    write!(f, ", allocation failed {} {n}", errno_name(*e))?;
                }
                for (e, n) in &t.aborted {
                    write!(
                        f,
                        ", aborted {} {n}",
                        e.map_or("(errno unknown)".into(), errno_name)
                    )?;
                }
                writeln!(f)?;
            }
        }
        if self.refusals_total > 0 {
            writeln!(
                f,
                "pinned-memory refusals ({}; the first {} explained):",
                self.refusals_total,
                self.refusals.len()
            )?;
            for r in &self.refusals {
                writeln!(f, "  {r}")?;
            }
        }
        if self.failed_uncharges_total > 0 {
            writeln!(
                f,
                "pinned-memory uncharges that failed ({}; the pages were unpinned all the \
                 same; the first {} explained):",
                self.failed_uncharges_total,
                self.failed_uncharges.len()
            )?;
            for r in &self.failed_uncharges {
                writeln!(f, "  {r}")?;
            }
        }
        writeln!(
            f,
            "lost: {} (ring buffer full {}, context table full {})",
            self.lost.total(),
            self.lost.ringbuf_full,
            self.lost.context_full
        )?;
        for m in &self.missing_points {
            writeln!(f, "MISSING probe point (nothing recorded): {m}")?;
        }
        match &self.ending {
            None => Ok(()),
            Some(Ending::Finalized { trailer, file_len }) => writeln!(
                f,
                "file: finalized, {file_len} bytes; loss reported at close: {} (ring buffer \
                 full {}, context table full {})",
                trailer.lost_reported.total(),
                trailer.lost_reported.ringbuf_full,
                trailer.lost_reported.context_full
            ),
            Some(Ending::Incomplete(w)) => writeln!(
                f,
                "file: NOT finalized, stopped at byte offset {}: {}",
                w.offset, w.reason
            ),
        }
    }
}

/// Writes every event of `reader` to `out` in `format` and returns their summary, with the
/// file's ending. A warning (file cut short or damaged) is not written to `out`: it is in
/// `summary.ending` for the caller to print.
pub fn dump<W: Write>(
    reader: &mut impl CaptureSource,
    format: Format,
    out: &mut W,
) -> io::Result<Summary> {
    let mut summary = Summary::new();
    let mut text = TextFormatter::new();
    for item in reader.by_ref() {
        let Ok(ev) = item else { break };
        summary.add(&ev);
        match format {
            Format::Text => writeln!(out, "{}", text.line(&ev))?,
            Format::Jsonl => writeln!(out, "{}", json_line(&ev).map_err(io::Error::other)?)?,
        }
    }
    summary.set_ending(reader.ending());
    Ok(summary)
}
