//! What to attach on this kernel: BTF + kallsyms discovery -> a probe plan -> load/attach.
//! The plan and what the kernel refused are [`crate::session`] types: this module is their
//! only producer.

pub mod btf;
mod config;
mod features;
pub mod kallsyms;
mod load;
pub mod plan;
pub mod privileges;
mod stats;
mod tables;

pub use config::ebpf_config;
pub use features::detect_features;
pub use load::{LoadError, Tracer, TracerOptions};
pub use plan::{compute, PlanInputs};
pub use stats::RunStats;

use crate::session::{running_kernel_release, Plan};

/// Where the kernel description comes from: the running kernel by default, or files saved
/// from another kernel (`probes --btf FILE --kallsyms FILE`: what would attach there?).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub btf: Option<std::path::PathBuf>,
    pub kallsyms: Option<std::path::PathBuf>,
}

/// Larger than any vmlinux BTF (a distribution kernel's is about 6 MiB).
const MAX_BTF_BYTES: u64 = 256 << 20;
/// Larger than any /proc/kallsyms (about 200,000 lines, 10 MiB, on a distribution kernel).
const MAX_KALLSYMS_BYTES: u64 = 256 << 20;

/// A kernel description given as a file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("--btf {path}: {source}. Give a copy of /sys/kernel/btf/vmlinux from the kernel to plan for.")]
    Btf {
        path: String,
        #[source]
        source: btf::BtfError,
    },
    #[error("--kallsyms {path}: cannot read it: {source}. Give a copy of /proc/kallsyms (read as root) from the kernel to plan for.")]
    KallsymsUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--kallsyms {path}: no function symbols in it (expected lines like `ffffffff81000000 T iommu_map`). Give a copy of /proc/kallsyms from the kernel to plan for.")]
    KallsymsEmpty { path: String },
}

/// Computes the plan. For the running kernel it never fails: what is missing is in the plan
/// (`Plan::blockers` and each point's gaps), so `iommu-trace probes` can always report. A
/// file given in `sources` that cannot be read or parsed is an error naming it.
pub fn discover(deny: &[String], sources: &Sources) -> Result<Plan, SourceError> {
    let btf = match &sources.btf {
        Some(p) => {
            let path = p.to_string_lossy().to_string();
            let parsed = crate::files::read_regular(p, MAX_BTF_BYTES)
                .map_err(|source| btf::BtfError::Io {
                    path: path.clone(),
                    source,
                })
                .and_then(|data| btf::Btf::parse(&data));
            Some(parsed.map_err(|source| SourceError::Btf { path, source })?)
        }
        None => btf::Btf::from_sys_fs().ok(),
    };
    let kallsyms = match &sources.kallsyms {
        Some(p) => {
            let path = p.display().to_string();
            let data = crate::files::read_regular(p, MAX_KALLSYMS_BYTES).map_err(|source| {
                SourceError::KallsymsUnreadable {
                    path: path.clone(),
                    source,
                }
            })?;
            let k = kallsyms::Kallsyms::parse(&String::from_utf8_lossy(&data));
            if k.is_empty() {
                return Err(SourceError::KallsymsEmpty { path });
            }
            k
        }
        None => kallsyms::Kallsyms::read().unwrap_or_default(),
    };
    let release = if sources.btf.is_some() || sources.kallsyms.is_some() {
        "(another kernel, from the files given)".to_string()
    } else {
        running_kernel_release()
    };
    Ok(compute(&PlanInputs {
        kernel_release: release,
        btf: btf.as_ref(),
        kallsyms: &kallsyms,
        deny,
    }))
}
