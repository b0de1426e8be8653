//! Developer tasks: toolchain set-up, test kernels, the VM harness, the demo, benchmarks.
//!
//! `cargo xtask setup` installs what a fresh machine lacks; `cargo xtask vm-test` boots the
//! test kernels in QEMU and runs every VM scenario; `cargo xtask demo` shows the tool live.

mod boundaries;
mod checks;
mod dist;
mod kernel;
mod prometheus;
mod setup;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "iommu-trace developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install toolchains and packages this project needs (idempotent, fast when done).
    Setup {
        /// Also install what the VM harness needs (QEMU, kernel build tools, sources).
        #[arg(long)]
        vm: bool,
    },
    /// Build (or reuse from the cache) a test kernel; prints its image's path.
    BuildKernel {
        #[arg(long, default_value = "6.12")]
        kernel: String,
        #[arg(long, value_enum, default_value_t = kernel::Arch::host())]
        arch: kernel::Arch,
        /// Every kernel of the VM matrix instead (warms the cache before a CI run).
        #[arg(long, conflicts_with_all = ["kernel", "arch"])]
        all: bool,
    },
    /// Run every VM scenario on the test kernels; each scenario is a pass/fail test.
    VmTest {
        /// Kernel versions to run (default: all in the matrix).
        #[arg(long)]
        kernel: Vec<String>,
        /// Architectures to run (default: all in the matrix).
        #[arg(long, value_enum)]
        arch: Vec<kernel::Arch>,
        /// The x86_64 machines' emulated IOMMUs, each a run of the scenarios that use one
        /// (default: intel; arm64 always runs its SMMUv3).
        #[arg(long, value_enum)]
        iommu: Vec<vm::Iommu>,
        /// Scenarios to run (default: all).
        #[arg(long)]
        scenario: Vec<String>,
        /// Keep the results here instead of a temporary folder.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// The whole test suite: format, lints, import boundaries, unit tests, the packages
    /// (built, linted, installed here), then every VM scenario (booting the packaged binary).
    Test,
    /// Build the Debian packages (x86_64 and arm64) into target/dist/ and run lintian.
    Dist {
        /// Only these architectures (default: both).
        #[arg(long, value_enum)]
        arch: Vec<kernel::Arch>,
        /// Then install the host's package here, use it and purge it (as `test` does).
        #[arg(long)]
        install_test: bool,
    },
    /// Only the import-boundary check (part of `test`): docs/ARCHITECTURE.md's rules.
    Boundaries,
    /// Only the exporter's end-to-end test against a real Prometheus (part of `test`).
    ExporterTest,
    /// Only the fuzz run (part of `test`, 60 s there): mutated captures through the
    /// reader, inspect and replay, optimized with overflow checks on.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Benchmarks: `capture` (tracer overhead on the map/unmap loop in the VM, against the
    /// floor, `serve` and bpftrace), `system` (what tracing costs memory work with no IOMMU
    /// in it), `replay` (model speed vs decode), `exporter` (scrape latency under load).
    Bench {
        what: String,
        #[arg(long, default_value = "6.12")]
        kernel: String,
        #[arg(long, value_enum, default_value_t = kernel::Arch::host())]
        arch: kernel::Arch,
        /// `capture`: also run `record` of another build in every round (its static guest
        /// binary, `<target dir>/<arch>-unknown-linux-gnu/release/iommu-trace`), to measure a
        /// change against what it changed in one boot.
        #[arg(long)]
        against: Option<std::path::PathBuf>,
    },
    /// Record the exercise workload and print its summary: on this host when it has
    /// iommufd, else in a QEMU VM running the test kernel.
    Demo {
        #[arg(long, default_value = "6.12")]
        kernel: String,
        /// The VM's architecture (arm64: QEMU virt with an SMMUv3).
        #[arg(long, value_enum, default_value_t = kernel::Arch::host())]
        arch: kernel::Arch,
        /// Show `iommu-trace top` live in the VM over the workload, on this terminal.
        #[arg(long)]
        top: bool,
    },
}

