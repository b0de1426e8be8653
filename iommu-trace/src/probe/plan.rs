//! The probe plan: logical probe points -> the kernel symbols and eBPF programs that serve
//! them on *this* kernel, decided from BTF and kallsyms (never from the version number).
//!
//! Kernel facts come from ../shared/docs/kernel-notes.md (§1 op history and call sites,
//! §1.5 attachability, §3 iommu-pages accounting).

use iommu_trace_common::{Config, DriverFields, DRIVER_WORDS, MAX_DRIVERS};
use serde::{Deserialize, Serialize};

use super::btf::Btf;
use super::kallsyms::Kallsyms;

/// How a driver allocation op receives its arguments; the eBPF entry program per shape.
#[derive(Clone, Copy, Debug)]
struct OpShape {
    /// Symbol suffix after the driver prefix.
    suffix: &'static str,
    entry_program: &'static str,
    /// Parameter names the entry program expects, in order (checked against BTF).
    params: &'static [&'static str],
}

const OP_SHAPES: &[OpShape] = &[
    // iommu_ops.domain_alloc_user, 6.7 to 6.12 (include/linux/iommu.h).
    OpShape {
        suffix: "domain_alloc_user",
        entry_program: "alloc_user_entry",
        params: &["dev", "flags", "parent", "user_data"],
    },
    // iommu_ops.domain_alloc_paging_flags, 6.13+.
    OpShape {
        suffix: "domain_alloc_paging_flags",
        entry_program: "alloc_paging_flags_entry",
        params: &["dev", "flags", "user_data"],
    },
    // iommu_ops.domain_alloc_nested, 6.13+.
    OpShape {
        suffix: "domain_alloc_nested",
        entry_program: "alloc_nested_entry",
        params: &["dev", "parent", "flags", "user_data"],
    },
];

/// A driver whose allocation ops we know, and the fields of its domain struct a model needs.
struct DriverSpec {
    name: &'static str,
    /// Symbol prefix of its ops (`intel_iommu_domain_alloc_user`, ...).
    prefix: &'static str,
    /// The driver's domain struct, embedding `struct iommu_domain` as member `domain`.
    domain_struct: &'static str,
    /// A member only this driver's `domain_struct` has, to tell it from another driver's
    /// struct of the same name.
    marker: &'static str,
    /// Members of `domain_struct` copied into the event, as `name` or `name=path.in.struct`;
    /// missing ones are skipped, and at most `DRIVER_WORDS` are kept, in this order.
    fields: &'static [&'static str],
}

const DRIVERS: &[DriverSpec] = &[
    // drivers/iommu/intel/iommu.h: struct dmar_domain (6.12: agaw/gaw/iommu_superpage).
    DriverSpec {
        name: "intel",
        prefix: "intel_iommu",
        domain_struct: "dmar_domain",
        marker: "domain",
        // 6.19+: dmar_domain overlays the generic page table; the level is encoded in the
        // low bits of top_of_table (include/linux/generic_pt/common.h).
        fields: &[
            "agaw",
            "gaw",
            "iommu_superpage",
            "use_first_level",
            "top_of_table=sspt.vtdss_pt.common.top_of_table",
            "max_vasz_lg2=sspt.vtdss_pt.common.max_vasz_lg2",
        ],
    },
    DriverSpec {
        name: "amd",
        prefix: "amd_iommu",
        domain_struct: "protection_domain",
        marker: "domain",
        fields: &["pd_mode"],
    },
    // drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3.h: struct arm_smmu_domain. `stage` is
    // enum arm_smmu_domain_stage (S1 = 0, S2 = 1, 7.x SVA = 2): recorded raw as
    // `domain_stage`, the model turns it into a stage number. The table's ias and granule
    // come from the geometry arm_smmu_domain_finalise() sets (aperture_end,
    // pgsize_bitmap).
    DriverSpec {
        name: "arm-smmu-v3",
        prefix: "arm_smmu",
        domain_struct: "arm_smmu_domain",
        // SMMUv2's struct arm_smmu_domain (arm-smmu.h) has `cfg`, not `s2_cfg`.
        marker: "s2_cfg",
        // The device's input and output address sizes (arm_smmu_device_hw_probe), which
        // arm_smmu_domain_finalise() gives the stage-2 io-pgtable as ias and oas.
        fields: &[
            "domain_stage=stage",
            "smmu_ias=smmu->ias",
            "smmu_oas=smmu->oas",
        ],
    },
    // drivers/iommu/iommufd/selftest.c: struct mock_iommu_domain.
    DriverSpec {
        name: "mock",
        prefix: "mock",
        domain_struct: "mock_iommu_domain",
        marker: "domain",
        // 7.x: the mock has real page tables in the generic AMDv1 format.
        fields: &[
            "flags",
            "top_of_table=amdv1.amdpt.common.top_of_table",
            "max_vasz_lg2=amdv1.amdpt.common.max_vasz_lg2",
        ],
    },
];

