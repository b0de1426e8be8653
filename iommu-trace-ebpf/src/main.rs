//! eBPF programs of iommu-trace.
//!
//! Logical probe points (user space maps each to a kernel symbol at run time, see
//! `iommu-trace/src/probe/plan.rs`):
//! - the iommufd `IOMMU_HWPT_ALLOC` ioctl handler and `iommufd_hwpt_paging_alloc`: context
//!   (explicit vs auto domain) and the ioctl's own result;
//! - the driver's domain-allocation op (three argument shapes across kernel versions);
//! - `iommu_domain_free`, `iommu_map`, `iommu_unmap` on the domains we saw allocated;
//! - the `NR_SECONDARY_PAGETABLE` statistic update that every iommu-pages allocation and free
//!   makes (`__lruvec_stat_mod_folio`), attributed to the domain operation the thread is in.
//!
//! Rust eBPF has no CO-RE: kernel struct fields are read at offsets that user space computed
//! from the running kernel's BTF and wrote into `CONFIG`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_func_ip,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user_buf,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use iommu_trace_common::{
    context, kind, lost, op, pt_op, Config, DomainAllocEvent, DomainFreeEvent, DomainGeometry,
    DriverFields, EventHeader, HwptAllocEvent, MapEvent, PtPagesEvent, DRIVER_WORDS, MAX_DRIVERS,
    USER_DATA_MAX,
};

/// Offsets from BTF and filters; user space rewrites this before loading.
#[no_mangle]
static CONFIG: Config = Config::unset();

/// Default size; user space overrides it (`record --ringbuf-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU loss counters, indexed by `lost::*`.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

/// Address of each driver op we attached to -> driver index in the probe plan.
#[map]
static DRIVER_BY_IP: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);

/// Domains allocated through the traced ops and not yet freed.
#[map]
static TRACKED: HashMap<u64, u32> = HashMap::with_max_entries(1 << 16, 0);

