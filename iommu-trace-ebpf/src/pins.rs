//! Pinned guest memory: the IOAS mapping ioctls (`iommufd_ioas_map`, `_map_file`, `_copy`,
//! `_unmap`, `_change_process`, `iommufd_option`), read from their uAPI structs at return,
//! and each change of an `iopt_pages`' pinned-page accounting (6.12 static
//! `do_update_pinned`, 7.x `iopt_pages_update_pinned`) with its target, limit and totals.
//! Kernel facts: docs/kernel-facts.md §8.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use iommu_trace_common::{ioas_op, kind, lost, Config, IoasOpEvent, PinEvent, PAGES_BLOCK};

use crate::{
    helpers::{count_lost, errno_of_int, field, submit_flags, Helper, Reader, Thread, Typed},
    maps::{IoasCtx, PinCtx, EVENTS, PIN_CTX},
    thread_ctx,
};

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The handler's context lives in the thread's `OP_CTX` entry, which stays once made (`op`
/// 0 when idle): IOAS_MAP and IOAS_UNMAP run in loops, and an insert plus a delete per call
/// cost more than a lookup. `batching`: the handler's exit is a trampoline, which always
/// runs, so the map calls inside may wait for it in the thread's batch (thread_ctx.rs).
#[inline(always)]
fn ioas_enter(ucmd: u64, op: u32, batching: bool) -> u32 {
    let t = Thread::current();
    if !t.wanted() {
        return 0;
    }
    let Some(c) = thread_ctx::get_or_make(t.tid()) else {
        return 0;
    };
    // A batch left by a handler whose exit was missed goes out before this one's calls.
    thread_ctx::flush(t, c);
    c.ioas = IoasCtx {
        ucmd,
        start: now(),
        op,
        batching: batching as u32,
    };
    0
}

#[fentry(function = "iommufd_ioas_map")]
pub fn ioas_map_fentry(ctx: FEntryContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0), ioas_op::MAP, true)
}

#[fexit(function = "iommufd_ioas_map")]
pub fn ioas_map_fexit(ctx: FExitContext) -> u32 {
    floor!();
    ioas_exit(Typed, Some(ctx.arg(0)), ctx.arg(1))
}

#[fentry(function = "iommufd_ioas_unmap")]
pub fn ioas_unmap_fentry(ctx: FEntryContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0), ioas_op::UNMAP, true)
}

#[fexit(function = "iommufd_ioas_unmap")]
pub fn ioas_unmap_fexit(ctx: FExitContext) -> u32 {
    floor!();
    ioas_exit(Typed, Some(ctx.arg(0)), ctx.arg(1))
}

#[kprobe]
pub fn ioas_map_entry(ctx: ProbeContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0).unwrap_or(0), ioas_op::MAP, false)
}

#[kprobe]
pub fn ioas_map_file_entry(ctx: ProbeContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0).unwrap_or(0), ioas_op::MAP_FILE, false)
}

#[kprobe]
pub fn ioas_copy_entry(ctx: ProbeContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0).unwrap_or(0), ioas_op::COPY, false)
}

#[kprobe]
pub fn ioas_unmap_entry(ctx: ProbeContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0).unwrap_or(0), ioas_op::UNMAP, false)
}

#[kprobe]
pub fn ioas_change_process_entry(ctx: ProbeContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0).unwrap_or(0), ioas_op::CHANGE_PROCESS, false)
}

#[kprobe]
pub fn option_entry(ctx: ProbeContext) -> u32 {
    floor!();
    ioas_enter(ctx.arg(0).unwrap_or(0), ioas_op::OPTION, false)
}

/// The handler returned: its uAPI struct (`ucmd->cmd`, the kernel's copy, still on the
/// ioctl's stack) holds the inputs and, on success, the outputs (the IOVA chosen, the bytes
/// unmapped, the option's value). Layouts: include/uapi/linux/iommufd.h.
#[kretprobe]
pub fn ioas_op_exit(ctx: RetProbeContext) -> u32 {
    floor!();
    ioas_exit(Helper, None, ctx.ret())
}

