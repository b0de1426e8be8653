//! The one event stream every consumer takes, live or from a capture file.
//!
//! `collect/` turns ring-buffer records into these, `capture/` stores and reads them back,
//! and `state/`, `replay/`, the TUI and the exporter consume them. Their JSON form (one
//! object per event, `inspect --format jsonl`) is a documented, stable interface: see the
//! README, "JSONL events".

pub mod clock;
mod names;
mod user_data;

pub use names::{bounded_driver, errno_name, hwpt_flag_names, KNOWN_DRIVERS};
pub use user_data::UserData;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::uapi::errno::{EINVAL, ENOMEM};

/// One thing the kernel did, with who caused it and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (the capture header gives the wall-clock base).
    pub ts_ns: u64,
    /// The CPU it happened on.
    pub cpu: u32,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The task's name (`comm`, at most 15 bytes).
    pub comm: String,
    /// cgroup v2 id of the task that caused the event.
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened. Serialized with an `event` tag in snake_case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    /// A driver's domain-allocation op returned.
    DomainAlloc(DomainAlloc),
    /// The `IOMMU_HWPT_ALLOC` ioctl returned.
    HwptAlloc(HwptAlloc),
    /// `iommu_domain_free` ran for a traced domain.
    DomainFree(DomainFree),
    /// `iommu_map` returned for a traced domain.
    Map(MapOp),
    /// `iommu_unmap` or `iommu_unmap_fast` returned for a traced domain.
    Unmap(MapOp),
    /// Page-table pages allocated for a domain.
    PtAlloc(PtPages),
    /// Page-table pages freed for a domain.
    PtFree(PtPages),
    /// A domain's page table grew its top level (AMD), before the map that needed it returns.
    PtGrow(PtGrow),
    /// Events dropped in the kernel since the previous `lost` event on this CPU.
    Lost(Lost),
    /// An iommufd object was published under its id (or its allocation failed).
    ObjectAlloc(ObjectAlloc),
    /// An iommufd object was allocated but never published: its create failed.
    ObjectAbort(ObjectAbort),
    /// A published iommufd object was destroyed.
    ObjectDestroy(ObjectDestroy),
    /// `IOMMU_IOAS_MAP` returned.
    IoasMap(IoasOp),
    /// `IOMMU_IOAS_MAP_FILE` returned (7.x).
    IoasMapFile(IoasOp),
    /// `IOMMU_IOAS_COPY` returned.
    IoasCopy(IoasOp),
    /// `IOMMU_IOAS_UNMAP` returned.
    IoasUnmap(IoasOp),
    /// `IOMMU_IOAS_CHANGE_PROCESS` returned (7.x).
    IoasChangeProcess(IoasOp),
    /// `IOMMU_OPTION` returned.
    Option(IommufdOption),
    /// The pinned-page accounting of one `iopt_pages` changed, or was refused.
    Pin(Pin),
}

impl EventBody {
    /// The `event` tag, as in the JSON form.
    pub fn name(&self) -> &'static str {
        match self {
            EventBody::DomainAlloc(_) => "domain_alloc",
            EventBody::HwptAlloc(_) => "hwpt_alloc",
            EventBody::DomainFree(_) => "domain_free",
            EventBody::Map(_) => "map",
            EventBody::Unmap(_) => "unmap",
            EventBody::PtAlloc(_) => "pt_alloc",
            EventBody::PtFree(_) => "pt_free",
            EventBody::PtGrow(_) => "pt_grow",
            EventBody::Lost(_) => "lost",
            EventBody::ObjectAlloc(_) => "object_alloc",
            EventBody::ObjectAbort(_) => "object_abort",
            EventBody::ObjectDestroy(_) => "object_destroy",
            EventBody::IoasMap(_) => "ioas_map",
            EventBody::IoasMapFile(_) => "ioas_map_file",
            EventBody::IoasCopy(_) => "ioas_copy",
            EventBody::IoasUnmap(_) => "ioas_unmap",
            EventBody::IoasChangeProcess(_) => "ioas_change_process",
            EventBody::Option(_) => "option",
            EventBody::Pin(_) => "pin",
        }
    }

    /// The domain this event is about, if any.
    pub fn domain(&self) -> Option<u64> {
        match self {
            EventBody::DomainAlloc(a) if a.errno == 0 => Some(a.domain.0),
            EventBody::DomainFree(f) => Some(f.domain.0),
            EventBody::Map(m) | EventBody::Unmap(m) => Some(m.domain.0),
            EventBody::PtAlloc(p) | EventBody::PtFree(p) => Some(p.domain.0),
            EventBody::PtGrow(g) => Some(g.domain.0),
            _ => None,
        }
    }
}

