//! Test kernels: built from Debian's `linux-source-*` packages with the committed config
//! fragments, cached outside the repository keyed by version, arch and fragment content.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{cache_dir, fnv1a, run, workspace_root};

pub struct KernelSpec {
    /// "6.12"
    pub version: String,
    pub arch: Arch,
    /// Debian's source tarball.
    pub tarball: PathBuf,
    pub fragments: Vec<PathBuf>,
}

pub struct Kernel {
    /// The boot image: `bzImage` on x86_64, `Image` on arm64.
    pub bzimage: PathBuf,
    pub config: PathBuf,
}

/// Architectures of the VM harness, named as the kernel's `ARCH=` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// QEMU q35 with an emulated VT-d.
    #[value(name = "x86_64")]
    X86_64,
    /// QEMU virt with an emulated SMMUv3, cross-built.
    #[value(name = "arm64")]
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// The kernel's name for it (`ARCH=`, folder names, cache keys).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Rust's target triple for the tool that runs in the guest.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The host's own architecture: no cross tools needed for it.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::X86_64
        }
    }

    /// The GNU triple of Debian's cross toolchain (gcc-<triple>, /usr/<triple>/lib).
    pub fn gnu_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }

    /// Debian's architecture name (packages, `dpkg --add-architecture`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// glibc's dynamic loader, as programs name it (PT_INTERP under /lib).
    pub fn dynamic_loader(self) -> &'static str {
        match self {
            Arch::X86_64 => "ld-linux-x86-64.so.2",
            Arch::Arm64 => "ld-linux-aarch64.so.1",
        }
    }

    /// `CROSS_COMPILE=` prefix (kernel, strip, linker) when it is not the host's arch.
    pub fn cross_prefix(self) -> Option<String> {
        (self != Arch::host()).then(|| format!("{}-", self.gnu_triple()))
    }

    fn image_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "bzImage",
            Arch::Arm64 => "Image",
        }
    }

    fn image_path(self) -> &'static str {
        match self {
            Arch::X86_64 => "arch/x86/boot/bzImage",
            Arch::Arm64 => "arch/arm64/boot/Image",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The VM matrix: what `vm-test` (and so CI) runs by default.
pub const MATRIX: &[(&str, Arch)] = &[
    ("6.12", Arch::X86_64),
    ("7.3", Arch::X86_64),
    ("6.12", Arch::Arm64),
    ("7.3", Arch::Arm64),
];

/// The matrix as (version, arch) pairs with owned versions, as a command line names them.
pub fn matrix() -> Vec<(String, Arch)> {
    MATRIX.iter().map(|(v, a)| (v.to_string(), *a)).collect()
}

/// Kernels the harness can build, each from Debian's `linux-source-<version>`, taken from
/// this suite (None: the default; 6.12 is bookworm's, from bookworm-security).
pub const KNOWN: &[(&str, Option<&str>)] = &[("6.12", None), ("7.3", Some("trixie-backports"))];

/// The Debian suite `version`'s source comes from, or why the harness cannot build it.
pub fn source_suite(version: &str) -> Result<Option<&'static str>> {
    match KNOWN.iter().find(|(v, _)| *v == version) {
        Some((_, suite)) => Ok(*suite),
        None => bail!(
            "no test kernel {version}: the harness knows {}",
            KNOWN.iter().map(|(v, _)| *v).collect::<Vec<_>>().join(", ")
        ),
    }
}

pub fn spec(version: &str, arch: Arch) -> Result<KernelSpec> {
    source_suite(version)?;
    let dir = workspace_root().join("xtask/kernel");
    Ok(KernelSpec {
        version: version.to_string(),
        arch,
        tarball: PathBuf::from(format!("/usr/src/linux-source-{version}.tar.xz")),
        // Common, then per arch, then (when one exists) per arch and version: what only
        // one kernel of one arch needs stays out of the others' cache keys.
        fragments: [
            "fragment-common.config".to_string(),
            format!("fragment-{}.config", arch.name()),
            format!("fragment-{}-{version}.config", arch.name()),
        ]
        .into_iter()
        .map(|f| dir.join(f))
        .filter(|f| f.exists())
        .collect(),
    })
}

