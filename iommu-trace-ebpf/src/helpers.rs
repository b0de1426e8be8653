//! Helpers shared by the programs: event header, kernel reads at BTF offsets, errno
//! decoding, loss counting, ring-buffer submit flags and the pid filter.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task_btf, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
};
use iommu_trace_common::{Config, EventHeader};

use crate::maps::{EVENTS, LOST, SUBMITS};

const MAX_ERRNO: i64 = 4095;

/// Submit flags: wake the reader only once the ring holds `wakeup_bytes`; the collector
/// also drains on a short timer. A wakeup per event would cost a context switch per event,
/// and asking the ring its fill a helper call per event: it is asked on every 32nd record
/// of a CPU (a per-CPU counter, a lookup the verifier inlines), which overshoots the
/// threshold by 31 records at most.
#[inline(always)]
pub(crate) fn submit_flags() -> u64 {
    let threshold = cfg!(wakeup_bytes) as u64;
    if threshold == 0 {
        return 0;
    }
    if let Some(n) = SUBMITS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        let n = unsafe {
            *n = (*n).wrapping_add(1);
            *n
        };
        if n % 32 != 0 {
            return BPF_RB_NO_WAKEUP as u64;
        }
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub(crate) fn count_lost(reason: u32) {
    count_lost_n(reason, 1)
}

#[inline(always)]
pub(crate) fn count_lost_n(reason: u32, n: u64) {
    if let Some(p) = LOST.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += n };
    }
}

/// The thread a program runs in, asked of the kernel once per program: every helper call
/// costs about as much as the attach point itself under emulation (docs/design-notes.md §3).
#[derive(Clone, Copy)]
pub(crate) struct Thread {
    pid_tgid: u64,
    /// The `task_struct`, BTF-typed (trampoline programs, `current_typed`), else 0.
    task: u64,
}

impl Thread {
    /// Through `bpf_get_current_pid_tgid`: any program type.
    #[inline(always)]
    pub(crate) fn current() -> Thread {
        Thread {
            pid_tgid: bpf_get_current_pid_tgid(),
            task: 0,
        }
    }

    /// Through the current task's BTF type (fentry/fexit only: docs/kernel-facts.md §11):
    /// one helper call for the ids, and then for the header's cgroup and command name,
    /// where `current` and `header` make three.
    #[inline(always)]
    pub(crate) fn current_typed() -> Thread {
        let (pid_at, tgid_at) = (cfg!(task_pid), cfg!(task_tgid));
        if pid_at == Config::UNSET || tgid_at == Config::UNSET {
            return Thread::current();
        }
        // SAFETY: helper without arguments; its result is typed by the verifier.
        let task = unsafe { bpf_get_current_task_btf() } as u64;
        let pid = Typed.u32(task + pid_at as u64) as u64;
        let tgid = Typed.u32(task + tgid_at as u64) as u64;
        Thread {
            pid_tgid: tgid << 32 | pid,
            task,
        }
    }

    #[inline(always)]
    pub(crate) fn tid(self) -> u32 {
        self.pid_tgid as u32
    }

    /// Whether the pid filter (`record --pid`) lets this thread's events through.
    #[inline(always)]
    pub(crate) fn wanted(self) -> bool {
        let filter = cfg!(filter_pid);
        filter == 0 || (self.pid_tgid >> 32) as u32 == filter
    }

    /// An event header stamped now.
    #[inline(always)]
    pub(crate) fn header(self, kind: u32) -> EventHeader {
        let (cgroup_id, comm) = match self.typed_cgroup_and_comm() {
            Some(found) => found,
            // SAFETY: helper without arguments.
            None => (
                unsafe { bpf_get_current_cgroup_id() },
                bpf_get_current_comm().unwrap_or([0; 16]),
            ),
        };
        EventHeader {
            kind,
            // SAFETY: helpers without arguments.
            cpu: unsafe { bpf_get_smp_processor_id() },
            ts_ns: unsafe { bpf_ktime_get_ns() },
            pid: (self.pid_tgid >> 32) as u32,
            tid: self.pid_tgid as u32,
            cgroup_id,
            comm,
        }
    }