/// A kernel pointer. Written as a hex string in JSON: pointers do not fit the 53-bit
/// integers that jq and JavaScript read exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelPtr(pub u64);

impl Serialize for KernelPtr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format!("{:#x}", self.0))
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for KernelPtr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let hex = s.strip_prefix("0x").unwrap_or(&s);
            u64::from_str_radix(hex, 16)
                .map(KernelPtr)
                .map_err(serde::de::Error::custom)
        } else {
            u64::deserialize(d).map(KernelPtr)
        }
    }
}

impl JsonSchema for KernelPtr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KernelPtr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A kernel pointer, as a hex string (\"0xffff888003c1e000\").",
            "type": "string",
            "pattern": "^0x[0-9a-f]+$"
        })
    }
}

impl std::fmt::Display for KernelPtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Which `iommu_ops` member allocated the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllocOp {
    /// `domain_alloc_user` (6.7 to 6.12).
    AllocUser,
    /// `domain_alloc_paging_flags` (6.13+).
    PagingFlags,
    /// `domain_alloc_nested` (6.13+).
    Nested,
    /// A vIOMMU's `alloc_domain_nested` (6.13+): a nested domain for a guest's vIOMMU.
    ViommuNested,
}

impl AllocOp {
    /// The name in JSONL, metrics and text (the serde name).
    pub fn name(self) -> &'static str {
        match self {
            AllocOp::AllocUser => "alloc_user",
            AllocOp::PagingFlags => "paging_flags",
            AllocOp::Nested => "nested",
            AllocOp::ViommuNested => "viommu_nested",
        }
    }
}

/// What kind of domain user space got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    /// `IOMMU_HWPT_ALLOC` on an IOAS.
    Paging,
    /// `IOMMU_HWPT_ALLOC` on a NEST_PARENT hwpt (or a vIOMMU).
    Nested,
    /// Allocated by iommufd itself when a device was attached straight to an IOAS.
    Auto,
    /// Allocated outside the iommufd paths the probes know.
    Other,
}

impl DomainKind {
    pub fn name(self) -> &'static str {
        match self {
            DomainKind::Paging => "paging",
            DomainKind::Nested => "nested",
            DomainKind::Auto => "auto",
            DomainKind::Other => "other",
        }
    }
}

