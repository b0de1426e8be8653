//! `cargo xtask dist`: the Debian packages (x86_64 and arm64), built by cargo-deb from the
//! static binary the VM harness boots, with man pages and shell completions generated from
//! the clap definitions, the systemd units of packaging/ and the dashboards; then lintian.
//! `install_test` installs the host's package with dpkg, uses it and removes it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::kernel::Arch;
use crate::util::{output, run, workspace_root};
use crate::vm::build_guest_binary;

/// Builds the package for each of `arches`; returns their paths.
pub fn build(arches: &[Arch]) -> Result<Vec<(Arch, PathBuf)>> {
    // Man pages and completions come from the host's build: they are the same for every
    // architecture (the clap definitions), and only the host's binary runs here.
    let host = build_guest_binary(Arch::host())?;
    let mut debs = Vec::new();
    for &arch in arches {
        let binary = if arch == Arch::host() {
            host.clone()
        } else {
            build_guest_binary(arch)?
        };
        let release = binary.parent().expect("target/<triple>/release");
        generate_docs(&host, &release.join("dist"))?;
        let out_dir = release
            .parent()
            .and_then(Path::parent)
            .expect("target/")
            .join("dist");
        std::fs::create_dir_all(&out_dir)?;
        let mut deb = Command::new("cargo-deb");
        deb.current_dir(workspace_root())
            .args([
                "-p",
                "iommu-trace",
                "--no-build",
                "--target",
                arch.rust_target(),
            ])
            .arg("--output")
            .arg(&out_dir);
        if let Some(prefix) = arch.cross_prefix() {
            // cargo-deb strips with the target's own binutils.
            deb.env(
                format!(
                    "CARGO_TARGET_{}_STRIP",
                    arch.rust_target().to_uppercase().replace('-', "_")
                ),
                format!("{prefix}strip"),
            );
        }
        let printed = output(&mut deb)
            .context("cargo-deb (`cargo xtask setup` installs it) could not build the package")?;
        let path = printed
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.ends_with(".deb"))
            .map(PathBuf::from)
            .with_context(|| format!("cargo-deb named no package:\n{printed}"))?;
        eprintln!("dist: {arch}: {}", path.display());
        debs.push((arch, path));
    }
    Ok(debs)
}

/// Man pages (gzipped, as Debian policy wants them) and completion scripts, written by
/// `binary` into `dir`.
fn generate_docs(binary: &Path, dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    run(Command::new(binary).arg("man").arg(&man))?;
    for entry in std::fs::read_dir(&man)? {
        // -n: no name or time stamp inside, so that the package is reproducible.
        run(Command::new("gzip").arg("-9n").arg(entry?.path()))?;
    }
    for (shell, file) in [
        ("bash", "iommu-trace.bash"),
        ("zsh", "_iommu-trace"),
        ("fish", "iommu-trace.fish"),
    ] {
        let script = output(Command::new(binary).args(["completions", shell]))?;
        std::fs::write(completions.join(file), script)?;
    }
    Ok(())
}

/// lintian on each package: no error-level finding (warnings are printed, not fatal).
pub fn lint(debs: &[(Arch, PathBuf)]) -> Result<()> {
    for (arch, deb) in debs {
        let status = Command::new("lintian")
            .args(["--fail-on", "error", "--tag-display-limit", "0"])
            .arg(deb)
            .status()
            .context("lintian (`cargo xtask setup` installs it)")?;
        ensure!(
            status.success(),
            "lintian found errors in the {arch} package (above)"
        );
        eprintln!("dist: lintian: no errors in {}", deb.display());
    }
    Ok(())
}

