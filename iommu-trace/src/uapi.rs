//! The iommufd uAPI vocabulary the whole crate shares: the `IOMMU_HWPT_ALLOC_*` flag bits with
//! their names, the `IOMMU_HWPT_DATA_*` types, and the errno numbers (with names) the kernel
//! returns through it. Leaf module: it uses nothing from the crate.
//!
//! Transcribed from the kernel's `include/uapi/linux/iommufd.h` (`enum iommufd_hwpt_alloc_flags`,
//! `enum iommu_hwpt_data_type`; checked against the Linux 6.12 header and a recent torvalds/linux)
//! and `drivers/iommu/iommufd/iommufd_test.h` for the selftest data type. Flags and types are
//! only ever added, never renumbered, so one table serves every kernel; the renderings
//! (inspect text, JSONL, `/metrics` labels, the TUI, the exercise report) all build on it.

// ---- iommufd.h: enum iommufd_hwpt_alloc_flags ----
pub const IOMMU_HWPT_ALLOC_NEST_PARENT: u32 = 1 << 0;
pub const IOMMU_HWPT_ALLOC_DIRTY_TRACKING: u32 = 1 << 1;
pub const IOMMU_HWPT_FAULT_ID_VALID: u32 = 1 << 2;
/// Not in 6.12: added in 6.13 ("iommu: Add new flag to explictly request PASID capable
/// domain", b7a0855eb95f); iommufd accepts it from user space since 6.15.
pub const IOMMU_HWPT_ALLOC_PASID: u32 = 1 << 3;

/// One `IOMMU_HWPT_ALLOC_*` flag: its bit, its name without the `IOMMU_HWPT_[ALLOC_]` prefix,
/// and the short lower-case form the TUI prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwptAllocFlag {
    pub bit: u32,
    pub name: &'static str,
    pub short: &'static str,
}

/// Every `IOMMU_HWPT_ALLOC_*` flag, in bit order.
pub const HWPT_ALLOC_FLAGS: [HwptAllocFlag; 4] = [
    HwptAllocFlag {
        bit: IOMMU_HWPT_ALLOC_NEST_PARENT,
        name: "NEST_PARENT",
        short: "nest",
    },
    HwptAllocFlag {
        bit: IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
        name: "DIRTY_TRACKING",
        short: "dirty",
    },
    HwptAllocFlag {
        bit: IOMMU_HWPT_FAULT_ID_VALID,
        name: "FAULT_ID_VALID",
        short: "fault",
    },
    HwptAllocFlag {
        bit: IOMMU_HWPT_ALLOC_PASID,
        name: "PASID",
        short: "pasid",
    },
];

/// The bits of [`HWPT_ALLOC_FLAGS`]; any other bit is unknown to this build.
pub const HWPT_ALLOC_FLAGS_KNOWN: u32 = IOMMU_HWPT_ALLOC_NEST_PARENT
    | IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    | IOMMU_HWPT_FAULT_ID_VALID
    | IOMMU_HWPT_ALLOC_PASID;

// ---- iommufd.h: enum iommu_hwpt_data_type ----
pub const IOMMU_HWPT_DATA_NONE: u32 = 0;
pub const IOMMU_HWPT_DATA_VTD_S1: u32 = 1;
/// 6.13+
pub const IOMMU_HWPT_DATA_ARM_SMMUV3: u32 = 2;
/// Newer still (`struct iommu_hwpt_amd_guest`).
pub const IOMMU_HWPT_DATA_AMD_GUEST: u32 = 3;
/// iommufd_test.h: `#define IOMMU_HWPT_DATA_SELFTEST 0xdead`
pub const IOMMU_HWPT_DATA_SELFTEST: u32 = 0xdead;

/// Linux errno numbers (include/uapi/asm-generic/errno-base.h and errno.h; `ENOTSUPP` is
/// kernel-internal, include/linux/errno.h, but some drivers return it to user space).
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EINTR: i32 = 4;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const E2BIG: i32 = 7;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EFAULT: i32 = 14;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const ENODEV: i32 = 19;
    pub const EINVAL: i32 = 22;
    pub const ENOTTY: i32 = 25;
    pub const ENOSPC: i32 = 28;
    pub const ERANGE: i32 = 34;
    pub const EOVERFLOW: i32 = 75;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ENOTSUPP: i32 = 524;

    /// Every errno above with its symbolic name, in numeric order.
    pub const NAMES: [(i32, &str); 24] = [
        (EPERM, "EPERM"),
        (ENOENT, "ENOENT"),
        (ESRCH, "ESRCH"),
        (EINTR, "EINTR"),
        (EIO, "EIO"),
        (ENXIO, "ENXIO"),
        (E2BIG, "E2BIG"),
        (EBADF, "EBADF"),
        (EAGAIN, "EAGAIN"),
        (ENOMEM, "ENOMEM"),
        (EACCES, "EACCES"),
        (EFAULT, "EFAULT"),
        (EBUSY, "EBUSY"),
        (EEXIST, "EEXIST"),
        (ENODEV, "ENODEV"),
        (EINVAL, "EINVAL"),
        (ENOTTY, "ENOTTY"),
        (ENOSPC, "ENOSPC"),
        (ERANGE, "ERANGE"),
        (EOVERFLOW, "EOVERFLOW"),
        (EOPNOTSUPP, "EOPNOTSUPP"),
        (EADDRINUSE, "EADDRINUSE"),
        (EADDRNOTAVAIL, "EADDRNOTAVAIL"),
        (ENOTSUPP, "ENOTSUPP"),
    ];
}

