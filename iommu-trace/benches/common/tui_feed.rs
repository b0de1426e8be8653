//! The synthetic event feed of the TUI benchmarks (`benches/tui_ingest.rs` and the
//! refresh-overhead benchmark in `tests/tui.rs`), shared so both measure the same load.

use iommu_trace::events::{DomainKind, Event, EventBody};

/// A feed shaped like a busy host: 64 domains of 8 processes mapping and unmapping, page
/// tables growing and shrinking, a domain freed and reallocated every 500 events.
pub fn bench_feed() -> Vec<Event> {
    use iommu_trace::events::{
        AllocOp, DomainAlloc, DomainFree, Geometry, KernelPtr, MapOp, PtCause, PtPages,
    };
    let mut v = Vec::new();
    let who = |i: u64, body| Event {
        ts_ns: 0,
        cpu: (i % 2) as u32,
        pid: 1000 + (i % 8) as u32,
        tid: 1000 + (i % 8) as u32,
        comm: format!("vmm-{}", i % 8),
        cgroup_id: 100 + i % 8,
        body,
    };
    let alloc = |d: u64| {
        EventBody::DomainAlloc(DomainAlloc {
            driver: if d.is_multiple_of(2) { "intel" } else { "mock" }.into(),
            op: AllocOp::AllocUser,
            kind: DomainKind::Paging,
            flags: 0,
            data_type: 0,
            data_len: 0,
            data: None,
            parent: KernelPtr(0),
            viommu_id: None,
            domain: KernelPtr(0xffff_8880_0000_0000 + d * 0x1000),
            errno: 0,
            latency_ns: 30_000 + d * 100,
            geometry: Geometry::default(),
        })
    };
    let ptr = |d: u64| KernelPtr(0xffff_8880_0000_0000 + d * 0x1000);
    for d in 0..64 {
        v.push(who(d, alloc(d)));
    }
    for i in 0..100_000u64 {
        let d = i % 64;
        let m = MapOp {
            domain: ptr(d),
            iova: (i / 64) << 12,
            size: 4096,
            done: 4096,
            paddr: 0,
            errno: 0,
            latency_ns: 2_000,
        };
        v.push(who(
            d,
            match i % 10 {
                0 => EventBody::PtAlloc(PtPages {
                    domain: ptr(d),
                    pages: 1,
                    charged: true,
                    memcg_id: 100 + d % 8,
                    cause: PtCause::Map,
                }),
                1 => EventBody::PtFree(PtPages {
                    domain: ptr(d),
                    pages: 1,
                    charged: true,
                    memcg_id: 100 + d % 8,
                    cause: PtCause::Unmap,
                }),
                2..=5 => EventBody::Unmap(m),
                _ => EventBody::Map(m),
            },
        ));
        if i % 500 == 499 {
            v.push(who(
                d,
                EventBody::DomainFree(DomainFree {
                    domain: ptr(d),
                    latency_ns: 10_000,
                }),
            ));
            v.push(who(d, alloc(d)));
        }
    }
    v
}
