//! A tracked domain's page table grows its top: the driver hook that points the hardware at
//! the new top, with the level count after the growth (AMD; docs/kernel-facts.md §4.4).

use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use iommu_trace_common::{kind, lost, PtGrowEvent};

use crate::{
    helpers::{count_lost, field, read_u32, submit_flags, Thread},
    maps::{EVENTS, TRACKED},
    thread_ctx,
};

#[inline(always)]
fn emit_grow(domain: u64, levels: u32) {
    // SAFETY: plain lookup.
    if unsafe { TRACKED.get(&domain) }.is_none() {
        return;
    }
    let t = Thread::current();
    // The map calls before the growth go out before it.
    if let Some(c) = thread_ctx::get(t.tid()) {
        thread_ctx::flush(t, c);
    }
    let Some(mut entry) = EVENTS.reserve::<PtGrowEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    entry.write(PtGrowEvent {
        hdr: t.header(kind::PT_GROW),
        domain,
        levels,
        _pad: 0,
    });
    entry.submit(submit_flags());
}

/// 6.12 io-pgtable v1: `amd_iommu_update_and_flush_device_table(struct protection_domain
/// *domain)`, called by `increase_address_space` once it raised `iop.mode` by one.
#[kprobe]
pub fn pt_grow_v1(ctx: ProbeContext) -> u32 {
    floor!();
    let pdom: u64 = ctx.arg(0).unwrap_or(0);
    let (Some(domain), Some(mode)) = (field(pdom, cfg!(pdom_domain)), field(pdom, cfg!(pdom_mode)))
    else {
        return 0;
    };
    emit_grow(domain, read_u32(mode));
    0
}

/// 7.x generic page table: `amd_iommu_change_top(struct pt_iommu *iommu_table, phys_addr_t
/// top_paddr, unsigned int top_level)`, called by `increase_top` with the new 0-based level.
#[kprobe]
pub fn pt_grow_top(ctx: ProbeContext) -> u32 {
    floor!();
    let table: u64 = ctx.arg(0).unwrap_or(0);
    let top_level: u64 = ctx.arg(2).unwrap_or(0);
    let Some(domain) = field(table, cfg!(pt_iommu_domain)) else {
        return 0;
    };
    emit_grow(domain, (top_level as u32).wrapping_add(1));
    0
}
