//! Page-table pages: the `NR_SECONDARY_PAGETABLE` statistic hook, each page's memory
//! cgroup, and the `PtPagesEvent` attributed to the domain operation the thread is in.

use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use iommu_trace_common::{kind, lost, PtPagesEvent};

use crate::{
    helpers::{count_lost, current_tid, field, header, read_u64, submit_flags},
    maps::{ALLOC_CTX, EVENTS, OP_CTX},
};

// Page-table pages: `__lruvec_stat_mod_folio(folio, NR_SECONDARY_PAGETABLE, ±pages)`,
// called by __iommu_alloc_account / __iommu_free_account (drivers/iommu/iommu-pages.h in
// 6.11-6.14, iommu-pages.c from 6.15) for every IOMMU page-table page, after allocation and
// before the free, so `memcg_data` tells whether the page is charged to a memory cgroup.

#[inline(always)]
fn memcg_of(folio: u64) -> (u32, u64) {
    let Some(a) = field(folio, cfg!(folio_memcg_data)) else {
        return (0, 0);
    };
    let data = read_u64(a);
    if data == 0 {
        return (0, 0);
    }
    let ptr = data & !(cfg!(memcg_data_flags_mask) as u64);
    let memcg = if data & cfg!(memcg_data_kmem) as u64 != 0 {
        field(ptr, cfg!(objcg_memcg)).map(read_u64).unwrap_or(0)
    } else {
        ptr
    };
    let cgroup = field(memcg, cfg!(memcg_css_cgroup))
        .map(read_u64)
        .unwrap_or(0);
    let kn = field(cgroup, cfg!(cgroup_kn)).map(read_u64).unwrap_or(0);
    let id = field(kn, cfg!(kn_id)).map(read_u64).unwrap_or(0);
    (1, id)
}

#[kprobe]
pub fn pt_stat(ctx: ProbeContext) -> u32 {
    floor!();
    pt_stat_common(
        ctx.arg(0).unwrap_or(0),
        ctx.arg(1).unwrap_or(u32::MAX),
        ctx.arg(2).unwrap_or(0),
    )
}

#[fentry(function = "__lruvec_stat_mod_folio")]
pub fn pt_stat_fentry(ctx: FEntryContext) -> u32 {
    floor!();
    pt_stat_common(ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

#[inline(always)]
fn pt_stat_common(folio: u64, idx: u32, val: i32) -> u32 {
    if idx != cfg!(nr_secondary_pagetable) {
        return 0;
    }
    let tid = current_tid();
    if let Some(a) = ALLOC_CTX.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry.
        let a = unsafe { &mut *a };
        let (charged, memcg) = memcg_of(folio);
        // Frees inside an allocation op (error unwinding) net out against what it allocated.
        if charged != 0 {
            a.pending_charged += val;
            a.pending_memcg = memcg;
        } else {
            a.pending_uncharged += val;
        }
        return 0;
    }
    let Some(c) = OP_CTX.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: this thread's own entry, copied.
    let c = unsafe { *c };
    if c.depth == 0 {
        return 0;
    }
    let o = if c.depth == 2 { c.ops[1] } else { c.ops[0] };
    let (charged, memcg) = memcg_of(folio);
    emit_pt(o.domain, val as i64, charged, o.op, memcg);
    0
}

#[inline(always)]
pub(crate) fn emit_pt(domain: u64, delta: i64, charged: u32, op: u32, memcg_id: u64) {
    let Some(mut entry) = EVENTS.reserve::<PtPagesEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    entry.write(PtPagesEvent {
        hdr: header(kind::PT_PAGES),
        domain,
        delta,
        charged,
        op,
        memcg_id,
    });
    entry.submit(submit_flags());
}