fn cache_key(spec: &KernelSpec) -> Result<String> {
    // The base configuration the fragments start from (before 2026-12: defconfig).
    let mut data = b"allnoconfig\n".to_vec();
    // The options only: a comment or a blank line in a fragment changes no kernel (but
    // "# CONFIG_X is not set" is an option).
    for f in &spec.fragments {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines().map(str::trim) {
            let option = !line.starts_with('#')
                || (line.starts_with("# CONFIG_") && line.ends_with(" is not set"));
            if !line.is_empty() && option {
                data.extend(line.as_bytes());
                data.push(b'\n');
            }
        }
    }
    // The source package's size stands in for its version: a new Debian upload rebuilds.
    let src_len = std::fs::metadata(&spec.tarball)
        .map(|m| m.len())
        .unwrap_or(0);
    data.extend(src_len.to_le_bytes());
    Ok(format!(
        "{}-{}-{:016x}",
        spec.version,
        spec.arch,
        fnv1a(&data)
    ))
}

/// Returns the cached kernel, building it first when the cache is cold.
pub fn build(spec: &KernelSpec) -> Result<Kernel> {
    let key = cache_key(spec)?;
    let out = cache_dir().join("kernels").join(&key);
    let kernel = Kernel {
        bzimage: out.join(spec.arch.image_target()),
        config: out.join("config"),
    };
    if kernel.bzimage.exists() {
        return Ok(kernel);
    }
    if !spec.tarball.exists() {
        bail!(
            "{} is missing: install Debian's linux-source-{} (`cargo xtask setup --vm`)",
            spec.tarball.display(),
            spec.version
        );
    }
    let src_root = cache_dir().join("kernel");
    let src = src_root.join(format!("linux-source-{}", spec.version));
    if !src.join("Makefile").exists() {
        eprintln!("kernel: extracting {}", spec.tarball.display());
        std::fs::create_dir_all(&src_root)?;
        run(Command::new("tar")
            .arg("xf")
            .arg(&spec.tarball)
            .arg("-C")
            .arg(&src_root))?;
    }
    // One build folder per version and arch: incremental rebuilds when only the fragment
    // changed.
    let build = src_root.join(format!("build-{}-{}", spec.version, spec.arch));
    std::fs::create_dir_all(&build)?;
    let o = format!("O={}", build.display());
    let mut make_args = vec![o, format!("ARCH={}", spec.arch.name())];
    if let Some(cross) = spec.arch.cross_prefix() {
        make_args.push(format!("CROSS_COMPILE={cross}"));
    }
    eprintln!("kernel: configuring {key}");
    // allnoconfig with the fragments as its fixed values (merge_config.sh -n runs `make
    // KCONFIG_ALLCONFIG=<fragments> allnoconfig`): the kernel holds what the scenarios need
    // and nothing else, a third of defconfig's objects.
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&src)
        .args(["-n", "-O"])
        .arg(&build)
        .args(&spec.fragments)
        .env("ARCH", spec.arch.name())
        .stdout(std::process::Stdio::null());
    if let Some(cross) = spec.arch.cross_prefix() {
        merge.env("CROSS_COMPILE", cross);
    }
    run(&mut merge)?;
    check_config(&build.join(".config"), &spec.fragments)?;
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get() + 1);
    eprintln!("kernel: building {key} with {jobs} jobs (8-15 minutes cold on 2 cores)");
    let started = std::time::Instant::now();
    // Niced: a build that overlaps other work (`cargo xtask test`, the demo's own build)
    // takes the CPU that work leaves idle, so the work is not slowed.
    run(Command::new("nice")
        .args(["-n", "10", "make"])
        .current_dir(&src)
        .args(&make_args)
        .args([format!("-j{jobs}").as_str(), spec.arch.image_target()])
        .stdout(std::process::Stdio::null()))?;
    eprintln!("kernel: built in {:.0?}", started.elapsed());
    std::fs::create_dir_all(&out)?;
    std::fs::copy(build.join(spec.arch.image_path()), &kernel.bzimage)?;
    std::fs::copy(build.join(".config"), &kernel.config)?;
    Ok(kernel)
}

/// Every option the fragments set must survive the configuration: a dependency that silently
/// turned one off (as DEBUG_INFO_REDUCED does to BTF) fails here, not in a VM.
fn check_config(config: &Path, fragments: &[PathBuf]) -> Result<()> {
    let have = std::fs::read_to_string(config)?;
    let mut lost = Vec::new();
    for f in fragments {
        for line in std::fs::read_to_string(f)?.lines() {
            let line = line.trim();
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if line.starts_with('#') {
                continue;
            }
            let ok = if value == "n" {
                !have.lines().any(|l| l.starts_with(&format!("{name}=")))
            } else {
                have.lines().any(|l| l == line)
            };
            if !ok {
                lost.push(line.to_string());
            }
        }
    }
    if !lost.is_empty() {
        bail!(
            "the kernel configuration lost options the fragments ask for (a Kconfig \
             dependency is missing): {}",
            lost.join(", ")
        );
    }
    Ok(())
}