/// Format, lints, unit tests, VM tests: what CI runs.
fn test() -> Result<()> {
    use std::process::Command;
    setup::run(true)?;
    // Cold test kernels build while the steps before the VM tests run (at a lower
    // priority: they take the CPU those steps leave idle). Warm, this returns at once.
    let kernels = std::thread::spawn(|| -> Result<()> {
        for (version, arch) in kernel::MATRIX {
            kernel::build(&kernel::spec(version, *arch)?)?;
        }
        Ok(())
    });
    let cargo = env!("CARGO");
    let root = util::workspace_root();
    util::run(
        Command::new(cargo)
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;
    boundaries::run(&root)?;
    util::run(Command::new(cargo).current_dir(&root).args([
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    util::run(Command::new(cargo).current_dir(&root).args(["test"]))?;
    fuzz(&root, 60)?;
    exporter_test(&root)?;
    let packages = package_test()?;
    kernels
        .join()
        .map_err(|_| anyhow::anyhow!("the kernel build thread panicked"))??;
    vm::test(&[], &[], &[], &[], None, &packages)
}

/// The packages of every architecture, linted; the host's installed, used and purged. The
/// VM tests then boot the packaged binaries.
fn package_test() -> Result<Vec<(kernel::Arch, std::path::PathBuf)>> {
    setup::packaging()?;
    let debs = dist::build(&kernel::Arch::ALL)?;
    dist::lint(&debs)?;
    let host = debs
        .iter()
        .find(|(a, _)| *a == kernel::Arch::host())
        .map(|(_, p)| p.clone())
        .expect("the host's architecture is built");
    let checks = dist::install_test(&host)?;
    let failed = checks.iter().filter(|(_, r)| r.is_err()).count();
    for (name, r) in &checks {
        match r {
            Ok(()) => println!("test package::{name} ... ok"),
            Err(e) => println!("test package::{name} ... FAILED\n    {e}"),
        }
    }
    println!("package: {} passed, {failed} failed", checks.len() - failed);
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} package checks failed",
        checks.len()
    );
    Ok(debs)
}

fn target_dir(root: &std::path::Path) -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// iommu-trace/tests/fuzz.rs for `seconds`, built with the `fuzz` profile (optimized,
/// overflow checks on) and without the eBPF programs (it never traces).
fn fuzz(root: &std::path::Path, seconds: u64) -> Result<()> {
    util::run(
        std::process::Command::new(env!("CARGO"))
            .current_dir(root)
            .args([
                "test",
                "--profile",
                "fuzz",
                "-p",
                "iommu-trace",
                "--test",
                "fuzz",
            ])
            .env("IOMMU_TRACE_FUZZ_SECONDS", seconds.to_string())
            .env("IOMMU_TRACE_SKIP_EBPF", "1"),
    )
}

/// The exporter against a real Prometheus (dashboards/ expressions and rules, promtool),
/// serving a golden capture of real page tables, then one of pinned memory and its
/// refusals; uses the binary `cargo test` just built.
fn exporter_test(root: &std::path::Path) -> Result<()> {
    let bin = target_dir(root).join("debug/iommu-trace");
    let mut checks = Vec::new();
    for (i, name) in ["6.12-vtd-exercise.itc", "7.3-mock-pins.itc"]
        .iter()
        .enumerate()
    {
        let capture = root.join("tests/golden").join(name);
        for (check, ok, detail) in prometheus::test(&bin, &capture)? {
            let check = if i == 0 {
                check
            } else {
                format!("{name}: {check}")
            };
            checks.push((check, ok, detail));
        }
    }
    let failed = checks.iter().filter(|c| !c.1).count();
    for (name, ok, detail) in &checks {
        println!(
            "test exporter::{name} ... {}",
            if *ok { "ok" } else { "FAILED" }
        );
        if !ok {
            println!("    {detail}");
        }
    }
    println!(
        "exporter: {} passed, {failed} failed",
        checks.len() - failed
    );
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} exporter checks failed",
        checks.len()
    );
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup { vm } => setup::run(vm),
        Cmd::BuildKernel { kernel, arch, all } => {
            let targets = if all {
                kernel::matrix()
            } else {
                vec![(kernel, arch)]
            };
            setup::for_kernels(&targets)?;
            for (version, arch) in targets {
                let started = std::time::Instant::now();
                let k = kernel::build(&kernel::spec(&version, arch)?)?;
                eprintln!(
                    "kernel: {version} {arch} ready in {:.0?}",
                    started.elapsed()
                );
                println!("{}", k.bzimage.display());
            }
            Ok(())
        }
        Cmd::VmTest {
            kernel,
            arch,
            iommu,
            scenario,
            out,
        } => vm::test(&kernel, &arch, &iommu, &scenario, out, &[]),
        Cmd::Dist {
            install_test: true, ..
        } => package_test().map(|_| ()),
        Cmd::Dist { arch, .. } => {
            setup::run(true)?;
            setup::packaging()?;
            let arches = if arch.is_empty() {
                kernel::Arch::ALL.to_vec()
            } else {
                arch
            };
            let debs = dist::build(&arches)?;
            dist::lint(&debs)?;
            for (_, deb) in debs {
                println!("{}", deb.display());
            }
            Ok(())
        }
        Cmd::Test => test(),
        Cmd::Boundaries => boundaries::run(&util::workspace_root()),
        Cmd::Fuzz { seconds } => fuzz(&util::workspace_root(), seconds),
        Cmd::ExporterTest => {
            setup::run(true)?;
            let root = util::workspace_root();
            util::run(
                std::process::Command::new(env!("CARGO"))
                    .current_dir(&root)
                    .args(["build", "-p", "iommu-trace"]),
            )?;
            exporter_test(&root)
        }
        Cmd::Bench {
            what,
            kernel,
            arch,
            against,
        } => {
            match what.as_str() {
                "capture" => vm::bench(&kernel, arch, &vm::BENCH_CAPTURE, against.as_deref()),
                "system" => vm::bench(&kernel, arch, &vm::BENCH_SYSTEM, against.as_deref()),
                // Pure user space: no eBPF object needed, so none is built.
                "replay" => util::run(
                    std::process::Command::new(env!("CARGO"))
                        .current_dir(util::workspace_root())
                        .args(["bench", "-p", "iommu-trace", "--bench", "replay"])
                        .env("IOMMU_TRACE_SKIP_EBPF", "1"),
                ),
                // Scrape latency under load: wrk against /metrics while a capture is fed.
                "exporter" => {
                    let root = util::workspace_root();
                    util::run(
                        std::process::Command::new(env!("CARGO"))
                            .current_dir(&root)
                            .args(["build", "--release", "-p", "iommu-trace"]),
                    )?;
                    let bin = target_dir(&root).join("release/iommu-trace");
                    let capture = root.join("tests/golden/6.12-vtd-exercise.itc");
                    println!("{}", prometheus::load(&bin, &capture, 10, 50_000)?);
                    Ok(())
                }
                other => {
                    anyhow::bail!(
                        "unknown benchmark {other:?}: try capture, system, replay, exporter"
                    )
                }
            }
        }
        Cmd::Demo {
            kernel,
            arch,
            top: true,
        } => vm::top_demo(&kernel, arch),
        Cmd::Demo {
            kernel,
            arch,
            top: false,
        } => vm::demo(&kernel, arch),
    }
}
