//! Installs what a fresh machine lacks: the nightly's rust-src, bpf-linker linked against
//! the nightly's own libLLVM (docs/toolchain.md), and, for the VM harness, Debian
//! packages (a recent QEMU from bookworm-backports, kernel build tools and sources, the
//! arm64 cross toolchain), the Rust arm64 target, and the arm64 guest's own programs.
//! Each step checks first, so a warm machine spends seconds here.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::kernel::Arch;
use crate::util::{cache_dir, output, run as run_cmd};

/// bpf-linker release known to build against the nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What building a test kernel needs, whatever its architecture: the kernel's build tools
/// (and pahole, which turns its DWARF into BTF). `for_kernels` adds their Debian sources
/// and, for arm64, `arch_build_packages`.
const KERNEL_BUILD_PACKAGES: &[(&str, Option<&str>)] = &[
    ("flex", None),
    ("bison", None),
    ("bc", None),
    ("libelf-dev", None),
    ("libssl-dev", None),
    ("dwarves", None),
    ("cpio", None),
    ("xz-utils", None),
    ("binutils", None),
];

/// What booting a guest needs besides its kernel: the initramfs's busybox and Prometheus,
/// and curl (the guest's exporter is scraped with it).
const GUEST_RUN_PACKAGES: &[(&str, Option<&str>)] = &[
    ("cpio", None),
    ("busybox-static", None),
    ("prometheus", None),
    ("curl", None),
];

/// What one guest architecture adds to the kernel build: for arm64, the cross toolchain
/// its kernel and the guest's iommu-trace are built with.
fn arch_build_packages(arch: Arch) -> &'static [(&'static str, Option<&'static str>)] {
    match arch {
        Arch::X86_64 => &[],
        Arch::Arm64 => &[
            ("gcc-aarch64-linux-gnu", None),
            ("libc6-dev-arm64-cross", None),
        ],
    }
}

/// The QEMU that boots one guest architecture: a recent one, from bookworm-backports.
fn qemu_package(arch: Arch) -> (&'static str, Option<&'static str>) {
    match arch {
        Arch::X86_64 => ("qemu-system-x86", Some("bookworm-backports")),
        Arch::Arm64 => ("qemu-system-arm", Some("bookworm-backports")),
    }
}

/// The exporter's end-to-end test and benchmark load it with wrk.
const EXPORTER_TEST_PACKAGES: &[(&str, Option<&str>)] = &[("wrk", None)];

/// What `cargo xtask dist` and the package test need besides the VM packages: cargo-deb
/// builds the packages; lintian checks them; man-db and systemd (systemd-analyze) check what
/// they install.
const PACKAGING_PACKAGES: &[(&str, Option<&str>)] = &[
    ("lintian", None),
    ("man-db", None),
    ("systemd", None),
    ("gzip", None),
];

/// What `cargo xtask bench capture` adds on the host: bpftrace, which the benchmark runs in
/// the x86_64 guest as the tool people already use, to compare with.
pub fn bench_tools() -> Result<()> {
    apt_packages(&[("bpftrace", None)])
}

/// cargo-deb release known to build on this toolchain (rust-version 1.85).
const CARGO_DEB_VERSION: &str = "3.8.0";

const APT_SOURCES: &str = "/etc/apt/sources.list.d/iommu-trace.sources";

/// `vm`: everything the whole VM matrix and the exporter test need (`setup --vm`, `test`).
pub fn run(vm: bool) -> Result<()> {
    if !vm {
        rust_src()?;
        return bpf_linker();
    }
    for_vms(&crate::kernel::matrix())?;
    apt_packages(EXPORTER_TEST_PACKAGES)
}

/// What booting these kernels needs, and no more: an x86_64 demo installs no arm64 cross
/// tools, guest programs or 7.3 source.
pub fn for_vms(kernels: &[(String, Arch)]) -> Result<()> {
    for_kernels(kernels)?;
    for_guests(kernels)
}

