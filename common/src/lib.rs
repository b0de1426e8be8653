//! The event ABI shared by the eBPF programs and user space.
//!
//! Every type is `#[repr(C)]`, `Copy`, with explicit padding so both sides agree byte for byte
//! (the eBPF side writes them into the ring buffer, user space reads them back). Integers are
//! used instead of `bool` and enums so that no bit pattern coming from the kernel is undefined.
#![no_std]

/// Length of `task_struct::comm`.
pub const COMM_LEN: usize = 16;
/// Bytes of the driver-specific uAPI struct copied from user memory at the op's entry.
/// The largest known is `iommu_hwpt_amd_guest` (32 bytes, 7.3); 48 leaves room to grow.
pub const USER_DATA_MAX: usize = 48;
/// Driver-specific words read from a freshly allocated domain (levels, format, ...).
pub const DRIVER_WORDS: usize = 4;
/// How many distinct drivers the eBPF side can tell apart (index into `Config::drivers`).
pub const MAX_DRIVERS: usize = 8;
/// iommufd object type numbers the eBPF side can read references for (`enum
/// iommufd_object_type` has 12 values on 7.3, including ANY).
pub const MAX_OBJECT_TYPES: usize = 16;
/// References read from a published iommufd object (`Config::object_refs`).
pub const OBJECT_REFS: usize = 4;

/// `EventHeader::kind` values.
pub mod kind {
    /// A driver domain-allocation op returned (`DomainAllocEvent`).
    pub const DOMAIN_ALLOC: u32 = 1;
    /// The `IOMMU_HWPT_ALLOC` ioctl handler returned (`HwptAllocEvent`).
    pub const HWPT_ALLOC: u32 = 2;
    /// `iommu_domain_free` returned (`DomainFreeEvent`).
    pub const DOMAIN_FREE: u32 = 3;
    /// `iommu_map` returned (`MapEvent`).
    pub const MAP: u32 = 4;
    /// `iommu_unmap` / `iommu_unmap_fast` returned (`MapEvent`).
    pub const UNMAP: u32 = 5;
    /// Page-table pages allocated (delta > 0) or freed (delta < 0) for a domain (`PtPagesEvent`).
    pub const PT_PAGES: u32 = 6;
    /// An iommufd object was published, or its allocation failed (`ObjectEvent`).
    pub const OBJECT_ALLOC: u32 = 7;
    /// An iommufd object was allocated but never published (`ObjectEvent`).
    pub const OBJECT_ABORT: u32 = 8;
    /// A published iommufd object's type destroy op ran (`ObjectEvent`).
    pub const OBJECT_DESTROY: u32 = 9;
    /// An IOAS mapping ioctl's handler returned (`IoasOpEvent`).
    pub const IOAS_OP: u32 = 10;
    /// The pinned-page accounting of one `struct iopt_pages` changed, or failed to
    /// (`PinEvent`).
    pub const PIN: u32 = 11;
    /// `PtGrowEvent`: a tracked domain's page table gained top levels.
    pub const PT_GROW: u32 = 12;
    /// `MapBatchEvent`: up to `MAP_BATCH_MAX` `iommu_map` / `iommu_unmap` calls one thread
    /// made inside one IOAS ioctl, sent as one record (each is a `MAP` or `UNMAP` event to
    /// user space).
    pub const MAP_BATCH: u32 = 13;
}

/// `IoasOpEvent::op`: which ioctl handler (iommufd/ioas.c, 6.12 and 7.3).
pub mod ioas_op {
    /// `IOMMU_IOAS_MAP`: `iommufd_ioas_map`.
    pub const MAP: u32 = 1;
    /// `IOMMU_IOAS_MAP_FILE` (7.x): `iommufd_ioas_map_file`.
    pub const MAP_FILE: u32 = 2;
    /// `IOMMU_IOAS_COPY`: `iommufd_ioas_copy`.
    pub const COPY: u32 = 3;
    /// `IOMMU_IOAS_UNMAP`: `iommufd_ioas_unmap`.
    pub const UNMAP: u32 = 4;
    /// `IOMMU_IOAS_CHANGE_PROCESS` (7.x): `iommufd_ioas_change_process`.
    pub const CHANGE_PROCESS: u32 = 5;
    /// `IOMMU_OPTION`: `iommufd_option`.
    pub const OPTION: u32 = 6;
}