/// The geometry a page-table model needs, as the kernel reported it for this domain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Geometry {
    /// Page sizes the domain supports (bit n: 2^n bytes).
    pub pgsize_bitmap: u64,
    /// First IOVA the domain translates.
    pub aperture_start: u64,
    /// Last IOVA the domain translates.
    pub aperture_end: u64,
    /// `iommu_domain.type` (IOMMU_DOMAIN_* bits).
    pub domain_type: u32,
    /// Driver-specific fields by name (e.g. VT-d `agaw`), as the probe plan read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub driver_fields: Vec<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DomainAlloc {
    /// `intel`, `amd`, `arm-smmu-v3`, `mock` (iommufd selftest) or `unknown`.
    pub driver: String,
    /// The `iommu_ops` member that allocated it.
    pub op: AllocOp,
    /// Paging, nested, or an auto domain iommufd allocated for a device attach.
    pub kind: DomainKind,
    /// `IOMMU_HWPT_ALLOC_*` flags passed to the driver.
    pub flags: u32,
    /// `IOMMU_HWPT_DATA_*` type of the driver-specific data, 0 for none.
    pub data_type: u32,
    /// Length of the driver-specific data user space passed.
    pub data_len: u32,
    /// The driver-specific data, decoded, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<UserData>,
    /// The parent (nesting) domain; 0 for none.
    pub parent: KernelPtr,
    /// The vIOMMU it was allocated through (`op` `viommu_nested`): its object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viommu_id: Option<u32>,
    /// The new domain; 0 on failure.
    pub domain: KernelPtr,
    /// 0 on success, else the positive errno the op returned.
    pub errno: i32,
    /// Time in the op.
    pub latency_ns: u64,
    /// The new domain's page sizes, aperture and driver fields (zero on failure).
    pub geometry: Geometry,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HwptAlloc {
    /// `IOMMU_HWPT_ALLOC_*` flags.
    pub flags: u32,
    /// The device object id.
    pub dev_id: u32,
    /// The IOAS, parent HWPT or vIOMMU id the HWPT is allocated on.
    pub pt_id: u32,
    /// `IOMMU_HWPT_DATA_*` type of the driver-specific data, 0 for none.
    pub data_type: u32,
    /// Length of that data.
    pub data_len: u32,
    /// The new hwpt object id, 0 on failure.
    pub hwpt_id: u32,
    /// 0, or the positive errno the ioctl returned.
    pub errno: i32,
    /// Time in the ioctl.
    pub latency_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DomainFree {
    /// The domain freed.
    pub domain: KernelPtr,
    /// Time in `iommu_domain_free`.
    pub latency_ns: u64,
}

/// The page table of `domain` now has `levels` levels (the new top's pages are `pt_alloc`
/// events before it; 6.12 AMD grows one level a time, 7.x as many as the map needs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PtGrow {
    /// The domain whose table grew.
    pub domain: KernelPtr,
    /// Its levels after growing.
    pub levels: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MapOp {
    /// The domain.
    pub domain: KernelPtr,
    /// First IOVA.
    pub iova: u64,
    /// Bytes asked for.
    pub size: u64,
    /// Bytes mapped or unmapped.
    pub done: u64,
    /// Physical address (maps only; 0 for unmaps).
    #[serde(default)]
    pub paddr: u64,
    /// 0, or the positive errno.
    pub errno: i32,
    /// Time in `iommu_map` / `iommu_unmap`.
    pub latency_ns: u64,
}

/// The domain operation during which page-table pages changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PtCause {
    /// Domain allocation (the top-level table).
    Alloc,
    Map,
    Unmap,
    /// Domain free.
    Free,
}

impl PtCause {
    /// The name in JSONL, metrics and text (the serde name).
    pub fn name(self) -> &'static str {
        match self {
            PtCause::Alloc => "alloc",
            PtCause::Map => "map",
            PtCause::Unmap => "unmap",
            PtCause::Free => "free",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PtPages {
    /// The domain whose page table it is.
    pub domain: KernelPtr,
    /// Number of 4 KiB pages.
    pub pages: u64,
    /// Whether the pages were charged to a memory cgroup.
    pub charged: bool,
    /// cgroup id of that memory cgroup, 0 when not charged.
    pub memcg_id: u64,
    /// The domain operation that ran.
    pub cause: PtCause,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Lost {
    /// Events dropped because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Operations not attributed because a per-thread context table was full.
    pub context_full: u64,
}

/// `object_alloc`: an iommufd object became visible under `id`, with the objects it refers
/// to; or (`errno` != 0) `_iommufd_object_alloc` failed and there is no object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectAlloc {
    /// `ioas`, `hwpt_paging`, `hwpt_nested`, `device`, `access`, `fault`, `viommu`,
    /// `vdevice`, `veventq`, `hw_queue`, `selftest`, or `unknown`.
    pub object: String,
    /// The object id user space sees (0 when the allocation failed).
    pub id: u32,
    /// The object in the kernel (its pointer: unique while it lives).
    pub obj: KernelPtr,
    /// The iommufd context (one per open of /dev/iommu).
    pub ictx: KernelPtr,
    /// Ids of the objects it refers to, by role: `ioas`, `parent`, `viommu`, `device`,
    /// `hwpt`, `access`, `fault` (those the type has and that are set).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refs: BTreeMap<String, u32>,
    /// A HWPT's `struct iommu_domain`: the `domain` of its `domain_alloc` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<KernelPtr>,
    /// A vDEVICE's virtual id (the device id the guest's vIOMMU sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virt_id: Option<u64>,
    /// Bytes the kernel allocated for the object itself (0 when not seen).
    pub size: u64,
    /// 0, or the positive errno of the failed allocation.
    pub errno: i32,
    /// From allocation to publication.
    pub latency_ns: u64,
}

/// `object_abort`: an object allocated and never published; its id is free again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectAbort {
    /// The object type, as in `object_alloc`.
    pub object: String,
    /// The id it had reserved.
    pub id: u32,
    /// The object in the kernel.
    pub obj: KernelPtr,
    /// The iommufd context.
    pub ictx: KernelPtr,
    /// Bytes the kernel allocated for it (0 when not seen).
    pub size: u64,
    /// The result of the iommufd ioctl it happened in; absent outside one (a VFIO bind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

/// How an object was destroyed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DestroyHow {
    /// `IOMMU_DESTROY`.
    Destroy,
    /// Its device was unbound (the VFIO device fd closed).
    Unbind,
    /// The iommufd file was closed with the object alive.
    Close,
    /// Its last reference was dropped elsewhere (an auto domain's last device detached).
    Put,
}

impl DestroyHow {
    pub const ALL: [DestroyHow; 4] = [
        DestroyHow::Destroy,
        DestroyHow::Unbind,
        DestroyHow::Close,
        DestroyHow::Put,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DestroyHow::Destroy => "destroy",
            DestroyHow::Unbind => "unbind",
            DestroyHow::Close => "close",
            DestroyHow::Put => "put",
        }
    }
}