/// `enum iommufd_option` and `enum iommufd_option_ops` (iommufd.h): the name of an
/// `IOMMU_OPTION` and of its operation; an option this tool does not know by its number.
pub fn option_name(option_id: u32) -> String {
    match option_id {
        0 => "rlimit_mode".into(),
        1 => "huge_pages".into(),
        n => n.to_string(),
    }
}

pub fn option_op_name(op: u32) -> String {
    match op {
        0 => "set".into(),
        1 => "get".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of `enum iommufd_hwpt_alloc_flags` in include/uapi/linux/iommufd.h.
    #[test]
    fn hwpt_alloc_flags_match_the_kernel_header() {
        assert_eq!(IOMMU_HWPT_ALLOC_NEST_PARENT, 1);
        assert_eq!(IOMMU_HWPT_ALLOC_DIRTY_TRACKING, 2);
        assert_eq!(IOMMU_HWPT_FAULT_ID_VALID, 4);
        assert_eq!(IOMMU_HWPT_ALLOC_PASID, 8);
        assert_eq!(HWPT_ALLOC_FLAGS_KNOWN, 0xf);
        let names: Vec<_> = HWPT_ALLOC_FLAGS.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["NEST_PARENT", "DIRTY_TRACKING", "FAULT_ID_VALID", "PASID"]
        );
        // The TUI's column (golden screens depend on it).
        let short: Vec<_> = HWPT_ALLOC_FLAGS.iter().map(|f| f.short).collect();
        assert_eq!(short, ["nest", "dirty", "fault", "pasid"]);
    }

    #[test]
    fn table_is_one_bit_per_flag_in_order() {
        let mut seen = 0;
        for (i, f) in HWPT_ALLOC_FLAGS.iter().enumerate() {
            assert_eq!(f.bit, 1 << i, "{}", f.name);
            seen |= f.bit;
        }
        assert_eq!(seen, HWPT_ALLOC_FLAGS_KNOWN);
    }

    #[test]
    fn hwpt_data_types_match_the_kernel_headers() {
        assert_eq!(IOMMU_HWPT_DATA_NONE, 0);
        assert_eq!(IOMMU_HWPT_DATA_VTD_S1, 1);
        assert_eq!(IOMMU_HWPT_DATA_ARM_SMMUV3, 2);
        assert_eq!(IOMMU_HWPT_DATA_AMD_GUEST, 3);
        assert_eq!(IOMMU_HWPT_DATA_SELFTEST, 0xdead);
    }

    /// The x86-64 / generic numbering, as libc has it; ENOTSUPP is kernel-only.
    #[test]
    fn errnos_match_libc() {
        for (n, name) in errno::NAMES {
            let libc = match name {
                "ENOTSUPP" => 524,
                "EPERM" => libc::EPERM,
                "ENOENT" => libc::ENOENT,
                "ESRCH" => libc::ESRCH,
                "EINTR" => libc::EINTR,
                "EIO" => libc::EIO,
                "ENXIO" => libc::ENXIO,
                "E2BIG" => libc::E2BIG,
                "EBADF" => libc::EBADF,
                "EAGAIN" => libc::EAGAIN,
                "ENOMEM" => libc::ENOMEM,
                "EACCES" => libc::EACCES,
                "EFAULT" => libc::EFAULT,
                "EBUSY" => libc::EBUSY,
                "EEXIST" => libc::EEXIST,
                "ENODEV" => libc::ENODEV,
                "EINVAL" => libc::EINVAL,
                "ENOTTY" => libc::ENOTTY,
                "ENOSPC" => libc::ENOSPC,
                "ERANGE" => libc::ERANGE,
                "EOVERFLOW" => libc::EOVERFLOW,
                "EOPNOTSUPP" => libc::EOPNOTSUPP,
                "EADDRINUSE" => libc::EADDRINUSE,
                "EADDRNOTAVAIL" => libc::EADDRNOTAVAIL,
                other => panic!("{other} not checked"),
            };
            assert_eq!(n, libc, "{name}");
        }
        assert!(errno::NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