/// `ObjectEvent::how` for `OBJECT_DESTROY`: the path that destroyed the object, from the
/// thread's context when the destroy op ran (docs/kernel-facts.md §7.2).
pub mod how {
    /// A reference was dropped outside the paths below (an auto domain's last device
    /// detached, a HW queue's internal access).
    pub const PUT: u32 = 0;
    /// The `IOMMU_DESTROY` ioctl.
    pub const DESTROY: u32 = 1;
    /// `iommufd_device_unbind`: the VFIO device fd closed or unbound.
    pub const UNBIND: u32 = 2;
    /// The iommufd file was released (its last fd closed).
    pub const CLOSE: u32 = 3;
}

/// `ObjectRef::kind`: how to read one reference of a published object.
pub mod ref_kind {
    /// Nothing to read.
    pub const NONE: u32 = 0;
    /// A pointer to another iommufd object: its id is recorded.
    pub const OBJECT: u32 = 1;
    /// A `struct iommu_domain` pointer, recorded as is (links to `DOMAIN_ALLOC`).
    pub const DOMAIN: u32 = 2;
    /// A u64 value recorded as is (a vDEVICE's virtual id).
    pub const VALUE: u32 = 3;
}

/// `ObjectEvent::flags` bits.
pub mod object_flags {
    /// `errno` is the result of the iommufd ioctl the abort happened in.
    pub const ERRNO_KNOWN: u32 = 1 << 0;
    /// `dev_id` is the device id of the `IOMMU_HWPT_ALLOC` the object was created in.
    pub const HWPT_ALLOC_DEV: u32 = 1 << 1;
}

/// `DomainAllocEvent::op`: which driver op ran.
pub mod op {
    /// `iommu_ops.domain_alloc_user(dev, flags, parent, user_data)` (6.7 to 6.12).
    pub const ALLOC_USER: u32 = 1;
    /// `iommu_ops.domain_alloc_paging_flags(dev, flags, user_data)` (6.13+).
    pub const PAGING_FLAGS: u32 = 2;
    /// `iommu_ops.domain_alloc_nested(dev, parent, flags, user_data)` (6.13+).
    pub const NESTED: u32 = 3;
    /// `iommufd_viommu_ops.alloc_domain_nested(viommu, flags, user_data)` (6.13+): a nested
    /// domain allocated through a vIOMMU.
    pub const VIOMMU_NESTED: u32 = 4;
}

/// `DomainAllocEvent::context` bits: where in iommufd the op was called from.
pub mod context {
    /// Inside the `IOMMU_HWPT_ALLOC` ioctl (`iommufd_hwpt_alloc`).
    pub const HWPT_ALLOC_IOCTL: u32 = 1 << 0;
    /// Inside `iommufd_hwpt_paging_alloc` (explicit or auto domain).
    pub const HWPT_PAGING_ALLOC: u32 = 1 << 1;
}

/// `PtPagesEvent::op`: the domain operation during which page-table pages changed.
pub mod pt_op {
    pub const ALLOC: u32 = 1;
    pub const MAP: u32 = 2;
    pub const UNMAP: u32 = 3;
    pub const FREE: u32 = 4;
}

/// Common prefix of every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread-group id (what user space calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// Domain geometry read from the returned `struct iommu_domain` at offsets user space
/// computed from BTF, plus driver-specific words (see `Config::drivers`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DomainGeometry {
    pub pgsize_bitmap: u64,
    pub aperture_start: u64,
    pub aperture_end: u64,
    pub domain_type: u32,
    pub _pad: u32,
    pub driver_words: [u64; DRIVER_WORDS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DomainAllocEvent {
    pub hdr: EventHeader,
    pub op: u32,
    /// Index into the probe plan's driver table.
    pub driver: u32,
    pub flags: u32,
    /// `context` bits.
    pub context: u32,
    /// Parent domain pointer for nested allocations, else 0.
    pub parent: u64,
    /// The returned domain pointer, 0 on failure.
    pub domain: u64,
    /// Positive errno on failure, 0 on success.
    pub errno: i32,
    pub data_type: u32,
    pub data_len: u32,
    /// Bytes of `data` actually copied from user memory (0 when none or the read failed).
    pub data_copied: u32,
    /// The vIOMMU's object id (`op::VIOMMU_NESTED`), else 0.
    pub viommu_id: u32,
    pub _pad: u32,
    pub latency_ns: u64,
    pub data: [u8; USER_DATA_MAX],
    pub geometry: DomainGeometry,
}

/// The `IOMMU_HWPT_ALLOC` ioctl: what user space asked for and what it got back.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct HwptAllocEvent {
    pub hdr: EventHeader,
    pub flags: u32,
    pub dev_id: u32,
    pub pt_id: u32,
    pub out_hwpt_id: u32,
    pub data_type: u32,
    pub data_len: u32,
    pub errno: i32,
    pub _pad: u32,
    pub latency_ns: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DomainFreeEvent {
    pub hdr: EventHeader,
    pub domain: u64,
    pub latency_ns: u64,
}

/// `iommu_map` or `iommu_unmap` on a tracked domain.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MapEvent {
    pub hdr: EventHeader,
    pub domain: u64,
    pub iova: u64,
    /// Physical address for maps, 0 for unmaps.
    pub paddr: u64,
    /// Requested size.
    pub size: u64,
    /// Bytes done: `size` for a successful map, the return value of `iommu_unmap`.
    pub done: u64,
    pub errno: i32,
    pub _pad: u32,
    pub latency_ns: u64,
}

