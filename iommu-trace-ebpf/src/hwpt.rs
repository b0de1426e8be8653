//! The iommufd `IOMMU_HWPT_ALLOC` ioctl (its own event and result) and
//! `iommufd_hwpt_paging_alloc` (context only, for the allocation op inside it).

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use iommu_trace_common::{kind, lost, HwptAllocEvent};

use crate::{
    helpers::{
        count_lost, current_tid, errno_of_int, field, header, read_u64, submit_flags, wanted,
    },
    maps::{IoctlCtx, EVENTS, IOCTL_CTX, PAGING_CTX},
};

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

#[kprobe]
pub fn hwpt_alloc_ioctl_entry(ctx: ProbeContext) -> u32 {
    floor!();
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
    floor!();
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
    floor!();
    if wanted() && PAGING_CTX.insert(&current_tid(), &1, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
    }
    0
}

#[kretprobe]
pub fn hwpt_paging_alloc_exit(_ctx: RetProbeContext) -> u32 {
    floor!();
    let _ = PAGING_CTX.remove(&current_tid());
    0
}