/// Per-thread contexts. Keyed by thread id: these paths sleep and can change CPU.
#[map]
static IOCTL_CTX: HashMap<u32, IoctlCtx> = HashMap::with_max_entries(4096, 0);
#[map]
static PAGING_CTX: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);
#[map]
static ALLOC_CTX: HashMap<u32, AllocCtx> = HashMap::with_max_entries(4096, 0);
/// Map, unmap and free in progress, per thread. A thread's entry stays when its operation
/// ends (`depth` 0): map/unmap are hot, and an insert plus a delete per call cost more than
/// the lookups. LRU reclaims the entries of threads gone; it could only take a live one
/// with more than this many threads inside an IOMMU operation at once.
#[map]
static OP_CTX: LruHashMap<u32, OpCtx> = LruHashMap::with_max_entries(16384, 0);
/// Scratch space: `AllocCtx` is too large to build on the 512-byte eBPF stack comfortably.
#[map]
static SCRATCH: PerCpuArray<AllocCtx> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct IoctlCtx {
    start: u64,
    /// Kernel copy of `struct iommu_hwpt_alloc` (`ucmd->cmd`).
    cmd: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct AllocCtx {
    start: u64,
    parent: u64,
    op: u32,
    driver: u32,
    flags: u32,
    context: u32,
    data_type: u32,
    data_len: u32,
    data_copied: u32,
    /// Page-table pages allocated inside the op, before the domain pointer is known.
    pending_charged: i32,
    pending_uncharged: i32,
    _pad: u32,
    pending_memcg: u64,
    data: [u8; USER_DATA_MAX],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Op {
    domain: u64,
    start: u64,
    iova: u64,
    paddr: u64,
    size: u64,
    /// `pt_op` value.
    op: u32,
    _pad: u32,
}

/// Operations can nest once (iommu_map's error path calls iommu_unmap).
#[repr(C)]
#[derive(Clone, Copy)]
struct OpCtx {
    ops: [Op; 2],
    depth: u32,
    _pad: u32,
}

/// `struct iommu_hwpt_alloc` (include/uapi/linux/iommufd.h): uAPI, fixed layout.
#[repr(C)]
#[derive(Clone, Copy)]
struct UapiHwptAlloc {
    size: u32,
    flags: u32,
    dev_id: u32,
    pt_id: u32,
    out_hwpt_id: u32,
    reserved: u32,
    data_type: u32,
    data_len: u32,
}

const MAX_ERRNO: i64 = 4095;

/// Reads one field of `CONFIG`. Field by field: the whole struct would not fit the stack.
macro_rules! cfg {
    ($($field:tt)+) => {
        // SAFETY: CONFIG is a read-only global that user space fills before load; the
        // volatile read keeps the compiler from folding the compile-time initial value.
        unsafe { core::ptr::read_volatile(&CONFIG.$($field)+) }
    };
}

/// Submit flags: wake the reader only once the ring holds `wakeup_bytes`; the collector
/// also drains on a short timer. A wakeup per event would cost a context switch per event.
#[inline(always)]
fn submit_flags() -> u64 {
    let threshold = cfg!(wakeup_bytes) as u64;
    if threshold == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn count_lost(reason: u32) {
    if let Some(p) = LOST.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn wanted() -> bool {
    let filter = cfg!(filter_pid);
    filter == 0 || (bpf_get_current_pid_tgid() >> 32) as u32 == filter
}

#[inline(always)]
fn header(kind: u32) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind,
        // SAFETY: helpers without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault yields an error, not a crash.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn read_u32(addr: u64) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

#[inline(always)]
fn field(base: u64, offset: u32) -> Option<u64> {
    if base == 0 || offset == Config::UNSET {
        None
    } else {
        Some(base + offset as u64)
    }
}

/// Errno of an `int`-returning function: only the low 32 bits of the return register are
/// defined (x86-64 psABI), so sign-extend them rather than reading 64 bits.
#[inline(always)]
fn errno_of_int(ret: u64) -> i32 {
    let r = ret as u32 as i32;
    if r < 0 {
        -r
    } else {
        0
    }
}

/// Errno of a pointer-returning function (`ERR_PTR`).
#[inline(always)]
fn errno_of(ret: u64) -> i32 {
    let r = ret as i64;
    if r < 0 && r >= -MAX_ERRNO {
        (-r) as i32
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------
// iommufd: the IOMMU_HWPT_ALLOC ioctl and iommufd_hwpt_paging_alloc (context only)

#[kprobe]
pub fn hwpt_alloc_ioctl_entry(ctx: ProbeContext) -> u32 {
    if !wanted() {
        return 0;
    }
    let ucmd: u64 = ctx.arg(0).unwrap_or(0);
    let cmd = match field(ucmd, cfg!(ucmd_cmd)) {
        Some(a) => read_u64(a),
        None => 0,
    };
    let c = IoctlCtx {
        // SAFETY: helper without arguments.
        start: unsafe { bpf_ktime_get_ns() },
        cmd,
    };
    if IOCTL_CTX.insert(&current_tid(), &c, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
    0
}

#[kretprobe]
pub fn hwpt_alloc_ioctl_exit(ctx: RetProbeContext) -> u32 {
    let tid = current_tid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(c) = (unsafe { IOCTL_CTX.get(&tid) }).copied() else {
        return 0;
    };
    let _ = IOCTL_CTX.remove(&tid);
    let ret: u64 = ctx.ret();
    let errno = errno_of_int(ret);
    let Some(mut entry) = EVENTS.reserve::<HwptAllocEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return 0;
    };
    let cmd: UapiHwptAlloc = if c.cmd != 0 {
        // SAFETY: probe read of the kernel's copy of the ioctl argument.
        unsafe { bpf_probe_read_kernel(c.cmd as *const UapiHwptAlloc) }.unwrap_or(UapiHwptAlloc {
            size: 0,
            flags: 0,
            dev_id: 0,
            pt_id: 0,
            out_hwpt_id: 0,
            reserved: 0,
            data_type: 0,
            data_len: 0,
        })
    } else {
        UapiHwptAlloc {
            size: 0,
            flags: 0,
            dev_id: 0,
            pt_id: 0,
            out_hwpt_id: 0,
            reserved: 0,
            data_type: 0,
            data_len: 0,
        }
    };
    entry.write(HwptAllocEvent {
        hdr: header(kind::HWPT_ALLOC),
        flags: cmd.flags,
        dev_id: cmd.dev_id,
        pt_id: cmd.pt_id,
        out_hwpt_id: if errno == 0 { cmd.out_hwpt_id } else { 0 },
        data_type: cmd.data_type,
        data_len: cmd.data_len,
        errno,
        _pad: 0,
        // SAFETY: helper without arguments.
        latency_ns: unsafe { bpf_ktime_get_ns() }.saturating_sub(c.start),
    });
    entry.submit(submit_flags());
    0
}

#[kprobe]
pub fn hwpt_paging_alloc_entry(_ctx: ProbeContext) -> u32 {
    if wanted() && PAGING_CTX.insert(&current_tid(), &1, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
    0
}

#[kretprobe]
pub fn hwpt_paging_alloc_exit(_ctx: RetProbeContext) -> u32 {
    let _ = PAGING_CTX.remove(&current_tid());
    0
}

// ---------------------------------------------------------------------------------------
// The driver's domain-allocation op

/// Shared entry: records the arguments in the thread's `AllocCtx`.
#[inline(always)]
fn alloc_entry(ctx: &ProbeContext, op: u32, flags: u32, parent: u64, user_data: u64) -> u32 {
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
    a.context = context_bits;
    a.data_type = 0;
    a.data_len = 0;
    a.data_copied = 0;
    a.pending_charged = 0;
    a.pending_uncharged = 0;
    a.pending_memcg = 0;
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
    let flags: u32 = ctx.arg(1).unwrap_or(0);
    let parent: u64 = ctx.arg(2).unwrap_or(0);
    let user_data: u64 = ctx.arg(3).unwrap_or(0);
    alloc_entry(&ctx, op::ALLOC_USER, flags, parent, user_data)
}

/// 6.13+: `domain_alloc_paging_flags(dev, flags, user_data)`.
#[kprobe]
pub fn alloc_paging_flags_entry(ctx: ProbeContext) -> u32 {
    let flags: u32 = ctx.arg(1).unwrap_or(0);
    let user_data: u64 = ctx.arg(2).unwrap_or(0);
    alloc_entry(&ctx, op::PAGING_FLAGS, flags, 0, user_data)
}

/// 6.13+: `domain_alloc_nested(dev, parent, flags, user_data)`.
#[kprobe]
pub fn alloc_nested_entry(ctx: ProbeContext) -> u32 {
    let parent: u64 = ctx.arg(1).unwrap_or(0);
    let flags: u32 = ctx.arg(2).unwrap_or(0);
    let user_data: u64 = ctx.arg(3).unwrap_or(0);
    alloc_entry(&ctx, op::NESTED, flags, parent, user_data)
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

#[inline(always)]
fn emit_pt(domain: u64, delta: i64, charged: u32, op: u32, memcg_id: u64) {
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

#[kretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
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
        emit_pt(domain, charged as i64, 1, pt_op::ALLOC, memcg);
    }
    if uncharged != 0 {
        emit_pt(domain, uncharged as i64, 0, pt_op::ALLOC, 0);
    }
    0
}

// ---------------------------------------------------------------------------------------
// Operations on tracked domains: free, map, unmap

#[inline(always)]
fn op_enter(domain: u64, op: u32, iova: u64, paddr: u64, size: u64) {
    // SAFETY: plain lookup.
    if unsafe { TRACKED.get(&domain) }.is_none() {
        return;
    }
    let tid = current_tid();
    let o = Op {
        domain,
        // SAFETY: helper without arguments.
        start: unsafe { bpf_ktime_get_ns() },
        iova,
        paddr,
        size,
        op,
        _pad: 0,
    };
    match OP_CTX.get_ptr_mut(&tid) {
        Some(c) => {
            // SAFETY: this thread's own entry.
            let c = unsafe { &mut *c };
            match c.depth {
                0 => {
                    c.ops[0] = o;
                    c.depth = 1;
                }
                1 => {
                    c.ops[1] = o;
                    c.depth = 2;
                }
                _ => {}
            }
        }
        None => {
            let c = OpCtx {
                ops: [o, o],
                depth: 1,
                _pad: 0,
            };
            if OP_CTX.insert(&tid, &c, 0).is_err() {
                count_lost(lost::CONTEXT_FULL);
            }
        }
    }
}

/// Pops the thread's innermost operation, if it is of kind `op`.
#[inline(always)]
fn op_exit(op: u32) -> Option<Op> {
    let tid = current_tid();
    let c = OP_CTX.get_ptr_mut(&tid)?;
    // SAFETY: this thread's own entry.
    let c = unsafe { &mut *c };
    if c.depth == 0 {
        return None;
    }
    let top = if c.depth == 2 { c.ops[1] } else { c.ops[0] };
    if top.op != op {
        return None;
    }
    c.depth -= 1;
    Some(top)
}

#[kprobe]
pub fn domain_free_entry(ctx: ProbeContext) -> u32 {
    let domain: u64 = ctx.arg(0).unwrap_or(0);
    op_enter(domain, pt_op::FREE, 0, 0, 0);
    0
}

#[kretprobe]
pub fn domain_free_exit(_ctx: RetProbeContext) -> u32 {
    let Some(o) = op_exit(pt_op::FREE) else {
        return 0;
    };
    let _ = TRACKED.remove(&o.domain);
    let Some(mut entry) = EVENTS.reserve::<DomainFreeEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return 0;
    };
    entry.write(DomainFreeEvent {
        hdr: header(kind::DOMAIN_FREE),
        domain: o.domain,
        // SAFETY: helper without arguments.
        latency_ns: unsafe { bpf_ktime_get_ns() }.saturating_sub(o.start),
    });
    entry.submit(submit_flags());
    0
}

/// `iommu_map(domain, iova, paddr, size, prot, gfp)`.
#[kprobe]
pub fn map_entry(ctx: ProbeContext) -> u32 {
    let domain: u64 = ctx.arg(0).unwrap_or(0);
    let iova: u64 = ctx.arg(1).unwrap_or(0);
    let paddr: u64 = ctx.arg(2).unwrap_or(0);
    let size: u64 = ctx.arg(3).unwrap_or(0);
    op_enter(domain, pt_op::MAP, iova, paddr, size);
    0
}

/// `iommu_unmap(domain, iova, size)` and `iommu_unmap_fast(domain, iova, size, gather)`.
#[kprobe]
pub fn unmap_entry(ctx: ProbeContext) -> u32 {
    let domain: u64 = ctx.arg(0).unwrap_or(0);
    let iova: u64 = ctx.arg(1).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    op_enter(domain, pt_op::UNMAP, iova, 0, size);
    0
}

#[inline(always)]
fn emit_map(o: Op, kind: u32, done: u64, errno: i32) {
    let Some(mut entry) = EVENTS.reserve::<MapEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    entry.write(MapEvent {
        hdr: header(kind),
        domain: o.domain,
        iova: o.iova,
        paddr: o.paddr,
        size: o.size,
        done,
        errno,
        _pad: 0,
        // SAFETY: helper without arguments.
        latency_ns: unsafe { bpf_ktime_get_ns() }.saturating_sub(o.start),
    });
    entry.submit(submit_flags());
}

#[kretprobe]
pub fn map_exit(ctx: RetProbeContext) -> u32 {
    if let Some(o) = op_exit(pt_op::MAP) {
        let ret: u64 = ctx.ret();
        let errno = errno_of_int(ret);
        emit_map(o, kind::MAP, if errno == 0 { o.size } else { 0 }, errno);
    }
    0
}

#[kretprobe]
pub fn unmap_exit(ctx: RetProbeContext) -> u32 {
    if let Some(o) = op_exit(pt_op::UNMAP) {
        let done: u64 = ctx.ret();
        emit_map(o, kind::UNMAP, done, 0);
    }
    0
}

// The same points through BPF trampolines (fentry/fexit), used when the kernel's BTF has the
// function with the expected arity: no breakpoint trap per call, which matters on these hot
// paths. In fexit, argument N (the arity) is the return value.

#[fentry(function = "iommu_map")]
pub fn map_fentry(ctx: FEntryContext) -> u32 {
    op_enter(ctx.arg(0), pt_op::MAP, ctx.arg(1), ctx.arg(2), ctx.arg(3));
    0
}

#[fexit(function = "iommu_map")]
pub fn map_fexit(ctx: FExitContext) -> u32 {
    if let Some(o) = op_exit(pt_op::MAP) {
        let errno = errno_of_int(ctx.arg(6));
        emit_map(o, kind::MAP, if errno == 0 { o.size } else { 0 }, errno);
    }
    0
}

#[fentry(function = "iommu_unmap")]
pub fn unmap_fentry(ctx: FEntryContext) -> u32 {
    op_enter(ctx.arg(0), pt_op::UNMAP, ctx.arg(1), 0, ctx.arg(2));
    0
}

#[fexit(function = "iommu_unmap")]
pub fn unmap_fexit(ctx: FExitContext) -> u32 {
    if let Some(o) = op_exit(pt_op::UNMAP) {
        emit_map(o, kind::UNMAP, ctx.arg(3), 0);
    }
    0
}

#[fentry(function = "iommu_unmap_fast")]
pub fn unmap_fast_fentry(ctx: FEntryContext) -> u32 {
    op_enter(ctx.arg(0), pt_op::UNMAP, ctx.arg(1), 0, ctx.arg(2));
    0
}

#[fexit(function = "iommu_unmap_fast")]
pub fn unmap_fast_fexit(ctx: FExitContext) -> u32 {
    if let Some(o) = op_exit(pt_op::UNMAP) {
        emit_map(o, kind::UNMAP, ctx.arg(4), 0);
    }
    0
}

// ---------------------------------------------------------------------------------------
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
    pt_stat_common(
        ctx.arg(0).unwrap_or(0),
        ctx.arg(1).unwrap_or(u32::MAX),
        ctx.arg(2).unwrap_or(0),
    )
}

#[fentry(function = "__lruvec_stat_mod_folio")]
pub fn pt_stat_fentry(ctx: FEntryContext) -> u32 {
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