/// Calls a `MapBatchEvent` holds at most. The eBPF side keeps the batch in the thread's
/// operation context (one LRU-hash value per thread), so this bounds that value's size.
pub const MAP_BATCH_MAX: usize = 8;

/// One `iommu_map` or `iommu_unmap` call of a batch: what its `MapEvent` would carry, its
/// end time and CPU in place of the header's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapBatchEntry {
    pub domain: u64,
    pub iova: u64,
    pub paddr: u64,
    pub size: u64,
    pub done: u64,
    /// The call's return (`bpf_ktime_get_ns`): the event's time stamp.
    pub end_ns: u64,
    pub latency_ns: u64,
    pub errno: i32,
    /// `kind::MAP` or `kind::UNMAP`.
    pub kind: u16,
    /// The CPU the call returned on (at most 65,535: NR_CPUS is 8,192 on x86-64).
    pub cpu: u16,
}

/// The map and unmap calls of one thread inside an IOAS ioctl (`kind::MAP_BATCH`), sent
/// when the thread's next record would otherwise overtake them (docs/design-notes.md §3):
/// the header is the flush's (thread, cgroup, command name); the record is as long as
/// `count` entries.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MapBatchEvent {
    pub hdr: EventHeader,
    /// Entries in use, 1 to `MAP_BATCH_MAX`.
    pub count: u32,
    /// Up to 64 bytes: a record's length is then a multiple of 64, a form whose bound the
    /// eBPF verifier follows (it loses it through `n << 6 | 56`).
    pub _pad: [u32; 3],
    pub entries: [MapBatchEntry; MAP_BATCH_MAX],
}

impl MapBatchEvent {
    /// Bytes of a record with `count` entries.
    pub const fn record_len(count: usize) -> usize {
        core::mem::offset_of!(MapBatchEvent, entries)
            + count * core::mem::size_of::<MapBatchEntry>()
    }
}

/// Page-table pages allocated or freed while an operation on a tracked domain ran,
/// seen through the `NR_SECONDARY_PAGETABLE` statistic update that every iommu-pages
/// allocation and free makes (docs/kernel-facts.md §3).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PtPagesEvent {
    pub hdr: EventHeader,
    pub domain: u64,
    /// Pages allocated (> 0) or freed (< 0).
    pub delta: i64,
    /// 1 when the pages belong to a memory cgroup (`folio->memcg_data != 0`).
    pub charged: u32,
    /// `pt_op` value.
    pub op: u32,
    /// cgroup id of the memory cgroup charged, 0 when not charged or unknown.
    pub memcg_id: u64,
}

/// A tracked domain's page table grew its top (AMD: 6.12 io-pgtable v1's
/// `increase_address_space`, one level each; 7.x generic page table's `increase_top`, as many
/// levels as the map needs), seen where the driver points the hardware at the new top.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PtGrowEvent {
    pub hdr: EventHeader,
    pub domain: u64,
    /// Levels of the table after the growth (6.12 `iop.mode`; 7.x `top_level + 1`).
    pub levels: u32,
    pub _pad: u32,
}

