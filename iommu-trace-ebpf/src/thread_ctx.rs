//! The per-thread operation context (`OP_CTX`): the IOMMU operations in progress, the IOAS
//! mapping ioctl handler the thread is in, and the map calls it made there not sent yet.
//!
//! Inside an IOAS_MAP or IOAS_UNMAP handler traced through a trampoline, each `iommu_map` /
//! `iommu_unmap` call is appended to the thread's batch instead of reserving, stamping and
//! submitting a record of its own: under emulation those helper calls cost more than the
//! rest of the program (docs/design-notes.md §3). The batch goes out as one
//! `MapBatchEvent` when it is full, and before any other record the thread sends (the
//! handler's own end, a page-table page, a pinned-page accounting change, a free, a top
//! growing): replay relies on a thread's records keeping their order (a page-table page
//! of call k after the map events of calls 1..k-1).

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use iommu_trace_common::{kind, lost, MapBatchEntry, MapBatchEvent, MAP_BATCH_MAX};

use crate::{
    helpers::{count_lost, count_lost_n, submit_flags, Thread},
    maps::{Op, OpCtx, EVENTS, OP_CTX, OP_CTX_ZERO},
};

/// The thread's context, if it has one.
#[inline(always)]
pub(crate) fn get(tid: u32) -> Option<&'static mut OpCtx> {
    let c = OP_CTX.get_ptr_mut(&tid)?;
    // SAFETY: this thread's own entry; only this thread reads or writes it.
    Some(unsafe { &mut *c })
}

/// The thread's context, made (zeroed) if it has none; `None` (counted) when the map
/// refuses a new entry.
#[inline(always)]
pub(crate) fn get_or_make(tid: u32) -> Option<&'static mut OpCtx> {
    if let Some(c) = get(tid) {
        return Some(c);
    }
    let zero = OP_CTX_ZERO.get_ptr(0)?;
    // SAFETY: a per-CPU slot nobody writes: all zeroes.
    if OP_CTX.insert(&tid, unsafe { &*zero }, 0).is_err() {
        count_lost(lost::CONTEXT_FULL);
        return None;
    }
    get(tid)
}

/// Sends the thread's pending map calls, if any, as one record. A full ring loses each
/// of them, and each is counted.
#[inline(always)]
pub(crate) fn flush(t: Thread, c: &mut OpCtx) {
    let n = (c.batch.count as usize).min(MAP_BATCH_MAX);
    if n == 0 {
        return;
    }
    // The same n, in a form whose bound the verifier follows.
    let n = ((n - 1) & (MAP_BATCH_MAX - 1)) + 1;
    c.batch.hdr = t.header(kind::MAP_BATCH);
    c.batch.count = n as u32;
    // Only the entries in use go out.
    // SAFETY: the batch lives in this thread's map value, of which `len` bytes are read.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            core::ptr::addr_of!(c.batch).cast::<u8>(),
            MapBatchEvent::record_len(n),
        )
    };
    let sent = EVENTS.output::<[u8]>(bytes, submit_flags());
    c.batch.count = 0;
    if sent.is_err() {
        count_lost_n(lost::RINGBUF_FULL, n as u64);
    }
}

/// Whether the thread's map calls are being batched (it is inside an IOAS handler whose
/// exit sends the batch).
#[inline(always)]
pub(crate) fn batching(c: &OpCtx) -> bool {
    c.ioas.op != 0 && c.ioas.batching != 0
}

// The batch index is masked to it.
const _: () = assert!(MAP_BATCH_MAX.is_power_of_two());

/// Appends a returned map or unmap call (`kind::MAP` / `UNMAP`) to the thread's batch, and
/// sends the batch once full.
#[inline(always)]
pub(crate) fn append(t: Thread, c: &mut OpCtx, o: &Op, kind: u32, done: u64, errno: i32) {
    if c.batch.count as usize >= MAP_BATCH_MAX {
        flush(t, c);
    }
    let i = c.batch.count as usize;
    // SAFETY: helpers without arguments.
    let (end_ns, cpu) = unsafe { (bpf_ktime_get_ns(), bpf_get_smp_processor_id()) };
    c.batch.entries[i & (MAP_BATCH_MAX - 1)] = MapBatchEntry {
        domain: o.domain,
        iova: o.iova,
        paddr: o.paddr,
        size: o.size,
        done,
        end_ns,
        latency_ns: end_ns.saturating_sub(o.start),
        errno,
        kind: kind as u16,
        cpu: cpu as u16,
    };
    c.batch.count = (i + 1) as u32;
    if i + 1 == MAP_BATCH_MAX {
        flush(t, c);
    }
}
