//! QEMU: the machine of each architecture (q35 with VT-d, virt with SMMUv3), booting a
//! scenario and taking its results back from the raw results disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{Iommu, Scenario};
use crate::kernel::Arch;
use crate::util::run;

pub struct VmRun {
    pub results: PathBuf,
    pub console: PathBuf,
    pub elapsed: Duration,
}

/// Boots `bzimage` with `initramfs`, runs `scenario`, and unpacks its results into `out`.
pub fn boot(
    arch: Arch,
    iommu: Iommu,
    bzimage: &Path,
    initramfs: &Path,
    scenario: &Scenario,
    out: &Path,
) -> Result<VmRun> {
    boot_with(arch, iommu, bzimage, initramfs, scenario, out, None)
}

/// The QEMU machine of each architecture, with or without its emulated IOMMU, and the
/// kernel command line that goes with it.
fn qemu_machine(arch: Arch, iommu: Iommu, hw_iommu: bool) -> (Command, &'static str) {
    match arch {
        Arch::X86_64 => {
            let mut qemu = Command::new("qemu-system-x86_64");
            qemu.args(["-machine", "q35,kernel-irqchip=split", "-cpu", "max"]);
            // The emulated IOMMU comes first so that it translates the devices after it.
            // AMD: interrupt remapping on, or iommufd refuses to bind without isolated MSI;
            // 7.x still turns it off (QEMU's IVRS puts the southbridge IOAPIC at 00:14.0,
            // where q35 has no SMBus or ISA bridge), hence `allow_unsafe_interrupts`;
            // `iommu=pt`, or the DMA default domain of q35's AHCI stalls the boot
            // (docs/kernel-facts.md §9).
            let cmdline = match (hw_iommu, iommu) {
                (true, Iommu::Intel) => {
                    qemu.args(["-device", "intel-iommu,intremap=on,caching-mode=on"]);
                    "console=ttyS0 lapic=notscdeadline nohz=off no_timer_check intel_iommu=on"
                }
                (true, Iommu::Amd) => {
                    qemu.args(["-device", "amd-iommu,intremap=on"]);
                    "console=ttyS0 lapic=notscdeadline nohz=off no_timer_check iommu=pt \
                     iommufd.allow_unsafe_interrupts=1"
                }
                (false, _) => "console=ttyS0 lapic=notscdeadline nohz=off no_timer_check",
            };
            // Periodic ticks and the local APIC's own timer: under TCG an idle vCPU on the
            // TSC-deadline timer was seen to miss its wakeups (RCU stall reports).
            // `no_timer_check`: on a loaded host TCG is too slow for the IO-APIC timer check
            // (io_apic.c check_timer), which then panics at boot ("timer doesn't work through
            // Interrupt-remapped IO-APIC"; seen while a kernel built beside the demo).
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

/// A fault of the emulator, not of the guest kernel or the tool: QEMU died on a signal (an
/// assertion inside it), or the guest's timer stopped firing.
#[derive(Debug)]
struct EmulationFault(String);

impl std::fmt::Display for EmulationFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EmulationFault {}

/// What the guest kernel prints when a vCPU's timer interrupt never comes (rcu/tree_stall.h
/// `rcu_check_gp_kthread_expired_fqs_timer`): an idle vCPU that TCG stopped waking. The
/// report repeats while the stall lasts (21 s, then every 63 s); the one guest seen with it
/// never recovered before the timeout. Three reports (over two minutes) count as a fault; a
/// stall that resolves itself after one or two does not.
const TIMER_STALL: &[u8] = b"timer wakeup didn't happen";
const TIMER_STALL_REPORTS: usize = 3;

/// The guest's console shows a timer stall that did not resolve itself.
fn timer_stalled(console: &Path) -> bool {
    std::fs::read(console).is_ok_and(|c| {
        c.windows(TIMER_STALL.len())
            .filter(|w| *w == TIMER_STALL)
            .count()
            >= TIMER_STALL_REPORTS
    })
}

/// `interactive`: the serial console is this terminal (rows, cols) instead of a file.
///
/// An emulation fault is retried once, loudly: multi-threaded TCG with an emulated IOMMU was
/// seen to abort on an internal assertion (`iotlb_to_section: section_index <
/// d->map.sections_nb`, system/physmem.c, QEMU 10.0) once in about 25 boots, and, rarer, to
/// stop waking an idle vCPU (the guest reports an RCU stall whose timer wakeup did not
/// happen, then hangs until the timeout); neither says anything about the kernel or the
/// tool. A second fault fails the scenario.
pub(super) fn boot_with(
    arch: Arch,
    iommu: Iommu,
    bzimage: &Path,
    initramfs: &Path,
    scenario: &Scenario,
    out: &Path,
    interactive: Option<(u32, u32)>,
) -> Result<VmRun> {
    match boot_once(arch, iommu, bzimage, initramfs, scenario, out, interactive) {
        Err(e) if interactive.is_none() && e.downcast_ref::<EmulationFault>().is_some() => {
            eprintln!(
                "vm: {e:#}\nvm: an emulation fault; booting {} once more",
                scenario.name
            );
            boot_once(arch, iommu, bzimage, initramfs, scenario, out, interactive)
        }
        other => other,
    }
}

fn boot_once(
    arch: Arch,
    iommu: Iommu,
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
    // Sparse on the host: only what the guest writes takes room. The exercise writes about
    // 150 MiB (the killed recorder's JSONL alone up to 100 MiB, the rotated recording 20).
    std::fs::File::create(&disk)?.set_len(1 << 30)?;
    let timeout = match arch {
        Arch::X86_64 => scenario.timeout,
        Arch::Arm64 => scenario.timeout * 2,
    };
    let started = Instant::now();
    let (mut qemu, cmdline) = qemu_machine(arch, iommu, scenario.hw_iommu);
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
            "{cmdline} panic=-1 loglevel=4 scenario={}{}{}",
            scenario.name,
            bench_size(scenario)?,
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
    let mut last_console_check = Instant::now();
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
                    return Err(EmulationFault(msg).into());
                }
                bail!(msg);
            }
            break;
        }
        if interactive.is_none() && last_console_check.elapsed() > Duration::from_secs(5) {
            last_console_check = Instant::now();
            if timer_stalled(&console) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EmulationFault(format!(
                    "the guest's timer stopped firing under TCG ({TIMER_STALL_REPORTS} RCU \
                     stall reports \"{}\"); console: {}",
                    String::from_utf8_lossy(TIMER_STALL),
                    console.display()
                ))
                .into());
            }
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