/// An iommufd object's lifetime: allocated (published, or failed), aborted, destroyed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ObjectEvent {
    pub hdr: EventHeader,
    /// The object (`struct iommufd_object *`, also its container), 0 when allocation failed.
    pub obj: u64,
    /// The iommufd context (`struct iommufd_ctx *`), 0 when the hook does not see it.
    pub ictx: u64,
    /// Per `Config::object_refs[obj_type]`: ids, domain pointers or values.
    pub refs: [u64; OBJECT_REFS],
    /// Bytes `_iommufd_object_alloc` was asked for (0 when not seen).
    pub size: u64,
    /// Allocation to publication (alloc), 0 otherwise.
    pub latency_ns: u64,
    /// `enum iommufd_object_type` value of the running kernel.
    pub obj_type: u32,
    pub id: u32,
    /// Positive errno: of a failed allocation, or of the ioctl an abort happened in.
    pub errno: i32,
    /// `how` value (destroy only).
    pub how: u32,
    /// `object_flags` bits.
    pub flags: u32,
    pub dev_id: u32,
}

/// An IOAS mapping ioctl, read from its uAPI struct (`ucmd->cmd`, a kernel copy) at the
/// handler's return: the inputs as the handler left them, and its outputs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IoasOpEvent {
    pub hdr: EventHeader,
    pub ictx: u64,
    /// Map, map_file, copy: the destination IOVA (the one chosen, on success); unmap: the
    /// IOVA.
    pub iova: u64,
    /// Requested length; unmap: the bytes unmapped, on success.
    pub length: u64,
    /// Map: `user_va`; map_file: `start` (offset in the file); copy: `src_iova`; option:
    /// `val64` (on success, after a get).
    pub source: u64,
    pub latency_ns: u64,
    /// `ioas_op` value.
    pub op: u32,
    /// Map, map_file, unmap: `ioas_id`; copy: `dst_ioas_id`; option: `object_id`.
    pub ioas_id: u32,
    /// Copy: `src_ioas_id`; map_file: the fd; option: `option_id`.
    pub aux: u32,
    /// The uAPI `flags`; option: `op` (0 set, 1 get).
    pub flags: u32,
    /// Positive errno, 0 on success.
    pub errno: i32,
    pub _pad: u32,
}

/// `iopt_pages` accounting (6.12 `do_update_pinned`, 7.x `iopt_pages_update_pinned`): `npages`
/// pages pinned since the last change charged (`inc`) or unpinned and uncharged (7.x
/// IOAS_CHANGE_PROCESS: a whole total, on a stack `iopt_pages`).
/// docs/kernel-facts.md §8.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PinEvent {
    pub hdr: EventHeader,
    /// The `struct iopt_pages` (one per IOAS_MAP / MAP_FILE; a stack temporary in
    /// CHANGE_PROCESS).
    pub pages: u64,
    pub npages: u64,
    /// `iopt_pages::npinned` and `npages` (its size in pages) after the call.
    pub npinned: u64,
    pub total_pages: u64,
    /// `RLIMIT_MEMLOCK` soft limit of `source_task`, bytes (`u64::MAX`: unlimited, or not
    /// read: mode none charges nothing).
    pub limit_bytes: u64,
    /// The accounting target's locked pages after the call: `user_struct::locked_vm`
    /// (mode user) or `mm_struct::locked_vm` (mode mm); 0 for mode none.
    pub locked_pages: u64,
    /// `source_mm->pinned_vm` after the call (all modes).
    pub pinned_vm: u64,
    /// `source_mm`, identifying the per-mm target.
    pub source_mm: u64,
    /// 1: pinned pages charged; 0: unpinned pages uncharged.
    pub inc: u32,
    /// `iopt_pages::account_mode`: 0 none, 1 user, 2 mm (io_pagetable.h).
    pub mode: u32,
    /// `source_user->uid` and `source_task->tgid`: whose limit and which user is charged.
    pub target_uid: u32,
    pub target_pid: u32,
    /// Positive errno (ENOMEM: over the limit), 0 on success.
    pub errno: i32,
    pub _pad: u32,
}

