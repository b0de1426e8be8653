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

/// Runs a benchmark scenario and prints what its check measured.
pub fn bench(version: &str, arch: Arch, scenario: &Scenario) -> Result<()> {
    let (k, initramfs) = prepare(version, arch)?;
    let dir = std::env::temp_dir().join(format!("iommu-trace-bench-{}", std::process::id()));
    let vm = boot(arch, &k.bzimage, &initramfs, scenario, &dir)?;
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

/// Builds the static iommu-trace for the guest (cross-built for arm64 with Debian's
/// gcc-aarch64-linux-gnu as the linker; the eBPF object follows the target: aya-build
/// passes `bpf_target_arch` from it, which selects the `pt_regs` layout).
fn build_guest_binary(arch: Arch) -> Result<PathBuf> {
    let root = workspace_root();
    let target = arch.rust_target();
    let env_target = target.to_uppercase().replace('-', "_");
    eprintln!("vm: building a static iommu-trace for the {arch} guest");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "iommu-trace",
            "--target",
            target,
        ])
        // Only the target's artifacts get +crt-static; build scripts and the nested eBPF
        // build are unaffected.
        .env(
            format!("CARGO_TARGET_{env_target}_RUSTFLAGS"),
            "-C target-feature=+crt-static",
        );
    if let Some(prefix) = arch.cross_prefix() {
        cargo.env(
            format!("CARGO_TARGET_{env_target}_LINKER"),
            format!("{prefix}gcc"),
        );
    }
    run(&mut cargo)?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target_dir.join(target).join("release/iommu-trace"))
}

/// Copies a dynamically linked program and the shared libraries `ldd` lists for it into the
/// initramfs at the same paths.
fn copy_with_libs(program: &Path, stage: &Path) -> Result<()> {
    let ldd = crate::util::output(Command::new("ldd").arg(program)).with_context(|| {
        format!(
            "ldd {} (`cargo xtask setup --vm` installs it)",
            program.display()
        )
    })?;
    let libs = ldd
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from);
    for file in std::iter::once(program.to_path_buf()).chain(libs) {
        let dest = stage.join(file.strip_prefix("/").expect("absolute path"));
        std::fs::create_dir_all(dest.parent().expect("has parent"))?;
        std::fs::copy(&file, &dest).with_context(|| format!("copying {}", file.display()))?;
    }
    Ok(())
}

/// Copies the guest-architecture programs the initramfs needs: busybox, and Prometheus with
/// its libraries. The host's own for x86_64; for arm64, Debian's arm64 packages unpacked by
/// `setup` and the C library of Debian's cross toolchain.
fn copy_guest_programs(arch: Arch, stage: &Path) -> Result<()> {
    if arch == Arch::host() {
        std::fs::copy("/bin/busybox", stage.join("bin/busybox"))
            .context("copying /bin/busybox (Debian's busybox-static; `cargo xtask setup --vm`)")?;
        // A real Prometheus in the guest scrapes the live exporter (Debian's `prometheus`).
        return copy_with_libs(Path::new("/usr/bin/prometheus"), stage);
    }
    let root = setup::guest_root(arch);
    let sysroot = Path::new("/usr").join(arch.gnu_triple()).join("lib");
    let files = [
        (root.join("bin/busybox"), "bin/busybox"),
        (root.join("usr/bin/prometheus"), "usr/bin/prometheus"),
        // Prometheus needs only the C library (readelf -d: NEEDED libc.so.6).
        (sysroot.join("libc.so.6"), "lib/libc.so.6"),
        (
            sysroot.join(arch.dynamic_loader()),
            &format!("lib/{}", arch.dynamic_loader()),
        ),
    ];
    for (from, to) in files {
        let dest = stage.join(to);
        std::fs::create_dir_all(dest.parent().expect("has parent"))?;
        std::fs::copy(&from, &dest).with_context(|| {
            format!(
                "copying {} (`cargo xtask setup --vm` installs it)",
                from.display()
            )
        })?;
    }
    Ok(())
}

/// Writes the initramfs: busybox, iommu-trace, /init and the scenarios.
fn build_initramfs(arch: Arch, binary: &Path, out: &Path) -> Result<()> {
    let stage = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "tmp", "scenarios", "etc"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    copy_guest_programs(arch, &stage)?;
    run(
        Command::new(format!("{}strip", arch.cross_prefix().unwrap_or_default()))
            .arg("--strip-debug")
            .arg("-o")
            .arg(stage.join("bin/iommu-trace"))
            .arg(binary),
    )?;
    let vm_dir = workspace_root().join("tests/vm");
    std::fs::copy(vm_dir.join("init"), stage.join("init"))?;
    for entry in std::fs::read_dir(&vm_dir)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "sh") {
            std::fs::copy(
                &p,
                stage.join("scenarios").join(p.file_name().expect("file")),
            )?;
        }
    }
    std::fs::write(
        stage.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(stage.join("init"), std::fs::Permissions::from_mode(0o755))?;
    run(Command::new("sh")
        .current_dir(&stage)
        .arg("-c")
        .arg(format!(
            "find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            out.display()
        )))?;
    Ok(())
}