/// One core probe point: a single symbol with an entry and an exit program.
struct CorePoint {
    point: &'static str,
    what: &'static str,
    symbols: &'static [&'static str],
    entry_program: &'static str,
    exit_program: &'static str,
    /// Parameter names the entry program relies on, checked against BTF when present.
    params: &'static [&'static str],
}

const CORE_POINTS: &[CorePoint] = &[
    CorePoint {
        point: "hwpt_alloc_ioctl",
        what: "IOMMU_HWPT_ALLOC ioctl: flags, data type, result (iommufd/hw_pagetable.c)",
        symbols: &["iommufd_hwpt_alloc"],
        entry_program: "hwpt_alloc_ioctl_entry",
        exit_program: "hwpt_alloc_ioctl_exit",
        params: &["ucmd"],
    },
    CorePoint {
        point: "hwpt_paging_alloc",
        what: "iommufd paging-domain allocation, tells auto domains from explicit ones",
        symbols: &["iommufd_hwpt_paging_alloc"],
        entry_program: "hwpt_paging_alloc_entry",
        exit_program: "hwpt_paging_alloc_exit",
        params: &[],
    },
    CorePoint {
        point: "domain_free",
        what: "iommu_domain_free (iommu.c)",
        symbols: &["iommu_domain_free"],
        entry_program: "domain_free_entry",
        exit_program: "domain_free_exit",
        params: &["domain"],
    },
    CorePoint {
        point: "map",
        what: "iommu_map with the domain pointer (the map tracepoint lacks it)",
        symbols: &["iommu_map"],
        entry_program: "map_entry",
        exit_program: "map_exit",
        params: &["domain", "iova", "paddr", "size"],
    },
    CorePoint {
        point: "unmap",
        what: "iommu_unmap / iommu_unmap_fast with the domain pointer",
        symbols: &["iommu_unmap", "iommu_unmap_fast"],
        entry_program: "unmap_entry",
        exit_program: "unmap_exit",
        params: &["domain", "iova", "size"],
    },
];

/// The page-table page hook: iommu-pages accounting updates NR_SECONDARY_PAGETABLE through
/// `__lruvec_stat_mod_folio` from 6.11 to 7.x (iommu-pages.h / iommu-pages.c).
/// `__lruvec_stat_mod_folio` (6.11 mm/memcontrol.c) was renamed `lruvec_stat_mod_folio`
/// (7.3 mm/memcontrol.c, same arguments); the first one this kernel has is used.
const PT_SYMBOLS: &[&str] = &["__lruvec_stat_mod_folio", "lruvec_stat_mod_folio"];

/// Functions that also have trampoline programs (fentry/fexit): (symbol, arity, fentry
/// program, fexit program). Chosen when BTF shows the function with that arity; the kprobe
/// programs stay as the fallback.
const TRAMPOLINES: &[(&str, usize, &str, Option<&str>)] = &[
    ("iommu_map", 6, "map_fentry", Some("map_fexit")),
    ("iommu_unmap", 3, "unmap_fentry", Some("unmap_fexit")),
    (
        "iommu_unmap_fast",
        4,
        "unmap_fast_fentry",
        Some("unmap_fast_fexit"),
    ),
    ("__lruvec_stat_mod_folio", 3, "pt_stat_fentry", None),
    ("lruvec_stat_mod_folio", 3, "pt_stat_fentry", None),
];

/// The trampoline programs for `symbol` on this kernel, if it can use them.
fn trampoline(inputs: &PlanInputs, symbol: &str) -> Option<(String, &'static str, Option<String>)> {
    let (_, arity, fentry, fexit) = TRAMPOLINES.iter().find(|t| t.0 == symbol)?;
    let params = inputs.btf?.func_params(symbol)?;
    if params.len() != *arity {
        return None;
    }
    let kind = if fexit.is_some() {
        "fentry+fexit"
    } else {
        "fentry"
    };
    Some((fentry.to_string(), kind, fexit.map(str::to_string)))
}

/// Picks trampolines over kprobes where possible, keeping the kprobes as the fallback.
fn with_trampoline(inputs: &PlanInputs, mut a: Attachment) -> Attachment {
    if let Some((entry, kind, exit)) = trampoline(inputs, &a.symbol) {
        a.fallback = Some(Box::new(Attachment {
            fallback: None,
            ..a.clone()
        }));
        a.program_type = kind.into();
        a.entry_program = entry;
        a.exit_program = exit;
    }
    a
}

