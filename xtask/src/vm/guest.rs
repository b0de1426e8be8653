//! What the guest boots with: the tool built for its architecture and the initramfs
//! (busybox, iommu-trace, Prometheus, /init and the scenarios of tests/vm/).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::kernel::Arch;
use crate::setup;
use crate::util::{run, workspace_root};

/// Builds the static iommu-trace for the guest (cross-built for arm64 with Debian's
/// gcc-aarch64-linux-gnu as the linker; the eBPF object follows the target: aya-build
/// passes `bpf_target_arch` from it, which selects the `pt_regs` layout).
pub(crate) fn build_guest_binary(arch: Arch) -> Result<PathBuf> {
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
        // util-linux's setpriv runs `record` as an unprivileged user holding only the
        // capabilities it needs (the least-privilege check).
        copy_with_libs(Path::new("/usr/bin/setpriv"), stage)?;
        // A real Prometheus in the guest scrapes the live exporter (Debian's `prometheus`).
        return copy_with_libs(Path::new("/usr/bin/prometheus"), stage);
    }
    let root = setup::guest_root(arch);
    let sysroot = Path::new("/usr").join(arch.gnu_triple()).join("lib");
    let files = [
        (root.join("bin/busybox"), "bin/busybox"),
        (root.join("usr/bin/prometheus"), "usr/bin/prometheus"),
        (root.join("usr/bin/setpriv"), "usr/bin/setpriv"),
        // Prometheus needs only the C library, setpriv libcap-ng besides (readelf -d:
        // NEEDED).
        (setup::guest_libcap_ng(arch), "lib/libcap-ng.so.0"),
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

/// A host file a scenario needs in the guest.
#[derive(Clone, Copy)]
pub enum Extra<'a> {
    /// A dynamically linked program of an x86_64 host, at its own path, with its libraries.
    Program(&'a Path),
    /// A static program, at `bin/NAME`.
    Static(&'a Path, &'a str),
}

/// Writes the initramfs: busybox, iommu-trace, memchurn, /init and the scenarios, and the host
/// files of `extra`.
pub(super) fn build_initramfs(
    arch: Arch,
    binary: &Path,
    extra: &[Extra],
    out: &Path,
) -> Result<()> {
    let stage = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "tmp", "scenarios", "etc"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    copy_guest_programs(arch, &stage)?;
    for e in extra {
        match *e {
            Extra::Program(p) => copy_with_libs(p, &stage)?,
            Extra::Static(p, name) => {
                std::fs::copy(p, stage.join("bin").join(name))
                    .with_context(|| format!("copying {}", p.display()))?;
            }
        }
    }
    run(
        Command::new(format!("{}strip", arch.cross_prefix().unwrap_or_default()))
            .arg("--strip-debug")
            .arg("-o")
            .arg(stage.join("bin/iommu-trace"))
            .arg(binary),
    )?;
    let vm_dir = workspace_root().join("tests/vm");
    // The system benchmark's workload (tests/vm/memchurn.c), static for the guest.
    run(
        Command::new(format!("{}gcc", arch.cross_prefix().unwrap_or_default()))
            .args(["-O2", "-static", "-Wall", "-o"])
            .arg(stage.join("bin/memchurn"))
            .arg(vm_dir.join("memchurn.c")),
    )?;
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