/// `object_destroy`: a published object's destroy op ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectDestroy {
    /// The object type, as in `object_alloc`.
    pub object: String,
    /// Its id.
    pub id: u32,
    /// The object in the kernel.
    pub obj: KernelPtr,
    /// What destroyed it.
    pub how: DestroyHow,
}

/// An IOAS mapping ioctl (`ioas_map`, `ioas_map_file`, `ioas_copy`, `ioas_unmap`,
/// `ioas_change_process`), from its uAPI struct as the handler returned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IoasOp {
    /// The iommufd context.
    pub ictx: KernelPtr,
    /// The IOAS id (copy: the destination; change_process: 0).
    pub ioas: u32,
    /// The IOVA: on a successful map without `FIXED_IOVA`, the one the kernel chose.
    pub iova: u64,
    /// Bytes asked for; a successful unmap: bytes unmapped.
    pub length: u64,
    /// The uAPI `flags` (`IOMMU_IOAS_MAP_*`).
    pub flags: u32,
    /// `ioas_map`: the user address mapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_va: Option<u64>,
    /// `ioas_map_file`: the file descriptor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `ioas_map_file`: the offset in the file.
    pub start: Option<u64>,
    /// `ioas_copy`: the source IOAS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ioas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `ioas_copy`: the source IOVA.
    pub src_iova: Option<u64>,
    /// 0, or the positive errno.
    pub errno: i32,
    /// Time in the ioctl.
    pub latency_ns: u64,
}

/// `option`: `IOMMU_OPTION` (uAPI `struct iommu_option`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IommufdOption {
    /// The iommufd context.
    pub ictx: KernelPtr,
    /// `rlimit_mode`, `huge_pages`, or the number of an option this tool does not know.
    pub option: String,
    /// `set` or `get`.
    pub op: String,
    /// 0 for a context-wide option (`rlimit_mode`), else the IOAS.
    pub object_id: u32,
    /// The value set, or the value got (on success).
    pub val64: u64,
    /// 0, or the positive errno.
    pub errno: i32,
    /// Time in the ioctl.
    pub latency_ns: u64,
}

/// `iopt_pages::account_mode` (iommufd/io_pagetable.h).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PinMode {
    /// Not charged: the mapping's creator had CAP_IPC_LOCK (7.x: or a dma-buf).
    None,
    /// Charged to the creator's user (`user_struct::locked_vm`, shared by all its processes
    /// and io_uring), against the creator's RLIMIT_MEMLOCK.
    User,
    /// Charged to the creator's mm (`mm_struct::locked_vm`, shared with mlock and VFIO
    /// type1): the VFIO compat container, or `IOMMU_OPTION_RLIMIT_MODE` = 1.
    Mm,
}

impl PinMode {
    pub fn name(self) -> &'static str {
        match self {
            PinMode::None => "none",
            PinMode::User => "user",
            PinMode::Mm => "mm",
        }
    }
}