/// A symbol attached for a logical point.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub symbol: String,
    /// `kprobe+kretprobe` or `kprobe`.
    pub program_type: String,
    pub entry_program: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_program: Option<String>,
    /// Index into `Plan::drivers` for driver ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<usize>,
    /// Address from kallsyms, 0 when hidden (not root).
    #[serde(skip)]
    pub addr: u64,
    /// What to attach instead if this kind of program is refused (kprobes for trampolines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Box<Attachment>>,
}

/// A candidate symbol that will not be attached, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub symbol: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PointPlan {
    pub point: String,
    pub what: String,
    pub attach: Vec<Attachment>,
    pub gaps: Vec<Gap>,
}

impl PointPlan {
    pub fn status(&self) -> &'static str {
        if self.attach.is_empty() {
            "missing"
        } else if self.gaps.iter().any(|g| g.reason.starts_with("refused")) {
            "degraded"
        } else {
            "ok"
        }
    }
}

/// A driver field copied into allocation events, relative to the `iommu_domain` pointer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DriverField {
    pub name: String,
    /// Relative to the domain pointer, or to the pointer at `deref` when set.
    pub offset: i32,
    /// Offset (from the domain pointer) of a pointer to follow first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deref: Option<i32>,
    pub size: u32,
    /// For bitfields: shift and width inside the byte read.
    pub bit_shift: u32,
    pub bit_width: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DriverInfo {
    pub name: String,
    pub fields: Vec<DriverField>,
}

/// Everything decided about this kernel; recorded in capture headers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub kernel_release: String,
    pub points: Vec<PointPlan>,
    pub drivers: Vec<DriverInfo>,
    /// Offsets and values read from BTF, by name (what went into the eBPF CONFIG).
    pub offsets: Vec<(String, i64)>,
    /// Reasons tracing cannot work at all on this kernel (empty when it can).
    pub blockers: Vec<String>,
    /// Kernel behaviours the reference models must follow, detected from BTF and kallsyms
    /// (see `detect_features`).
    #[serde(default)]
    pub features: Vec<String>,
}

/// Inputs the plan is computed from (separate from the system so tests can feed fixtures).
pub struct PlanInputs<'a> {
    pub kernel_release: String,
    pub btf: Option<&'a Btf>,
    pub kallsyms: &'a Kallsyms,
    /// Symbols to refuse, as if missing (`--deny-symbol`, to test degraded kernels).
    pub deny: &'a [String],
}

fn addr_of(inputs: &PlanInputs, symbol: &str) -> u64 {
    inputs.kallsyms.get(symbol).first().map_or(0, |s| s.addr)
}

fn symbol_gap(inputs: &PlanInputs, symbol: &str, params: &[&str]) -> Option<String> {
    if inputs.deny.iter().any(|d| d == symbol) {
        return Some("refused by --deny-symbol".into());
    }
    let syms = inputs.kallsyms.get(symbol);
    if syms.is_empty() {
        let clones = inputs.kallsyms.clones_of(symbol);
        return Some(if clones.is_empty() {
            "not in this kernel (not built in, or renamed in this version)".into()
        } else {
            format!(
                "inlined: only compiler clones exist ({}), which cannot be targeted",
                clones.join(", ")
            )
        });
    }
    if syms.len() > 1 {
        return Some(format!(
            "ambiguous: {} functions share this name, attaching by name would pick one",
            syms.len()
        ));
    }
    if let (Some(btf), false) = (inputs.btf, params.is_empty()) {
        if let Some(actual) = btf.func_params(symbol) {
            for (i, want) in params.iter().enumerate() {
                if actual.get(i).map(String::as_str) != Some(want) {
                    return Some(format!(
                        "unexpected signature: BTF has ({}), the probe expects ({})",
                        actual.join(", "),
                        params.join(", ")
                    ));
                }
            }
        }
    }
    None
}

