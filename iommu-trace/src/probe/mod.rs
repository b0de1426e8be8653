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

/// Where the kernel description comes from: the running kernel by default, or files saved
/// from another kernel (`probes --btf FILE --kallsyms FILE`: what would attach there?).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub btf: Option<std::path::PathBuf>,
    pub kallsyms: Option<std::path::PathBuf>,
}

/// Computes the plan. Never fails: what is missing is in the plan (`Plan::blockers` and each
/// point's gaps), so `iommu-trace probes` can always report.
pub fn discover(deny: &[String], sources: &Sources) -> Plan {
    let btf = match &sources.btf {
        Some(p) => btf::Btf::from_file(&p.to_string_lossy()).ok(),
        None => btf::Btf::from_sys_fs().ok(),
    };
    let kallsyms = match &sources.kallsyms {
        Some(p) => std::fs::read_to_string(p)
            .map(|t| kallsyms::Kallsyms::parse(&t))
            .unwrap_or_default(),
        None => kallsyms::Kallsyms::read().unwrap_or_default(),
    };
    let release = if sources.btf.is_some() || sources.kallsyms.is_some() {
        "(another kernel, from the files given)".to_string()
    } else {
        kernel_release()
    };
    Plan::compute(&PlanInputs {
        kernel_release: release,
        btf: btf.as_ref(),
        kallsyms: &kallsyms,
        deny,
    })
}
