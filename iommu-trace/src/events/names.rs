//! Names for the numbers the kernel hands back, so users read `EOPNOTSUPP`, not `95`.

/// The `IOMMU_HWPT_ALLOC_*` flag names set in `flags` (include/uapi/linux/iommufd.h),
/// unknown bits as hex.
pub fn hwpt_flag_names(flags: u32) -> Vec<String> {
    const NAMES: [(u32, &str); 4] = [
        (1 << 0, "NEST_PARENT"),
        (1 << 1, "DIRTY_TRACKING"),
        (1 << 2, "FAULT_ID_VALID"),
        (1 << 3, "PASID"),
    ];
    let mut out = Vec::new();
    let mut rest = flags;
    for (bit, name) in NAMES {
        if flags & bit != 0 {
            out.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out
}

/// The symbolic name of a positive errno (Linux generic numbering), or `E<n>`.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        0 => "OK",
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        7 => "E2BIG",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        22 => "EINVAL",
        25 => "ENOTTY",
        28 => "ENOSPC",
        34 => "ERANGE",
        95 => "EOPNOTSUPP",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        524 => "ENOTSUPP",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_errnos_have_names() {
        assert_eq!(hwpt_flag_names(0), Vec::<String>::new());
        assert_eq!(hwpt_flag_names(3), vec!["NEST_PARENT", "DIRTY_TRACKING"]);
        assert_eq!(hwpt_flag_names(1 << 7 | 1), vec!["NEST_PARENT", "0x80"]);
        assert_eq!(errno_name(95), "EOPNOTSUPP");
        assert_eq!(errno_name(22), "EINVAL");
        assert_eq!(errno_name(4242), "E4242");
    }
}
