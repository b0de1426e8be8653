//! What to attach on this kernel: BTF + kallsyms discovery -> a probe plan -> load/attach.

pub mod btf;
pub mod kallsyms;
mod load;
pub mod plan;

pub use load::{LoadError, Tracer, TracerOptions};
pub use plan::{Plan, PlanInputs};

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Computes the plan for the running kernel. Never fails: what is missing is in the plan
/// (`Plan::blockers` and each point's gaps), so `iommu-trace probes` can always report.
pub fn discover(deny: &[String]) -> Plan {
    let btf = btf::Btf::from_sys_fs().ok();
    let kallsyms = kallsyms::Kallsyms::read().unwrap_or_default();
    Plan::compute(&PlanInputs {
        kernel_release: kernel_release(),
        btf: btf.as_ref(),
        kallsyms: &kallsyms,
        deny,
    })
}