/// What building these kernels needs: the build tools, their Debian sources and, for arm64,
/// the cross compiler. Kept apart from `for_guests` so that a cold kernel, the longest step
/// of a first run, starts before the Rust toolchain's set-up (bpf-linker is built from
/// source) and QEMU's download, which then run beside it.
pub fn for_kernels(kernels: &[(String, Arch)]) -> Result<()> {
    let sources = kernels
        .iter()
        .map(|(v, _)| Ok((format!("linux-source-{v}"), crate::kernel::source_suite(v)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut packages = KERNEL_BUILD_PACKAGES.to_vec();
    for (_, arch) in kernels {
        packages.extend_from_slice(arch_build_packages(*arch));
    }
    packages.extend(sources.iter().map(|(p, suite)| (p.as_str(), *suite)));
    packages.sort();
    packages.dedup();
    apt_packages(&packages)
}

/// What booting guests of these kernels' architectures needs: the nightly's rust-src and
/// bpf-linker (the guest's iommu-trace), QEMU, the initramfs's programs and, for a foreign
/// architecture, its Rust target and Debian's programs for it.
pub fn for_guests(kernels: &[(String, Arch)]) -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    let mut packages = GUEST_RUN_PACKAGES.to_vec();
    packages.extend(kernels.iter().map(|(_, arch)| qemu_package(*arch)));
    packages.sort();
    packages.dedup();
    apt_packages(&packages)?;
    for arch in Arch::ALL {
        if arch != Arch::host() && kernels.iter().any(|(_, a)| *a == arch) {
            rust_target(arch)?;
            guest_programs(arch)?;
        }
    }
    Ok(())
}

/// The Rust standard library for a guest architecture (rustup).
fn rust_target(arch: Arch) -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == arch.rust_target()) {
        return Ok(());
    }
    eprintln!("setup: adding the Rust target {}", arch.rust_target());
    run_cmd(Command::new("rustup").args(["target", "add", arch.rust_target()]))
}

/// Debian packages of the guest's architecture whose programs go into its initramfs:
/// busybox, Prometheus, and util-linux's setpriv with the one library it adds to the C
/// library (the least-privilege check).
const GUEST_PACKAGES: &[&str] = &["busybox-static", "prometheus", "util-linux", "libcap-ng0"];

/// Where `guest_programs` unpacks them: a root tree (`bin/busybox`, `usr/bin/prometheus`,
/// `usr/bin/setpriv`, `lib/<triple>/libcap-ng.so.0`).
pub fn guest_root(arch: Arch) -> std::path::PathBuf {
    cache_dir()
        .join(format!("guest-{}", arch.debian()))
        .join("root")
}

/// Where the unpacked libcap-ng of `guest_programs` is: bookworm ships it under /lib, later
/// suites under /usr/lib.
pub fn guest_libcap_ng(arch: Arch) -> std::path::PathBuf {
    let root = guest_root(arch);
    ["lib", "usr/lib"]
        .iter()
        .map(|d| root.join(d).join(arch.gnu_triple()).join("libcap-ng.so.0"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            root.join("lib")
                .join(arch.gnu_triple())
                .join("libcap-ng.so.0")
        })
}

/// Downloads and unpacks the guest's busybox and Prometheus for a foreign architecture
/// (`apt-get download` needs that architecture known to dpkg; nothing is installed).
fn guest_programs(arch: Arch) -> Result<()> {
    let root = guest_root(arch);
    if ["bin/busybox", "usr/bin/prometheus", "usr/bin/setpriv"]
        .iter()
        .all(|p| root.join(p).exists())
        && guest_libcap_ng(arch).exists()
    {
        return Ok(());
    }
    let debs = root.parent().expect("has parent").to_path_buf();
    std::fs::create_dir_all(&debs)?;
    if !nix_is_root() {
        bail!(
            "the {arch} VM needs Debian's {} for {}: run `sudo cargo xtask setup --vm` once",
            GUEST_PACKAGES.join(" "),
            arch.debian()
        );
    }
    let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if !foreign.lines().any(|l| l.trim() == arch.debian()) {
        eprintln!("setup: adding the {} architecture to dpkg", arch.debian());
        run_cmd(Command::new("dpkg").args(["--add-architecture", arch.debian()]))?;
        run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    }
    eprintln!(
        "setup: downloading {} for the {arch} guest",
        GUEST_PACKAGES.join(" ")
    );
    // The download runs as root into a root-owned folder: apt's sandbox user could not
    // write there, so it is turned off for this call.
    run_cmd(
        Command::new("apt-get")
            .current_dir(&debs)
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .args(
                GUEST_PACKAGES
                    .iter()
                    .map(|p| format!("{p}:{}", arch.debian())),
            ),
    )?;
    for entry in std::fs::read_dir(&debs)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "deb") {
            run_cmd(Command::new("dpkg-deb").arg("-x").arg(&p).arg(&root))?;
        }
    }
    Ok(())
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("the nightly toolchain is needed to build the eBPF programs")?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to the nightly toolchain");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// The nightly's LLVM major version and its shared library.
fn nightly_llvm() -> Result<(String, std::path::PathBuf)> {
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV shows no LLVM version")?
        .to_string();
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let so = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so"))
        })
        .with_context(|| format!("no libLLVM shared library in {}", lib.display()))?;
    Ok((major, so))
}