/// Offsets user space computed from the running kernel's BTF, passed to the eBPF programs
/// as a read-only global. A field of `u32::MAX` means "not available on this kernel".
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Addresses of x86-64's `page_offset_base` and `vmemmap_base` (kallsyms; 0: not
    /// known): where the linear map and the `struct page` array start, both randomized at
    /// boot. With them the page-table hooks of 6.15+ find the `struct page` of an address
    /// `iommu_alloc_pages_node_sz` returns (docs/kernel-facts.md §3.2). First, so the two
    /// u64 need no padding.
    pub page_offset_base_addr: u64,
    pub vmemmap_base_addr: u64,
    /// `sizeof(struct page)`.
    pub page_struct_size: u32,
    /// `struct folio::_flags_1` (a large folio's order in its low byte) and the bit of
    /// `PG_head` in `flags` (`enum pageflags`): a folio's page count.
    pub folio_flags_1: u32,
    pub pg_head: u32,
    /// Keeps the struct a multiple of 8 bytes (the u64 above): no implicit padding.
    pub _pad: u32,
    /// `struct iommu_domain`: `type`, `pgsize_bitmap`, `geometry.aperture_start/_end`.
    pub domain_type: u32,
    pub domain_pgsize_bitmap: u32,
    pub domain_aperture_start: u32,
    pub domain_aperture_end: u32,
    /// `struct iommu_user_data`: `type`, `uptr`, `len`.
    pub user_data_type: u32,
    pub user_data_uptr: u32,
    pub user_data_len: u32,
    /// `struct iommufd_ucmd::cmd`.
    pub ucmd_cmd: u32,
    /// `struct iommufd_ucmd::new_obj` (7.x; unset where the kernel has none).
    pub ucmd_new_obj: u32,
    /// `struct iommufd_ucmd::ictx`.
    pub ucmd_ictx: u32,
    /// `struct folio::memcg_data` (equals `struct page::memcg_data`).
    pub folio_memcg_data: u32,
    /// `enum memcg_data_flags`: the `MEMCG_DATA_KMEM` bit, and the mask of all flag bits
    /// (`__NR_MEMCG_DATA_FLAGS - 1`). A kmem page's `memcg_data` points at an `obj_cgroup`.
    pub memcg_data_kmem: u32,
    pub memcg_data_flags_mask: u32,
    /// `struct obj_cgroup::memcg`.
    pub objcg_memcg: u32,
    /// `struct mem_cgroup::css` + `struct cgroup_subsys_state::cgroup`,
    /// `struct cgroup::kn`, `struct kernfs_node::id`: the charged cgroup's id.
    pub memcg_css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
    /// Value of `enum node_stat_item::NR_SECONDARY_PAGETABLE`.
    pub nr_secondary_pagetable: u32,
    /// `struct iopt_pages`: `npinned`, `npages`, `account_mode`, `source_task`,
    /// `source_user`, `source_mm`.
    pub pages_npinned: u32,
    pub pages_npages: u32,
    pub pages_account_mode: u32,
    pub pages_source_task: u32,
    pub pages_source_user: u32,
    pub pages_source_mm: u32,
    /// Where a 128-byte window of `struct iopt_pages` that holds the six fields above
    /// starts (a multiple of 8), read in one call; unset: read them one by one.
    pub pages_block: u32,
    /// `struct task_struct`: `tgid`, `signal`; `struct signal_struct`:
    /// `rlim[RLIMIT_MEMLOCK].rlim_cur`.
    pub task_tgid: u32,
    pub task_signal: u32,
    pub signal_memlock: u32,
    /// `struct user_struct`: `uid`, `locked_vm`; `struct mm_struct`: `locked_vm`,
    /// `pinned_vm`.
    pub user_uid: u32,
    pub user_locked_vm: u32,
    pub mm_locked_vm: u32,
    pub mm_pinned_vm: u32,
    /// `struct task_struct`: `pid`, `comm`, `cgroups`; `struct css_set::dfl_cgrp`: the
    /// event header read from the current task in trampoline programs (with `task_tgid`,
    /// `cgroup_kn`, `kn_id`), instead of three helper calls.
    pub task_pid: u32,
    pub task_comm: u32,
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    /// Only trace tasks in this thread group when non-zero.
    pub filter_pid: u32,
    /// Wake the reader when the ring holds this many bytes (0: on every event).
    pub wakeup_bytes: u32,
    /// 1: every program returns at once (`record --floor`): what the attach points cost by
    /// themselves, the benchmark's floor.
    pub floor: u32,
    /// `struct iommufd_object`: `type`, `id`.
    pub object_type: u32,
    pub object_id: u32,
    /// `struct iommufd_viommu::hwpt` and `struct iommufd_hw_pagetable::domain`: a vIOMMU's
    /// parent domain.
    pub viommu_hwpt: u32,
    pub hwpt_domain: u32,
    /// AMD's `struct protection_domain`: `domain` (the `struct iommu_domain`) and 6.12's
    /// `iop.mode`; `struct pt_iommu::domain` (7.x generic page table): where the growth
    /// probes find the domain and its new level count.
    pub pdom_domain: u32,
    pub pdom_mode: u32,
    pub pt_iommu_domain: u32,
    /// Per `enum iommufd_object_type` value: the references to read when it is published.
    pub object_refs: [[ObjectRef; OBJECT_REFS]; MAX_OBJECT_TYPES],
    /// Per driver index: up to `DRIVER_WORDS` fields to read relative to the domain pointer.
    pub drivers: [DriverFields; MAX_DRIVERS],
}

