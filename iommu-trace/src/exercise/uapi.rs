//! Raw iommufd / VFIO-cdev / iommufd-selftest uAPI used by `iommu-trace exercise`.
//!
//! Everything here is transcribed from the Linux 6.12 headers:
//! * `include/uapi/linux/iommufd.h` (iommufd core),
//! * `include/uapi/linux/vfio.h` (VFIO device cdev),
//! * `drivers/iommu/iommufd/iommufd_test.h` (the `CONFIG_IOMMUFD_TEST` mock driver; not a
//!   public uAPI header, but the selftests in tools/testing/selftests/iommu use it as one).
//!
//! All commands are `_IO(';', nr)`: no size or direction bits, so the request number is
//! `0x3b00 | nr` (docs/kernel-facts.md §6.1). The structs carry their own `size`/`argsz`
//! field and the kernel uses `copy_struct_from_user`, so passing the 6.12 size also works on
//! newer kernels.
//!
//! The layouts assume a 64-bit target (`__aligned_u64` is naturally 8-aligned there); the unit
//! tests pin every size and the interesting offsets against docs/kernel-facts.md §6.

use std::mem::size_of;

/// `IOMMUFD_TYPE` (= VFIO_TYPE) is `';'`.
pub const IOMMUFD_TYPE: u32 = b';' as u32;
/// `IOMMUFD_CMD_BASE` in iommufd.h.
pub const IOMMUFD_CMD_BASE: u32 = 0x80;
/// `VFIO_BASE` in vfio.h.
pub const VFIO_BASE: u32 = 100;

/// `_IO(type, nr)`: direction 0, size 0.
pub const fn io(ty: u32, nr: u32) -> u32 {
    (ty << 8) | nr
}

// ---- iommufd.h: enum { IOMMUFD_CMD_* } and #define IOMMU_* _IO(IOMMUFD_TYPE, ...) ----
pub const IOMMU_DESTROY: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE);
pub const IOMMU_IOAS_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x01);
pub const IOMMU_IOAS_ALLOW_IOVAS: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x02);
pub const IOMMU_IOAS_COPY: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x03);
pub const IOMMU_IOAS_IOVA_RANGES: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x04);
pub const IOMMU_IOAS_MAP: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x05);
pub const IOMMU_IOAS_UNMAP: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x06);
/// 7.x only (`IOMMUFD_CMD_IOAS_MAP_FILE` = 0x8f): 6.12 answers ENOTTY.
pub const IOMMU_IOAS_MAP_FILE: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x0f);
/// 7.x only (`IOMMUFD_CMD_IOAS_CHANGE_PROCESS` = 0x92): 6.12 answers ENOTTY.
pub const IOMMU_IOAS_CHANGE_PROCESS: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x12);
pub const IOMMU_OPTION: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x07);
pub const IOMMU_VFIO_IOAS: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x08);
pub const IOMMU_HWPT_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x09);
pub const IOMMU_GET_HW_INFO: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x0a);
pub const IOMMU_HWPT_SET_DIRTY_TRACKING: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x0b);
pub const IOMMU_HWPT_GET_DIRTY_BITMAP: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x0c);
pub const IOMMU_HWPT_INVALIDATE: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x0d);
pub const IOMMU_FAULT_QUEUE_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x0e);
// 7.x (6.13+) vIOMMU objects; 6.12 answers ENOTTY.
pub const IOMMU_VIOMMU_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x10);
pub const IOMMU_VDEVICE_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x11);
pub const IOMMU_VEVENTQ_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x13);
pub const IOMMU_HW_QUEUE_ALLOC: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 0x14);

// ---- iommufd_test.h: #define IOMMU_TEST_CMD _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32) ----
pub const IOMMU_TEST_CMD: u32 = io(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32);

