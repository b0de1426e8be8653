//! Builds the eBPF programs (iommu-trace-ebpf) with aya-build and the nightly toolchain.
//!
//! `IOMMU_TRACE_SKIP_EBPF=1` builds user space alone (for work on the pure-Rust parts on a
//! machine without bpf-linker); such a binary refuses to trace, with an error saying why.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=IOMMU_TRACE_SKIP_EBPF");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    if std::env::var_os("IOMMU_TRACE_SKIP_EBPF").is_some() {
        // An empty object: the loader reports that this build has no eBPF programs.
        std::fs::write(out_dir.join("iommu-trace"), b"")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("iommu-trace-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // aya-build forwards every line the inner cargo prints as a `cargo:warning`, so each
    // "Compiling ..." line would read as a warning; a quiet inner cargo prints only what
    // matters (rustc's own warnings and errors still arrive, as JSON messages).
    std::env::set_var("CARGO_TERM_QUIET", "true");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "iommu-trace-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("building the eBPF programs (needs the nightly toolchain with rust-src and bpf-linker: run `cargo xtask setup`)")
}