impl Plan {
    /// Decides what to attach on the kernel described by `inputs`.
    pub fn compute(inputs: &PlanInputs) -> Plan {
        let mut points = Vec::new();
        let mut blockers = Vec::new();
        if inputs.btf.is_none() {
            blockers.push(
                "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): iommu-trace \
                 reads kernel struct offsets from BTF. Boot a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y."
                    .into(),
            );
        }
        if inputs.kallsyms.is_empty() {
            blockers.push(
                "/proc/kallsyms lists no functions: the kernel was built without \
                 CONFIG_KALLSYMS, or /proc is not mounted."
                    .into(),
            );
        }

        for cp in CORE_POINTS {
            let mut plan = PointPlan {
                point: cp.point.into(),
                what: cp.what.into(),
                attach: vec![],
                gaps: vec![],
            };
            for sym in cp.symbols {
                match symbol_gap(inputs, sym, cp.params) {
                    None => plan.attach.push(with_trampoline(
                        inputs,
                        Attachment {
                            symbol: sym.to_string(),
                            program_type: "kprobe+kretprobe".into(),
                            entry_program: cp.entry_program.into(),
                            exit_program: Some(cp.exit_program.into()),
                            driver: None,
                            addr: addr_of(inputs, sym),
                            fallback: None,
                        },
                    )),
                    Some(reason) => plan.gaps.push(Gap {
                        symbol: sym.to_string(),
                        reason,
                    }),
                }
            }
            points.push(plan);
        }

        // Driver ops: every (driver, shape) pair whose symbol exists.
        let mut drivers = Vec::new();
        let mut alloc = PointPlan {
            point: "driver_alloc".into(),
            what: "driver domain allocation ops (domain_alloc_user; 6.13+: \
                   domain_alloc_paging_flags, domain_alloc_nested)"
                .into(),
            attach: vec![],
            gaps: vec![],
        };
        for spec in DRIVERS {
            let mut driver_idx = None;
            for shape in OP_SHAPES {
                let sym = format!("{}_{}", spec.prefix, shape.suffix);
                let gap = symbol_gap(inputs, &sym, shape.params);
                // Absent ops of absent drivers are the normal case: list only real gaps.
                if gap
                    .as_deref()
                    .is_some_and(|g| g.starts_with("not in this kernel"))
                {
                    continue;
                }
                if let Some(reason) = gap {
                    alloc.gaps.push(Gap {
                        symbol: sym,
                        reason,
                    });
                    continue;
                }
                if drivers.len() >= MAX_DRIVERS {
                    break;
                }
                let idx = *driver_idx.get_or_insert_with(|| {
                    drivers.push(DriverInfo {
                        name: spec.name.into(),
                        fields: driver_fields(inputs.btf, spec),
                    });
                    drivers.len() - 1
                });
                alloc.attach.push(Attachment {
                    addr: addr_of(inputs, &sym),
                    symbol: sym,
                    program_type: "kprobe+kretprobe".into(),
                    entry_program: shape.entry_program.into(),
                    exit_program: Some("alloc_exit".into()),
                    driver: Some(idx),
                    fallback: None,
                });
            }
        }
        if alloc.attach.is_empty() && alloc.gaps.is_empty() {
            alloc.gaps.push(Gap {
                symbol: "*_domain_alloc_{user,paging_flags,nested}".into(),
                reason: "no known IOMMU driver op in this kernel (no intel, amd, arm-smmu-v3 \
                         or iommufd selftest driver built in or loaded)"
                    .into(),
            });
        }
        points.push(alloc);

        let mut pt = PointPlan {
            point: "pt_pages".into(),
            what: "page-table pages allocated/freed per domain, with memcg charge \
                   (NR_SECONDARY_PAGETABLE updates)"
                .into(),
            attach: vec![],
            gaps: vec![],
        };
        let stat = inputs
            .btf
            .and_then(|b| b.enum_value("NR_SECONDARY_PAGETABLE"));
        let candidates: Vec<(&str, Option<String>)> = PT_SYMBOLS
            .iter()
            .map(|sym| (*sym, symbol_gap(inputs, sym, &["folio", "idx", "val"])))
            .collect();
        match (candidates.iter().find(|(_, gap)| gap.is_none()), stat) {
            (Some((sym, _)), Some(_)) => pt.attach.push(with_trampoline(
                inputs,
                Attachment {
                    symbol: sym.to_string(),
                    program_type: "kprobe".into(),
                    entry_program: "pt_stat".into(),
                    exit_program: None,
                    driver: None,
                    addr: addr_of(inputs, sym),
                    fallback: None,
                },
            )),
            (Some((sym, _)), None) => pt.gaps.push(Gap {
                symbol: sym.to_string(),
                reason: "no NR_SECONDARY_PAGETABLE in BTF (kernel older than 6.1 or no BTF)".into(),
            }),
            (None, _) => pt.gaps.extend(candidates.into_iter().map(|(sym, gap)| Gap {
                symbol: sym.to_string(),
                reason: gap.unwrap_or_default(),
            })),
        }
        points.push(pt);

        let iommufd_present = !inputs.kallsyms.get("iommufd_hwpt_alloc").is_empty()
            || !inputs.kallsyms.get("iommufd_fops_open").is_empty();
        if !inputs.kallsyms.is_empty() && !iommufd_present {
            blockers.push(
                "this kernel has no iommufd (no iommufd_hwpt_alloc in /proc/kallsyms): it was \
                 built without CONFIG_IOMMUFD, or the iommufd module is not loaded \
                 (`modprobe iommufd`). Stock Debian kernels do not enable it; \
                 `cargo xtask demo` boots a test kernel that does."
                    .into(),
            );
        }

        let offsets = inputs.btf.map(offsets_from_btf).unwrap_or_default();
        let features = detect_features(inputs);
        Plan {
            features,
            kernel_release: inputs.kernel_release.clone(),
            points,
            drivers,
            offsets,
            blockers,
        }
    }