// ---- vfio.h ----
/// `VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)`
pub const VFIO_DEVICE_BIND_IOMMUFD: u32 = io(IOMMUFD_TYPE, VFIO_BASE + 18);
/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)`
pub const VFIO_DEVICE_ATTACH_IOMMUFD_PT: u32 = io(IOMMUFD_TYPE, VFIO_BASE + 19);
/// `VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 20)`
pub const VFIO_DEVICE_DETACH_IOMMUFD_PT: u32 = io(IOMMUFD_TYPE, VFIO_BASE + 20);

// ---- iommufd.h: enum iommufd_ioas_map_flags ----
pub const IOMMU_IOAS_MAP_FIXED_IOVA: u32 = 1 << 0;
pub const IOMMU_IOAS_MAP_WRITEABLE: u32 = 1 << 1;
pub const IOMMU_IOAS_MAP_READABLE: u32 = 1 << 2;

// ---- iommufd.h: enum iommufd_hwpt_alloc_flags, enum iommu_hwpt_data_type ----
// (shared with the tracer: defined once in `crate::uapi`)
pub use crate::uapi::{
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IOMMU_HWPT_ALLOC_NEST_PARENT, IOMMU_HWPT_ALLOC_PASID,
    IOMMU_HWPT_DATA_ARM_SMMUV3, IOMMU_HWPT_DATA_NONE, IOMMU_HWPT_DATA_SELFTEST,
    IOMMU_HWPT_DATA_VTD_S1, IOMMU_HWPT_FAULT_ID_VALID,
};
/// iommufd_test.h: `#define IOMMU_TEST_IOTLB_DEFAULT 0xbadbeef`
pub const IOMMU_TEST_IOTLB_DEFAULT: u32 = 0xbadbeef;

// ---- iommufd.h: struct iommu_hwpt_vtd_s1 flags ----
pub const IOMMU_VTD_S1_SRE: u64 = 1 << 0;
pub const IOMMU_VTD_S1_EAFE: u64 = 1 << 1;
pub const IOMMU_VTD_S1_WPE: u64 = 1 << 2;

// ---- iommufd_test.h: enum { IOMMU_TEST_OP_* } ----
pub const IOMMU_TEST_OP_ADD_RESERVED: u32 = 1;
pub const IOMMU_TEST_OP_MOCK_DOMAIN: u32 = 2;
pub const IOMMU_TEST_OP_MD_CHECK_MAP: u32 = 3;
pub const IOMMU_TEST_OP_MD_CHECK_REFS: u32 = 4;
pub const IOMMU_TEST_OP_CREATE_ACCESS: u32 = 5;
pub const IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: u32 = 6;
pub const IOMMU_TEST_OP_ACCESS_PAGES: u32 = 7;
pub const IOMMU_TEST_OP_ACCESS_RW: u32 = 8;
pub const IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: u32 = 9;
pub const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: u32 = 10;
pub const IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: u32 = 11;
pub const IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: u32 = 12;
pub const IOMMU_TEST_OP_DIRTY: u32 = 13;
pub const IOMMU_TEST_OP_MD_CHECK_IOTLB: u32 = 14;
pub const IOMMU_TEST_OP_TRIGGER_IOPF: u32 = 15;

/// iommufd.h `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`.
pub const IOMMU_VIOMMU_TYPE_ARM_SMMUV3: u32 = 1;
/// iommufd_test.h (7.x): the selftest's vIOMMU, vEVENTQ and HW queue types.
pub const IOMMU_VIOMMU_TYPE_SELFTEST: u32 = 0xdead_beef;
pub const IOMMU_VEVENTQ_TYPE_SELFTEST: u32 = 0xbeef_beef;
pub const IOMMU_HW_QUEUE_TYPE_SELFTEST: u32 = 0xdead_beef;

/// iommufd_test.h: `MOCK_APERTURE_START = 1UL << 24`, `MOCK_APERTURE_LAST = (1UL << 31) - 1`.
pub const MOCK_APERTURE_START: u64 = 1 << 24;
pub const MOCK_APERTURE_LAST: u64 = (1 << 31) - 1;

/// iommufd.h `struct iommu_destroy` (8 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuDestroy {
    pub size: u32,
    pub id: u32,
}

/// iommufd.h `struct iommu_ioas_alloc` (12 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasAlloc {
    pub size: u32,
    pub flags: u32,
    pub out_ioas_id: u32,
}

/// iommufd.h `struct iommu_ioas_map` (40 bytes). `iova` is in/out.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasMap {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub reserved: u32,
    pub user_va: u64,
    pub length: u64,
    pub iova: u64,
}

/// iommufd.h `struct iommu_ioas_copy` (40 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasCopy {
    pub size: u32,
    pub flags: u32,
    pub dst_ioas_id: u32,
    pub src_ioas_id: u32,
    pub length: u64,
    pub dst_iova: u64,
    pub src_iova: u64,
}

/// iommufd.h `struct iommu_ioas_map_file` (40 bytes, 7.x): `start` is the offset in `fd`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasMapFile {
    pub size: u32,
    pub flags: u32,
    pub ioas_id: u32,
    pub fd: i32,
    pub start: u64,
    pub length: u64,
    pub iova: u64,
}

/// iommufd.h `struct iommu_ioas_change_process` (8 bytes, 7.x).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasChangeProcess {
    pub size: u32,
    pub reserved: u32,
}

