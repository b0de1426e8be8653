//! Units and text for the TUI: bytes, durations, pointers, flags, one event in one line.

use crate::events::{errno_name, Event, EventBody};
use crate::uapi::{HWPT_ALLOC_FLAGS, HWPT_ALLOC_FLAGS_KNOWN};

pub(super) use crate::units::seconds as fmt_secs;
pub use crate::units::{bytes_compact as fmt_bytes, duration_compact as fmt_dur};

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

/// One event, in one line, for the detail view.
pub fn describe(e: &Event, start_ns: u64) -> String {
    let t = format!("+{}", fmt_secs(e.ts_ns.saturating_sub(start_ns)));
    let what = match &e.body {
        EventBody::DomainAlloc(a) => format!(
            "domain_alloc {} {} {} flags {} -> {} in {}",
            a.driver,
            a.op.name(),
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
        EventBody::PtGrow(g) => format!("pt_grow: the table now has {} levels", g.levels),
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
        EventBody::ObjectAlloc(o) => format!(
            "object_alloc {} {} -> {}",
            o.object,
            o.id,
            if o.errno == 0 {
                "ok".to_string()
            } else {
                errno_name(o.errno)
            }
        ),
        EventBody::ObjectAbort(o) => format!(
            "object_abort {} {} ({})",
            o.object,
            o.id,
            o.errno.map_or("errno unknown".into(), errno_name)
        ),
        EventBody::ObjectDestroy(o) => {
            format!("object_destroy {} {} by {}", o.object, o.id, o.how.name())
        }
        EventBody::IoasMap(o)
        | EventBody::IoasMapFile(o)
        | EventBody::IoasCopy(o)
        | EventBody::IoasUnmap(o)
        | EventBody::IoasChangeProcess(o) => format!(
            "{} ioas {} iova {:#x} length {} -> {} in {}",
            e.body.name(),
            o.ioas,
            o.iova,
            fmt_bytes(o.length),
            ok_or_errno(o.errno),
            fmt_dur(o.latency_ns)
        ),
        EventBody::Option(o) => format!(
            "option {} {} {} -> {}",
            o.option,
            o.op,
            o.val64,
            ok_or_errno(o.errno)
        ),
        EventBody::Pin(p) => format!(
            "pin {:+} pages, {:+} charged ({}) -> {}",
            p.pages,
            p.charged,
            p.mode.name(),
            ok_or_errno(p.errno)
        ),
    };
    format!("{t:>10} {:>6} {what}", e.tid)
}

fn ok_or_errno(errno: i32) -> String {
    if errno == 0 {
        "ok".to_string()
    } else {
        errno_name(errno)
    }
}
