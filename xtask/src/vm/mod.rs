//! The VM harness: a static iommu-trace and the scenarios in an initramfs, a test kernel,
//! QEMU (TCG) with an emulated IOMMU (VT-d on x86_64 q35, SMMUv3 on arm64 virt) and an
//! e1000e for vfio-pci, results back on a raw disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::checks::{self, Outcome};
use crate::kernel::{self, Arch};
use crate::setup;
use crate::util::{cache_dir, run, workspace_root};

mod guest;
mod qemu;

pub(crate) use guest::build_guest_binary;
use guest::{build_initramfs, Extra};
use qemu::{boot, boot_with};

/// The emulated IOMMU of an x86_64 machine (q35 has either; arm64 virt always gets an
/// SMMUv3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Iommu {
    /// `-device intel-iommu` (VT-d).
    Intel,
    /// `-device amd-iommu` (AMD-Vi): plain paging only (docs/kernel-facts.md §9).
    Amd,
}

impl Iommu {
    /// The part of a result folder's and a test's name that says which IOMMU ran: none for
    /// the default one, so that names stay as they were.
    fn tag(self, arch: Arch) -> &'static str {
        match (arch, self) {
            (Arch::X86_64, Iommu::Amd) => "amd",
            _ => "",
        }
    }
}

/// The IOMMUs the x86_64 machines of the matrix run by default: every scenario that uses an
/// emulated IOMMU runs on VT-d and again on QEMU's AMD IOMMU (6.12: io-pgtable v1; 7.x: the
/// generic page table's AMDv1, docs/kernel-facts.md §4.4).
const DEFAULT_X86_IOMMUS: &[Iommu] = &[Iommu::Intel, Iommu::Amd];

/// A scenario: a script under tests/vm/ run as the VM's workload, and its checks.
pub struct Scenario {
    pub name: &'static str,
    /// Give the VM its architecture's emulated IOMMU (VT-d, SMMUv3). Without one, the
    /// iommufd selftest's mock driver is the only IOMMU: in 6.12 a device with no firmware
    /// node is probed with the first registered IOMMU's ops (iommu.c
    /// __iommu_probe_device), so the mock cannot bind next to a real one.
    pub hw_iommu: bool,
    /// On x86_64; arm64 under TCG gets twice as long.
    pub timeout: Duration,
    pub check: fn(&Path, Arch) -> Vec<Outcome>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "exercise",
        hw_iommu: true,
        timeout: Duration::from_secs(900),
        check: checks::exercise,
    },
    Scenario {
        name: "mock",
        hw_iommu: false,
        timeout: Duration::from_secs(600),
        check: checks::mock,
    },
];

/// `cargo xtask bench capture`: the tracer's overhead on the map/unmap loop.
pub const BENCH_CAPTURE: Scenario = Scenario {
    name: "bench-capture",
    hw_iommu: true,
    timeout: Duration::from_secs(1800),
    check: checks::bench_capture,
};

/// `cargo xtask bench system`: what tracing costs memory work with no IOMMU in it.
pub const BENCH_SYSTEM: Scenario = Scenario {
    name: "bench-system",
    hw_iommu: true,
    timeout: Duration::from_secs(1800),
    check: checks::bench_system,
};