/// iommufd.h `struct iommu_ioas_unmap` (24 bytes). `length` is in/out (bytes unmapped).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasUnmap {
    pub size: u32,
    pub ioas_id: u32,
    pub iova: u64,
    pub length: u64,
}

/// iommufd.h `struct iommu_ioas_iova_ranges` (32 bytes): the IOVA ranges an IOAS allows
/// (every attached domain's aperture, less reserved regions), written to `allowed_iovas`
/// as `struct iommu_iova_range {start, last}` (inclusive).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuIoasIovaRanges {
    pub size: u32,
    pub ioas_id: u32,
    pub num_iovas: u32,
    pub reserved: u32,
    pub allowed_iovas: u64,
    pub out_iova_alignment: u64,
}

/// iommufd.h `struct iommu_hw_info` (40 bytes; 7.x makes `out_data_type` a union with
/// `in_data_type`, 0 = the default type). With `data_len` 0 nothing is copied out but the
/// type and capabilities.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuHwInfo {
    pub size: u32,
    pub flags: u32,
    pub dev_id: u32,
    pub data_len: u32,
    pub data_uptr: u64,
    pub out_data_type: u32,
    pub out_max_pasid_log2: u8,
    pub reserved: [u8; 3],
    pub out_capabilities: u64,
}

/// iommufd.h `enum iommu_hw_info_type`: NONE (a driver without `hw_info`), INTEL_VTD,
/// ARM_SMMUV3, TEGRA241_CMDQV, AMD (7.x with CONFIG_AMD_IOMMU_IOMMUFD).
pub fn hw_info_type_name(t: u32) -> &'static str {
    match t {
        0 => "none",
        1 => "intel_vtd",
        2 => "arm_smmuv3",
        3 => "tegra241_cmdqv",
        4 => "amd",
        _ => "unknown",
    }
}

/// iommufd.h `struct iommu_option` (24 bytes). `val64` is in/out.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuOption {
    pub size: u32,
    pub option_id: u32,
    pub op: u16,
    pub reserved: u16,
    pub object_id: u32,
    pub val64: u64,
}

/// `enum iommufd_option`, `enum iommufd_option_ops` (iommufd.h).
pub const IOMMU_OPTION_RLIMIT_MODE: u32 = 0;
pub const IOMMU_OPTION_OP_SET: u16 = 0;

/// iommufd.h `struct iommu_hwpt_alloc` (48 bytes; the kernel accepts >= 24,
/// `offsetofend(__reserved)`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuHwptAlloc {
    pub size: u32,
    pub flags: u32,
    pub dev_id: u32,
    pub pt_id: u32,
    pub out_hwpt_id: u32,
    pub reserved: u32,
    pub data_type: u32,
    pub data_len: u32,
    pub data_uptr: u64,
    pub fault_id: u32,
    pub reserved2: u32,
}

/// iommufd.h `struct iommu_hwpt_vtd_s1` (24 bytes), data for `IOMMU_HWPT_DATA_VTD_S1`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuHwptVtdS1 {
    pub flags: u64,
    pub pgtbl_addr: u64,
    pub addr_width: u32,
    pub reserved: u32,
}

/// iommufd_test.h `struct iommu_hwpt_selftest { __u32 iotlb; }` (4 bytes, 6.12; 7.3 adds
/// `pagetable_type`), data for `IOMMU_HWPT_DATA_SELFTEST`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuHwptSelftest {
    pub iotlb: u32,
}

/// vfio.h `struct vfio_device_bind_iommufd` (16 bytes in 6.12; 7.3 appends
/// `token_uuid_ptr`, the kernel's minsz stays `offsetofend(out_devid)` = 16).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceBindIommufd {
    pub argsz: u32,
    pub flags: u32,
    pub iommufd: i32,
    pub out_devid: u32,
}

/// vfio.h `struct vfio_device_attach_iommufd_pt` (12 bytes in 6.12; 6.15 appends `pasid`).
/// `pt_id` is in/out: attaching to an IOAS returns the (auto) hwpt id.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceAttachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
    pub pt_id: u32,
}

/// vfio.h `struct vfio_device_detach_iommufd_pt` (8 bytes in 6.12; 6.15 appends `pasid`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct VfioDeviceDetachIommufdPt {
    pub argsz: u32,
    pub flags: u32,
}

