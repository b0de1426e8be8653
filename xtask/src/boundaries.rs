//! The architecture's import rules, checked (docs/ARCHITECTURE.md, "What may import
//! what"): the kernel-free stages never reach the kernel-facing ones, and the aggregates and
//! models never reach their front ends. A rule broken is a test failure naming the file,
//! the line and the path.
//!
//! Every `use` tree and every path in code is resolved (`crate::`, `super::`, `self::`) to
//! the top-level module it names; paths inside macro invocations are read from their tokens.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use syn::visit::Visit;

/// (module, modules it must not import, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "uapi",
        &["*"],
        "the iommufd uAPI vocabulary is a leaf: numbers and names from the kernel headers",
    ),
    ("units", &["*"], "units are a leaf every front end shares"),
    (
        "files",
        &["*"],
        "reading user-named files is a leaf captures and the probe plan share",
    ),
    (
        "procfs",
        &["*"],
        "the kernel's own per-process figures are a leaf the ledger and the exercise share",
    ),
    (
        "session",
        &["*"],
        "the session vocabulary imports nothing else from the crate",
    ),
    (
        "events",
        &[
            "probe", "collect", "capture", "replay", "model", "state", "tui", "export", "commands",
            "exercise",
        ],
        "events are the shared vocabulary",
    ),
    (
        "capture",
        &["probe", "collect", "tui", "export", "commands"],
        "captures are kernel-free",
    ),
    (
        "replay",
        &["probe", "collect", "tui", "export", "commands"],
        "replay is kernel-free",
    ),
    (
        "model",
        &[
            "probe", "collect", "replay", "state", "tui", "export", "commands",
        ],
        "the models are kernel-free and know no front end",
    ),
    (
        "state",
        &["probe", "collect", "tui", "export", "commands"],
        "the aggregate is kernel-free and knows no front end",
    ),
    (
        "export",
        &["probe", "collect", "tui", "commands"],
        "the exporter is fed events; it never attaches",
    ),
    (
        "tui",
        &["probe", "collect", "export", "commands"],
        "the TUI is fed events; it never attaches",
    ),
    (
        "exercise",
        &["probe", "collect", "tui", "export", "commands"],
        "the workload generator drives the kernel, it does not trace",
    ),
];

/// Crates that talk to the kernel's BPF side: allowed in `probe` and `collect` only.
const KERNEL_CRATES: &[&str] = &["aya", "aya_obj"];

/// One import that breaks a rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: PathBuf,
    pub line: usize,
    pub path: String,
    pub why: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file.display(),
            self.line,
            self.path,
            self.why
        )
    }
}

/// The module path of a source file under `src` (`capture/reader.rs` -> [capture, reader]).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Walks paths and use trees, collecting (line, full path as written, resolved first
/// segment inside the crate or the external crate's name).
struct Imports {
    /// The module the code being visited is in (inline `mod` blocks included).
    module: Vec<String>,
    found: Vec<(usize, String, Target)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Crate(String),
    External(String),
}

