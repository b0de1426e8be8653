//! The VM harness: a static iommu-trace and the scenarios in an initramfs, a test kernel,
//! QEMU (TCG) with an emulated VT-d and an e1000e for vfio-pci, results back on a raw disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::checks::{self, Outcome};
use crate::kernel;
use crate::setup;
use crate::util::{cache_dir, run, workspace_root};

/// A scenario: a script under tests/vm/ run as the VM's workload, and its checks.
pub struct Scenario {
    pub name: &'static str,
    /// Give the VM an emulated VT-d. Without one, the iommufd selftest's mock driver is
    /// the only IOMMU: in 6.12 a device with no firmware node is probed with the first
    /// registered IOMMU's ops (iommu.c __iommu_probe_device), so the mock cannot bind
    /// next to VT-d.
    pub vtd: bool,
    pub timeout: Duration,
    pub check: fn(&Path) -> Vec<Outcome>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "exercise",
        vtd: true,
        timeout: Duration::from_secs(900),
        check: checks::exercise,
    },
    Scenario {
        name: "mock",
        vtd: false,
        timeout: Duration::from_secs(600),
        check: checks::mock,
    },
];

/// `cargo xtask bench capture`: the tracer's overhead on the map/unmap loop.
pub const BENCH_CAPTURE: Scenario = Scenario {
    name: "bench-capture",
    vtd: true,
    timeout: Duration::from_secs(1800),
    check: checks::bench_capture,
};

