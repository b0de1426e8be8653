//! The driver's domain-allocation op (three argument shapes across kernel versions, and the
//! vIOMMU's nested one): the arguments at entry, the new domain, its geometry and driver
//! fields at exit.

use aya_ebpf::{
    helpers::{bpf_get_func_ip, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user_buf},
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use iommu_trace_common::{
    context, kind, lost, op, pt_op, DomainAllocEvent, DomainGeometry, DriverFields, DRIVER_WORDS,
    MAX_DRIVERS, USER_DATA_MAX,
};

use crate::{
    helpers::{
        count_lost, current_tid, errno_of, field, header, read_u32, read_u64, submit_flags, wanted,
        Thread,
    },
    maps::{
        ALLOC_CTX, DRIVER_BY_IP, EVENTS, IOCTL_CTX, IOMMUFD_ONLY, PAGING_CTX, SCRATCH, TRACKED,
    },
    pt_pages::emit_pt,
};

/// Shared entry: records the arguments in the thread's `AllocCtx`.
#[inline(always)]
fn alloc_entry(
    ctx: &ProbeContext,
    op: u32,
    flags: u32,
    parent: u64,
    user_data: u64,
    viommu_id: u32,
) -> u32 {
    if !wanted() {
        return 0;
    }
    let tid = current_tid();
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch slot; eBPF programs are not preempted on their CPU.
    let a = unsafe { &mut *scratch };
    // SAFETY: helper without arguments.
    a.start = unsafe { bpf_ktime_get_ns() };
    a.parent = parent;
    a.op = op;
    // SAFETY: ctx is the kprobe's context.
    let ip = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
    // SAFETY: plain lookup, value copied.
    a.driver = unsafe { DRIVER_BY_IP.get(&ip) }
        .copied()
        .unwrap_or(u32::MAX);
    a.flags = flags;
    let mut context_bits = 0;
    // SAFETY: plain lookups.
    if unsafe { IOCTL_CTX.get(&tid) }.is_some() {
        context_bits |= context::HWPT_ALLOC_IOCTL;
    }
    if unsafe { PAGING_CTX.get(&tid) }.is_some() {
        context_bits |= context::HWPT_PAGING_ALLOC;
    }
    // 6.13+: the paging op also allocates the DMA API's domains, which iommufd never sees;
    // iommufd's own come through iommufd_hwpt_paging_alloc (docs/kernel-facts.md §1.4).
    if op == op::PAGING_FLAGS && context_bits == 0 && IOMMUFD_ONLY.get(0).copied() == Some(1) {
        return 0;
    }
    a.context = context_bits;
    a.data_type = 0;
    a.data_len = 0;
    a.data_copied = 0;
    a.pending_charged = 0;
    a.pending_uncharged = 0;
    a.pending_memcg = 0;
    a.viommu_id = viommu_id;
    if user_data != 0 {
        if let Some(p) = field(user_data, cfg!(user_data_type)) {
            a.data_type = read_u32(p);
        }
        let len = field(user_data, cfg!(user_data_len))
            .map(read_u64)
            .unwrap_or(0);
        a.data_len = len as u32;
        let uptr = field(user_data, cfg!(user_data_uptr))
            .map(read_u64)
            .unwrap_or(0);
        let n = if len > USER_DATA_MAX as u64 {
            USER_DATA_MAX
        } else {
            len as usize
        };
        if uptr != 0 && n > 0 && n <= USER_DATA_MAX {
            // SAFETY: the helper faults safely on a bad user pointer.
            if unsafe { bpf_probe_read_user_buf(uptr as *const u8, &mut a.data[..n]) }.is_ok() {
                a.data_copied = n as u32;
            }
        }
    }
    if ALLOC_CTX.insert(&tid, a, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
    0
}

/// 6.7 to 6.12: `domain_alloc_user(dev, flags, parent, user_data)`.
#[kprobe]
pub fn alloc_user_entry(ctx: ProbeContext) -> u32 {
    floor!();
    let flags: u32 = ctx.arg(1).unwrap_or(0);
    let parent: u64 = ctx.arg(2).unwrap_or(0);
    let user_data: u64 = ctx.arg(3).unwrap_or(0);
    alloc_entry(&ctx, op::ALLOC_USER, flags, parent, user_data, 0)
}

/// 6.13+: `domain_alloc_paging_flags(dev, flags, user_data)`.
#[kprobe]
pub fn alloc_paging_flags_entry(ctx: ProbeContext) -> u32 {
    floor!();
    let flags: u32 = ctx.arg(1).unwrap_or(0);
    let user_data: u64 = ctx.arg(2).unwrap_or(0);
    alloc_entry(&ctx, op::PAGING_FLAGS, flags, 0, user_data, 0)
}

/// 6.13+: `domain_alloc_nested(dev, parent, flags, user_data)`.
#[kprobe]
pub fn alloc_nested_entry(ctx: ProbeContext) -> u32 {
    floor!();
    let parent: u64 = ctx.arg(1).unwrap_or(0);
    let flags: u32 = ctx.arg(2).unwrap_or(0);
    let user_data: u64 = ctx.arg(3).unwrap_or(0);
    alloc_entry(&ctx, op::NESTED, flags, parent, user_data, 0)
}

/// 6.13+: `iommufd_viommu_ops.alloc_domain_nested(viommu, flags, user_data)`. The parent is
/// the vIOMMU's nesting parent HWPT's domain (`viommu->hwpt->common.domain`).
#[kprobe]
pub fn alloc_viommu_nested_entry(ctx: ProbeContext) -> u32 {
    floor!();
    let viommu: u64 = ctx.arg(0).unwrap_or(0);
    let flags: u32 = ctx.arg(1).unwrap_or(0);
    let user_data: u64 = ctx.arg(2).unwrap_or(0);
    let hwpt = field(viommu, cfg!(viommu_hwpt)).map(read_u64).unwrap_or(0);
    let parent = field(hwpt, cfg!(hwpt_domain)).map(read_u64).unwrap_or(0);
    let viommu_id = field(viommu, cfg!(object_id)).map(read_u32).unwrap_or(0);
    alloc_entry(&ctx, op::VIOMMU_NESTED, flags, parent, user_data, viommu_id)
}

/// Fills `g` from the new domain, in place (the event is too large to build on the stack).
#[inline(always)]
fn fill_geometry(g: &mut DomainGeometry, domain: u64, driver: u32) {
    g.pgsize_bitmap = field(domain, cfg!(domain_pgsize_bitmap))
        .map(read_u64)
        .unwrap_or(0);
    g.aperture_start = field(domain, cfg!(domain_aperture_start))
        .map(read_u64)
        .unwrap_or(0);
    g.aperture_end = field(domain, cfg!(domain_aperture_end))
        .map(read_u64)
        .unwrap_or(0);
    g.domain_type = field(domain, cfg!(domain_type)).map(read_u32).unwrap_or(0);
    g._pad = 0;
    for i in 0..DRIVER_WORDS {
        g.driver_words[i] = 0;
    }
    if domain == 0 || (driver as usize) >= MAX_DRIVERS {
        return;
    }
    let d = driver as usize;
    for i in 0..DRIVER_WORDS {
        let deref = cfg!(drivers[d].derefs[i]);
        let base = if deref == DriverFields::DIRECT {
            domain
        } else {
            read_u64(domain.wrapping_add(deref as i64 as u64))
        };
        if base == 0 {
            g.driver_words[i] = 0;
            continue;
        }
        let addr = base.wrapping_add(cfg!(drivers[d].offsets[i]) as i64 as u64);
        g.driver_words[i] = match cfg!(drivers[d].sizes[i]) {
            // SAFETY: probe reads.
            1 => unsafe { bpf_probe_read_kernel(addr as *const u8) }.unwrap_or(0) as u64,
            2 => unsafe { bpf_probe_read_kernel(addr as *const u16) }.unwrap_or(0) as u64,
            4 => read_u32(addr) as u64,
            8 => read_u64(addr),
            _ => 0,
        };
    }
}

#[kretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    floor!();
    let tid = current_tid();
    let Some(ap) = ALLOC_CTX.get_ptr(&tid) else {
        return 0;
    };
    // SAFETY: the map value stays valid until it is removed at the end of this program.
    let a = unsafe { &*ap };
    let ret: u64 = ctx.ret();
    let mut errno = errno_of(ret);
    if errno == 0 && ret == 0 {
        // A NULL return is an allocation failure (legacy convention).
        errno = 12;
    }
    let domain = if errno == 0 { ret } else { 0 };
    if domain != 0 && TRACKED.insert(&domain, &1, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
    match EVENTS.reserve::<DomainAllocEvent>(0) {
        Some(mut entry) => {
            let e = entry.as_mut_ptr();
            // SAFETY: `e` points at the reserved record; every field is written before submit.
            unsafe {
                (*e).hdr = header(kind::DOMAIN_ALLOC);
                (*e).op = a.op;
                (*e).driver = a.driver;
                (*e).flags = a.flags;
                (*e).context = a.context;
                (*e).parent = a.parent;
                (*e).domain = domain;
                (*e).errno = errno;
                (*e).data_type = a.data_type;
                (*e).data_len = a.data_len;
                (*e).data_copied = a.data_copied;
                (*e).viommu_id = a.viommu_id;
                (*e)._pad = 0;
                (*e).latency_ns = bpf_ktime_get_ns().saturating_sub(a.start);
                core::ptr::copy_nonoverlapping(
                    a.data.as_ptr(),
                    (*e).data.as_mut_ptr(),
                    USER_DATA_MAX,
                );
                fill_geometry(&mut (*e).geometry, domain, a.driver);
            }
            entry.submit(submit_flags());
        }
        None => count_lost(lost::RINGBUF_FULL),
    }
    let (charged, uncharged, memcg) = (a.pending_charged, a.pending_uncharged, a.pending_memcg);
    let _ = ALLOC_CTX.remove(&tid);
    // Pages allocated inside the op belong to the new domain (on failure they are reported
    // against domain 0, so the totals still reconcile with nr_iommu_pages).
    if charged != 0 {
        emit_pt(
            Thread::current(),
            domain,
            charged as i64,
            1,
            pt_op::ALLOC,
            memcg,
        );
    }
    if uncharged != 0 {
        emit_pt(
            Thread::current(),
            domain,
            uncharged as i64,
            0,
            pt_op::ALLOC,
            0,
        );
    }
    0
}