/// Runs a benchmark scenario and prints what its check measured. `against`: another build's
/// guest binary (a static iommu-trace of the guest's architecture), whose `record` the
/// capture benchmark runs in every round too, so that a change is measured against what it
/// changed side by side in one boot.
pub fn bench(version: &str, arch: Arch, scenario: &Scenario, against: Option<&Path>) -> Result<()> {
    qemu::bench_size(scenario)?;
    let mut extra = Vec::new();
    if let Some(other) = against {
        if scenario.name != BENCH_CAPTURE.name {
            bail!("--against is for the capture benchmark");
        }
        ensure_static_for(other, arch)?;
        extra.push(Extra::Static(other, "iommu-trace-against"));
    }
    // bpftrace, the tool the capture benchmark compares with: the host's, copied with its
    // libraries, so only into an x86_64 guest on an x86_64 host.
    if checks::bench_has_bpftrace(arch) && scenario.name == BENCH_CAPTURE.name {
        setup::bench_tools()?;
        extra.push(Extra::Program(Path::new("/usr/bin/bpftrace")));
    }
    let (k, initramfs) = prepare(version, arch, None, &extra)?;
    let dir = std::env::temp_dir().join(format!("iommu-trace-bench-{}", std::process::id()));
    let vm = boot(arch, Iommu::Intel, &k.bzimage, &initramfs, scenario, &dir)?;
    let mut failed = 0;
    for o in (scenario.check)(&vm.results, arch) {
        println!(
            "{}: {}{}",
            o.name,
            if o.ok { "" } else { "FAILED " },
            o.detail
        );
        failed += usize::from(!o.ok);
    }
    println!("bench: results in {}", vm.results.display());
    if failed > 0 {
        bail!("the benchmark did not run cleanly");
    }
    Ok(())
}

/// Prepares everything for a boot: set-up, kernel, guest binary, initramfs.
/// The kernel and the initramfs of `arch`; the guest's iommu-trace is the one of `package`
/// (a .deb of `cargo xtask dist`, unpacked as dpkg would install it) when one is given.
/// `extra`: host files the scenario runs.
fn prepare(
    version: &str,
    arch: Arch,
    package: Option<&Path>,
    extra: &[Extra],
) -> Result<(kernel::Kernel, PathBuf)> {
    let target = [(version.to_string(), arch)];
    setup::for_kernels(&target)?;
    // Without root nothing can be installed, only checked: check now, not after a cold
    // kernel build of up to 15 minutes.
    if !setup::nix_is_root() {
        setup::for_guests(&target)?;
    }
    let spec = kernel::spec(version, arch)?;
    // A cold kernel, the longest step of a first run, starts as soon as its tools are
    // there; the rest of the set-up and the guest's binary build beside it: each leaves a
    // core idle at times (downloads, the kernel's link and BTF steps, cargo's last crates
    // and link run alone).
    let (k, binary) = std::thread::scope(|s| {
        let kernel = s.spawn(|| kernel::build(&spec));
        let binary = setup::for_guests(&target).and_then(|()| guest_binary(arch, package));
        (
            kernel.join().expect("the kernel build thread panicked"),
            binary,
        )
    });
    let (k, binary) = match (k, binary) {
        (Ok(k), Ok(b)) => (k, b),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(kernel), Err(guest)) => {
            return Err(guest.context(format!("and the kernel build failed too: {kernel:#}")))
        }
    };
    // One per checkout, so that two checkouts (a CI clone and a work tree) never boot
    // each other's binaries.
    let checkout = crate::util::fnv1a(workspace_root().to_string_lossy().as_bytes());
    let initramfs = cache_dir()
        .join("vm")
        .join(format!("initramfs-{arch}-{checkout:016x}.cpio.gz"));
    std::fs::create_dir_all(initramfs.parent().expect("has parent"))?;
    build_initramfs(arch, &binary, extra, &initramfs)?;
    Ok((k, initramfs))
}

/// `--against`'s binary must run in the guest: a static ELF program of its architecture
/// (what `cargo xtask vm-test` builds: `<target dir>/<arch>-unknown-linux-gnu/release/
/// iommu-trace`). Read from the ELF header: machine at 18, program headers at 32 (offset),
/// 54 (entry size) and 56 (count); a PT_INTERP (3) entry means dynamically linked.
fn ensure_static_for(binary: &Path, arch: Arch) -> Result<()> {
    let elf = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let machine = match arch {
        Arch::X86_64 => 62,
        Arch::Arm64 => 183,
    };
    let is_static = (|| {
        if !elf.starts_with(b"\x7fELF\x02\x01") || u16_at(18)? != machine {
            return Some(false);
        }
        let (off, size, count) = (u64_at(32)? as usize, u16_at(54)? as usize, u16_at(56)?);
        let mut interp = false;
        for i in 0..count as usize {
            // Every program header must be there to tell.
            interp |= u32_at(off.checked_add(i.checked_mul(size)?)?)? == 3;
        }
        Some(!interp)
    })()
    .unwrap_or(false);
    if !is_static {
        bail!(
            "{} is not a static little-endian 64-bit {arch} ELF program: give the guest binary \
             of another checkout, <target dir>/{}/release/iommu-trace",
            binary.display(),
            arch.rust_target()
        );
    }
    Ok(())
}