/// A benchmark's size from the host's environment (`BENCH_ROUNDS=1 cargo xtask bench capture`
/// for a quick look; `BENCH_LOOPS`, `BENCH_PAGES`, `BENCH_ITERATIONS`): the kernel hands
/// unknown `NAME=value` parameters to init as environment variables, and the benchmark's
/// script reads them. Other scenarios are never sized from outside. `vm::bench` asks first,
/// so that a bad value fails before a kernel build, not after.
pub(super) fn bench_size(scenario: &Scenario) -> Result<String> {
    bench_params(scenario, |name| std::env::var(name).ok())
}

fn bench_params(scenario: &Scenario, var: impl Fn(&str) -> Option<String>) -> Result<String> {
    if !scenario.name.starts_with("bench-") {
        return Ok(String::new());
    }
    let mut out = String::new();
    for name in [
        "BENCH_ROUNDS",
        "BENCH_LOOPS",
        "BENCH_PAGES",
        "BENCH_ITERATIONS",
    ] {
        let Some(v) = var(name) else {
            continue;
        };
        // Numbers, or a comma list of them (BENCH_PAGES=1,16): a command line has no quoting.
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b',') {
            bail!("{name}={v:?}: a number (BENCH_PAGES: 1, 16 or 1,16) is expected");
        }
        out.push_str(&format!(" {name}={v}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A stall reported once or twice may resolve itself; three reports are a fault. The
    // console is bytes (a guest can print anything), not necessarily UTF-8.
    #[test]
    fn a_timer_stall_counts_after_three_reports() {
        let path = std::env::temp_dir().join(format!("stall-{}.log", std::process::id()));
        let report =
            b"[  36.9] rcu: rcu_preempt kthread timer wakeup didn't happen for 21003 jiffies!\n";
        let mut console = b"\xff\xfe boot\n".to_vec();
        for reports in 1..=3 {
            console.extend_from_slice(report);
            std::fs::write(&path, &console).unwrap();
            assert_eq!(timer_stalled(&path), reports >= 3, "{reports} report(s)");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(!timer_stalled(&path), "a missing console is no stall");
    }

    #[test]
    fn bench_sizes_reach_only_benchmarks_and_only_as_numbers() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let sized = env(&[("BENCH_ROUNDS", "3"), ("BENCH_PAGES", "1,16")]);
        assert_eq!(
            bench_params(&crate::vm::BENCH_CAPTURE, sized).unwrap(),
            " BENCH_ROUNDS=3 BENCH_PAGES=1,16"
        );
        assert_eq!(
            bench_params(&crate::vm::BENCH_CAPTURE, env(&[])).unwrap(),
            ""
        );
        let exercise = &crate::vm::SCENARIOS[0];
        assert!(!exercise.name.starts_with("bench-"));
        assert_eq!(bench_params(exercise, sized).unwrap(), "");
        for bad in ["", "3 quiet", "three", "-1"] {
            let err = bench_params(&crate::vm::BENCH_SYSTEM, |_| Some(bad.to_string()));
            assert!(
                err.unwrap_err().to_string().contains("BENCH_ROUNDS="),
                "{bad:?} taken"
            );
        }
    }
}
