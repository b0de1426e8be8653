//! Shared state: the `CONFIG` global user space fills before load, every map (user space
//! finds them by name), the per-thread context structs those maps hold, and `cfg!`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use iommu_trace_common::{lost, Config, MapBatchEvent, USER_DATA_MAX};

/// Offsets from BTF and filters; user space rewrites this before loading.
#[no_mangle]
pub(crate) static CONFIG: Config = Config::unset();

/// Default size; user space overrides it (`record --ringbuf-size`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU loss counters, indexed by `lost::*`.
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

/// Address of each driver op we attached to -> driver index in the probe plan.
#[map]
pub(crate) static DRIVER_BY_IP: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);

/// Per-CPU count of records submitted, for `submit_flags`' wakeup check.
#[map]
pub(crate) static SUBMITS: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Domains allocated through the traced ops and not yet freed.
#[map]
pub(crate) static TRACKED: HashMap<u64, u32> = HashMap::with_max_entries(1 << 16, 0);

/// Per thread: the object `iommufd_object_abort_and_destroy` is aborting, read at its
/// entry (it is freed by the return). Its abort goes out at the return, unless
/// `iommufd_object_abort` ran out of line meanwhile and sent it: a compiler may inline that
/// call, leaving nothing to probe there (docs/kernel-facts.md §6.3).
#[map]
pub(crate) static ABORT_AND_DESTROY: LruHashMap<u32, PendingAbort> =
    LruHashMap::with_max_entries(4096, 0);

/// Per-thread contexts. Keyed by thread id: these paths sleep and can change CPU.
#[map]
pub(crate) static IOCTL_CTX: HashMap<u32, IoctlCtx> = HashMap::with_max_entries(4096, 0);
#[map]
pub(crate) static PAGING_CTX: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);
#[map]
pub(crate) static ALLOC_CTX: HashMap<u32, AllocCtx> = HashMap::with_max_entries(4096, 0);
/// Per thread: map, unmap and free in progress, the IOAS mapping ioctl handler it is in,
/// and the map calls it made there not sent yet (thread_ctx.rs). One map for all three:
/// each program on the hot path makes one lookup. A thread's entry stays when it is idle:
/// map/unmap are hot, and an insert plus a delete per call cost more than the lookups. LRU
/// reclaims the entries of threads gone; it could only take a live one with more than this
/// many threads inside an IOMMU operation at once (a value is about 700 bytes: 2.9 MiB).
#[map]
pub(crate) static OP_CTX: LruHashMap<u32, OpCtx> = LruHashMap::with_max_entries(4096, 0);
/// Never written: the zeroed value a thread's first `OP_CTX` entry is made from (it is
/// larger than the eBPF stack allows building in place).
#[map]
pub(crate) static OP_CTX_ZERO: PerCpuArray<OpCtx> = PerCpuArray::with_max_entries(1, 0);
/// iommufd objects allocated and not yet published or aborted, by object pointer.
#[map]
pub(crate) static PENDING_OBJECTS: LruHashMap<u64, PendingObject> =
    LruHashMap::with_max_entries(4096, 0);