/// `pin`: pages of one `iopt_pages` pinned and charged, or unpinned and uncharged (6.12
/// `do_update_pinned`, 7.x `iopt_pages_update_pinned`). A refused charge (`errno` ENOMEM)
/// carries the limit and the locked total the kernel compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pin {
    /// The `struct iopt_pages` (one per IOAS_MAP / MAP_FILE, shared by IOAS_COPY).
    pub iopt_pages: KernelPtr,
    /// Pages pinned (> 0) or unpinned (< 0) since the last change accounted.
    pub pages: i64,
    /// The same in bytes (kernel pages of the traced host's size).
    pub bytes: i64,
    /// Pages charged (> 0) or uncharged (< 0) to the target: 0 for mode `none` and when
    /// refused.
    pub charged: i64,
    /// Whose locked memory it is charged to.
    pub mode: PinMode,
    /// The mapping's creator, whose RLIMIT_MEMLOCK applies (not necessarily the caller).
    pub target_pid: u32,
    /// Mode `user`: the uid charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_uid: Option<u32>,
    /// Mode `mm`: the mm charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_mm: Option<KernelPtr>,
    /// The creator's RLIMIT_MEMLOCK soft limit; absent when unlimited, and in mode `none`
    /// (nothing charged: the tracer does not read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// The target's locked memory after the change (when refused: the total it was
    /// compared with); 0 for mode `none`.
    pub locked_bytes: u64,
    /// This `iopt_pages`' pinned pages after the change.
    pub pinned_pages: u64,
    /// This `iopt_pages`' size in pages.
    pub total_pages: u64,
    /// The creator mm's `pinned_vm` after the change (every mode adds to it).
    pub pinned_vm_bytes: u64,
    /// 0, or the positive errno (ENOMEM: over the limit).
    pub errno: i32,
    /// The accounting call's duration: recorded by earlier versions only (a few atomic
    /// operations; timing it cost a second program per call: docs/design-notes.md §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ns: Option<u64>,
}

impl Pin {
    /// Bytes of one kernel page, from the event's own `bytes` / `pages` (1 when no page
    /// moved).
    pub fn page_size(&self) -> u64 {
        (self.bytes.unsigned_abs() / self.pages.unsigned_abs().max(1)).max(1)
    }