    pub fn point(&self, name: &str) -> Option<&PointPlan> {
        self.points.iter().find(|p| p.point == name)
    }

    /// Builds the eBPF CONFIG global from the BTF offsets and the driver table.
    pub fn config(&self, filter_pid: u32) -> Config {
        let get = |name: &str| -> u32 {
            self.offsets
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v as u32)
                .unwrap_or(Config::UNSET)
        };
        let mut c = Config::unset();
        c.domain_type = get("iommu_domain.type");
        c.domain_pgsize_bitmap = get("iommu_domain.pgsize_bitmap");
        c.domain_aperture_start = get("iommu_domain.geometry.aperture_start");
        c.domain_aperture_end = get("iommu_domain.geometry.aperture_end");
        c.user_data_type = get("iommu_user_data.type");
        c.user_data_uptr = get("iommu_user_data.uptr");
        c.user_data_len = get("iommu_user_data.len");
        c.ucmd_cmd = get("iommufd_ucmd.cmd");
        c.folio_memcg_data = get("folio.memcg_data");
        c.objcg_memcg = get("obj_cgroup.memcg");
        c.memcg_css_cgroup = get("mem_cgroup.css.cgroup");
        c.cgroup_kn = get("cgroup.kn");
        c.kn_id = get("kernfs_node.id");
        c.nr_secondary_pagetable = get("NR_SECONDARY_PAGETABLE");
        let kmem = get("MEMCG_DATA_KMEM");
        let nr_flags = get("__NR_MEMCG_DATA_FLAGS");
        c.memcg_data_kmem = if kmem == Config::UNSET { 0 } else { kmem };
        c.memcg_data_flags_mask = if nr_flags == Config::UNSET {
            0
        } else {
            nr_flags - 1
        };
        c.filter_pid = filter_pid;
        for (i, d) in self.drivers.iter().enumerate().take(MAX_DRIVERS) {
            let mut f = DriverFields::default();
            for (j, field) in d.fields.iter().enumerate().take(DRIVER_WORDS) {
                f.offsets[j] = field.offset;
                f.sizes[j] = field.size;
                f.derefs[j] = field.deref.unwrap_or(DriverFields::DIRECT);
            }
            c.drivers[i] = f;
        }
        c
    }

    /// Every attachment, in plan order.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.points.iter().flat_map(|p| p.attach.iter())
    }

    /// Probe points that record nothing: none of their symbols was in the plan, or the
    /// kernel refused every attachment (`failed`, from the tracer; a refusal that fell back
    /// to a kprobe still records).
    pub fn missing_points(&self, failed: &[Gap]) -> Vec<MissingPoint> {
        let refused = |a: &Attachment| {
            failed
                .iter()
                .find(|g| g.symbol == a.symbol && !g.reason.contains("; using "))
        };
        let mut out = Vec::new();
        for p in &self.points {
            let why: Vec<String> = if p.attach.is_empty() {
                p.gaps
                    .iter()
                    .map(|g| format!("{}: {}", g.symbol, g.reason))
                    .collect()
            } else if p.attach.iter().all(|a| refused(a).is_some()) {
                p.attach
                    .iter()
                    .filter_map(refused)
                    .map(|g| format!("{}: {}", g.symbol, g.reason))
                    .collect()
            } else {
                continue;
            };
            out.push(MissingPoint {
                point: p.point.clone(),
                why: if why.is_empty() {
                    "no candidate symbol".into()
                } else {
                    why.join("; ")
                },
            });
        }
        out
    }
}

/// A probe point that recorded nothing, and why (for the consumers of a capture).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingPoint {
    pub point: String,
    pub why: String,
}

impl std::fmt::Display for MissingPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.point, self.why)
    }
}

