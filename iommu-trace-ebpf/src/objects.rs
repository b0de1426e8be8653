//! iommufd objects: allocated (`_iommufd_object_alloc`), published
//! (`iommufd_object_finalize`), aborted (`iommufd_object_abort`) and destroyed (each type's
//! destroy op: the only hooks every destruction path goes through, fd close included), with
//! the thread contexts that say why: the iommufd ioctl in progress (an abort's errno,
//! `IOMMU_DESTROY`), the iommufd file's release, a device unbind.
//! Kernel facts: docs/kernel-facts.md §7.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use iommu_trace_common::{
    how, kind, lost, object_flags, ref_kind, ObjectEvent, MAX_OBJECT_TYPES, OBJECT_REFS,
};

use crate::{
    helpers::{
        count_lost, current_tid, errno_of, errno_of_int, field, header, read_u32, read_u64,
        submit_flags, wanted,
    },
    maps::{
        HowCtx, IfdCtx, PendingAbort, PendingObject, ReserveCtx, ABORT_AND_DESTROY, EVENTS,
        HOW_CTX, IFD_CTX, IOCTL_CTX, LATE_ABORTS, PENDING_OBJECTS, RESERVE_CTX,
    },
};

/// `IfdCtx::cmd` of a thread in `iommufd_destroy` (IOMMU_DESTROY); 0 in a handler that
/// creates objects.
const IN_DESTROY: u32 = 1;

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Entry of an iommufd ioctl handler that creates or destroys objects, `(ucmd)`. Only those
/// handlers are hooked, not `iommufd_fops_ioctl`: the IOAS_MAP/UNMAP loop pays nothing.
#[inline(always)]
fn handler_enter(cmd: u32, ucmd: u64) {
    if !wanted() {
        return;
    }
    let tid = current_tid();
    // Handlers do not nest: an entry left here lost its exit. Its aborts go out now, their
    // errno unknown.
    // SAFETY: copied out before it is overwritten.
    if let Some(stale) = unsafe { IFD_CTX.get(&tid) }.copied() {
        emit_pending_aborts(&stale, 0, 0);
    }
    let c = IfdCtx {
        cmd,
        pending: 0,
        ucmd,
        aborts: [PendingAbort::EMPTY; 2],
    };
    if IFD_CTX.insert(&tid, &c, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
}

/// Emits the aborts the handler made, now that its result is known. A 7.x handler that
/// failed with an object in `ucmd->new_obj` leaves that abort to `iommufd_fops_ioctl`,
/// after this return: its errno is kept by object pointer for `object_abort`.
#[inline(always)]
fn handler_exit(ret: u64) {
    let tid = current_tid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(c) = (unsafe { IFD_CTX.get(&tid) }).copied() else {
        return;
    };
    let _ = IFD_CTX.remove(&tid);
    let errno = errno_of_int(ret);
    emit_pending_aborts(&c, errno, object_flags::ERRNO_KNOWN);
    if errno != 0 {
        if let Some(at) = field(c.ucmd, cfg!(ucmd_new_obj)) {
            let obj = read_u64(at);
            if obj != 0 && LATE_ABORTS.insert(&obj, &errno, 0).is_err() {
                count_lost(lost::CONTEXT_FULL);
            }
        }
    }
}

/// The aborts an ioctl context holds, with `errno` and `flags`.
#[inline(always)]
fn emit_pending_aborts(c: &IfdCtx, errno: i32, flags: u32) {
    for i in 0..2 {
        if (i as u32) < c.pending {
            emit_abort(&c.aborts[i], errno, flags);
        }
    }
}

/// The handlers of the ioctls that create objects (IOAS, HWPT, FAULT, VIOMMU, VDEVICE,
/// VEVENTQ, HW_QUEUE alloc, the selftest's command): an abort inside one has its errno.
#[kprobe]
pub fn create_ioctl_entry(ctx: ProbeContext) -> u32 {
    floor!();
    handler_enter(0, ctx.arg(0).unwrap_or(0));
    0
}

/// `iommufd_destroy(ucmd)`: objects destroyed here are destroyed by IOMMU_DESTROY.
#[kprobe]
pub fn destroy_ioctl_entry(ctx: ProbeContext) -> u32 {
    floor!();
    handler_enter(IN_DESTROY, ctx.arg(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn object_ioctl_exit(ctx: RetProbeContext) -> u32 {
    floor!();
    handler_exit(ctx.ret());
    0
}

/// Enters a destroy context; a nested one keeps the outer one's `how`.
#[inline(always)]
fn enter_how(value: u32) {
    if !wanted() {
        return;
    }
    let tid = current_tid();
    if let Some(c) = HOW_CTX.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry.
        unsafe { (*c).depth += 1 };
        return;
    }
    let c = HowCtx {
        how: value,
        depth: 1,
    };
    if HOW_CTX.insert(&tid, &c, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
}

#[kprobe]
pub fn fd_release_entry(_ctx: ProbeContext) -> u32 {
    floor!();
    enter_how(how::CLOSE);
    0
}

#[kprobe]
pub fn device_unbind_entry(_ctx: ProbeContext) -> u32 {
    floor!();
    enter_how(how::UNBIND);
    0
}

/// The exit of both. They nest: an fd close destroys a selftest device object, whose
/// destroy op unbinds its iommufd device.
#[kretprobe]
pub fn destroy_context_exit(_ctx: RetProbeContext) -> u32 {
    floor!();
    let tid = current_tid();
    let Some(c) = HOW_CTX.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: this thread's own entry.
    let depth = unsafe {
        (*c).depth = (*c).depth.saturating_sub(1);
        (*c).depth
    };
    if depth == 0 {
        let _ = HOW_CTX.remove(&tid);
    }
    0
}

/// `_iommufd_object_alloc(ictx, size, type)`.
#[kprobe]
pub fn object_alloc_entry(ctx: ProbeContext) -> u32 {
    floor!();
    if !wanted() {
        return 0;
    }
    let c = ReserveCtx {
        ictx: ctx.arg(0).unwrap_or(0),
        size: ctx.arg(1).unwrap_or(0),
        start: now(),
        obj_type: ctx.arg(2).unwrap_or(0),
        _pad: 0,
    };
    if RESERVE_CTX.insert(&current_tid(), &c, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
    0
}

/// The object is allocated with its id reserved but unpublished: remember it until it is
/// published or aborted. A failure is an event of its own.
#[kretprobe]
pub fn object_alloc_exit(ctx: RetProbeContext) -> u32 {
    floor!();
    let tid = current_tid();
    // SAFETY: copied out before removal.
    let Some(c) = (unsafe { RESERVE_CTX.get(&tid) }).copied() else {
        return 0;
    };
    let _ = RESERVE_CTX.remove(&tid);
    let ret: u64 = ctx.ret();
    let errno = errno_of(ret);
    if ret == 0 {
        return 0;
    }
    if errno != 0 {
        let Some(mut entry) = EVENTS.reserve::<ObjectEvent>(0) else {
            count_lost(lost::RINGBUF_FULL);
            return 0;
        };
        entry.write(ObjectEvent {
            hdr: header(kind::OBJECT_ALLOC),
            obj: 0,
            ictx: c.ictx,
            refs: [0; OBJECT_REFS],
            size: c.size,
            latency_ns: now().saturating_sub(c.start),
            obj_type: c.obj_type,
            id: 0,
            errno,
            how: 0,
            flags: 0,
            dev_id: 0,
        });
        entry.submit(submit_flags());
        return 0;
    }
    let p = PendingObject {
        size: c.size,
        start: c.start,
    };
    // An LRU map: an object neither published nor aborted (the tracer started between the
    // two) only ages out.
    let _ = PENDING_OBJECTS.insert(&ret, &p, 0);
    0
}

#[inline(always)]
fn object_type(obj: u64) -> u32 {
    field(obj, cfg!(object_type)).map(read_u32).unwrap_or(0)
}

#[inline(always)]
fn object_id(obj: u64) -> u32 {
    field(obj, cfg!(object_id)).map(read_u32).unwrap_or(0)
}

/// `iommufd_object_finalize(ictx, obj)`: the object becomes visible under its id. Its
/// references are set by now.
#[kprobe]
pub fn object_publish(ctx: ProbeContext) -> u32 {
    floor!();
    if !wanted() {
        return 0;
    }
    let ictx: u64 = ctx.arg(0).unwrap_or(0);
    let obj: u64 = ctx.arg(1).unwrap_or(0);
    // SAFETY: copied out before removal.
    let pending = unsafe { PENDING_OBJECTS.get(&obj) }.copied();
    if pending.is_some() {
        let _ = PENDING_OBJECTS.remove(&obj);
    }
    let obj_type = object_type(obj);
    let mut refs = [0u64; OBJECT_REFS];
    if (obj_type as usize) < MAX_OBJECT_TYPES {
        let t = obj_type as usize;
        for i in 0..OBJECT_REFS {
            let k = cfg!(object_refs[t][i].kind);
            let at = obj + cfg!(object_refs[t][i].offset) as u64;
            refs[i] = match k {
                ref_kind::OBJECT => {
                    let target = read_u64(at);
                    if target == 0 {
                        0
                    } else {
                        object_id(target) as u64
                    }
                }
                ref_kind::DOMAIN | ref_kind::VALUE => read_u64(at),
                _ => 0,
            };
        }
    }
    // Created inside IOMMU_HWPT_ALLOC: the device it was allocated for.
    let (flags, dev_id) = match unsafe { IOCTL_CTX.get(&current_tid()) } {
        // `struct iommu_hwpt_alloc`: size, flags, dev_id (uAPI, fixed layout).
        Some(c) if c.cmd != 0 => (object_flags::HWPT_ALLOC_DEV, read_u32(c.cmd + 8)),
        _ => (0, 0),
    };
    let Some(mut entry) = EVENTS.reserve::<ObjectEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return 0;
    };
    entry.write(ObjectEvent {
        hdr: header(kind::OBJECT_ALLOC),
        obj,
        ictx,
        refs,
        size: pending.map_or(0, |p| p.size),
        latency_ns: pending.map_or(0, |p| now().saturating_sub(p.start)),
        obj_type,
        id: object_id(obj),
        errno: 0,
        how: 0,
        flags,
        dev_id,
    });
    entry.submit(submit_flags());
    0
}

#[inline(always)]
fn emit_abort(a: &PendingAbort, errno: i32, flags: u32) {
    let Some(mut entry) = EVENTS.reserve::<ObjectEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return;
    };
    entry.write(ObjectEvent {
        hdr: header(kind::OBJECT_ABORT),
        obj: a.obj,
        ictx: a.ictx,
        refs: [0; OBJECT_REFS],
        size: a.size,
        latency_ns: 0,
        obj_type: a.obj_type,
        id: a.id,
        errno,
        how: 0,
        flags,
        dev_id: 0,
    });
    entry.submit(submit_flags());
}

/// `iommufd_object_abort(ictx, obj)`: the id is released unpublished.
#[kprobe]
pub fn object_abort(ctx: ProbeContext) -> u32 {
    floor!();
    if !wanted() {
        return 0;
    }
    let obj: u64 = ctx.arg(1).unwrap_or(0);
    let tid = current_tid();
    // SAFETY: plain lookup. This call sends the abort `iommufd_object_abort_and_destroy`
    // would otherwise send at its return.
    if unsafe { ABORT_AND_DESTROY.get(&tid) }.is_some_and(|a| a.obj == obj) {
        let _ = ABORT_AND_DESTROY.remove(&tid);
    }
    abort_seen(
        ctx.arg(0).unwrap_or(0),
        obj,
        object_type(obj),
        object_id(obj),
    );
    0
}

/// `iommufd_object_abort_and_destroy(ictx, obj)`: destroy op, then `iommufd_object_abort`,
/// which the compiler may have inlined here. The object's type and id are read now.
#[kprobe]
pub fn object_abort_and_destroy_entry(ctx: ProbeContext) -> u32 {
    floor!();
    if !wanted() {
        return 0;
    }
    let obj: u64 = ctx.arg(1).unwrap_or(0);
    let a = PendingAbort {
        obj,
        ictx: ctx.arg(0).unwrap_or(0),
        size: 0,
        obj_type: object_type(obj),
        id: object_id(obj),
    };
    let _ = ABORT_AND_DESTROY.insert(&current_tid(), &a, 0);
    0
}

/// Its return: the abort, unless an out-of-line `iommufd_object_abort` already sent it.
#[kretprobe]
pub fn object_abort_and_destroy_exit(_ctx: RetProbeContext) -> u32 {
    floor!();
    let tid = current_tid();
    // SAFETY: copied out before removal.
    let Some(a) = (unsafe { ABORT_AND_DESTROY.get(&tid) }).copied() else {
        return 0;
    };
    let _ = ABORT_AND_DESTROY.remove(&tid);
    abort_seen(a.ictx, a.obj, a.obj_type, a.id);
    0
}

/// An object's id released unpublished. Inside an object-creating handler the event waits
/// for the handler's result (its errno); after a failed handler (7.x `_ucmd` objects) it has
/// that result; elsewhere it goes at once.
#[inline(always)]
fn abort_seen(ictx: u64, obj: u64, obj_type: u32, id: u32) {
    // SAFETY: copied out before removal.
    let pending = unsafe { PENDING_OBJECTS.get(&obj) }.copied();
    if pending.is_some() {
        let _ = PENDING_OBJECTS.remove(&obj);
    }
    let a = PendingAbort {
        obj,
        ictx,
        size: pending.map_or(0, |p| p.size),
        obj_type,
        id,
    };
    // SAFETY: copied out before removal.
    if let Some(errno) = unsafe { LATE_ABORTS.get(&obj) }.copied() {
        let _ = LATE_ABORTS.remove(&obj);
        emit_abort(&a, errno, object_flags::ERRNO_KNOWN);
        return;
    }
    if let Some(c) = IFD_CTX.get_ptr_mut(&current_tid()) {
        // SAFETY: this thread's own entry.
        let c = unsafe { &mut *c };
        match c.pending {
            0 => {
                c.aborts[0] = a;
                c.pending = 1;
                return;
            }
            1 => {
                c.aborts[1] = a;
                c.pending = 2;
                return;
            }
            _ => {}
        }
    }
    emit_abort(&a, 0, 0);
}

/// Each type's destroy op, `(obj)`. It also runs for an object that was never published
/// (`iommufd_object_abort_and_destroy` calls it before `iommufd_object_abort`): that one is
/// still pending, and its abort is the event.
#[kprobe]
pub fn object_destroy(ctx: ProbeContext) -> u32 {
    floor!();
    if !wanted() {
        return 0;
    }
    let obj: u64 = ctx.arg(0).unwrap_or(0);
    // SAFETY: plain lookup.
    if unsafe { PENDING_OBJECTS.get(&obj) }.is_some() {
        return 0;
    }
    let tid = current_tid();
    // SAFETY: plain lookups.
    let how = match unsafe { HOW_CTX.get(&tid) } {
        Some(h) => h.how,
        None => match unsafe { IFD_CTX.get(&tid) } {
            Some(c) if c.cmd == IN_DESTROY => how::DESTROY,
            _ => how::PUT,
        },
    };
    let Some(mut entry) = EVENTS.reserve::<ObjectEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return 0;
    };
    entry.write(ObjectEvent {
        hdr: header(kind::OBJECT_DESTROY),
        obj,
        ictx: 0,
        refs: [0; OBJECT_REFS],
        size: 0,
        latency_ns: 0,
        obj_type: object_type(obj),
        id: object_id(obj),
        errno: 0,
        how,
        flags: 0,
        dev_id: 0,
    });
    entry.submit(submit_flags());
    0
}