/// Fields of a driver's domain struct to copy into `DomainGeometry::driver_words`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DriverFields {
    /// Byte offset from the `struct iommu_domain` pointer (negative: the domain is embedded
    /// in a larger driver struct, as in `struct dmar_domain`).
    pub offsets: [i32; DRIVER_WORDS],
    /// Bytes to read at each offset: 0 (unused), 1, 2, 4 or 8.
    pub sizes: [u32; DRIVER_WORDS],
    /// `DriverFields::DIRECT`, or the offset (from the domain pointer) of a pointer to
    /// follow first: the field is then at that pointer plus `offsets[i]` (e.g. the
    /// SMMUv3 domain's `smmu->oas`).
    pub derefs: [i32; DRIVER_WORDS],
}

/// One reference of a published object: `kind` (`ref_kind`) at `offset` from the object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ObjectRef {
    pub offset: u32,
    pub kind: u32,
}

impl DriverFields {
    /// `derefs[i]` of a field read directly relative to the domain.
    pub const DIRECT: i32 = i32::MIN;
}

impl Default for DriverFields {
    /// Nothing to read.
    fn default() -> Self {
        DriverFields {
            offsets: [0; DRIVER_WORDS],
            sizes: [0; DRIVER_WORDS],
            derefs: [DriverFields::DIRECT; DRIVER_WORDS],
        }
    }
}

impl Config {
    pub const UNSET: u32 = u32::MAX;