/// Page-table behaviours of this kernel, from what it contains (kernel-notes.md §4.1):
/// - `vtd_generic_pt`: VT-d page tables come from the generic page table (6.19+), seen as
///   `pt_iommu_vtdss_init`;
/// - `generic_pt_whole_range_unmap`: the core hands the whole unmap range to the page
///   table (7.0+), seen as `struct pt_iommu_ops` having `unmap_range`;
/// - `io_pgtable_arm_concat_mandatory`: io-pgtable-arm's 7.x rules (stage-2 concatenation
///   only when mandatory, no split of a partially unmapped block), seen as its 7.x walker.
pub fn detect_features(inputs: &PlanInputs) -> Vec<String> {
    let mut f = Vec::new();
    if !inputs.kallsyms.get("pt_iommu_vtdss_init").is_empty() {
        f.push("vtd_generic_pt".to_string());
    }
    if inputs
        .btf
        .is_some_and(|b| b.member("pt_iommu_ops", "unmap_range").is_some())
    {
        f.push("generic_pt_whole_range_unmap".to_string());
    }
    // arm_lpae_concat_mandatory() and the removal of arm_lpae_split_blk_unmap() leave no
    // symbol of their own (static inline; the 6.12 splitter is inlined too: System.map of
    // the test kernels). io-pgtable-arm's walker, `arm_lpae_pgtable_walk`, is in 7.3 and
    // not in 6.12, so it stands in; a kernel from between the two may be judged wrongly,
    // and `replay --smmu` overrides.
    let has = |s: &str| !inputs.kallsyms.get(s).is_empty();
    if has("arm_lpae_concat_mandatory") || has("arm_lpae_pgtable_walk") {
        f.push("io_pgtable_arm_concat_mandatory".to_string());
    }
    f
}

/// The struct offsets and enum values the eBPF programs need (kernel-internal, so from BTF).
fn offsets_from_btf(btf: &Btf) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let members = [
        ("iommu_domain", "type"),
        ("iommu_domain", "pgsize_bitmap"),
        ("iommu_domain", "geometry.aperture_start"),
        ("iommu_domain", "geometry.aperture_end"),
        ("iommu_user_data", "type"),
        ("iommu_user_data", "uptr"),
        ("iommu_user_data", "len"),
        ("iommufd_ucmd", "cmd"),
        ("folio", "memcg_data"),
        ("obj_cgroup", "memcg"),
        ("mem_cgroup", "css.cgroup"),
        ("cgroup", "kn"),
        ("kernfs_node", "id"),
    ];
    for (s, path) in members {
        if let Some(m) = btf.member(s, path) {
            out.push((format!("{s}.{path}"), m.byte_offset as i64));
        }
    }
    for e in [
        "NR_SECONDARY_PAGETABLE",
        "NR_IOMMU_PAGES",
        "MEMCG_DATA_KMEM",
        "__NR_MEMCG_DATA_FLAGS",
    ] {
        if let Some(v) = btf.enum_value(e) {
            out.push((e.into(), v));
        }
    }
    out
}

