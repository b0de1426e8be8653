//! Helpers shared by the programs: event header, kernel reads at BTF offsets, errno
//! decoding, loss counting, ring-buffer submit flags and the pid filter.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
};
use iommu_trace_common::{Config, EventHeader};

use crate::maps::{EVENTS, LOST};

const MAX_ERRNO: i64 = 4095;

/// Submit flags: wake the reader only once the ring holds `wakeup_bytes`; the collector
/// also drains on a short timer. A wakeup per event would cost a context switch per event.
#[inline(always)]
pub(crate) fn submit_flags() -> u64 {
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
pub(crate) fn count_lost(reason: u32) {
    if let Some(p) = LOST.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, only this CPU writes it.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub(crate) fn wanted() -> bool {
    let filter = cfg!(filter_pid);
    filter == 0 || (bpf_get_current_pid_tgid() >> 32) as u32 == filter
}

#[inline(always)]
pub(crate) fn header(kind: u32) -> EventHeader {
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