/// `ucmd`: the handler's argument where the program sees it (fexit: typed, so read
/// directly), else the one its entry kept.
#[inline(always)]
fn ioas_exit<R: Reader>(r: R, ucmd: Option<u64>, ret: u64) -> u32 {
    // A thread id reused by a process the filter leaves out must not meet a context its
    // predecessor left behind (an exit missed).
    let t = r.thread();
    if !t.wanted() {
        return 0;
    }
    let Some(slot) = thread_ctx::get(t.tid()) else {
        return 0;
    };
    // The calls the handler made go out before its end.
    thread_ctx::flush(t, slot);
    let c = slot.ioas;
    slot.ioas.op = 0;
    if c.op == 0 {
        return 0;
    }
    let ucmd = ucmd.unwrap_or(c.ucmd);
    let cmd = field(ucmd, cfg!(ucmd_cmd)).map_or(0, |a| r.u64(a));
    let ictx = field(ucmd, cfg!(ucmd_ictx)).map_or(0, |a| r.u64(a));
    // The handler's end is the header's time stamp (one clock read, not two).
    let hdr = t.header(kind::IOAS_OP);
    let mut e = IoasOpEvent {
        hdr,
        ictx,
        iova: 0,
        length: 0,
        source: 0,
        latency_ns: hdr.ts_ns.saturating_sub(c.start),
        op: c.op,
        ioas_id: 0,
        aux: 0,
        flags: 0,
        errno: errno_of_int(ret),
        _pad: 0,
    };
    if cmd != 0 {
        // One read of the whole struct (40 bytes at most; `cmd` points into the ioctl's
        // `union ucmd_buffer`, as large as the largest command): each helper call costs.
        // SAFETY: bpf_probe_read_kernel checks the address.
        let w: [u64; 5] =
            unsafe { bpf_probe_read_kernel(cmd as *const [u64; 5]) }.unwrap_or([0; 5]);
        // Little-endian (x86-64, arm64): the u32 at +4 of a word is its high half.
        let lo = |x: u64| x as u32;
        let hi = |x: u64| (x >> 32) as u32;
        match c.op {
            // `iommu_ioas_map` / `_map_file`: size, flags | ioas_id, __reserved or fd |
            // user_va or start | length | iova.
            ioas_op::MAP | ioas_op::MAP_FILE => {
                e.flags = hi(w[0]);
                (e.ioas_id, e.aux) = (lo(w[1]), hi(w[1]));
                (e.source, e.length, e.iova) = (w[2], w[3], w[4]);
            }
            // `iommu_ioas_copy`: size, flags | dst_ioas_id, src_ioas_id | length | dst_iova |
            // src_iova.
            ioas_op::COPY => {
                e.flags = hi(w[0]);
                (e.ioas_id, e.aux) = (lo(w[1]), hi(w[1]));
                (e.length, e.iova, e.source) = (w[2], w[3], w[4]);
            }
            // `iommu_ioas_unmap`: size, ioas_id | iova | length.
            ioas_op::UNMAP => {
                e.ioas_id = hi(w[0]);
                (e.iova, e.length) = (w[1], w[2]);
            }
            // `iommu_option`: size, option_id | op (u16), __reserved (u16), object_id |
            // val64.
            ioas_op::OPTION => {
                e.aux = hi(w[0]);
                e.flags = lo(w[1]) & 0xffff;
                e.ioas_id = hi(w[1]);
                e.source = w[2];
            }
            _ => {}
        }
    }
    let Some(mut entry) = EVENTS.reserve::<IoasOpEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return 0;
    };
    entry.write(e);
    entry.submit(submit_flags());
    0
}

/// The kprobe path: the kretprobe cannot see the arguments, so the entry keeps them for it.
#[inline(always)]
fn pin_enter(pages: u64, npages: u64, inc: u64) -> u32 {
    let t = Thread::current();
    if !t.wanted() {
        return 0;
    }
    let c = PinCtx {
        pages,
        npages,
        inc: (inc & 0xff != 0) as u32,
        active: 1,
    };
    let tid = t.tid();
    match PIN_CTX.get_ptr_mut(&tid) {
        // SAFETY: this thread's own entry.
        Some(slot) => unsafe { *slot = c },
        None => {
            if PIN_CTX.insert(&tid, &c, 0).is_err() {
                count_lost(lost::CONTEXT_FULL);
            }
        }
    }
    0
}

/// `(pages, npages, inc, user)`, both versions.
#[kprobe]
pub fn pin_entry(ctx: ProbeContext) -> u32 {
    floor!();
    pin_enter(
        ctx.arg(0).unwrap_or(0),
        ctx.arg(1).unwrap_or(0),
        ctx.arg(2).unwrap_or(0),
    )
}

#[kretprobe]
pub fn pin_exit(ctx: RetProbeContext) -> u32 {
    floor!();
    let t = Thread::current();
    if !t.wanted() {
        return 0;
    }
    let Some(slot) = PIN_CTX.get_ptr_mut(&t.tid()) else {
        return 0;
    };
    // SAFETY: this thread's own entry; copied, then marked idle.
    let c = unsafe {
        let c = *slot;
        (*slot).active = 0;
        c
    };
    if c.active == 0 {
        return 0;
    }
    pin_done(t, Helper, c.pages, c.npages, c.inc, ctx.ret())
}

/// The trampoline path: one fexit program, which sees the arguments and the return value,
/// so no entry program, context map or clock read per call (docs/design-notes.md §3).
#[fexit(function = "iopt_pages_update_pinned")]
pub fn pin_fexit(ctx: FExitContext) -> u32 {
    floor!();
    let t = Typed.thread();
    if !t.wanted() {
        return 0;
    }
    let inc: u64 = ctx.arg(2);
    pin_done(
        t,
        Typed,
        ctx.arg(0),
        ctx.arg(1),
        (inc & 0xff != 0) as u32,
        ctx.arg(4),
    )
}