/// The guest's iommu-trace: unpacked from `package` (as dpkg would install it), or built.
fn guest_binary(arch: Arch, package: Option<&Path>) -> Result<PathBuf> {
    let Some(deb) = package else {
        return build_guest_binary(arch);
    };
    let unpacked = cache_dir().join("vm").join(format!("package-{arch}"));
    let _ = std::fs::remove_dir_all(&unpacked);
    // dpkg-deb makes the last folder only: on a fresh machine the cache has no vm/ yet.
    std::fs::create_dir_all(&unpacked)?;
    crate::util::run(
        std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&unpacked),
    )?;
    eprintln!(
        "vm: the {arch} guest runs the packaged binary of {}",
        deb.display()
    );
    Ok(unpacked.join("usr/bin/iommu-trace"))
}

/// Runs the scenarios on every (kernel, arch) of the matrix that `kernels` and `arches`
/// select (empty: all).
pub fn test(
    kernels: &[String],
    arches: &[Arch],
    iommus: &[Iommu],
    scenarios: &[String],
    out: Option<PathBuf>,
    packages: &[(Arch, PathBuf)],
) -> Result<()> {
    if let Some(bad) = scenarios
        .iter()
        .find(|n| !SCENARIOS.iter().any(|s| &s.name == n))
    {
        bail!(
            "no scenario {bad:?}; the scenarios are {}",
            SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let targets: Vec<(String, Arch)> = if kernels.is_empty() {
        kernel::matrix()
            .into_iter()
            .filter(|(_, a)| arches.is_empty() || arches.contains(a))
            .collect()
    } else {
        let arches = if arches.is_empty() {
            &Arch::ALL[..]
        } else {
            arches
        };
        kernels
            .iter()
            .flat_map(|v| arches.iter().map(move |a| (v.clone(), *a)))
            .collect()
    };
    if targets.is_empty() {
        bail!("no kernel of the matrix runs on the architectures asked for");
    }
    let out = out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("iommu-trace-vm-{}", std::process::id()))
    });
    let (mut passed, mut failed) = (0, 0);
    let matrix_started = Instant::now();
    for (version, arch) in &targets {
        let arch = *arch;
        let kernel_started = Instant::now();
        let package = packages
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, p)| p.as_path());
        let (k, initramfs) = prepare(version, arch, package, &[])?;
        eprintln!(
            "vm-test: {version} {arch} kernel and initramfs ready in {:.0?}",
            kernel_started.elapsed()
        );
        // arm64 has one IOMMU; a scenario without one (mock) runs once.
        let iommus: Vec<Iommu> = match (arch, iommus) {
            (Arch::Arm64, _) => vec![Iommu::Intel],
            (Arch::X86_64, []) => DEFAULT_X86_IOMMUS.to_vec(),
            (Arch::X86_64, asked) => asked.to_vec(),
        };
        let runs = SCENARIOS
            .iter()
            .filter(|s| scenarios.is_empty() || scenarios.iter().any(|n| n == s.name))
            .flat_map(|s| {
                let n = if s.hw_iommu { iommus.len() } else { 1 };
                iommus[..n].iter().map(move |i| (s, *i))
            });
        for (scenario, iommu) in runs {
            let tag = iommu.tag(arch);
            let (dir_tag, name_tag) = if tag.is_empty() {
                (String::new(), String::new())
            } else {
                (format!("{tag}-"), format!("{tag}::"))
            };
            let dir = out.join(format!("{version}-{arch}-{dir_tag}{}", scenario.name));
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("vm-test: {version} {arch} {dir_tag}{} ...", scenario.name);
            let outcomes = match boot(arch, iommu, &k.bzimage, &initramfs, scenario, &dir) {
                Ok(vm) => {
                    eprintln!(
                        "vm-test: {version} {arch} {dir_tag}{} ran in {:.1?}",
                        scenario.name, vm.elapsed
                    );
                    (scenario.check)(&vm.results, arch)
                }
                Err(e) => vec![Outcome::fail("boot", format!("{e:#}"))],
            };
            for o in outcomes {
                let mark = if o.ok { "ok" } else { "FAILED" };
                println!(
                    "test vm::{version}::{arch}::{name_tag}{}::{} ... {mark}",
                    scenario.name, o.name
                );
                if !o.ok {
                    println!("    {}", o.detail.replace('\n', "\n    "));
                    failed += 1;
                } else {
                    passed += 1;
                }
            }
            println!("vm-test: results in {}", dir.display());
        }
    }
    eprintln!(
        "vm-test: the matrix ran in {:.0?}",
        matrix_started.elapsed()
    );
    println!("vm-test: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} VM checks failed");
    }
    Ok(())
}

