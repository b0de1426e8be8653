//! What tracing needs of the process's privileges: capabilities, not root
//! (docs/kernel-facts.md §10).

use caps::{CapSet, Capability};

/// A capability tracing needs and the process lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub name: &'static str,
    pub for_what: &'static str,
}

/// The capabilities tracing needs that the effective set lacks (empty: tracing may start).
///
/// - CAP_BPF: the bpf() syscall for maps and programs (`bpf_capable`);
/// - CAP_PERFMON: tracing and kprobe programs, kprobe perf events, reading kernel memory
///   (`perfmon_capable`);
/// - CAP_SYSLOG: the addresses in /proc/kallsyms (`kallsyms_show_value`), which map a
///   driver op's address to its driver.
///
/// CAP_SYS_ADMIN stands for the first two (kernel/bpf/syscall.c, include/linux/capability.h),
/// and on kernels before 5.8 it is the only way.
pub fn missing() -> Vec<Missing> {
    let has = |c| caps::has_cap(None, CapSet::Effective, c).unwrap_or(false);
    let admin = has(Capability::CAP_SYS_ADMIN);
    let mut out = Vec::new();
    for (cap, name, for_what, admin_covers) in [
        (
            Capability::CAP_BPF,
            "CAP_BPF",
            "loading eBPF programs and maps",
            true,
        ),
        (
            Capability::CAP_PERFMON,
            "CAP_PERFMON",
            "attaching tracing programs and kprobes",
            true,
        ),
        (
            Capability::CAP_SYSLOG,
            "CAP_SYSLOG",
            "kernel addresses in /proc/kallsyms",
            false,
        ),
    ] {
        let covered = has(cap) || (admin_covers && admin);
        if !covered {
            out.push(Missing { name, for_what });
        }
    }
    out
}