#[map]
pub(crate) static RESERVE_CTX: HashMap<u32, ReserveCtx> = HashMap::with_max_entries(4096, 0);
/// The object-creating or destroying iommufd ioctl handler a thread is in (objects.rs).
/// LRU: an entry whose exit was missed (a kretprobe out of instances) must not stay for good.
#[map]
pub(crate) static IFD_CTX: LruHashMap<u32, IfdCtx> = LruHashMap::with_max_entries(4096, 0);
/// The errno of a failed 7.x handler whose `ucmd->new_obj` the core aborts after it
/// returned, by object pointer, until that abort.
#[map]
pub(crate) static LATE_ABORTS: LruHashMap<u64, i32> = LruHashMap::with_max_entries(1024, 0);
/// How objects destroyed by this thread now are destroyed (`how::CLOSE`, `how::UNBIND`):
/// the outermost of the nested contexts (a close that unbinds a selftest device is a close).
#[map]
pub(crate) static HOW_CTX: LruHashMap<u32, HowCtx> = LruHashMap::with_max_entries(4096, 0);
/// Pinned-page accounting calls in progress (kprobe path), per thread (entries stay,
/// marked idle: pins.rs). LRU reclaims the entries of threads gone.
#[map]
pub(crate) static PIN_CTX: LruHashMap<u32, PinCtx> = LruHashMap::with_max_entries(4096, 0);
/// Set to 1 by user space once both iommufd context points are attached: from then on a
/// `domain_alloc_paging_flags` call outside iommufd (the DMA API's default domains, 6.13+) is
/// neither recorded nor tracked, nor are the maps of its domain.
#[map]
pub(crate) static IOMMUFD_ONLY: Array<u32> = Array::with_max_entries(1, 0);
/// Scratch space: `AllocCtx` is too large to build on the 512-byte eBPF stack comfortably.
#[map]
pub(crate) static SCRATCH: PerCpuArray<AllocCtx> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IoctlCtx {
    pub(crate) start: u64,
    /// Kernel copy of `struct iommu_hwpt_alloc` (`ucmd->cmd`).
    pub(crate) cmd: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct AllocCtx {
    pub(crate) start: u64,
    pub(crate) parent: u64,
    pub(crate) op: u32,
    pub(crate) driver: u32,
    pub(crate) flags: u32,
    pub(crate) context: u32,
    pub(crate) data_type: u32,
    pub(crate) data_len: u32,
    pub(crate) data_copied: u32,
    /// Page-table pages allocated inside the op, before the domain pointer is known.
    pub(crate) pending_charged: i32,
    pub(crate) pending_uncharged: i32,
    /// The vIOMMU's object id (`op::VIOMMU_NESTED`), else 0.
    pub(crate) viommu_id: u32,
    pub(crate) pending_memcg: u64,
    pub(crate) data: [u8; USER_DATA_MAX],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Op {
    pub(crate) domain: u64,
    pub(crate) start: u64,
    pub(crate) iova: u64,
    pub(crate) paddr: u64,
    pub(crate) size: u64,
    /// `pt_op` value.
    pub(crate) op: u32,
    pub(crate) _pad: u32,
}

/// A thread's operations (thread_ctx.rs). Operations can nest once (iommu_map's error
/// path calls iommu_unmap).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct OpCtx {
    pub(crate) ops: [Op; 2],
    pub(crate) depth: u32,
    pub(crate) _pad: u32,
    /// The IOAS mapping ioctl handler the thread is in (`ioas.op` 0 when none).
    pub(crate) ioas: IoasCtx,
    /// Map and unmap calls returned and not sent yet (`batch.count`); the header is
    /// written when the batch goes out.
    pub(crate) batch: MapBatchEvent,
}

/// Reads one field of `CONFIG`. Field by field: the whole struct would not fit the stack.
macro_rules! cfg {
    ($($field:tt)+) => {
        // SAFETY: CONFIG is a read-only global that user space fills before load; the
        // volatile read keeps the compiler from folding the compile-time initial value.
        unsafe { core::ptr::read_volatile(&$crate::maps::CONFIG.$($field)+) }
    };
}

/// `record --floor`: the program returns before doing anything (the benchmark's floor, the
/// cost of the attach point itself).
macro_rules! floor {
    () => {
        if cfg!(floor) != 0 {
            return 0;
        }
    };
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ReserveCtx {
    pub(crate) ictx: u64,
    pub(crate) size: u64,
    pub(crate) start: u64,
    pub(crate) obj_type: u32,
    pub(crate) _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PendingObject {
    pub(crate) size: u64,
    pub(crate) start: u64,
}

/// An abort waiting for its ioctl's result.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PendingAbort {
    pub(crate) obj: u64,
    pub(crate) ictx: u64,
    pub(crate) size: u64,
    pub(crate) obj_type: u32,
    pub(crate) id: u32,
}

impl PendingAbort {
    pub(crate) const EMPTY: PendingAbort = PendingAbort {
        obj: 0,
        ictx: 0,
        size: 0,
        obj_type: 0,
        id: 0,
    };
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IfdCtx {
    /// `IN_DESTROY` in `iommufd_destroy`, 0 in a handler that creates objects.
    pub(crate) cmd: u32,
    /// Entries of `aborts` in use.
    pub(crate) pending: u32,
    /// The handler's `struct iommufd_ucmd *`.
    pub(crate) ucmd: u64,
    pub(crate) aborts: [PendingAbort; 2],
}

/// The outermost destroy context of a thread, and how deep it is nested.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct HowCtx {
    pub(crate) how: u32,
    pub(crate) depth: u32,
}

/// An IOAS mapping ioctl handler in progress (pins.rs).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IoasCtx {
    /// The handler's `struct iommufd_ucmd *`.
    pub(crate) ucmd: u64,
    pub(crate) start: u64,
    /// `ioas_op` value; 0 once the handler returned (the entry stays).
    pub(crate) op: u32,
    /// 1 when the handler's exit is a trampoline (it always runs, and sends the batch):
    /// map calls inside are batched.
    pub(crate) batching: u32,
}

/// A pinned-page accounting call in progress, kprobe path (pins.rs): its arguments.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PinCtx {
    pub(crate) pages: u64,
    pub(crate) npages: u64,
    pub(crate) inc: u32,
    /// 0 once the call returned (the entry stays).
    pub(crate) active: u32,
}