/// The demo on this host, which has iommufd: record while the exercise runs.
fn host_demo() -> Result<()> {
    setup::run(false)?;
    let root = workspace_root();
    run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "iommu-trace",
    ]))?;
    let bin = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/iommu-trace");
    let dir = std::env::temp_dir().join(format!("iommu-trace-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let capture = dir.join("demo.itc");
    let ready = dir.join("ready");
    let mut rec = Command::new(&bin)
        .arg("record")
        .arg("-o")
        .arg(&capture)
        .arg("--ready-file")
        .arg(&ready)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if let Some(status) = rec.try_wait()? {
            bail!("the recorder stopped before it was ready ({status})");
        }
        if Instant::now() > deadline {
            let _ = rec.kill();
            bail!("the recorder did not attach within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exercise = Command::new(&bin)
        .arg("exercise")
        .arg("-o")
        .arg(dir.join("exercise.json"))
        .status()?;
    if !exercise.success() {
        eprintln!("demo: the exercise workload failed ({exercise}); the capture still shows what happened");
    }
    // SIGINT, as Ctrl-C would: the recorder finalizes the file.
    run(Command::new("kill").arg("-INT").arg(rec.id().to_string()))?;
    rec.wait()?;
    run(Command::new(&bin)
        .arg("inspect")
        .arg(&capture)
        .arg("--summary"))?;
    println!(
        "demo: capture and the workload's report are in {}",
        dir.display()
    );
    Ok(())
}

/// `iommu-trace top` live in the VM over the exercise workload, on this terminal.
pub fn top_demo(version: &str, arch: Arch) -> Result<()> {
    let size = crate::util::output(Command::new("stty").arg("size").stdin(Stdio::inherit()))
        .context("`demo --top` needs a terminal (stty size failed)")?;
    let mut it = size
        .split_whitespace()
        .filter_map(|n| n.parse::<u32>().ok());
    let (rows, cols) = (it.next().unwrap_or(24), it.next().unwrap_or(80));
    let (k, initramfs) = prepare(version, arch, None, &[])?;
    let scenario = Scenario {
        name: "top-demo",
        hw_iommu: true,
        timeout: Duration::from_secs(3600),
        check: |_, _| Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!("iommu-trace-demo-{}", std::process::id()));
    eprintln!(
        "demo: booting {version} in QEMU (TCG); `iommu-trace top` starts in about 30 s; q quits"
    );
    boot_with(
        arch,
        Iommu::Intel,
        &k.bzimage,
        &initramfs,
        &scenario,
        &dir,
        Some((rows, cols)),
    )?;
    Ok(())
}

pub fn demo(version: &str, arch: Arch) -> Result<()> {
    if arch == Arch::host() && Path::new("/dev/iommu").exists() {
        eprintln!("demo: this host has iommufd (/dev/iommu): tracing it directly");
        return host_demo();
    }
    eprintln!("demo: this host has no iommufd (/dev/iommu): using a test kernel in QEMU");
    let (k, initramfs) = prepare(version, arch, None, &[])?;
    // The exercise workload recorded, summarized and replayed, without the test scenario's
    // checks: tests/vm/demo.sh.
    let scenario = &Scenario {
        name: "demo",
        hw_iommu: true,
        timeout: Duration::from_secs(900),
        check: |_, _| Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!("iommu-trace-demo-{}", std::process::id()));
    eprintln!(
        "demo: booting {version} {arch} in QEMU (TCG) with an emulated {}; recording the \
         exercise workload",
        match arch {
            Arch::X86_64 => "VT-d",
            Arch::Arm64 => "SMMUv3",
        }
    );
    let vm = boot(arch, Iommu::Intel, &k.bzimage, &initramfs, scenario, &dir)?;
    let summary = std::fs::read_to_string(vm.results.join("summary.txt")).with_context(|| {
        format!(
            "the VM produced no summary; console: {}",
            vm.console.display()
        )
    })?;
    println!("{summary}");
    // The replay the scenario ran: each domain's verdict against the reference model.
    let replay = std::fs::read_to_string(vm.results.join("replay.txt")).unwrap_or_default();
    for line in replay.lines().filter(|l| {
        l.starts_with("replayed") || l.starts_with("domain ") || l.starts_with("result:")
    }) {
        println!("{line}");
    }
    println!(
        "\ndemo: capture, JSONL, the replay and the workload's own report are in {}",
        vm.results.display()
    );
    Ok(())
}

// The binary's `--version` lists the matrix from this file: the one the harness runs.
#[cfg(test)]
#[path = "../../../iommu-trace/src/tested.rs"]
mod tested;

#[cfg(test)]
mod tests {
    use super::{ensure_static_for, tested, Iommu, DEFAULT_X86_IOMMUS};
    use crate::kernel::{Arch, MATRIX};

    /// A 64-byte ELF64 header for `machine` and one program header of type `ptype`.
    fn elf(machine: u16, ptype: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ptype.to_le_bytes());
        b
    }

    #[test]
    fn against_takes_only_a_static_program_of_the_guests_arch() {
        let dir = std::env::temp_dir().join(format!("against-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |bytes: Vec<u8>, arch: Arch| {
            let p = dir.join("bin");
            std::fs::write(&p, bytes).unwrap();
            ensure_static_for(&p, arch).is_ok()
        };
        // PT_LOAD (1) only: static. PT_INTERP (3): dynamically linked.
        assert!(check(elf(62, 1), Arch::X86_64));
        assert!(check(elf(183, 1), Arch::Arm64));
        assert!(!check(elf(62, 3), Arch::X86_64));
        assert!(!check(elf(183, 1), Arch::X86_64));
        assert!(!check(b"#!/bin/sh\n".to_vec(), Arch::X86_64));
        // Program headers past the end of the file: not taken for static.
        let mut cut = elf(62, 1);
        cut.truncate(66);
        assert!(!check(cut, Arch::X86_64));
        assert!(ensure_static_for(&dir.join("missing"), Arch::X86_64).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        // Only the capture benchmark runs another build: refused before any set-up or build.
        let err = super::bench("6.12", Arch::X86_64, &super::BENCH_SYSTEM, Some(&dir));
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("--against is for the capture"));
    }

    fn iommu_name(i: Iommu) -> &'static str {
        match i {
            Iommu::Intel => "Intel VT-d",
            Iommu::Amd => "AMD-Vi",
        }
    }

    #[test]
    fn the_binary_names_the_matrix_the_harness_runs() {
        let ran: Vec<(String, Vec<&str>)> = MATRIX
            .iter()
            .map(|(v, arch)| {
                let iommus = match arch {
                    Arch::X86_64 => DEFAULT_X86_IOMMUS.iter().map(|i| iommu_name(*i)).collect(),
                    Arch::Arm64 => vec!["Arm SMMUv3"],
                };
                (format!("{v} {arch}"), iommus)
            })
            .collect();
        let printed: Vec<(String, Vec<&str>)> = tested::TESTED_KERNELS
            .iter()
            .map(|k| (format!("{} {}", k.version, k.arch), k.iommus.to_vec()))
            .collect();
        assert_eq!(printed, ran);
    }
}