    /// What `bpf_get_current_cgroup_id` and `bpf_get_current_comm` return, read from the
    /// typed task: `task->cgroups->dfl_cgrp->kn->id` (`task_dfl_cgroup`, `cgroup_id`) and
    /// the 16 bytes of `task->comm`.
    #[inline(always)]
    fn typed_cgroup_and_comm(self) -> Option<(u64, [u8; 16])> {
        let comm_at = cfg!(task_comm);
        if self.task == 0 || comm_at == Config::UNSET {
            return None;
        }
        let r = Typed;
        let css_set = field(self.task, cfg!(task_cgroups)).map(|a| r.u64(a))?;
        let cgroup = field(css_set, cfg!(css_set_dfl_cgrp)).map(|a| r.u64(a))?;
        let kn = field(cgroup, cfg!(cgroup_kn)).map(|a| r.u64(a))?;
        let id = field(kn, cfg!(kn_id)).map(|a| r.u64(a))?;
        let lo = r.u64(self.task + comm_at as u64).to_le_bytes();
        let hi = r.u64(self.task + comm_at as u64 + 8).to_le_bytes();
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(&lo);
        comm[8..].copy_from_slice(&hi);
        Some((id, comm))
    }
}

#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    Thread::current().tid()
}

#[inline(always)]
pub(crate) fn wanted() -> bool {
    let filter = cfg!(filter_pid);
    filter == 0 || Thread::current().wanted()
}

#[inline(always)]
pub(crate) fn header(kind: u32) -> EventHeader {
    Thread::current().header(kind)
}

/// How a program reads kernel memory. A trampoline program (fentry/fexit) reads through the
/// pointers the verifier typed from BTF (its arguments and the pointer fields reached from
/// them, at offsets the frozen `CONFIG` makes constants): one load instruction each, a fault
/// caught by the JIT's exception table and read as 0, like the helper's. A kprobe's
/// arguments are plain numbers to the verifier, so it calls `bpf_probe_read_kernel`, a call
/// and a fault-checked copy per field, which under TCG cost more than the program around
/// them (docs/design-notes.md §3).
pub(crate) trait Reader: Copy {
    /// A read per field costs no more than one read of a window holding several.
    const CHEAP_FIELDS: bool;
    fn u64(self, addr: u64) -> u64;
    fn u32(self, addr: u64) -> u32;
    fn u8(self, addr: u64) -> u8;
    /// The current thread, asked the way this reader's programs can.
    fn thread(self) -> Thread;
}

/// `bpf_probe_read_kernel`: any address, any program type.
#[derive(Clone, Copy)]
pub(crate) struct Helper;

/// Direct loads: only from a pointer the verifier knows the BTF type of, plus a constant
/// offset that lands on a field of the read's size; anything else fails to load.
#[derive(Clone, Copy)]
pub(crate) struct Typed;

impl Reader for Helper {
    const CHEAP_FIELDS: bool = false;
    #[inline(always)]
    fn u64(self, addr: u64) -> u64 {
        read_u64(addr)
    }
    #[inline(always)]
    fn u32(self, addr: u64) -> u32 {
        read_u32(addr)
    }
    #[inline(always)]
    fn u8(self, addr: u64) -> u8 {
        read_u8(addr)
    }
    #[inline(always)]
    fn thread(self) -> Thread {
        Thread::current()
    }
}

impl Reader for Typed {
    const CHEAP_FIELDS: bool = true;
    // SAFETY (all three): the verifier admits the load only through a BTF-typed pointer and
    // turns it into a fault-tolerant one (BPF_PROBE_MEM); volatile so that the compiler keeps
    // each field's own load, of its own size.
    #[inline(always)]
    fn u64(self, addr: u64) -> u64 {
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    }
    #[inline(always)]
    fn u32(self, addr: u64) -> u32 {
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }
    #[inline(always)]
    fn u8(self, addr: u64) -> u8 {
        unsafe { core::ptr::read_volatile(addr as *const u8) }
    }
    #[inline(always)]
    fn thread(self) -> Thread {
        Thread::current_typed()
    }
}

#[inline(always)]
pub(crate) fn read_u64(addr: u64) -> u64 {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault yields an error, not a crash.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn read_u32(addr: u64) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn read_u8(addr: u64) -> u8 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u8) }.unwrap_or(0)
}

#[inline(always)]
pub(crate) fn field(base: u64, offset: u32) -> Option<u64> {
    if base == 0 || offset == Config::UNSET {
        None
    } else {
        Some(base + offset as u64)
    }
}

/// Errno of an `int`-returning function: only the low 32 bits of the return register are
/// defined (x86-64 psABI), so sign-extend them rather than reading 64 bits.
#[inline(always)]
pub(crate) fn errno_of_int(ret: u64) -> i32 {
    let r = ret as u32 as i32;
    if r < 0 {
        -r
    } else {
        0
    }
}

/// Errno of a pointer-returning function (`ERR_PTR`).
#[inline(always)]
pub(crate) fn errno_of(ret: u64) -> i32 {
    let r = ret as i64;
    if r < 0 && r >= -MAX_ERRNO {
        (-r) as i32
    } else {
        0
    }
}