/// The `struct iopt_pages` fields the pin event needs.
struct PagesFields {
    npinned: u64,
    npages: u64,
    mode: u32,
    task: u64,
    user: u64,
    mm: u64,
}

impl PagesFields {
    /// One read per field.
    #[inline(always)]
    fn each(r: impl Reader, p: u64) -> PagesFields {
        PagesFields {
            npinned: field(p, cfg!(pages_npinned)).map_or(0, |a| r.u64(a)),
            npages: field(p, cfg!(pages_npages)).map_or(0, |a| r.u64(a)),
            mode: field(p, cfg!(pages_account_mode)).map_or(0, |a| r.u8(a)) as u32,
            task: field(p, cfg!(pages_source_task)).map_or(0, |a| r.u64(a)),
            user: field(p, cfg!(pages_source_user)).map_or(0, |a| r.u64(a)),
            mm: field(p, cfg!(pages_source_mm)).map_or(0, |a| r.u64(a)),
        }
    }

    /// Through the helper: in one call when `Config::pages_block` says the fields fit a
    /// window, else one by one.
    #[inline(always)]
    fn windowed(p: u64) -> PagesFields {
        let block = cfg!(pages_block);
        const WORDS: usize = (PAGES_BLOCK / 8) as usize;
        // SAFETY: bpf_probe_read_kernel checks the address.
        let read = (block != Config::UNSET)
            .then(|| unsafe { bpf_probe_read_kernel((p + block as u64) as *const [u64; WORDS]) });
        let Some(Ok(w)) = read else {
            // No window, or its read failed.
            return PagesFields::each(Helper, p);
        };
        // User space placed every field inside the window; the mask keeps the index in it.
        let word = |off: u32| w[((off.wrapping_sub(block) / 8) as usize) & (WORDS - 1)];
        let mode_at = cfg!(pages_account_mode);
        PagesFields {
            npinned: word(cfg!(pages_npinned)),
            npages: word(cfg!(pages_npages)),
            mode: ((word(mode_at) >> ((mode_at & 7) * 8)) & 0xff) as u32,
            task: word(cfg!(pages_source_task)),
            user: word(cfg!(pages_source_user)),
            mm: word(cfg!(pages_source_mm)),
        }
    }
}

/// The accounting returned: the `iopt_pages`' mode and totals, and its target's, read now
/// (after the change, or after the refusal: then the totals are those the check saw).
#[inline(always)]
fn pin_done<R: Reader>(t: Thread, r: R, p: u64, npages: u64, inc: u32, ret: u64) -> u32 {
    let f = if R::CHEAP_FIELDS {
        PagesFields::each(r, p)
    } else {
        PagesFields::windowed(p)
    };
    let (mode, task, user, mm) = (f.mode, f.task, f.user, f.mm);
    // Mode none (the creator had CAP_IPC_LOCK) charges nobody: its limit and target are not
    // read (RLIM_INFINITY and uid 0 stand for "none").
    let (locked_pages, limit_bytes, target_uid) = match mode {
        1 | 2 => {
            let signal = field(task, cfg!(task_signal)).map_or(0, |a| r.u64(a));
            let limit = field(signal, cfg!(signal_memlock)).map_or(0, |a| r.u64(a));
            if mode == 1 {
                (
                    field(user, cfg!(user_locked_vm)).map_or(0, |a| r.u64(a)),
                    limit,
                    field(user, cfg!(user_uid)).map_or(0, |a| r.u32(a)),
                )
            } else {
                (
                    field(mm, cfg!(mm_locked_vm)).map_or(0, |a| r.u64(a)),
                    limit,
                    0,
                )
            }
        }
        _ => (0, u64::MAX, 0),
    };
    // The map calls before this change go out before it.
    if let Some(c) = thread_ctx::get(t.tid()) {
        thread_ctx::flush(t, c);
    }
    let Some(mut entry) = EVENTS.reserve::<PinEvent>(0) else {
        count_lost(lost::RINGBUF_FULL);
        return 0;
    };
    entry.write(PinEvent {
        hdr: t.header(kind::PIN),
        pages: p,
        npages,
        npinned: f.npinned,
        total_pages: f.npages,
        limit_bytes,
        locked_pages,
        pinned_vm: field(mm, cfg!(mm_pinned_vm)).map_or(0, |a| r.u64(a)),
        source_mm: mm,
        inc,
        mode,
        target_uid,
        target_pid: field(task, cfg!(task_tgid)).map_or(0, |a| r.u32(a)),
        errno: errno_of_int(ret),
        _pad: 0,
    });
    entry.submit(submit_flags());
    0
}