/// iommufd_test.h `struct iommu_test_cmd` (72 bytes: 16-byte header, a 48-byte union whose
/// largest member is `dirty`, `__u32 last` at offset 64, padded to 8). The kernel's
/// minimum size is `offsetofend(last)` = 68.
///
/// The union is kept as raw words; accessors below give the members this tool uses.
#[repr(C, align(8))]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuTestCmd {
    pub size: u32,
    pub op: u32,
    pub id: u32,
    pub reserved: u32,
    pub payload: [u32; 12],
    pub last: u32,
    pub pad: u32,
}

impl IommuTestCmd {
    /// `IOMMU_TEST_OP_MOCK_DOMAIN` on IOAS (or hwpt) `pt_id`.
    pub fn mock_domain(pt_id: u32) -> Self {
        IommuTestCmd {
            size: size_of::<Self>() as u32,
            op: IOMMU_TEST_OP_MOCK_DOMAIN,
            id: pt_id,
            ..Default::default()
        }
    }
    /// `mock_domain.out_stdev_id` (union offset 0).
    pub fn out_stdev_id(&self) -> u32 {
        self.payload[0]
    }
    /// `mock_domain.out_hwpt_id` (union offset 4).
    pub fn out_hwpt_id(&self) -> u32 {
        self.payload[1]
    }
    /// `mock_domain.out_idev_id` (union offset 8).
    pub fn out_idev_id(&self) -> u32 {
        self.payload[2]
    }
}

/// iommufd.h `struct iommu_fault_alloc` (16 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuFaultAlloc {
    pub size: u32,
    pub flags: u32,
    pub out_fault_id: u32,
    pub out_fault_fd: u32,
}

/// iommufd.h `struct iommu_viommu_alloc` (40 bytes, 7.x).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuViommuAlloc {
    pub size: u32,
    pub flags: u32,
    pub type_: u32,
    pub dev_id: u32,
    pub hwpt_id: u32,
    pub out_viommu_id: u32,
    pub data_len: u32,
    pub reserved: u32,
    pub data_uptr: u64,
}

/// iommufd.h `struct iommu_vdevice_alloc` (24 bytes, 7.x).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuVdeviceAlloc {
    pub size: u32,
    pub viommu_id: u32,
    pub dev_id: u32,
    pub out_vdevice_id: u32,
    pub virt_id: u64,
}

/// iommufd.h `struct iommu_veventq_alloc` (32 bytes, 7.x).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuVeventqAlloc {
    pub size: u32,
    pub flags: u32,
    pub viommu_id: u32,
    pub type_: u32,
    pub veventq_depth: u32,
    pub out_veventq_id: u32,
    pub out_veventq_fd: u32,
    pub reserved: u32,
}

/// iommufd.h `struct iommu_hw_queue_alloc` (40 bytes, 7.x).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct IommuHwQueueAlloc {
    pub size: u32,
    pub flags: u32,
    pub viommu_id: u32,
    pub type_: u32,
    pub index: u32,
    pub out_hw_queue_id: u32,
    pub nesting_parent_iova: u64,
    pub length: u64,
}