fn bpf_linker() -> Result<()> {
    let (major, so) = nightly_llvm()?;
    // bpf-linker loads libLLVM from this folder at run time (its rpath): keep it in place.
    let prefix = cache_dir().join("llvm");
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir)?;
    let real = std::fs::canonicalize(&so)?;
    let soname = real.file_name().context("libLLVM file name")?.to_owned();
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname.as_os_str()] {
        let link = libdir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link)?;
    }
    if installed_at("bpf-linker", BPF_LINKER_VERSION) {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major}");
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
}

/// Whether `tool --version` runs and names `version`.
fn installed_at(tool: &str, version: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version))
        .unwrap_or(false)
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Packaging's tools (`cargo xtask dist`, and the package test of `cargo xtask test`); not
/// part of `run`, so that the demo does not wait for them.
pub fn packaging() -> Result<()> {
    apt_packages(PACKAGING_PACKAGES)?;
    if installed_at("cargo-deb", CARGO_DEB_VERSION) {
        return Ok(());
    }
    eprintln!("setup: building cargo-deb {CARGO_DEB_VERSION}");
    run_cmd(Command::new("cargo").args([
        "install",
        "cargo-deb",
        "--locked",
        "--version",
        CARGO_DEB_VERSION,
        "--force",
    ]))
}

fn apt_packages(packages: &[(&str, Option<&str>)]) -> Result<()> {
    let missing: Vec<_> = packages
        .iter()
        .filter(|(p, _)| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix_is_root() {
        bail!(
            "the VM harness needs these Debian packages: {}. Run `sudo cargo xtask setup --vm` \
             once, or install them yourself.",
            missing
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if !Path::new(APT_SOURCES).exists() {
        // Backports for a recent QEMU (10.x, with a current VT-d model); trixie and its
        // backports for newer test kernels, pinned low so nothing upgrades by accident.
        std::fs::write(
            APT_SOURCES,
            "Types: deb\nURIs: http://deb.debian.org/debian\n\
             Suites: bookworm-backports trixie trixie-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )?;
        std::fs::write(
            "/etc/apt/preferences.d/iommu-trace",
            "Package: *\nPin: release n=trixie\nPin-Priority: 100\n\n\
             Package: *\nPin: release n=trixie-backports\nPin-Priority: 100\n",
        )?;
    }
    eprintln!(
        "setup: installing {}",
        missing
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>()
            .join(" ")
    );
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    let (plain, suited): (Vec<&(&str, Option<&str>)>, Vec<_>) =
        missing.iter().copied().partition(|(_, s)| s.is_none());
    let install = |pkgs: Vec<&str>, suite: Option<&str>| -> Result<()> {
        if pkgs.is_empty() {
            return Ok(());
        }
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ]);
        if let Some(s) = suite {
            cmd.args(["-t", s]);
        }
        run_cmd(cmd.args(pkgs))
    };
    install(plain.iter().map(|(p, _)| *p).collect(), None)?;
    for (p, s) in suited {
        if p.starts_with("linux-source") {
            // Only the package itself from that suite: `-t` would also pull newer
            // versions of installed packages (linux-libc-dev) from it.
            install(vec![&format!("{p}/{}", s.unwrap_or_default())], None)?;
        } else {
            install(vec![*p], *s)?;
        }
    }
    Ok(())
}

pub(crate) fn nix_is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}