/// Runs a benchmark scenario and prints what its check measured.
pub fn bench(version: &str, scenario: &Scenario) -> Result<()> {
    let (k, initramfs) = prepare(version)?;
    let dir = std::env::temp_dir().join(format!("iommu-trace-bench-{}", std::process::id()));
    let vm = boot(&k.bzimage, &initramfs, scenario, &dir)?;
    let mut failed = 0;
    for o in (scenario.check)(&vm.results) {
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

/// Builds the static iommu-trace for the guest.
fn build_guest_binary() -> Result<PathBuf> {
    let root = workspace_root();
    let target = "x86_64-unknown-linux-gnu";
    eprintln!("vm: building a static iommu-trace for the guest");
    run(Command::new(env!("CARGO"))
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
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        ))?;
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

/// Writes the initramfs: busybox, iommu-trace, /init and the scenarios.
fn build_initramfs(binary: &Path, out: &Path) -> Result<()> {
    let stage = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "tmp", "scenarios", "etc"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    std::fs::copy("/bin/busybox", stage.join("bin/busybox"))
        .context("copying /bin/busybox (Debian's busybox-static; `cargo xtask setup --vm`)")?;
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(stage.join("bin/iommu-trace"))
        .arg(binary))?;
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
    // A real Prometheus in the guest scrapes the live exporter (Debian's `prometheus`).
    copy_with_libs(Path::new("/usr/bin/prometheus"), &stage)?;
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
pub fn boot(bzimage: &Path, initramfs: &Path, scenario: &Scenario, out: &Path) -> Result<VmRun> {
    boot_with(bzimage, initramfs, scenario, out, None)
}

/// `interactive`: the serial console is this terminal (rows, cols) instead of a file.
fn boot_with(
    bzimage: &Path,
    initramfs: &Path,
    scenario: &Scenario,
    out: &Path,
    interactive: Option<(u32, u32)>,
) -> Result<VmRun> {
    std::fs::create_dir_all(out)?;
    let disk = out.join("results.img");
    let console = out.join("console.log");
    std::fs::File::create(&disk)?.set_len(256 << 20)?;
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-machine",
        "q35,kernel-irqchip=split",
        "-accel",
        "tcg",
        "-cpu",
        "max",
    ])
    .args([
        "-smp",
        "2",
        "-m",
        "2048",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ]);
    if scenario.vtd {
        // The emulated VT-d comes first so that it translates the devices after it.
        qemu.args(["-device", "intel-iommu,intremap=on,caching-mode=on"]);
    }
    let mut child = qemu
        .args(["-device", "e1000e"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
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
        // Periodic ticks and the local APIC's own timer: under TCG an idle vCPU on the
        // TSC-deadline timer was seen to miss its wakeups (RCU stall reports).
        .arg(format!(
            "console=ttyS0 panic=-1 loglevel=4 lapic=notscdeadline nohz=off scenario={}{}{}",
            scenario.name,
            if scenario.vtd { " intel_iommu=on" } else { "" },
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
        .spawn()
        .context("starting qemu-system-x86_64 (`cargo xtask setup --vm` installs it)")?;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("QEMU failed ({status}); console: {}", console.display());
            }
            break;
        }
        if started.elapsed() > scenario.timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "scenario {} did not finish within {:?}; console: {}",
                scenario.name,
                scenario.timeout,
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
fn prepare(version: &str) -> Result<(kernel::Kernel, PathBuf)> {
    setup::run(true)?;
    let k = kernel::build(&kernel::spec(version)?)?;
    let binary = build_guest_binary()?;
    // One per checkout, so that two checkouts (a CI clone and a work tree) never boot
    // each other's binaries.
    let checkout = crate::util::fnv1a(workspace_root().to_string_lossy().as_bytes());
    let initramfs = cache_dir()
        .join("vm")
        .join(format!("initramfs-{checkout:016x}.cpio.gz"));
    std::fs::create_dir_all(initramfs.parent().expect("has parent"))?;
    build_initramfs(&binary, &initramfs)?;
    Ok((k, initramfs))
}

pub fn test(kernels: &[String], scenarios: &[String], out: Option<PathBuf>) -> Result<()> {
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
    let kernels: Vec<String> = if kernels.is_empty() {
        kernel::MATRIX.iter().map(|s| s.to_string()).collect()
    } else {
        kernels.to_vec()
    };
    let out = out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("iommu-trace-vm-{}", std::process::id()))
    });
    let (mut passed, mut failed) = (0, 0);
    for version in &kernels {
        let (k, initramfs) = prepare(version)?;
        for scenario in SCENARIOS
            .iter()
            .filter(|s| scenarios.is_empty() || scenarios.iter().any(|n| n == s.name))
        {
            let dir = out.join(format!("{version}-{}", scenario.name));
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("vm-test: {version} {} ...", scenario.name);
            let outcomes = match boot(&k.bzimage, &initramfs, scenario, &dir) {
                Ok(vm) => {
                    eprintln!(
                        "vm-test: {version} {} ran in {:.1?}",
                        scenario.name, vm.elapsed
                    );
                    (scenario.check)(&vm.results)
                }
                Err(e) => vec![Outcome::fail("boot", format!("{e:#}"))],
            };
            for o in outcomes {
                let mark = if o.ok { "ok" } else { "FAILED" };
                println!(
                    "test vm::{version}::{}::{} ... {mark}",
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
pub fn top_demo(version: &str) -> Result<()> {
    let size = crate::util::output(Command::new("stty").arg("size").stdin(Stdio::inherit()))
        .context("`demo --top` needs a terminal (stty size failed)")?;
    let mut it = size
        .split_whitespace()
        .filter_map(|n| n.parse::<u32>().ok());
    let (rows, cols) = (it.next().unwrap_or(24), it.next().unwrap_or(80));
    let (k, initramfs) = prepare(version)?;
    let scenario = Scenario {
        name: "top-demo",
        vtd: true,
        timeout: Duration::from_secs(3600),
        check: |_| Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!("iommu-trace-demo-{}", std::process::id()));
    eprintln!(
        "demo: booting {version} in QEMU (TCG); `iommu-trace top` starts in about 30 s; q quits"
    );
    boot_with(&k.bzimage, &initramfs, &scenario, &dir, Some((rows, cols)))?;
    Ok(())
}

pub fn demo(version: &str) -> Result<()> {
    if Path::new("/dev/iommu").exists() {
        eprintln!("demo: this host has iommufd (/dev/iommu): tracing it directly");
        return host_demo();
    }
    eprintln!("demo: this host has no iommufd (/dev/iommu): using a test kernel in QEMU");
    let (k, initramfs) = prepare(version)?;
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.name == "exercise")
        .expect("exercise scenario");
    let dir = std::env::temp_dir().join(format!("iommu-trace-demo-{}", std::process::id()));
    eprintln!("demo: booting {version} in QEMU (TCG) with an emulated VT-d; recording the exercise workload");
    let vm = boot(&k.bzimage, &initramfs, scenario, &dir)?;
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