impl Imports {
    /// Resolves the leading segments of a path; `None` when it names a local item.
    fn resolve(&self, segments: &[String]) -> Option<Target> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" | "iommu_trace" => segments.get(1).cloned().map(Target::Crate),
            "super" | "self" => {
                let mut module = self.module.clone();
                let mut rest = segments;
                while let Some(s) = rest.first() {
                    match s.as_str() {
                        "super" => {
                            module.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
                module
                    .first()
                    .cloned()
                    .or_else(|| rest.first().cloned())
                    .map(Target::Crate)
            }
            name if KERNEL_CRATES.contains(&name) => Some(Target::External(name.to_string())),
            _ => None,
        }
    }

    fn note(&mut self, line: usize, segments: Vec<String>) {
        if let Some(t) = self.resolve(&segments) {
            self.found.push((line, segments.join("::"), t));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                full.push(n.ident.to_string());
                self.note(line, full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                full.push(r.ident.to_string());
                self.note(line, full);
            }
            syn::UseTree::Glob(_) => self.note(line, prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Imports {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let line = u.use_token.span.start().line;
        self.use_tree(&mut Vec::new(), &u.tree, line);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            let line = p
                .segments
                .first()
                .map_or(0, |s| s.ident.span().start().line);
            self.note(line, segments);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // `super::` inside an inline module is relative to that module.
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // Macro arguments are tokens: read `a::b::c` sequences out of them, groups included.
        self.scan_tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

impl Imports {
    fn scan_tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let mut run: Vec<String> = Vec::new();
        let mut line = 0;
        let mut last_colon = false;
        let flush = |run: &mut Vec<String>, line: usize, me: &mut Self| {
            if run.len() > 1 {
                me.note(line, std::mem::take(run));
            }
            run.clear();
        };
        for tt in tokens {
            match tt {
                proc_macro2::TokenTree::Ident(i) => {
                    if !last_colon {
                        flush(&mut run, line, self);
                        line = i.span().start().line;
                    }
                    run.push(i.to_string());
                    last_colon = false;
                }
                proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' => last_colon = true,
                proc_macro2::TokenTree::Group(g) => {
                    flush(&mut run, line, self);
                    last_colon = false;
                    self.scan_tokens(g.stream());
                }
                _ => {
                    flush(&mut run, line, self);
                    last_colon = false;
                }
            }
        }
        flush(&mut run, line, self);
    }
}

/// The imports of one file's source that break a rule.
pub fn check_source(src_root: &Path, file: &Path, text: &str) -> Result<Vec<Violation>> {
    let module = module_of(src_root, file);
    // lib.rs and main.rs: the crate root, held to the kernel-crates rule only.
    let top = module
        .first()
        .map_or("(crate root)", String::as_str)
        .to_string();
    let top = &top;
    let parsed = syn::parse_file(text).with_context(|| format!("parsing {}", file.display()))?;
    let mut v = Imports {
        module: module.clone(),
        found: Vec::new(),
    };
    v.visit_file(&parsed);
    let rule = RULES.iter().find(|(m, _, _)| m == top);
    let mut out = Vec::new();
    for (line, path, target) in v.found {
        let why = match (&target, rule) {
            (Target::External(name), _) if top != "probe" && top != "collect" => Some(format!(
                "only probe/ and collect/ may use `{name}` (the kernel's BPF side)"
            )),
            (Target::Crate(m), Some((_, banned, why)))
                if m != top && (banned.contains(&"*") || banned.contains(&m.as_str())) =>
            {
                Some(format!("{top}/ must not import {m}/: {why}"))
            }
            _ => None,
        };
        if let Some(why) = why {
            out.push(Violation {
                file: file.to_path_buf(),
                line,
                path,
                why,
            });
        }
    }
    Ok(out)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// Every violation in the crate at `src_root` (`iommu-trace/src`).
pub fn check_tree(src_root: &Path) -> Result<Vec<Violation>> {
    let mut files = Vec::new();
    rust_files(src_root, &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        out.extend(check_source(src_root, &f, &text)?);
    }
    Ok(out)
}

/// `cargo xtask test`'s step: fails listing every violation.
pub fn run(root: &Path) -> Result<()> {
    let src = root.join("iommu-trace/src");
    let violations = check_tree(&src)?;
    for v in &violations {
        eprintln!("boundary: {v}");
    }
    anyhow::ensure!(
        violations.is_empty(),
        "{} import(s) break the architecture's rules (docs/ARCHITECTURE.md, \"What may import what\")",
        violations.len()
    );
    println!("boundaries: every module keeps to its imports");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(file: &str, text: &str) -> Vec<String> {
        check_source(Path::new("src"), Path::new(file), text)
            .unwrap()
            .into_iter()
            .map(|v| v.path)
            .collect()
    }

    #[test]
    fn planted_violations_are_found() {
        assert_eq!(
            check("src/capture/reader.rs", "use crate::probe::Plan;"),
            vec!["crate::probe::Plan"]
        );
        assert_eq!(
            check(
                "src/replay/map.rs",
                "use crate::{events::Event, probe::{Tracer}};"
            ),
            vec!["crate::probe::Tracer"]
        );
        assert_eq!(
            check(
                "src/tui/board/verdict.rs",
                "use super::super::super::export::Meta;"
            ),
            vec!["super::super::super::export::Meta"]
        );
        assert_eq!(
            check(
                "src/state/mod.rs",
                "fn f() { let _ = crate::tui::App::new(); }"
            ),
            vec!["crate::tui::App::new"]
        );
        assert_eq!(
            check(
                "src/model/vtd.rs",
                "fn f() { println!(\"{}\", crate::export::X); }"
            ),
            vec!["crate::export::X"]
        );
        assert_eq!(
            check("src/export/http.rs", "use aya::maps::RingBuf;"),
            vec!["aya::maps::RingBuf"]
        );
        assert_eq!(
            check("src/session/plan.rs", "use crate::events::Event;"),
            vec!["crate::events::Event"]
        );
    }

    #[test]
    fn allowed_imports_pass() {
        assert!(check(
            "src/capture/reader.rs",
            "use super::header::CaptureHeader; use crate::session::Session;"
        )
        .is_empty());
        assert!(check(
            "src/probe/load.rs",
            "use aya::Ebpf; use crate::session::Plan;"
        )
        .is_empty());
        assert!(check(
            "src/tui/board/mod.rs",
            "use crate::replay::Replayer; use super::history::Kept;"
        )
        .is_empty());
        assert!(check(
            "src/session/plan.rs",
            "use super::features::KernelFeatures;"
        )
        .is_empty());
    }
}
