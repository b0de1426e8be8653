//! Page-table pages: where they are allocated and freed (6.15+: the iommu-pages functions;
//! before: the `NR_SECONDARY_PAGETABLE` statistic hook), each page's memory cgroup, and the
//! `PtPagesEvent` attributed to the domain operation the thread is in.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe},
    programs::{FEntryContext, FExitContext, ProbeContext},
};
use iommu_trace_common::{kind, lost, Config, PtPagesEvent};

use crate::{
    helpers::{count_lost, field, read_u64, submit_flags, Thread},
    maps::{ALLOC_CTX, EVENTS},
    thread_ctx,
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
    pt_pages_seen(|| Some(folio), |_| val)
}

// 6.15+ (docs/kernel-facts.md §3.2): `iommu_alloc_pages_node_sz` and `__iommu_free_desc`
// are functions, so page-table pages are seen where they are made and freed, and the
// statistics hook, which every page of the host passes, is not attached. The plan picks
// these only where the linear map's bases are known (x86-64).

/// The `struct page` of a linear-map address: `pfn_to_page(__pa(virt) >> PAGE_SHIFT)` with
/// SPARSEMEM_VMEMMAP, both bases randomized at boot (arch/x86/include/asm/page_64.h,
/// `page_offset_base` and `vmemmap_base`, arch/x86/mm/kaslr.c).
#[inline(always)]
fn page_of_linear(virt: u64) -> Option<u64> {
    let (start_at, array_at) = (cfg!(page_offset_base_addr), cfg!(vmemmap_base_addr));
    let size = cfg!(page_struct_size);
    if start_at == 0 || array_at == 0 || size == Config::UNSET {
        return None;
    }
    let (start, array) = (read_u64(start_at), read_u64(array_at));
    if start == 0 || array == 0 || virt < start {
        return None;
    }
    Some(array + ((virt - start) >> 12) * size as u64)
}

/// Pages in a folio: 1, or 2^order for a large one (`folio_order`, include/linux/mm.h: the
/// order is the low byte of `_flags_1` when `PG_head` is set).
#[inline(always)]
fn folio_pages(folio: u64) -> i32 {
    let (head, flags_1) = (cfg!(pg_head), cfg!(folio_flags_1));
    if head >= 64 || flags_1 == Config::UNSET || read_u64(folio) & (1 << head) == 0 {
        return 1;
    }
    1 << (read_u64(folio + flags_1 as u64) & 0xff).min(30)
}

/// `void *iommu_alloc_pages_node_sz(int nid, gfp_t gfp, size_t size)` returned: the folio
/// is charged (or not) by now.
#[fexit(function = "iommu_alloc_pages_node_sz")]
pub fn pt_alloc_fexit(ctx: FExitContext) -> u32 {
    floor!();
    let virt: u64 = ctx.arg(3);
    if virt == 0 {
        return 0;
    }
    pt_pages_seen(|| page_of_linear(virt), folio_pages)
}

/// `static void __iommu_free_desc(struct ioptdesc *iopt)`: every free of iommu-pages
/// (`iommu_free_pages`, `iommu_put_pages_list`) passes here before the folio is put, its
/// `memcg_data` still set. An `ioptdesc` overlays the folio's `struct page`.
#[fentry(function = "__iommu_free_desc")]
pub fn pt_free_fentry(ctx: FEntryContext) -> u32 {
    floor!();
    let folio: u64 = ctx.arg(0);
    pt_pages_seen(|| Some(folio), |f| -folio_pages(f))
}

/// A page-table page (`val` pages: + allocated, - freed) in the thread's domain operation,
/// if it is in one. The folio and its page count are read only then: outside IOMMU work
/// the call costs a map lookup or two.
#[inline(always)]
fn pt_pages_seen(folio: impl FnOnce() -> Option<u64>, pages: impl FnOnce(u64) -> i32) -> u32 {
    let t = Thread::current();
    let tid = t.tid();
    if let Some(a) = ALLOC_CTX.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry.
        let a = unsafe { &mut *a };
        // A page whose `struct page` cannot be found is not attributed: counted, not
        // guessed.
        let Some(folio) = folio() else {
            count_lost(lost::CONTEXT_FULL);
            return 0;
        };
        let val = pages(folio);
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
    let Some(c) = thread_ctx::get(tid) else {
        return 0;
    };
    if c.depth == 0 {
        return 0;
    }
    let (domain, op) = if c.depth == 2 {
        (c.ops[1].domain, c.ops[1].op)
    } else {
        (c.ops[0].domain, c.ops[0].op)
    };
    let Some(folio) = folio() else {
        count_lost(lost::CONTEXT_FULL);
        return 0;
    };
    let val = pages(folio);
    let (charged, memcg) = memcg_of(folio);
    // The map calls before this page go out before it.
    thread_ctx::flush(t, c);
    emit_pt(t, domain, val as i64, charged, op, memcg);
    0
}

#[inline(always)]
pub(crate) fn emit_pt(t: Thread, domain: u64, delta: i64, charged: u32, op: u32, memcg_id: u64) {
    let Some(mut entry) = EVENTS.reserve::<PtPagesEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    entry.write(PtPagesEvent {
        hdr: t.header(kind::PT_PAGES),
        domain,
        delta,
        charged,
        op,
        memcg_id,
    });
    entry.submit(submit_flags());
}