/// Installs `deb` on this host (dpkg -i), checks what a user meets first (the binary, its
/// man pages, a completion, the units), then purges it and checks that nothing is left.
pub fn install_test(deb: &Path) -> Result<Vec<(String, Result<(), String>)>> {
    if !crate::setup::nix_is_root() {
        bail!("the package install test needs root (dpkg -i)");
    }
    if Path::new("/usr/bin/iommu-trace").exists() && !installed()? {
        bail!("/usr/bin/iommu-trace exists and is not the package's: the install test would replace it");
    }
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    let mut checks = Vec::new();
    let mut check = |name: &str, r: Result<(), String>| checks.push((name.to_string(), r));
    check("version_names_the_capture_format", {
        sh("iommu-trace --version").and_then(|v| {
            expect(
                v.contains("capture format") && v.contains("tested kernels"),
                || format!("--version printed: {v}"),
            )
        })
    });
    check("man_page_of_record", {
        sh("MANWIDTH=100 man -P cat iommu-trace-record 2>&1").and_then(|m| {
            expect(m.contains("--rotate-size"), || {
                format!("man iommu-trace-record: {m:.400}")
            })
        })
    });
    check("bash_completes_subcommands", {
        // The function the script registers for the command (`complete -p`), called as
        // bash calls it on `iommu-trace re<TAB>`.
        bash(
            r#". /usr/share/bash-completion/completions/iommu-trace
            f=$(complete -p iommu-trace | sed -E 's/.*-F ([^ ]+).*/\1/')
            COMP_WORDS=(iommu-trace re); COMP_CWORD=1
            "$f" iommu-trace re iommu-trace
            echo "${COMPREPLY[@]}""#,
        )
        .and_then(|c| {
            expect(c.contains("record") && c.contains("replay"), || {
                format!("completing `iommu-trace re` gave: {c:?}")
            })
        })
    });
    check("units_pass_systemd_analyze_verify", {
        sh(
            "systemd-analyze verify --man=no /lib/systemd/system/iommu-trace-serve.service \
            /lib/systemd/system/iommu-trace-record.service 2>&1 && echo verified",
        )
        .and_then(|v| expect(v.trim_end().ends_with("verified"), || v.clone()))
    });
    check("dashboards_and_rules_installed", {
        let files = [
            "/usr/share/iommu-trace/grafana/iommu-trace.json",
            "/usr/share/iommu-trace/prometheus/iommu-trace.rules.yml",
            "/etc/default/iommu-trace",
        ];
        match files.iter().find(|f| !Path::new(f).exists()) {
            Some(f) => Err(format!("{f} is not installed")),
            None => Ok(()),
        }
    });
    check("schemas_match_the_binary", {
        // The installed copies are what the installed binary derives (they are the
        // repository's schemas/, checked against the types by a unit test).
        [("events", "event"), ("replay", "replay")]
            .iter()
            .try_for_each(|(doc, file)| {
                sh(&format!(
                    "iommu-trace schema {doc} | cmp - /usr/share/iommu-trace/schemas/{file}.schema.json \
                     && echo same"
                ))
                .and_then(|o| expect(o.trim_end().ends_with("same"), || o.clone()))
            })
    });
    run(Command::new("dpkg").args(["--purge", "iommu-trace"]))?;
    check("purge_leaves_nothing", {
        let left: Vec<&str> = [
            "/usr/bin/iommu-trace",
            "/etc/default/iommu-trace",
            "/usr/share/iommu-trace",
            "/lib/systemd/system/iommu-trace-serve.service",
            "/usr/share/man/man1/iommu-trace-record.1.gz",
        ]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
        expect(left.is_empty(), || format!("left after purge: {left:?}"))
    });
    Ok(checks)
}

fn installed() -> Result<bool> {
    Ok(Command::new("dpkg")
        .args(["-s", "iommu-trace"])
        .output()?
        .status
        .success())
}

fn sh(script: &str) -> Result<String, String> {
    shell("sh", script)
}

fn bash(script: &str) -> Result<String, String> {
    shell("bash", script)
}

fn shell(shell: &str, script: &str) -> Result<String, String> {
    let out = Command::new(shell)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("{shell}: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("`{script}` failed ({}): {text}", out.status))
    }
}

fn expect(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}
