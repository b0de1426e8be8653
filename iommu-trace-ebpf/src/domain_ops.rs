//! Operations on tracked domains: free, map, unmap, through kprobes or BPF trampolines;
//! the per-thread operation stack (`op_enter`/`op_exit`) that page-table accounting reads,
//! kept in the thread's context (thread_ctx.rs).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use iommu_trace_common::{kind, lost, pt_op, DomainFreeEvent, MapEvent};

use crate::{
    helpers::{count_lost, current_tid, errno_of_int, submit_flags, Thread},
    maps::{Op, OpCtx, EVENTS, TRACKED},
    thread_ctx,
};

#[inline(always)]
fn op_enter(domain: u64, op: u32, iova: u64, paddr: u64, size: u64) {
    // SAFETY: plain lookup.
    if unsafe { TRACKED.get(&domain) }.is_none() {
        return;
    }
    let Some(c) = thread_ctx::get_or_make(current_tid()) else {
        return;
    };
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

/// Pops the thread's innermost operation, if it is of kind `op`; with the thread's
/// context, where its event goes.
#[inline(always)]
fn op_exit(t: Thread, op: u32) -> Option<(&'static mut OpCtx, Op)> {
    let c = thread_ctx::get(t.tid())?;
    if c.depth == 0 {
        return None;
    }
    let top = if c.depth == 2 { c.ops[1] } else { c.ops[0] };
    if top.op != op {
        return None;
    }
    c.depth -= 1;
    Some((c, top))
}

#[kprobe]
pub fn domain_free_entry(ctx: ProbeContext) -> u32 {
    floor!();
    let domain: u64 = ctx.arg(0).unwrap_or(0);
    op_enter(domain, pt_op::FREE, 0, 0, 0);
    0
}

#[kretprobe]
pub fn domain_free_exit(_ctx: RetProbeContext) -> u32 {
    floor!();
    let t = Thread::current();
    let Some((c, o)) = op_exit(t, pt_op::FREE) else {
        return 0;
    };
    thread_ctx::flush(t, c);
    let _ = TRACKED.remove(&o.domain);
    let Some(mut entry) = EVENTS.reserve::<DomainFreeEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return 0;
    };
    let hdr = t.header(kind::DOMAIN_FREE);
    entry.write(DomainFreeEvent {
        hdr,
        domain: o.domain,
        latency_ns: hdr.ts_ns.saturating_sub(o.start),
    });
    entry.submit(submit_flags());
    0
}

/// `iommu_map(domain, iova, paddr, size, prot, gfp)`.
#[kprobe]
pub fn map_entry(ctx: ProbeContext) -> u32 {
    floor!();
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
    floor!();
    let domain: u64 = ctx.arg(0).unwrap_or(0);
    let iova: u64 = ctx.arg(1).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    op_enter(domain, pt_op::UNMAP, iova, 0, size);
    0
}

/// The operation's event: into the thread's batch inside a batching IOAS handler, else a
/// record of its own (after the batch, if one is pending), whose end is the header's time
/// stamp (one clock read, not two).
#[inline(always)]
fn emit_map(t: Thread, c: &mut OpCtx, o: Op, kind: u32, done: u64, errno: i32) {
    if thread_ctx::batching(c) {
        thread_ctx::append(t, c, &o, kind, done, errno);
        return;
    }
    thread_ctx::flush(t, c);
    let Some(mut entry) = EVENTS.reserve::<MapEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    let hdr = t.header(kind);
    entry.write(MapEvent {
        hdr,
        domain: o.domain,
        iova: o.iova,
        paddr: o.paddr,
        size: o.size,
        done,
        errno,
        _pad: 0,
        latency_ns: hdr.ts_ns.saturating_sub(o.start),
    });
    entry.submit(submit_flags());
}

#[kretprobe]
pub fn map_exit(ctx: RetProbeContext) -> u32 {
    floor!();
    let t = Thread::current();
    if let Some((c, o)) = op_exit(t, pt_op::MAP) {
        let ret: u64 = ctx.ret();
        let errno = errno_of_int(ret);
        emit_map(
            t,
            c,
            o,
            kind::MAP,
            if errno == 0 { o.size } else { 0 },
            errno,
        );
    }
    0
}

#[kretprobe]
pub fn unmap_exit(ctx: RetProbeContext) -> u32 {
    floor!();
    let t = Thread::current();
    if let Some((c, o)) = op_exit(t, pt_op::UNMAP) {
        let done: u64 = ctx.ret();
        emit_map(t, c, o, kind::UNMAP, done, 0);
    }
    0
}

// The same points through BPF trampolines (fentry/fexit), used when the kernel's BTF has the
// function with the expected arity: no breakpoint trap per call, which matters on these hot
// paths. In fexit, argument N (the arity) is the return value.

#[fentry(function = "iommu_map")]
pub fn map_fentry(ctx: FEntryContext) -> u32 {
    floor!();
    op_enter(ctx.arg(0), pt_op::MAP, ctx.arg(1), ctx.arg(2), ctx.arg(3));
    0
}

#[fexit(function = "iommu_map")]
pub fn map_fexit(ctx: FExitContext) -> u32 {
    floor!();
    let t = Thread::current_typed();
    if let Some((c, o)) = op_exit(t, pt_op::MAP) {
        let errno = errno_of_int(ctx.arg(6));
        emit_map(
            t,
            c,
            o,
            kind::MAP,
            if errno == 0 { o.size } else { 0 },
            errno,
        );
    }
    0
}

#[fentry(function = "iommu_unmap")]
pub fn unmap_fentry(ctx: FEntryContext) -> u32 {
    floor!();
    op_enter(ctx.arg(0), pt_op::UNMAP, ctx.arg(1), 0, ctx.arg(2));
    0
}

#[fexit(function = "iommu_unmap")]
pub fn unmap_fexit(ctx: FExitContext) -> u32 {
    floor!();
    let t = Thread::current_typed();
    if let Some((c, o)) = op_exit(t, pt_op::UNMAP) {
        emit_map(t, c, o, kind::UNMAP, ctx.arg(3), 0);
    }
    0
}

#[fentry(function = "iommu_unmap_fast")]
pub fn unmap_fast_fentry(ctx: FEntryContext) -> u32 {
    floor!();
    op_enter(ctx.arg(0), pt_op::UNMAP, ctx.arg(1), 0, ctx.arg(2));
    0
}

#[fexit(function = "iommu_unmap_fast")]
pub fn unmap_fast_fexit(ctx: FExitContext) -> u32 {
    floor!();
    let t = Thread::current_typed();
    if let Some((c, o)) = op_exit(t, pt_op::UNMAP) {
        emit_map(t, c, o, kind::UNMAP, ctx.arg(4), 0);
    }
    0
}