pub struct VmRun {
    pub results: PathBuf,
    pub console: PathBuf,
    pub elapsed: Duration,
}

/// Boots `bzimage` with `initramfs`, runs `scenario`, and unpacks its results into `out`.
pub fn boot(
    arch: Arch,
    bzimage: &Path,
    initramfs: &Path,
    scenario: &Scenario,
    out: &Path,
) -> Result<VmRun> {
    boot_with(arch, bzimage, initramfs, scenario, out, None)
}

/// The QEMU machine of each architecture, with or without its emulated IOMMU, and the
/// kernel command line that goes with it.
fn qemu_machine(arch: Arch, hw_iommu: bool) -> (Command, &'static str) {
    match arch {
        Arch::X86_64 => {
            let mut qemu = Command::new("qemu-system-x86_64");
            qemu.args(["-machine", "q35,kernel-irqchip=split", "-cpu", "max"]);
            if hw_iommu {
                // The emulated VT-d comes first so that it translates the devices after it.
                qemu.args(["-device", "intel-iommu,intremap=on,caching-mode=on"]);
            }
            // Periodic ticks and the local APIC's own timer: under TCG an idle vCPU on the
            // TSC-deadline timer was seen to miss its wakeups (RCU stall reports).
            let cmdline = if hw_iommu {
                "console=ttyS0 lapic=notscdeadline nohz=off intel_iommu=on"
            } else {
                "console=ttyS0 lapic=notscdeadline nohz=off"
            };
            (qemu, cmdline)
        }
        Arch::Arm64 => {
            let mut qemu = Command::new("qemu-system-aarch64");
            // An SMMUv3 with both stages ("nested"): the driver then offers stage-1 domains
            // and, for IOMMU_HWPT_ALLOC_NEST_PARENT, stage-2 ones (ARM_SMMU_FEAT_NESTING).
            // cortex-a72: no pointer authentication to emulate, much faster under TCG.
            let machine = if hw_iommu {
                "virt,gic-version=3,iommu=smmuv3"
            } else {
                "virt,gic-version=3"
            };
            qemu.args(["-machine", machine, "-cpu", "cortex-a72"]);
            if hw_iommu {
                qemu.args(["-global", "arm-smmuv3.stage=nested"]);
            }
            (qemu, "console=ttyAMA0")
        }
    }
}

/// QEMU itself died on a signal (an assertion inside the emulator), not the guest.
#[derive(Debug)]
struct QemuCrashed(String);

impl std::fmt::Display for QemuCrashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QemuCrashed {}

/// `interactive`: the serial console is this terminal (rows, cols) instead of a file.
///
/// A QEMU crash is retried once, loudly: multi-threaded TCG with an emulated IOMMU was seen
/// to abort on an internal assertion (`iotlb_to_section: section_index <
/// d->map.sections_nb`, system/physmem.c, QEMU 10.0) once in about 25 boots, which says
/// nothing about the kernel or the tool. A second crash fails the scenario.
fn boot_with(
    arch: Arch,
    bzimage: &Path,
    initramfs: &Path,
    scenario: &Scenario,
    out: &Path,
    interactive: Option<(u32, u32)>,
) -> Result<VmRun> {
    match boot_once(arch, bzimage, initramfs, scenario, out, interactive) {
        Err(e) if interactive.is_none() && e.downcast_ref::<QemuCrashed>().is_some() => {
            eprintln!(
                "vm: {e:#}\nvm: QEMU itself crashed; booting {} once more",
                scenario.name
            );
            boot_once(arch, bzimage, initramfs, scenario, out, interactive)
        }
        other => other,
    }
}