    /// Every offset unavailable: what the eBPF object holds until user space sets it.
    pub const fn unset() -> Self {
        Config {
            page_offset_base_addr: 0,
            vmemmap_base_addr: 0,
            page_struct_size: Self::UNSET,
            folio_flags_1: Self::UNSET,
            pg_head: Self::UNSET,
            _pad: 0,
            domain_type: Self::UNSET,
            domain_pgsize_bitmap: Self::UNSET,
            domain_aperture_start: Self::UNSET,
            domain_aperture_end: Self::UNSET,
            user_data_type: Self::UNSET,
            user_data_uptr: Self::UNSET,
            user_data_len: Self::UNSET,
            ucmd_cmd: Self::UNSET,
            ucmd_new_obj: Self::UNSET,
            ucmd_ictx: Self::UNSET,
            pages_npinned: Self::UNSET,
            pages_npages: Self::UNSET,
            pages_account_mode: Self::UNSET,
            pages_source_task: Self::UNSET,
            pages_source_user: Self::UNSET,
            pages_source_mm: Self::UNSET,
            pages_block: Self::UNSET,
            task_tgid: Self::UNSET,
            task_signal: Self::UNSET,
            signal_memlock: Self::UNSET,
            user_uid: Self::UNSET,
            user_locked_vm: Self::UNSET,
            mm_locked_vm: Self::UNSET,
            mm_pinned_vm: Self::UNSET,
            task_pid: Self::UNSET,
            task_comm: Self::UNSET,
            task_cgroups: Self::UNSET,
            css_set_dfl_cgrp: Self::UNSET,
            folio_memcg_data: Self::UNSET,
            memcg_data_kmem: 0,
            memcg_data_flags_mask: 0,
            objcg_memcg: Self::UNSET,
            memcg_css_cgroup: Self::UNSET,
            cgroup_kn: Self::UNSET,
            kn_id: Self::UNSET,
            nr_secondary_pagetable: Self::UNSET,
            filter_pid: 0,
            wakeup_bytes: 0,
            floor: 0,
            object_type: Self::UNSET,
            object_id: Self::UNSET,
            viommu_hwpt: Self::UNSET,
            hwpt_domain: Self::UNSET,
            pdom_domain: Self::UNSET,
            pdom_mode: Self::UNSET,
            pt_iommu_domain: Self::UNSET,
            object_refs: [[ObjectRef { offset: 0, kind: 0 }; OBJECT_REFS]; MAX_OBJECT_TYPES],
            drivers: [DriverFields {
                offsets: [0; DRIVER_WORDS],
                sizes: [0; DRIVER_WORDS],
                derefs: [DriverFields::DIRECT; DRIVER_WORDS],
            }; MAX_DRIVERS],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::unset()
    }
}

/// Index of the per-CPU loss counters (`LOST` map).
pub mod lost {
    /// Ring-buffer reservation failed: the event was dropped.
    pub const RINGBUF_FULL: u32 = 0;
    /// A per-thread context map was full: the operation could not be attributed (also: a
    /// page-table page whose `struct page` could not be found from its address).
    pub const CONTEXT_FULL: u32 = 1;
    /// Number of counters.
    pub const COUNT: u32 = 2;
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type below is repr(C), Copy, made only of integers and arrays of
    // integers, with explicit padding: any bit pattern is a valid value.
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for DriverFields {}
    unsafe impl aya::Pod for ObjectRef {}
}

/// Bytes of `struct iopt_pages` read at once (`Config::pages_block`).
pub const PAGES_BLOCK: u32 = 128;

/// Size of each event kind, for user space to check a ring-buffer record before reading it.
pub const fn event_size(kind: u32) -> usize {
    match kind {
        kind::DOMAIN_ALLOC => core::mem::size_of::<DomainAllocEvent>(),
        kind::HWPT_ALLOC => core::mem::size_of::<HwptAllocEvent>(),
        kind::DOMAIN_FREE => core::mem::size_of::<DomainFreeEvent>(),
        kind::MAP | kind::UNMAP => core::mem::size_of::<MapEvent>(),
        kind::PT_PAGES => core::mem::size_of::<PtPagesEvent>(),
        kind::OBJECT_ALLOC | kind::OBJECT_ABORT | kind::OBJECT_DESTROY => {
            core::mem::size_of::<ObjectEvent>()
        }
        kind::IOAS_OP => core::mem::size_of::<IoasOpEvent>(),
        kind::PIN => core::mem::size_of::<PinEvent>(),
        kind::PT_GROW => core::mem::size_of::<PtGrowEvent>(),
        // Variable: the shortest, one entry (`MapBatchEvent::record_len`).
        kind::MAP_BATCH => MapBatchEvent::record_len(1),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The layout is an ABI between two compilers: pin the sizes so a change is deliberate.
    #[test]
    fn layouts_are_pinned() {
        assert_eq!(size_of::<EventHeader>(), 48);
        assert_eq!(size_of::<DomainGeometry>(), 64);
        assert_eq!(size_of::<DomainAllocEvent>(), 48 + 64 + USER_DATA_MAX + 64);
        assert_eq!(size_of::<HwptAllocEvent>(), 48 + 40);
        assert_eq!(size_of::<MapEvent>(), 48 + 56);
        assert_eq!(size_of::<PtPagesEvent>(), 48 + 32);
        assert_eq!(size_of::<ObjectEvent>(), 48 + 64 + 24);
        assert_eq!(size_of::<IoasOpEvent>(), 48 + 40 + 24);
        assert_eq!(size_of::<PinEvent>(), 48 + 64 + 24);
        assert_eq!(size_of::<PtGrowEvent>(), 48 + 16);
        assert_eq!(size_of::<MapBatchEntry>(), 64);
        assert_eq!(
            size_of::<MapBatchEvent>(),
            MapBatchEvent::record_len(MAP_BATCH_MAX)
        );
        assert_eq!(core::mem::offset_of!(MapBatchEvent, entries), 64);
        assert_eq!(event_size(kind::UNMAP), size_of::<MapEvent>());
        assert_eq!(event_size(99), 0);
    }

    // `Config` is `aya::Pod` ("no implicit padding"): it must end where its last field does.
    #[test]
    fn config_has_no_trailing_padding() {
        assert_eq!(
            size_of::<Config>(),
            core::mem::offset_of!(Config, drivers) + size_of::<[DriverFields; MAX_DRIVERS]>()
        );
    }
}