    /// Why the kernel refused this charge, in one line a VMM engineer can act on; `None`
    /// when it did not refuse. The limit and the totals are those the kernel compared
    /// (docs/kernel-facts.md §8.2).
    pub fn refusal(&self) -> Option<String> {
        if self.errno == 0 {
            return None;
        }
        let asked = self.bytes.unsigned_abs();
        // Only a charge is checked against the limit; per-mm accounting also fails (EINVAL)
        // when the creator's mm is gone (`update_mm_locked_vm`, pages.c).
        if self.errno != ENOMEM || self.pages <= 0 {
            let what = if self.pages > 0 {
                "charging"
            } else {
                "uncharging"
            };
            let mm_gone = if self.mode == PinMode::Mm && self.errno == EINVAL {
                ": the mapping's creator (its mm) has exited"
            } else {
                ""
            };
            return Some(format!(
                "{} while {what} {} (mode {}){mm_gone}: not a RLIMIT_MEMLOCK refusal",
                errno_name(self.errno),
                crate::units::bytes_long(asked),
                self.mode.name()
            ));
        }
        let target = match (self.mode, self.target_uid) {
            (PinMode::User, Some(uid)) => format!(
                "uid {uid} (per-user accounting: every process of that user, io_uring \
                 included, shares it)"
            ),
            (PinMode::Mm, _) => {
                "the creator's mm (per-mm accounting: shared with its mlock() and VFIO type1 \
                 pins)"
                    .to_string()
            }
            _ => {
                return Some(format!(
                    "{} while pinning {} with no accounting (mode {}): not a RLIMIT_MEMLOCK \
                     refusal",
                    errno_name(self.errno),
                    crate::units::bytes_long(asked),
                    self.mode.name()
                ))
            }
        };
        let Some(limit) = self.limit_bytes else {
            return Some(format!(
                "{} while charging {} to {target}, under an unlimited RLIMIT_MEMLOCK",
                errno_name(self.errno),
                crate::units::bytes_long(asked)
            ));
        };
        let total = self.locked_bytes.saturating_add(asked);
        let hint = match self.mode {
            PinMode::User => {
                "; or, if other processes of that user hold the locked memory, map through a \
                 new iommufd set to per-mm accounting (IOMMU_OPTION_RLIMIT_MODE, with \
                 CAP_SYS_RESOURCE, before it holds objects); or create the mapping from a \
                 process with CAP_IPC_LOCK"
            }
            _ => "; or create the mapping from a process with CAP_IPC_LOCK",
        };
        // IOAS_CHANGE_PROCESS charges the caller through a temporary `iopt_pages` of no
        // pages before it uncharges the old creator (docs/kernel-facts.md §8.2).
        let hint = if self.total_pages == 0 {
            " (IOAS_CHANGE_PROCESS charges the caller before it uncharges the mappings' old \
             creator: between processes of one user, per-user accounting needs room for the \
             pins twice)"
        } else {
            hint
        };
        Some(format!(
            "{}: pinning {} more would take {target} from {} to {} locked, over RLIMIT_MEMLOCK \
             of the mapping's creator (pid {}) of {}: raise that limit by at least {}{hint}",
            errno_name(self.errno),
            crate::units::bytes_long(asked),
            crate::units::bytes_long(self.locked_bytes),
            crate::units::bytes_long(total),
            self.target_pid,
            crate::units::bytes_long(limit),
            crate::units::bytes_long(total.saturating_sub(limit)),
        ))
    }
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    // One name per value: the serde name (JSONL) is the name everything else prints.
    #[test]
    fn each_enum_has_one_name() {
        let serde_name = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for op in [
            AllocOp::AllocUser,
            AllocOp::PagingFlags,
            AllocOp::Nested,
            AllocOp::ViommuNested,
        ] {
            assert_eq!(serde_name(serde_json::to_value(op).unwrap()), op.name());
        }
        for c in [PtCause::Alloc, PtCause::Map, PtCause::Unmap, PtCause::Free] {
            assert_eq!(serde_name(serde_json::to_value(c).unwrap()), c.name());
        }
        for k in [
            DomainKind::Paging,
            DomainKind::Nested,
            DomainKind::Auto,
            DomainKind::Other,
        ] {
            assert_eq!(serde_name(serde_json::to_value(k).unwrap()), k.name());
        }
        for h in DestroyHow::ALL {
            assert_eq!(serde_name(serde_json::to_value(h).unwrap()), h.name());
        }
        for m in [PinMode::None, PinMode::User, PinMode::Mm] {
            assert_eq!(serde_name(serde_json::to_value(m).unwrap()), m.name());
        }
    }

    // Each accounting explains itself; a success explains nothing.
    #[test]
    fn refusals_name_the_accounting_and_the_shortfall() {
        let mut p = Pin {
            iopt_pages: KernelPtr(1),
            pages: 4,
            bytes: 16384,
            charged: 0,
            mode: PinMode::Mm,
            target_pid: 9,
            target_uid: None,
            target_mm: Some(KernelPtr(2)),
            limit_bytes: Some(16384),
            locked_bytes: 8192,
            pinned_pages: 4,
            total_pages: 4,
            pinned_vm_bytes: 0,
            errno: 12,
            latency_ns: None,
        };
        let why = p.refusal().unwrap();
        assert!(
            why.contains("the creator's mm (per-mm")
                && why.contains("from 8.0 KiB to 24.0 KiB locked")
                && why.contains("(pid 9) of 16.0 KiB: raise that limit by at least 8.0 KiB")
                && !why.contains("IOMMU_OPTION"),
            "{why}"
        );
        // IOAS_CHANGE_PROCESS's charge of the caller: a temporary `iopt_pages` of no pages.
        let mut moved = p.clone();
        (moved.mode, moved.target_uid, moved.total_pages) = (PinMode::User, Some(7), 0);
        let why = moved.refusal().unwrap();
        assert!(
            why.contains("uid 7") && why.contains("IOAS_CHANGE_PROCESS charges the caller"),
            "{why}"
        );
        assert!(!p.refusal().unwrap().contains("IOAS_CHANGE_PROCESS"));
        p.limit_bytes = None;
        assert!(p.refusal().unwrap().contains("unlimited"));
        p.mode = PinMode::None;
        assert!(p
            .refusal()
            .unwrap()
            .contains("not a RLIMIT_MEMLOCK refusal"));
        p.errno = 0;
        assert_eq!(p.refusal(), None);
    }
}