fn boot_once(
    arch: Arch,
    bzimage: &Path,
    initramfs: &Path,
    scenario: &Scenario,
    out: &Path,
    interactive: Option<(u32, u32)>,
) -> Result<VmRun> {
    std::fs::create_dir_all(out)?;
    let qemu_log = out.join("qemu.log");
    let disk = out.join("results.img");
    let console = out.join("console.log");
    std::fs::File::create(&disk)?.set_len(256 << 20)?;
    let timeout = match arch {
        Arch::X86_64 => scenario.timeout,
        Arch::Arm64 => scenario.timeout * 2,
    };
    let started = Instant::now();
    let (mut qemu, cmdline) = qemu_machine(arch, scenario.hw_iommu);
    let program = qemu.get_program().to_string_lossy().into_owned();
    qemu.args(["-accel", "tcg"]).args([
        "-smp",
        "2",
        "-m",
        "2048",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ]);
    let mut child = qemu
        .args(["-device", "e1000e"])
        // The results disk on virtio-mmio (arm64) or virtio-pci (x86_64): not a device the
        // workload's domains translate.
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=results",
            disk.display()
        ))
        .args([
            "-device",
            match arch {
                Arch::X86_64 => "virtio-blk-pci,drive=results",
                Arch::Arm64 => "virtio-blk-device,drive=results",
            },
        ])
        // Interactive: keys (Ctrl-C too) go to the guest, not to QEMU.
        .args(match interactive {
            Some(_) => vec![
                "-chardev".to_string(),
                "stdio,id=console,signal=off".to_string(),
                "-serial".to_string(),
                "chardev:console".to_string(),
            ],
            None => vec!["-serial".to_string(), format!("file:{}", console.display())],
        })
        .arg("-kernel")
        .arg(bzimage)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "{cmdline} panic=-1 loglevel=4 scenario={}{}",
            scenario.name,
            match interactive {
                Some((rows, cols)) => format!(" rows={rows} cols={cols} quiet"),
                None => String::new(),
            }
        ))
        .stdin(if interactive.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stderr(match interactive {
            Some(_) => Stdio::inherit(),
            None => std::fs::File::create(&qemu_log)?.into(),
        })
        .spawn()
        .with_context(|| format!("starting {program} (`cargo xtask setup --vm` installs it)"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let said = std::fs::read_to_string(&qemu_log).unwrap_or_default();
                let msg = format!(
                    "QEMU failed ({status}): {}; console: {}",
                    said.lines()
                        .filter(|l| !l.contains("has no peer"))
                        .collect::<Vec<_>>()
                        .join(" | "),
                    console.display()
                );
                use std::os::unix::process::ExitStatusExt;
                if status.signal().is_some() {
                    return Err(QemuCrashed(msg).into());
                }
                bail!(msg);
            }
            break;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "scenario {} did not finish within {:?}; console: {}",
                scenario.name,
                timeout,
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let elapsed = started.elapsed();
    run(Command::new("tar").arg("-xf").arg(&disk).arg("-C").arg(out))
        .with_context(|| format!("the VM wrote no results; console: {}", console.display()))?;
    let _ = std::fs::remove_file(&disk);
    Ok(VmRun {
        results: out.join("results"),
        console,
        elapsed,
    })
}

/// Prepares everything for a boot: set-up, kernel, guest binary, initramfs.
fn prepare(version: &str, arch: Arch) -> Result<(kernel::Kernel, PathBuf)> {
    setup::run(true)?;
    let k = kernel::build(&kernel::spec(version, arch)?)?;
    let binary = build_guest_binary(arch)?;
    // One per checkout, so that two checkouts (a CI clone and a work tree) never boot
    // each other's binaries.
    let checkout = crate::util::fnv1a(workspace_root().to_string_lossy().as_bytes());
    let initramfs = cache_dir()
        .join("vm")
        .join(format!("initramfs-{arch}-{checkout:016x}.cpio.gz"));
    std::fs::create_dir_all(initramfs.parent().expect("has parent"))?;
    build_initramfs(arch, &binary, &initramfs)?;
    Ok((k, initramfs))
}

/// Runs the scenarios on every (kernel, arch) of the matrix that `kernels` and `arches`
/// select (empty: all).
pub fn test(
    kernels: &[String],
    arches: &[Arch],
    scenarios: &[String],
    out: Option<PathBuf>,
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
        kernel::MATRIX
            .iter()
            .map(|(v, a)| (v.to_string(), *a))
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
        let (k, initramfs) = prepare(version, arch)?;
        eprintln!(
            "vm-test: {version} {arch} kernel and initramfs ready in {:.0?}",
            kernel_started.elapsed()
        );
        for scenario in SCENARIOS
            .iter()
            .filter(|s| scenarios.is_empty() || scenarios.iter().any(|n| n == s.name))
        {
            let dir = out.join(format!("{version}-{arch}-{}", scenario.name));
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("vm-test: {version} {arch} {} ...", scenario.name);
            let outcomes = match boot(arch, &k.bzimage, &initramfs, scenario, &dir) {
                Ok(vm) => {
                    eprintln!(
                        "vm-test: {version} {arch} {} ran in {:.1?}",
                        scenario.name, vm.elapsed
                    );
                    (scenario.check)(&vm.results, arch)
                }
                Err(e) => vec![Outcome::fail("boot", format!("{e:#}"))],
            };
            for o in outcomes {
                let mark = if o.ok { "ok" } else { "FAILED" };
                println!(
                    "test vm::{version}::{arch}::{}::{} ... {mark}",
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
    let (k, initramfs) = prepare(version, arch)?;
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
    let (k, initramfs) = prepare(version, arch)?;
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.name == "exercise")
        .expect("exercise scenario");
    let dir = std::env::temp_dir().join(format!("iommu-trace-demo-{}", std::process::id()));
    eprintln!(
        "demo: booting {version} {arch} in QEMU (TCG) with an emulated {}; recording the \
         exercise workload",
        match arch {
            Arch::X86_64 => "VT-d",
            Arch::Arm64 => "SMMUv3",
        }
    );
    let vm = boot(arch, &k.bzimage, &initramfs, scenario, &dir)?;
    let summary = std::fs::read_to_string(vm.results.join("summary.txt")).with_context(|| {
        format!(
            "the VM produced no summary; console: {}",
            vm.console.display()
        )
    })?;
    println!("{summary}");
    println!(
        "demo: capture, JSONL and the workload's own report are in {}",
        vm.results.display()
    );
    Ok(())
}
