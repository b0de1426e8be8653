//! Names for the numbers the kernel hands back, so users read `EOPNOTSUPP`, not `95`.

use crate::uapi::{errno::NAMES as ERRNO_NAMES, HwptAllocFlag, HWPT_ALLOC_FLAGS};

/// The `IOMMU_HWPT_ALLOC_*` flag names set in `flags` (include/uapi/linux/iommufd.h),
/// unknown bits as hex.
pub fn hwpt_flag_names(flags: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = flags;
    for HwptAllocFlag { bit, name, .. } in HWPT_ALLOC_FLAGS {
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

/// The drivers whose allocation ops the probe plan knows (its `DriverSpec` table), and
/// `unknown` for domains allocated before tracing started: the bounded set of `driver`
/// values the aggregates and the exporter keep. Any other name is `other`.
pub const KNOWN_DRIVERS: &[&str] = &["intel", "amd", "arm-smmu-v3", "mock", "unknown"];

/// The driver name as the aggregates keep it: a known one, or `other` (a crafted capture
/// could otherwise name 65,536 drivers).
pub fn bounded_driver(name: &str) -> &str {
    if KNOWN_DRIVERS.contains(&name) {
        name
    } else {
        "other"
    }
}

/// The symbolic name of a positive errno (Linux generic numbering), or `E<n>`.
pub fn errno_name(errno: i32) -> String {
    if errno == 0 {
        return "OK".to_string();
    }
    match ERRNO_NAMES.iter().find(|(n, _)| *n == errno) {
        Some((_, name)) => name.to_string(),
        None => format!("E{errno}"),
    }
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