/// Size as a `u32` for the `size`/`argsz` fields.
pub const fn size32<T>() -> u32 {
    size_of::<T>() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Sizes from docs/kernel-facts.md §6.1 / §6.2 (and iommufd_test.h for the selftest structs).
    #[test]
    fn struct_sizes_match_the_kernel_headers() {
        assert_eq!(size_of::<IommuDestroy>(), 8);
        assert_eq!(size_of::<IommuIoasAlloc>(), 12);
        assert_eq!(size_of::<IommuIoasMap>(), 40);
        assert_eq!(size_of::<IommuIoasUnmap>(), 24);
        assert_eq!(size_of::<IommuIoasIovaRanges>(), 32);
        assert_eq!(size_of::<IommuHwInfo>(), 40);
        assert_eq!(size_of::<IommuHwptAlloc>(), 48);
        assert_eq!(size_of::<IommuFaultAlloc>(), 16);
        assert_eq!(size_of::<IommuViommuAlloc>(), 40);
        assert_eq!(size_of::<IommuVdeviceAlloc>(), 24);
        assert_eq!(size_of::<IommuVeventqAlloc>(), 32);
        assert_eq!(size_of::<IommuHwQueueAlloc>(), 40);
        assert_eq!(size_of::<IommuHwptVtdS1>(), 24);
        assert_eq!(size_of::<VfioDeviceBindIommufd>(), 16);
        assert_eq!(size_of::<VfioDeviceAttachIommufdPt>(), 12);
        assert_eq!(size_of::<VfioDeviceDetachIommufdPt>(), 8);
        assert_eq!(size_of::<IommuHwptSelftest>(), 4);
        assert_eq!(size_of::<IommuTestCmd>(), 72);
    }

    #[test]
    fn field_offsets() {
        assert_eq!(offset_of!(IommuIoasMap, user_va), 16);
        assert_eq!(offset_of!(IommuIoasMap, iova), 32);
        assert_eq!(offset_of!(IommuIoasUnmap, iova), 8);
        assert_eq!(offset_of!(IommuIoasUnmap, length), 16);
        assert_eq!(offset_of!(IommuHwptAlloc, out_hwpt_id), 16);
        // min accepted size = offsetofend(__reserved) = 24
        assert_eq!(offset_of!(IommuHwptAlloc, reserved) + 4, 24);
        assert_eq!(offset_of!(IommuHwptAlloc, data_type), 24);
        assert_eq!(offset_of!(IommuHwptAlloc, data_uptr), 32);
        assert_eq!(offset_of!(IommuHwptAlloc, fault_id), 40);
        assert_eq!(offset_of!(IommuHwptVtdS1, addr_width), 16);
        assert_eq!(offset_of!(VfioDeviceBindIommufd, out_devid), 12);
        assert_eq!(offset_of!(VfioDeviceAttachIommufdPt, pt_id), 8);
        assert_eq!(offset_of!(IommuTestCmd, payload), 16);
        assert_eq!(offset_of!(IommuTestCmd, last), 64);
    }

    /// Numbers from the docs/kernel-facts.md §6.1 / §6.2 tables.
    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(IOMMU_DESTROY, 0x3b80);
        assert_eq!(IOMMU_IOAS_ALLOC, 0x3b81);
        assert_eq!(IOMMU_IOAS_ALLOW_IOVAS, 0x3b82);
        assert_eq!(IOMMU_IOAS_COPY, 0x3b83);
        assert_eq!(IOMMU_IOAS_MAP_FILE, 0x3b8f);
        assert_eq!(IOMMU_IOAS_CHANGE_PROCESS, 0x3b92);
        assert_eq!(std::mem::size_of::<IommuIoasChangeProcess>(), 8);
        assert_eq!(std::mem::size_of::<IommuIoasCopy>(), 40);
        assert_eq!(std::mem::size_of::<IommuIoasMapFile>(), 40);
        assert_eq!(IOMMU_IOAS_IOVA_RANGES, 0x3b84);
        assert_eq!(IOMMU_IOAS_MAP, 0x3b85);
        assert_eq!(IOMMU_IOAS_UNMAP, 0x3b86);
        assert_eq!(IOMMU_OPTION, 0x3b87);
        assert_eq!(IOMMU_VFIO_IOAS, 0x3b88);
        assert_eq!(IOMMU_HWPT_ALLOC, 0x3b89);
        assert_eq!(IOMMU_GET_HW_INFO, 0x3b8a);
        assert_eq!(IOMMU_HWPT_SET_DIRTY_TRACKING, 0x3b8b);
        assert_eq!(IOMMU_HWPT_GET_DIRTY_BITMAP, 0x3b8c);
        assert_eq!(IOMMU_HWPT_INVALIDATE, 0x3b8d);
        assert_eq!(IOMMU_FAULT_QUEUE_ALLOC, 0x3b8e);
        assert_eq!(IOMMU_TEST_CMD, 0x3ba0);
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD, 0x3b76);
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT, 0x3b77);
        assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT, 0x3b78);
    }

    #[test]
    fn flag_values() {
        assert_eq!(IOMMU_HWPT_ALLOC_NEST_PARENT, 1);
        assert_eq!(IOMMU_HWPT_ALLOC_DIRTY_TRACKING, 2);
        assert_eq!(IOMMU_HWPT_FAULT_ID_VALID, 4);
        assert_eq!(IOMMU_HWPT_DATA_SELFTEST, 0xdead);
        assert_eq!(IOMMU_TEST_OP_MOCK_DOMAIN, 2);
        assert_eq!(IOMMU_TEST_OP_TRIGGER_IOPF, 15);
    }

    #[test]
    fn mock_domain_cmd_layout() {
        let mut c = IommuTestCmd::mock_domain(7);
        assert_eq!(c.size, 72);
        assert_eq!(c.op, IOMMU_TEST_OP_MOCK_DOMAIN);
        assert_eq!(c.id, 7);
        c.payload[0] = 1;
        c.payload[1] = 2;
        c.payload[2] = 3;
        assert_eq!(
            (c.out_stdev_id(), c.out_hwpt_id(), c.out_idev_id()),
            (1, 2, 3)
        );
    }
}
