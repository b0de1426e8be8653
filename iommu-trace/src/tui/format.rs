//! Units and text for the TUI: bytes, durations, pointers, flags, one event in one line.

use crate::events::{errno_name, AllocOp, Event, EventBody};
use crate::uapi::{HWPT_ALLOC_FLAGS, HWPT_ALLOC_FLAGS_KNOWN};

/// Bytes, short: 512B, 4.0K, 13.1M, 2.0G.
pub fn fmt_bytes(b: u64) -> String {
    const U: [&str; 5] = ["K", "M", "G", "T", "P"];
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if v >= 100.0 {
        format!("{v:.0}{}", U[i])
    } else {
        format!("{v:.1}{}", U[i])
    }
}

/// A duration, short: 850ns, 12.3µs, 1.04ms, 4.6s, 3m12s, 2h03m.
pub fn fmt_dur(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        short(ns as f64 / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        short(ns as f64 / 1e6, "ms")
    } else if ns < 60_000_000_000 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if ns < 3_600_000_000_000 {
        let s = ns / 1_000_000_000;
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = ns / 60_000_000_000;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

/// One decimal below 100, none above: 12.3ms, 250ms.
fn short(v: f64, unit: &str) -> String {
    if v >= 99.95 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// Seconds with milliseconds: 4.601s.
pub(super) fn fmt_secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

pub(super) fn short_ptr(p: u64, wide: bool) -> String {
    if p == 0 {
        "-".into()
    } else if wide {
        format!("{p:#x}")
    } else {
        format!("{:08x}", p & 0xffff_ffff)
    }
}

/// `IOMMU_HWPT_ALLOC_*` flags, short.
pub fn flag_names(flags: u32) -> String {
    if flags == 0 {
        return "-".into();
    }
    let mut out = Vec::new();
    for f in HWPT_ALLOC_FLAGS {
        if flags & f.bit != 0 {
            out.push(f.short.to_string());
        }
    }
    if flags & !HWPT_ALLOC_FLAGS_KNOWN != 0 {
        out.push(format!("{:#x}", flags & !HWPT_ALLOC_FLAGS_KNOWN));
    }
    out.join(",")
}

pub(super) fn op_name(op: AllocOp) -> &'static str {
    match op {
        AllocOp::AllocUser => "alloc_user",
        AllocOp::PagingFlags => "paging_flags",
        AllocOp::Nested => "nested",
    }
}

/// One event, in one line, for the detail view.
pub fn describe(e: &Event, start_ns: u64) -> String {
    let t = format!("+{}", fmt_secs(e.ts_ns.saturating_sub(start_ns)));
    let what = match &e.body {
        EventBody::DomainAlloc(a) => format!(
            "domain_alloc {} {} {} flags {} -> {} in {}",
            a.driver,
            op_name(a.op),
            a.kind.name(),
            flag_names(a.flags),
            if a.errno == 0 {
                "ok".to_string()
            } else {
                errno_name(a.errno)
            },
            fmt_dur(a.latency_ns)
        ),
        EventBody::HwptAlloc(h) => format!("hwpt_alloc -> {}", errno_name(h.errno)),
        EventBody::DomainFree(d) => format!("domain_free in {}", fmt_dur(d.latency_ns)),
        EventBody::Map(m) | EventBody::Unmap(m) => format!(
            "{:<5} iova {:#x} size {} done {}{} in {}",
            e.body.name(),
            m.iova,
            fmt_bytes(m.size),
            fmt_bytes(m.done),
            if m.errno != 0 {
                format!(" {}", errno_name(m.errno))
            } else {
                String::new()
            },
            fmt_dur(m.latency_ns)
        ),
        EventBody::PtAlloc(p) | EventBody::PtFree(p) => format!(
            "{} {} page{} ({}, {})",
            e.body.name(),
            p.pages,
            if p.pages == 1 { "" } else { "s" },
            format!("{:?}", p.cause).to_lowercase(),
            if p.charged {
                format!("charged to memcg {}", p.memcg_id)
            } else {
                "not charged".into()
            }
        ),
        EventBody::Lost(l) => format!("lost {} {}", l.ringbuf_full, l.context_full),
    };
    format!("{t:>10} {:>6} {what}", e.tid)
}