fn driver_fields(btf: Option<&Btf>, spec: &DriverSpec) -> Vec<DriverField> {
    let Some(btf) = btf else { return vec![] };
    let Some(strukt) = btf.struct_with(spec.domain_struct, spec.marker) else {
        return vec![];
    };
    let Some(base) = btf.member_of(strukt, "domain") else {
        return vec![];
    };
    let domain_offset = |m: &super::btf::MemberInfo| m.byte_offset as i32 - base.byte_offset as i32;
    spec.fields
        .iter()
        .filter_map(|field| {
            let (name, path) = field.split_once('=').unwrap_or((field, field));
            // `pointer->path`: a member of the struct a domain member points to.
            let (m, deref) = match path.split_once("->") {
                Some((pointer, inner)) => {
                    let (p, target) = btf.pointee(strukt, pointer)?;
                    (btf.member_of(target, inner)?, Some(domain_offset(&p)))
                }
                None => (btf.member_of(strukt, path)?, None),
            };
            Some(DriverField {
                name: name.to_string(),
                offset: match deref {
                    Some(_) => m.byte_offset as i32,
                    None => domain_offset(&m),
                },
                deref,
                size: m.size.min(8),
                bit_shift: m.bit_shift,
                bit_width: m.bit_width,
            })
        })
        .take(DRIVER_WORDS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::btf::tests::Builder;
    use super::*;

    fn fixture_btf() -> Btf {
        let mut b = Builder::new();
        let u64t = b.int("u64", 8);
        let intt = b.int("int", 4);
        let u8t = b.int("u8", 1);
        let geom = b.strukt(
            "iommu_domain_geometry",
            16,
            &[
                ("aperture_start", u64t, 0, 0),
                ("aperture_end", u64t, 64, 0),
            ],
        );
        let dom = b.strukt(
            "iommu_domain",
            40,
            &[
                ("type", intt, 0, 0),
                ("pgsize_bitmap", u64t, 64, 0),
                ("geometry", geom, 128, 0),
            ],
        );
        b.strukt(
            "dmar_domain",
            100,
            &[
                ("use_first_level", u8t, 11, 1),
                ("agaw", intt, 64, 0),
                ("domain", dom, 256, 0),
            ],
        );
        b.enumm("node_stat_item", &[("NR_SECONDARY_PAGETABLE", 41)]);
        b.func(
            "intel_iommu_domain_alloc_user",
            &["dev", "flags", "parent", "user_data"],
        );
        b.func(
            "mock_domain_alloc_paging_flags",
            &["dev", "user_data", "flags"],
        );
        b.func(
            "iommu_map",
            &["domain", "iova", "paddr", "size", "prot", "gfp"],
        );
        b.func("__lruvec_stat_mod_folio", &["folio", "idx", "val"]);
        Btf::parse(&b.build()).unwrap()
    }

    fn plan_of(btf: &Btf, kallsyms: &Kallsyms, deny: &[String]) -> Plan {
        Plan::compute(&PlanInputs {
            kernel_release: "x".into(),
            btf: Some(btf),
            kallsyms,
            deny,
        })
    }

    const KALLSYMS: &str = "ffffffff81000000 T iommufd_hwpt_alloc\n\
        ffffffff81000010 T iommufd_hwpt_paging_alloc\n\
        ffffffff81000020 T iommu_domain_free\n\
        ffffffff81000030 T iommu_map\n\
        ffffffff81000040 T iommu_unmap\n\
        ffffffff81000050 T iommu_unmap_fast\n\
        ffffffff81000060 t intel_iommu_domain_alloc_user\n\
        ffffffff81000070 t mock_domain_alloc_paging_flags\n\
        ffffffff81000080 T __lruvec_stat_mod_folio\n\
        ffffffff81000090 t arm_smmu_domain_alloc_user\n\
        ffffffff810000a0 t arm_smmu_domain_alloc_user\n";

    #[test]
    fn plan_picks_symbols_checks_signatures_and_reports_gaps() {
        let btf = fixture_btf();
        let k = Kallsyms::parse(KALLSYMS);
        let plan = plan_of(&btf, &k, &[]);
        assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
        let alloc = plan.point("driver_alloc").unwrap();
        assert_eq!(alloc.attach.len(), 1);
        assert_eq!(alloc.attach[0].symbol, "intel_iommu_domain_alloc_user");
        assert_eq!(plan.drivers[0].name, "intel");
        // The mock op exists but with parameters in another order: not attached, said why.
        let reasons: Vec<_> = alloc
            .gaps
            .iter()
            .map(|g| (&g.symbol[..], &g.reason[..]))
            .collect();
        assert!(reasons
            .iter()
            .any(|(s, r)| *s == "mock_domain_alloc_paging_flags"
                && r.starts_with("unexpected signature")));
        assert!(reasons
            .iter()
            .any(|(s, r)| *s == "arm_smmu_domain_alloc_user" && r.starts_with("ambiguous")));
        assert_eq!(plan.point("unmap").unwrap().attach.len(), 2);
        assert_eq!(plan.point("pt_pages").unwrap().status(), "ok");

        // BTF shows iommu_map with its 6 parameters: a trampoline, kprobes as fallback.
        let map = &plan.point("map").unwrap().attach[0];
        assert_eq!(
            (map.program_type.as_str(), map.entry_program.as_str()),
            ("fentry+fexit", "map_fentry")
        );
        assert_eq!(
            map.fallback.as_ref().unwrap().program_type,
            "kprobe+kretprobe"
        );
        assert_eq!(
            plan.point("pt_pages").unwrap().attach[0].program_type,
            "fentry"
        );
        // No BTF record for iommu_unmap in the fixture: kprobes.
        assert_eq!(
            plan.point("unmap").unwrap().attach[0].program_type,
            "kprobe+kretprobe"
        );

        // Driver fields are relative to the embedded iommu_domain (at byte 32).
        let f = &plan.drivers[0].fields;
        assert_eq!(f[0].name, "agaw");
        assert_eq!(f[0].offset, 8 - 32);
        assert_eq!(
            (f[1].name.as_str(), f[1].offset, f[1].bit_shift),
            ("use_first_level", 1 - 32, 3)
        );
        let cfg = plan.config(0);
        assert_eq!(cfg.domain_pgsize_bitmap, 8);
        assert_eq!(cfg.domain_aperture_end, 24);
        assert_eq!(cfg.nr_secondary_pagetable, 41);
        assert_eq!(cfg.ucmd_cmd, Config::UNSET);
    }

    #[test]
    fn io_pgtable_arm_7_rules_are_seen_from_its_walker() {
        let btf = fixture_btf();
        let features = |extra: &str| {
            let k = Kallsyms::parse(&format!("{KALLSYMS}{extra}"));
            detect_features(&PlanInputs {
                kernel_release: "x".into(),
                btf: Some(&btf),
                kallsyms: &k,
                deny: &[],
            })
        };
        let seven = "io_pgtable_arm_concat_mandatory".to_string();
        assert!(!features("").contains(&seven));
        assert!(features("ffff800080000000 t arm_lpae_pgtable_walk\n").contains(&seven));
    }

    #[test]
    fn the_renamed_stat_hook_is_found() {
        let btf = fixture_btf();
        let renamed = KALLSYMS.replace("T __lruvec_stat_mod_folio", "T lruvec_stat_mod_folio");
        let k = Kallsyms::parse(&renamed);
        let plan = plan_of(&btf, &k, &[]);
        let pt = plan.point("pt_pages").unwrap();
        assert_eq!(pt.status(), "ok");
        assert_eq!(pt.attach[0].symbol, "lruvec_stat_mod_folio");
    }

    #[test]
    fn denied_symbol_degrades_the_point_and_missing_iommufd_blocks() {
        let btf = fixture_btf();
        let k = Kallsyms::parse(KALLSYMS);
        let deny = vec!["iommu_unmap_fast".to_string()];
        let plan = plan_of(&btf, &k, &deny);
        let unmap = plan.point("unmap").unwrap();
        assert_eq!(unmap.status(), "degraded");
        assert_eq!(unmap.attach.len(), 1);

        let bare = Kallsyms::parse("ffffffff81000030 T iommu_map\n");
        let plan = Plan::compute(&PlanInputs {
            kernel_release: "x".into(),
            btf: None,
            kallsyms: &bare,
            deny: &[],
        });
        assert_eq!(plan.blockers.len(), 2, "{:?}", plan.blockers);
        assert!(plan.blockers[0].contains("CONFIG_DEBUG_INFO_BTF"));
        assert!(plan.blockers[1].contains("CONFIG_IOMMUFD"));
        assert_eq!(plan.point("hwpt_alloc_ioctl").unwrap().status(), "missing");
    }

    // A field behind a pointer (SMMUv3: the domain's `smmu->oas`): the pointer's offset
    // from the domain, then the member's offset in the pointed-to struct.
    #[test]
    fn a_driver_field_behind_a_pointer() {
        let mut b = Builder::new();
        let u64t = b.int("u64", 8);
        let intt = b.int("int", 4);
        let dom = b.strukt(
            "iommu_domain",
            16,
            &[("type", intt, 0, 0), ("pgsize_bitmap", u64t, 64, 0)],
        );
        // SMMUv2's structs of the same names come first, laid out differently.
        let v2dev = b.strukt("arm_smmu_device", 64, &[("va_size", u64t, 0, 0)]);
        let v2devp = b.ptr(v2dev);
        b.strukt(
            "arm_smmu_domain",
            96,
            &[
                ("smmu", v2devp, 0, 0),
                ("cfg", u64t, 64, 0),
                ("stage", intt, 192, 0),
                ("domain", dom, 512, 0),
            ],
        );
        let dev = b.strukt(
            "arm_smmu_device",
            64,
            &[("ias", u64t, 256, 0), ("oas", u64t, 320, 0)],
        );
        let devp = b.ptr(dev);
        b.strukt(
            "arm_smmu_domain",
            96,
            &[
                ("smmu", devp, 0, 0),
                ("stage", intt, 128, 0),
                ("s2_cfg", u64t, 192, 0),
                ("domain", dom, 256, 0),
            ],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        let spec = DRIVERS.iter().find(|d| d.name == "arm-smmu-v3").unwrap();
        let f = driver_fields(Some(&btf), spec);
        let by = |n: &str| f.iter().find(|x| x.name == n).cloned().unwrap();
        assert_eq!(
            (by("domain_stage").offset, by("domain_stage").deref),
            (16 - 32, None)
        );
        assert_eq!(
            (by("smmu_oas").offset, by("smmu_oas").deref),
            (40, Some(-32))
        );
        assert_eq!(by("smmu_ias").offset, 32);
    }

    // What the consumers are told: a point with no symbol left, or whose every attachment
    // the kernel refused, records nothing; a refusal that fell back to a kprobe records.
    #[test]
    fn missing_points_name_the_point_and_the_reason() {
        let btf = fixture_btf();
        let k = Kallsyms::parse(KALLSYMS);
        let deny = vec!["__lruvec_stat_mod_folio".to_string()];
        let plan = plan_of(&btf, &k, &deny);
        let missing = plan.missing_points(&[]);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].point, "pt_pages");
        assert!(missing[0]
            .why
            .contains("__lruvec_stat_mod_folio: refused by --deny-symbol"));

        let plan = plan_of(&btf, &k, &[]);
        assert!(plan.missing_points(&[]).is_empty());
        let fell_back = Gap {
            symbol: "iommu_map".into(),
            reason: "fentry+fexit refused (EINVAL); using kprobe+kretprobe".into(),
        };
        assert!(plan.missing_points(&[fell_back]).is_empty());
        let refused = Gap {
            symbol: "iommu_map".into(),
            reason: "kprobe refused: EBUSY".into(),
        };
        let missing = plan.missing_points(&[refused]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].point, "map");
        assert!(missing[0].why.contains("EBUSY"));
    }
}
