//! The probe plan: logical probe points -> the kernel symbols and eBPF programs that serve
//! them on *this* kernel, decided from BTF and kallsyms (never from the version number).
//! The tables it works from are in `tables.rs`; the plan it produces is
//! [`crate::session::Plan`].
//!
//! Kernel facts: docs/kernel-facts.md (§1 op history and call sites, §1.5 attachability,
//! §3 iommu-pages accounting).

use iommu_trace_common::{DRIVER_WORDS, MAX_DRIVERS};

use super::btf::Btf;
use super::features::detect_features;
use super::kallsyms::Kallsyms;
use super::tables::{
    DriverSpec, CORE_POINTS, DRIVERS, IOAS_OPS, LINEAR_MAP_BASES, OBJECT_CREATE_HANDLERS,
    OBJECT_DESTROY_OPS, OBJECT_REFS, OP_SHAPES, PT_PRECISE, PT_SYMBOLS, TRAMPOLINES,
    VIOMMU_NESTED_PARAMS, VMEMMAP_WITNESS,
};
use crate::session::{
    Attachment, DriverField, DriverInfo, Gap, GapReason, ObjectRef, ObjectRefs, Plan, PointPlan,
    ProgramKind, TOP_GROWTH_POINT,
};

/// The trampoline programs for `symbol` on this kernel, if it can use them.
fn trampoline(inputs: &PlanInputs, symbol: &str) -> Option<(String, ProgramKind, Option<String>)> {
    let (_, arity, kind, first, second) = TRAMPOLINES.iter().find(|t| t.0 == symbol)?;
    let params = inputs.btf?.func_params(symbol)?;
    if params.len() != *arity {
        return None;
    }
    Some((first.to_string(), *kind, second.map(str::to_string)))
}

/// Picks trampolines over kprobes where possible, keeping the kprobes as the fallback.
fn with_trampoline(inputs: &PlanInputs, mut a: Attachment) -> Attachment {
    if let Some((entry, kind, exit)) = trampoline(inputs, &a.symbol) {
        a.fallback = Some(Box::new(Attachment {
            fallback: None,
            ..a.clone()
        }));
        a.program_type = kind;
        a.entry_program = entry;
        a.exit_program = exit;
    }
    a
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

/// A kprobe on `symbol` (and a kretprobe when there is an `exit` program), for no driver.
fn kprobe(inputs: &PlanInputs, symbol: &str, entry: &str, exit: Option<&str>) -> Attachment {
    Attachment {
        symbol: symbol.to_string(),
        program_type: match exit {
            Some(_) => ProgramKind::KprobeKretprobe,
            None => ProgramKind::Kprobe,
        },
        entry_program: entry.to_string(),
        exit_program: exit.map(str::to_string),
        driver: None,
        addr: addr_of(inputs, symbol),
        fallback: None,
    }
}

fn symbol_gap(inputs: &PlanInputs, symbol: &str, params: &[&str]) -> Option<GapReason> {
    if inputs.deny.iter().any(|d| d == symbol) {
        return Some(GapReason::Denied);
    }
    let syms = inputs.kallsyms.get(symbol);
    if syms.is_empty() {
        let clones = inputs.kallsyms.clones_of(symbol);
        return Some(if clones.is_empty() {
            GapReason::NotInKernel
        } else {
            GapReason::Inlined { clones }
        });
    }
    if syms.len() > 1 {
        return Some(GapReason::Ambiguous { count: syms.len() });
    }
    if let (Some(btf), false) = (inputs.btf, params.is_empty()) {
        if let Some(actual) = btf.func_params(symbol) {
            for (i, want) in params.iter().enumerate() {
                if actual.get(i).map(String::as_str) != Some(want) {
                    return Some(GapReason::UnexpectedSignature {
                        actual,
                        expected: params.iter().map(|p| p.to_string()).collect(),
                    });
                }
            }
        }
    }
    None
}

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
                    kprobe(inputs, sym, cp.entry_program, cp.exit_program),
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
                   domain_alloc_paging_flags, domain_alloc_nested, a vIOMMU's \
                   alloc_domain_nested)"
            .into(),
        attach: vec![],
        gaps: vec![],
    };
    for spec in DRIVERS {
        let mut driver_idx = None;
        // The op shapes under the driver's prefix, then its vIOMMU's nested op.
        let candidates = OP_SHAPES
            .iter()
            .map(|shape| {
                (
                    format!("{}_{}", spec.prefix, shape.suffix),
                    shape.entry_program,
                    shape.params,
                )
            })
            .chain(spec.viommu_nested_ops.iter().map(|sym| {
                (
                    sym.to_string(),
                    "alloc_viommu_nested_entry",
                    VIOMMU_NESTED_PARAMS,
                )
            }));
        for (sym, entry_program, params) in candidates {
            let gap = symbol_gap(inputs, &sym, params);
            // Absent ops of absent drivers (and of kernels before the vIOMMU) are the
            // normal case: list only real gaps.
            if gap == Some(GapReason::NotInKernel) {
                continue;
            }
            if let Some(reason) = gap {
                alloc.gaps.push(Gap {
                    symbol: sym,
                    reason,
                });
                continue;
            }
            if drivers.len() >= MAX_DRIVERS && driver_idx.is_none() {
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
                program_type: ProgramKind::KprobeKretprobe,
                entry_program: entry_program.into(),
                exit_program: Some("alloc_exit".into()),
                driver: Some(idx),
                fallback: None,
            });
        }
    }
    if alloc.attach.is_empty() && alloc.gaps.is_empty() {
        alloc.gaps.push(Gap {
            symbol: "*_domain_alloc_{user,paging_flags,nested}".into(),
            reason: GapReason::NoKnownDriver,
        });
    }
    points.push(alloc);
    if let Some(grow) = top_growth_point(inputs) {
        points.push(grow);
    }

    let mut pt = PointPlan {
        point: "pt_pages".into(),
        what: "page-table pages allocated/freed per domain, with memcg charge (6.15+ x86-64: \
                   the iommu-pages functions; else NR_SECONDARY_PAGETABLE updates)"
            .into(),
        attach: vec![],
        gaps: vec![],
    };
    match precise_pt_hooks(inputs) {
        Ok(hooks) => pt.attach = hooks,
        Err(why) => pt.gaps = why,
    }
    let stat = inputs
        .btf
        .and_then(|b| b.enum_value("NR_SECONDARY_PAGETABLE"));
    let candidates: Vec<(&str, Option<GapReason>)> = PT_SYMBOLS
        .iter()
        .map(|sym| (*sym, symbol_gap(inputs, sym, &["folio", "idx", "val"])))
        .collect();
    match (candidates.iter().find(|(_, gap)| gap.is_none()), stat) {
        // The precise pair serves: no statistics hook.
        _ if !pt.attach.is_empty() => {}
        (Some((sym, _)), Some(_)) => pt.attach.push(with_trampoline(
            inputs,
            Attachment {
                symbol: sym.to_string(),
                program_type: ProgramKind::Kprobe,
                entry_program: "pt_stat".into(),
                exit_program: None,
                driver: None,
                addr: addr_of(inputs, sym),
                fallback: None,
            },
        )),
        (Some((sym, _)), None) => pt.gaps.push(Gap {
            symbol: sym.to_string(),
            reason: GapReason::NoPageTableStat,
        }),
        (None, _) => pt.gaps.extend(candidates.into_iter().map(|(sym, gap)| Gap {
            symbol: sym.to_string(),
            reason: gap.unwrap_or(GapReason::NotInKernel),
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

    let object_types = inputs.btf.map(object_types_from_btf).unwrap_or_default();
    points.push(ioas_ops_point(inputs));
    points.push(per_object_type_point(
        inputs,
        &object_types,
        "object_ioctl",
        "the ioctl handlers that create objects: an abort's errno (iommufd/*.c)",
        OBJECT_CREATE_HANDLERS,
        ("create_ioctl_entry", Some("object_ioctl_exit")),
        &["ucmd"],
    ));
    points.push(per_object_type_point(
        inputs,
        &object_types,
        "object_destroy",
        "iommufd object destroyed, on every path (each type's destroy op)",
        OBJECT_DESTROY_OPS,
        ("object_destroy", None),
        &["obj"],
    ));
    let object_refs = inputs.btf.map(object_refs_from_btf).unwrap_or_default();
    let offsets = inputs.btf.map(offsets_from_btf).unwrap_or_default();
    let linear_map_bases = LINEAR_MAP_BASES.map(|b| inputs.kallsyms.data_addr(b).unwrap_or(0));
    let features = detect_features(inputs);
    Plan {
        features,
        object_types,
        object_refs,
        kernel_release: inputs.kernel_release.clone(),
        points,
        drivers,
        offsets,
        blockers,
        linear_map_bases,
    }
}

/// The page-table pages' own hooks where the kernel has them (`PT_PRECISE`: 6.15+) and the
/// linear map's bases are known (x86-64), or why not: the statistics hook then serves, and
/// these gaps say why (`probes`).
fn precise_pt_hooks(inputs: &PlanInputs) -> Result<Vec<Attachment>, Vec<Gap>> {
    let mut attach = Vec::new();
    let mut gaps = Vec::new();
    for (sym, params, kind, program) in PT_PRECISE {
        // A trampoline needs the function in BTF (a static one is there when out of line).
        let in_btf = inputs
            .btf
            .and_then(|b| b.func_params(sym))
            .is_some_and(|p| p.len() == params.len());
        match symbol_gap(inputs, sym, params) {
            Some(reason) => gaps.push(Gap {
                symbol: sym.to_string(),
                reason,
            }),
            None if !in_btf => gaps.push(Gap {
                symbol: sym.to_string(),
                reason: GapReason::NotInKernel,
            }),
            None => attach.push(Attachment {
                symbol: sym.to_string(),
                program_type: *kind,
                entry_program: program.to_string(),
                exit_program: None,
                driver: None,
                addr: addr_of(inputs, sym),
                fallback: None,
            }),
        }
    }
    if !gaps.is_empty() {
        return Err(gaps);
    }
    // Chosen on the symbols' presence, not their addresses: `probes` run without
    // CAP_SYSLOG sees them hidden, and must show what `record` will attach.
    let bases_listed = LINEAR_MAP_BASES.iter().all(|b| inputs.kallsyms.has_data(b));
    let vmemmap = !inputs.kallsyms.get(VMEMMAP_WITNESS).is_empty();
    let layout_known = inputs.btf.is_some_and(|b| {
        b.struct_size("page").is_some()
            && b.member("folio", "_flags_1").is_some()
            && b.enum_value("PG_head").is_some()
    });
    if !bases_listed || !vmemmap || !layout_known {
        return Err(vec![Gap {
            symbol: PT_PRECISE[0].0.to_string(),
            reason: GapReason::NoLinearMap,
        }]);
    }
    Ok(attach)
}

/// The drivers' page-table growth hooks this kernel has (docs/kernel-facts.md §4.4); no
/// point at all where no driver grows its top (VT-d, SMMUv3), so nothing reads as missing.
fn top_growth_point(inputs: &PlanInputs) -> Option<PointPlan> {
    let mut plan = PointPlan {
        point: TOP_GROWTH_POINT.into(),
        what: "a domain's page table grows its top level (AMD: device table updated)".into(),
        attach: vec![],
        gaps: vec![],
    };
    for (sym, program, params) in DRIVERS.iter().flat_map(|d| d.top_growth) {
        match symbol_gap(inputs, sym, params) {
            Some(GapReason::NotInKernel) => {}
            Some(reason) => plan.gaps.push(Gap {
                symbol: sym.to_string(),
                reason,
            }),
            None => plan.attach.push(kprobe(inputs, sym, program, None)),
        }
    }
    (!plan.attach.is_empty() || !plan.gaps.is_empty()).then_some(plan)
}

/// `enum iommufd_object_type` (iommufd_private.h in 6.12, include/linux/iommufd.h in 7.x):
/// each `IOMMUFD_OBJ_*` enumerator but the markers (`NONE`, `ANY`, `MAX`), by name. Unknown
/// names are kept (lower case) so a newer kernel's types still show.
fn object_types_from_btf(btf: &Btf) -> Vec<(String, i64)> {
    let Some(values) = btf.enum_values("iommufd_object_type") else {
        return Vec::new();
    };
    values
        .iter()
        .filter_map(|(name, v)| {
            let t = name.strip_prefix("IOMMUFD_OBJ_")?.to_ascii_lowercase();
            (!matches!(t.as_str(), "none" | "any" | "max")).then_some((t, *v))
        })
        .collect()
}

/// The IOAS mapping ioctls: one entry program per handler, one return program for all.
fn ioas_ops_point(inputs: &PlanInputs) -> PointPlan {
    let mut plan = PointPlan {
        point: "ioas_ops".into(),
        what: "IOAS_MAP, MAP_FILE, COPY, UNMAP, CHANGE_PROCESS and OPTION ioctls \
               (iommufd/ioas.c)"
            .into(),
        attach: vec![],
        gaps: vec![],
    };
    for (sym, entry) in IOAS_OPS {
        match symbol_gap(inputs, sym, &["ucmd"]) {
            None => plan.attach.push(with_trampoline(
                inputs,
                kprobe(inputs, sym, entry, Some("ioas_op_exit")),
            )),
            Some(reason) => plan.gaps.push(Gap {
                symbol: sym.to_string(),
                reason,
            }),
        }
    }
    plan
}

/// One kprobe per object type this kernel has, from a (type, symbol) table. Without the
/// type enum in BTF (iommufd built as a module whose BTF is not read), every symbol of the
/// table the kernel has.
fn per_object_type_point(
    inputs: &PlanInputs,
    object_types: &[(String, i64)],
    point: &str,
    what: &str,
    table: &[(&str, &str)],
    programs: (&str, Option<&str>),
    params: &[&str],
) -> PointPlan {
    let mut plan = PointPlan {
        point: point.into(),
        what: what.into(),
        attach: vec![],
        gaps: vec![],
    };
    let (entry, exit) = programs;
    for (object, sym) in table {
        let typed = !object_types.is_empty();
        if typed && !object_types.iter().any(|(n, _)| n == object) {
            continue;
        }
        match symbol_gap(inputs, sym, params) {
            None => plan.attach.push(kprobe(inputs, sym, entry, exit)),
            // A type the kernel has whose function is missing is a gap; without the enum,
            // a function the kernel lacks is only a type it does not have.
            Some(GapReason::NotInKernel) if !typed => {}
            Some(reason) => plan.gaps.push(Gap {
                symbol: sym.to_string(),
                reason,
            }),
        }
    }
    plan
}

/// The reference slots of each object type, at the offsets this kernel's BTF gives.
fn object_refs_from_btf(btf: &Btf) -> Vec<ObjectRefs> {
    OBJECT_REFS
        .iter()
        .filter_map(|spec| {
            let refs: Vec<ObjectRef> = spec
                .refs
                .iter()
                .filter_map(|(name, path, kind)| {
                    let m = btf.member(spec.strukt, path)?;
                    Some(ObjectRef {
                        name: name.to_string(),
                        kind: *kind,
                        offset: m.byte_offset,
                    })
                })
                .take(iommu_trace_common::OBJECT_REFS)
                .collect();
            (!refs.is_empty()).then(|| ObjectRefs {
                object: spec.object.to_string(),
                refs,
            })
        })
        .collect()
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
        ("iommufd_ucmd", "new_obj"),
        ("iommufd_ucmd", "ictx"),
        ("iopt_pages", "npinned"),
        ("iopt_pages", "npages"),
        ("iopt_pages", "account_mode"),
        ("iopt_pages", "source_task"),
        ("iopt_pages", "source_user"),
        ("iopt_pages", "source_mm"),
        ("task_struct", "tgid"),
        ("task_struct", "signal"),
        ("task_struct", "pid"),
        ("task_struct", "comm"),
        ("task_struct", "cgroups"),
        ("css_set", "dfl_cgrp"),
        ("signal_struct", "rlim"),
        ("user_struct", "uid"),
        ("user_struct", "locked_vm"),
        ("mm_struct", "locked_vm"),
        ("mm_struct", "pinned_vm"),
        ("iommufd_object", "type"),
        ("iommufd_object", "id"),
        ("iommufd_viommu", "hwpt"),
        ("iommufd_hw_pagetable", "domain"),
        ("protection_domain", "domain"),
        ("protection_domain", "iop.mode"),
        ("pt_iommu", "domain"),
        ("folio", "memcg_data"),
        // A large folio's order (6.15+'s page-table hooks).
        ("folio", "_flags_1"),
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
    // The pin probe's block read must stay inside `struct iopt_pages`.
    if let Some(size) = btf.struct_size("iopt_pages") {
        out.push(("sizeof(iopt_pages)".into(), size as i64));
    }
    // The page-table hooks of 6.15+: a page's address in the `struct page` array.
    if let Some(size) = btf.struct_size("page") {
        out.push(("sizeof(page)".into(), size as i64));
    }
    for e in [
        "NR_SECONDARY_PAGETABLE",
        "NR_IOMMU_PAGES",
        "MEMCG_DATA_KMEM",
        "__NR_MEMCG_DATA_FLAGS",
        "PG_head",
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
    use super::super::config::ebpf_config;
    use super::super::tables::DRIVERS;
    use super::*;
    use crate::session::{Fallback, RefKind, Refusal, Session};
    use iommu_trace_common::Config;

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
        compute(&PlanInputs {
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
        ffffffff810000a0 t arm_smmu_domain_alloc_user\n\
        ffffffff810000b0 T _iommufd_object_alloc\n\
        ffffffff810000c0 T iommufd_object_finalize\n\
        ffffffff810000d0 T iommufd_object_abort\n\
        ffffffff810000d8 T iommufd_object_abort_and_destroy\n\
        ffffffff810000e0 t iommufd_destroy\n\
        ffffffff810000f0 t iommufd_fops_release\n\
        ffffffff81000100 T iommufd_device_unbind\n\
        ffffffff81000110 T iommufd_ioas_destroy\n\
        ffffffff81000120 T iommufd_hwpt_paging_destroy\n\
        ffffffff81000130 T iommufd_ioas_alloc_ioctl\n\
        ffffffff81000140 t do_update_pinned\n\
        ffffffff81000150 T iommufd_ioas_map\n";

    // The object types come from the kernel's own enum, numbers included; the known types
    // it lacks are named (a 6.12-like enum: no vIOMMU objects).
    #[test]
    fn object_types_are_read_from_btf() {
        let mut b = Builder::new();
        b.enumm(
            "iommufd_object_type",
            &[
                ("IOMMUFD_OBJ_NONE", 0),
                ("IOMMUFD_OBJ_ANY", 0),
                ("IOMMUFD_OBJ_DEVICE", 1),
                ("IOMMUFD_OBJ_HWPT_PAGING", 2),
                ("IOMMUFD_OBJ_HWPT_NESTED", 3),
                ("IOMMUFD_OBJ_IOAS", 4),
                ("IOMMUFD_OBJ_ACCESS", 5),
                ("IOMMUFD_OBJ_FAULT", 6),
                ("IOMMUFD_OBJ_SELFTEST", 7),
                ("IOMMUFD_OBJ_MAX", 8),
            ],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        let plan = plan_of(&btf, &Kallsyms::parse(KALLSYMS), &[]);
        assert_eq!(plan.object_types.len(), 7, "{:?}", plan.object_types);
        assert!(plan.object_types.contains(&("selftest".to_string(), 7)));
        assert_eq!(
            plan.object_types_absent(),
            vec!["viommu", "vdevice", "veventq", "hw_queue"]
        );
        let report = crate::commands::probes::report(&plan, &[]);
        assert!(
            report.contains("not in this kernel: viommu, vdevice, veventq, hw_queue"),
            "{report}"
        );
        // Without the enum: unknown, and nothing claimed absent.
        let plan = plan_of(&fixture_btf(), &Kallsyms::parse(KALLSYMS), &[]);
        assert!(plan.object_types.is_empty() && plan.object_types_absent().is_empty());
    }

    // References at BTF offsets, in slot order, with their kinds; the destroy point covers
    // the types the kernel has, and a type whose op is missing is a gap.
    #[test]
    fn object_references_and_destroy_ops_follow_the_kernel() {
        let mut b = Builder::new();
        let u32t = b.int("unsigned int", 4);
        let obj = b.strukt(
            "iommufd_object",
            16,
            &[("type", u32t, 64, 0), ("id", u32t, 96, 0)],
        );
        let objp = b.ptr(obj);
        let common = b.strukt(
            "iommufd_hw_pagetable",
            32,
            &[
                ("obj", obj, 0, 0),
                ("domain", objp, 128, 0),
                ("fault", objp, 192, 0),
            ],
        );
        b.strukt(
            "iommufd_hwpt_paging",
            48,
            &[("common", common, 0, 0), ("ioas", objp, 256, 0)],
        );
        b.enumm(
            "iommufd_object_type",
            &[
                ("IOMMUFD_OBJ_ANY", 0),
                ("IOMMUFD_OBJ_HWPT_PAGING", 2),
                ("IOMMUFD_OBJ_IOAS", 4),
                ("IOMMUFD_OBJ_FAULT", 6),
            ],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        let plan = plan_of(&btf, &Kallsyms::parse(KALLSYMS), &[]);
        let refs = plan.object_refs_of("hwpt_paging");
        let got: Vec<_> = refs
            .iter()
            .map(|r| (r.name.as_str(), r.kind, r.offset))
            .collect();
        assert_eq!(
            got,
            [
                ("ioas", RefKind::Object, 32),
                ("fault", RefKind::Object, 24),
                ("domain", RefKind::Domain, 16)
            ]
        );
        let c = ebpf_config(&plan, 0);
        assert_eq!((c.object_type, c.object_id), (8, 12));
        assert_eq!(
            (c.object_refs[2][0].offset, c.object_refs[2][0].kind),
            (32, iommu_trace_common::ref_kind::OBJECT)
        );
        assert_eq!(
            c.object_refs[2][2].kind,
            iommu_trace_common::ref_kind::DOMAIN
        );
        assert_eq!(c.object_refs[4][0].kind, iommu_trace_common::ref_kind::NONE);
        let destroy = plan.point("object_destroy").unwrap();
        let attached: Vec<_> = destroy.attach.iter().map(|a| a.symbol.as_str()).collect();
        assert_eq!(
            attached,
            ["iommufd_hwpt_paging_destroy", "iommufd_ioas_destroy"]
        );
        assert_eq!(destroy.gaps.len(), 1, "{:?}", destroy.gaps);
        assert_eq!(destroy.gaps[0].symbol, "iommufd_fault_destroy");
        assert_eq!(destroy.gaps[0].reason, GapReason::NotInKernel);
        // The creating handlers follow the same types; the map path's ioctl is not hooked.
        let create = plan.point("object_ioctl").unwrap();
        let attached: Vec<_> = create.attach.iter().map(|a| a.symbol.as_str()).collect();
        assert_eq!(attached, ["iommufd_ioas_alloc_ioctl", "iommufd_hwpt_alloc"]);
        assert_eq!(create.gaps.len(), 1, "{:?}", create.gaps);
        assert_eq!(create.gaps[0].symbol, "iommufd_fault_alloc");
        assert!(create
            .attach
            .iter()
            .all(|a| a.exit_program.as_deref() == Some("object_ioctl_exit")));
        assert!(plan
            .points
            .iter()
            .flat_map(|p| &p.attach)
            .all(|a| a.symbol != "iommufd_fops_ioctl"));
        assert_eq!(
            plan.point("destroy_ioctl").unwrap().attach[0].symbol,
            "iommufd_destroy"
        );
    }

    // The hot IOAS ioctls and the charge function go through trampolines when BTF shows
    // them, their kprobes kept as the fallback; the rare IOAS ioctls stay kprobes. The charge
    // function needs an fexit alone, which sees its arguments.
    #[test]
    fn the_map_loops_hooks_are_trampolines() {
        let mut b = Builder::new();
        b.func("iommufd_ioas_map", &["ucmd"]);
        b.func("iommufd_ioas_copy", &["ucmd"]);
        b.func("do_update_pinned", &["pages", "npages", "inc", "user"]);
        let btf = Btf::parse(&b.build()).unwrap();
        let k = Kallsyms::parse(&format!("{KALLSYMS}ffffffff81000160 T iommufd_ioas_copy\n"));
        let plan = plan_of(&btf, &k, &[]);
        let ioas = plan.point("ioas_ops").unwrap();
        let by = |sym: &str| ioas.attach.iter().find(|a| a.symbol == sym).unwrap();
        let map = by("iommufd_ioas_map");
        assert_eq!(
            (
                map.program_type,
                map.entry_program.as_str(),
                map.exit_program.as_deref()
            ),
            (
                ProgramKind::FentryFexit,
                "ioas_map_fentry",
                Some("ioas_map_fexit")
            )
        );
        let fallback = map.fallback.as_ref().unwrap();
        assert_eq!(fallback.exit_program.as_deref(), Some("ioas_op_exit"));
        assert_eq!(
            by("iommufd_ioas_copy").program_type,
            ProgramKind::KprobeKretprobe
        );
        let pin = &plan.point("pin_accounting").unwrap().attach[0];
        assert_eq!(
            (
                pin.symbol.as_str(),
                pin.program_type,
                pin.entry_program.as_str(),
                pin.exit_program.as_deref()
            ),
            ("do_update_pinned", ProgramKind::Fexit, "pin_fexit", None)
        );
        let fallback = pin.fallback.as_ref().unwrap();
        assert_eq!(
            (fallback.program_type, fallback.exit_program.as_deref()),
            (ProgramKind::KprobeKretprobe, Some("pin_exit"))
        );
    }

    // 7.x's `iommufd_ucmd::new_obj` (an object the core aborts after its handler failed)
    // reaches the eBPF config from BTF; a kernel without it leaves the slot unset.
    #[test]
    fn ucmd_new_obj_offset_comes_from_btf() {
        let mut b = Builder::new();
        let u64t = b.int("long unsigned int", 8);
        b.strukt(
            "iommufd_ucmd",
            40,
            &[("cmd", u64t, 192, 0), ("new_obj", u64t, 256, 0)],
        );
        let btf = Btf::parse(&b.build()).unwrap();
        let c = ebpf_config(&plan_of(&btf, &Kallsyms::parse(KALLSYMS), &[]), 0);
        assert_eq!((c.ucmd_cmd, c.ucmd_new_obj), (24, 32));
        let c = ebpf_config(&plan_of(&fixture_btf(), &Kallsyms::parse(KALLSYMS), &[]), 0);
        assert_eq!(c.ucmd_new_obj, iommu_trace_common::Config::UNSET);
    }

    // A vIOMMU's alloc_domain_nested: attached for its driver when BTF shows its parameters,
    // a gap when they differ, nothing when the kernel has none (6.12).
    #[test]
    fn viommu_nested_ops_are_attached_for_their_driver() {
        let with = |params: &[&str]| {
            let mut b = Builder::new();
            b.func("mock_viommu_alloc_domain_nested", params);
            b.func(
                "mock_domain_alloc_paging_flags",
                &["dev", "flags", "user_data"],
            );
            let btf = Btf::parse(&b.build()).unwrap();
            let k = Kallsyms::parse(&format!(
                "{KALLSYMS}ffffffff81000200 t mock_viommu_alloc_domain_nested\n"
            ));
            plan_of(&btf, &k, &[])
        };
        let plan = with(&["viommu", "flags", "user_data"]);
        let alloc = plan.point("driver_alloc").unwrap();
        let a = alloc
            .attach
            .iter()
            .find(|a| a.symbol == "mock_viommu_alloc_domain_nested")
            .expect("attached");
        assert_eq!(a.entry_program, "alloc_viommu_nested_entry");
        assert_eq!(plan.drivers[a.driver.unwrap()].name, "mock");
        let plan = with(&["dev", "flags", "user_data"]);
        let alloc = plan.point("driver_alloc").unwrap();
        assert!(alloc
            .gaps
            .iter()
            .any(|g| g.symbol == "mock_viommu_alloc_domain_nested"
                && matches!(g.reason, GapReason::UnexpectedSignature { .. })));
        // No vIOMMU op in the kernel: neither attached nor a gap.
        let plan = plan_of(&fixture_btf(), &Kallsyms::parse(KALLSYMS), &[]);
        let alloc = plan.point("driver_alloc").unwrap();
        assert!(!alloc.attach.iter().any(|a| a.symbol.contains("viommu")));
        assert!(!alloc.gaps.iter().any(|g| g.symbol.contains("viommu")));
    }

    // The AMD growth hooks: the 6.12 one or the 7.x one, each with its program, a wrong
    // signature is a gap, and a kernel with neither (no AMD driver) has no such point.
    #[test]
    fn the_growth_hook_of_each_kernel_is_attached() {
        let with = |sym: &str, params: &[&str]| {
            let mut b = Builder::new();
            b.func(sym, params);
            let btf = Btf::parse(&b.build()).unwrap();
            let k = Kallsyms::parse(&format!("{KALLSYMS}ffffffff81000200 t {sym}\n"));
            plan_of(&btf, &k, &[])
        };
        for (sym, params, program) in [
            (
                "amd_iommu_update_and_flush_device_table",
                &["domain"][..],
                "pt_grow_v1",
            ),
            (
                "amd_iommu_change_top",
                &["iommu_table", "top_paddr", "top_level"][..],
                "pt_grow_top",
            ),
        ] {
            let plan = with(sym, params);
            let grow = plan.point("pt_grow").expect("a growth point");
            assert_eq!(grow.attach.len(), 1);
            assert_eq!(
                (
                    grow.attach[0].symbol.as_str(),
                    grow.attach[0].entry_program.as_str()
                ),
                (sym, program)
            );
            let plan = with(sym, &["dev"]);
            let grow = plan.point("pt_grow").expect("a growth point");
            assert!(grow.attach.is_empty() && grow.gaps.len() == 1, "{grow:?}");
        }
        let plan = plan_of(&fixture_btf(), &Kallsyms::parse(KALLSYMS), &[]);
        assert!(plan.point("pt_grow").is_none());
    }

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
            .map(|g| (&g.symbol[..], g.reason.to_string()))
            .collect();
        assert!(reasons
            .iter()
            .any(|(s, r)| *s == "mock_domain_alloc_paging_flags"
                && r.starts_with("unexpected signature")));
        assert!(reasons
            .iter()
            .any(|(s, r)| *s == "arm_smmu_domain_alloc_user" && r.starts_with("ambiguous")));
        assert_eq!(plan.point("unmap").unwrap().attach.len(), 2);
        assert_eq!(plan.point("pt_pages").unwrap().status().name(), "ok");

        // BTF shows iommu_map with its 6 parameters: a trampoline, kprobes as fallback.
        let map = &plan.point("map").unwrap().attach[0];
        assert_eq!(
            (map.program_type.name(), map.entry_program.as_str()),
            ("fentry+fexit", "map_fentry")
        );
        assert_eq!(
            map.fallback.as_ref().unwrap().program_type.name(),
            "kprobe+kretprobe"
        );
        assert_eq!(
            plan.point("pt_pages").unwrap().attach[0]
                .program_type
                .name(),
            "fentry"
        );
        // No BTF record for iommu_unmap in the fixture: kprobes.
        assert_eq!(
            plan.point("unmap").unwrap().attach[0].program_type.name(),
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
        let cfg = ebpf_config(&plan, 0);
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
        assert!(!features("").io_pgtable_arm_concat_mandatory);
        assert!(
            features("ffff800080000000 t arm_lpae_pgtable_walk\n").io_pgtable_arm_concat_mandatory
        );
    }

    #[test]
    fn the_renamed_stat_hook_is_found() {
        let btf = fixture_btf();
        let renamed = KALLSYMS.replace("T __lruvec_stat_mod_folio", "T lruvec_stat_mod_folio");
        let k = Kallsyms::parse(&renamed);
        let plan = plan_of(&btf, &k, &[]);
        let pt = plan.point("pt_pages").unwrap();
        assert_eq!(pt.status().name(), "ok");
        assert_eq!(pt.attach[0].symbol, "lruvec_stat_mod_folio");
    }

    // 6.15+ with the iommu-pages functions out of line and the linear map's bases listed
    // (x86-64): the page-table pages' own hooks, no statistics hook; the config gets the
    // bases' addresses and the layout the programs read. Without the bases (arm64), or
    // without the functions (6.12), the statistics hook, and the gaps say why.
    #[test]
    fn precise_page_table_hooks_replace_the_statistics_hook_where_they_can() {
        let mut b = Builder::new();
        let u64t = b.int("u64", 8);
        b.enumm("node_stat_item", &[("NR_SECONDARY_PAGETABLE", 41)]);
        b.enumm("pageflags", &[("PG_locked", 0), ("PG_head", 6)]);
        b.strukt("page", 64, &[("flags", u64t, 0, 0)]);
        b.strukt(
            "folio",
            256,
            &[("flags", u64t, 0, 0), ("_flags_1", u64t, 512, 0)],
        );
        b.func("lruvec_stat_mod_folio", &["folio", "idx", "val"]);
        b.func("iommu_alloc_pages_node_sz", &["nid", "gfp", "size"]);
        b.func("__iommu_free_desc", &["iopt"]);
        let btf = Btf::parse(&b.build()).unwrap();
        let functions = "ffffffff81000000 T iommufd_hwpt_alloc\n\
            ffffffff81000080 T lruvec_stat_mod_folio\n\
            ffffffff81767360 T iommu_alloc_pages_node_sz\n\
            ffffffff81767520 t __iommu_free_desc\n\
            ffffffff823fc970 T vmemmap_populate\n";
        let bases = "ffffffff81c83210 D vmemmap_base\nffffffff81c83220 D page_offset_base\n";

        let plan = plan_of(&btf, &Kallsyms::parse(&format!("{functions}{bases}")), &[]);
        let pt = plan.point("pt_pages").unwrap();
        let chosen: Vec<_> = pt
            .attach
            .iter()
            .map(|a| (a.symbol.as_str(), a.program_type, a.entry_program.as_str()))
            .collect();
        assert_eq!(
            chosen,
            vec![
                (
                    "iommu_alloc_pages_node_sz",
                    ProgramKind::Fexit,
                    "pt_alloc_fexit"
                ),
                ("__iommu_free_desc", ProgramKind::Fentry, "pt_free_fentry"),
            ]
        );
        assert!(pt.gaps.is_empty(), "{:?}", pt.gaps);
        let c = ebpf_config(&plan, 0);
        assert_eq!(c.page_offset_base_addr, 0xffffffff81c83220);
        assert_eq!(c.vmemmap_base_addr, 0xffffffff81c83210);
        assert_eq!(
            (c.page_struct_size, c.folio_flags_1, c.pg_head),
            (64, 64, 6)
        );
        // The addresses never reach a capture or `probes --json`.
        let json = serde_json::to_string(&plan).unwrap();
        assert!(!json.contains(&0xffffffff81c83220u64.to_string()), "{json}");
        assert!(!json.contains("page_offset_base"), "{json}");

        // Unprivileged, the addresses are hidden: the plan (what `probes` shows) is the
        // same; only the config, built by the privileged `record`, would lack them.
        let hidden = bases.replace("ffffffff81c8321", "000000000000000");
        let plan = plan_of(&btf, &Kallsyms::parse(&format!("{functions}{hidden}")), &[]);
        assert_eq!(plan.point("pt_pages").unwrap().attach.len(), 2);
        assert_eq!(ebpf_config(&plan, 0).vmemmap_base_addr, 0);

        // Without SPARSEMEM_VMEMMAP an address does not give its page that way.
        let no_vmemmap = functions.replace("T vmemmap_populate", "T something_else");
        let plan = plan_of(&btf, &Kallsyms::parse(&format!("{no_vmemmap}{bases}")), &[]);
        assert_eq!(
            plan.point("pt_pages").unwrap().gaps[0].reason,
            GapReason::NoLinearMap
        );

        // arm64: the functions, but no bases in kallsyms.
        let plan = plan_of(&btf, &Kallsyms::parse(functions), &[]);
        let pt = plan.point("pt_pages").unwrap();
        assert_eq!(pt.attach.len(), 1);
        assert_eq!(pt.attach[0].symbol, "lruvec_stat_mod_folio");
        assert_eq!(pt.gaps.len(), 1);
        assert_eq!(pt.gaps[0].reason, GapReason::NoLinearMap);
        assert_eq!(pt.status().name(), "ok");
        assert_eq!(ebpf_config(&plan, 0).page_offset_base_addr, 0);

        // 6.12: the helpers are inline.
        let inline = functions
            .lines()
            .filter(|l| !l.contains("iommu_alloc_pages") && !l.contains("free_desc"))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        let plan = plan_of(&btf, &Kallsyms::parse(&format!("{inline}{bases}")), &[]);
        let pt = plan.point("pt_pages").unwrap();
        assert_eq!(pt.attach[0].symbol, "lruvec_stat_mod_folio");
        assert!(pt.gaps.iter().all(|g| g.reason == GapReason::NotInKernel));
        assert_eq!(pt.gaps.len(), 2);

        // A refused free hook (`--deny-symbol`) leaves the statistics hook whole, not half
        // of the precise pair.
        let deny = vec!["__iommu_free_desc".to_string()];
        let plan = plan_of(
            &btf,
            &Kallsyms::parse(&format!("{functions}{bases}")),
            &deny,
        );
        let pt = plan.point("pt_pages").unwrap();
        assert_eq!(pt.attach.len(), 1);
        assert_eq!(pt.attach[0].symbol, "lruvec_stat_mod_folio");
    }

    #[test]
    fn denied_symbol_degrades_the_point_and_missing_iommufd_blocks() {
        let btf = fixture_btf();
        let k = Kallsyms::parse(KALLSYMS);
        let deny = vec!["iommu_unmap_fast".to_string()];
        let plan = plan_of(&btf, &k, &deny);
        let unmap = plan.point("unmap").unwrap();
        assert_eq!(unmap.status().name(), "degraded");
        assert_eq!(unmap.attach.len(), 1);

        let bare = Kallsyms::parse("ffffffff81000030 T iommu_map\n");
        let plan = compute(&PlanInputs {
            kernel_release: "x".into(),
            btf: None,
            kallsyms: &bare,
            deny: &[],
        });
        assert_eq!(plan.blockers.len(), 2, "{:?}", plan.blockers);
        assert!(plan.blockers[0].contains("CONFIG_DEBUG_INFO_BTF"));
        assert!(plan.blockers[1].contains("CONFIG_IOMMUFD"));
        assert_eq!(
            plan.point("hwpt_alloc_ioctl").unwrap().status().name(),
            "missing"
        );
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
        let session = |plan: &Plan, refused: Vec<Refusal>| Session {
            plan: plan.clone(),
            refused,
            filter_pid: None,
        };
        let plan = plan_of(&btf, &k, &deny);
        let missing = session(&plan, vec![]).missing_points();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(missing[0].point, "pt_pages");
        assert!(missing[0]
            .why
            .contains("__lruvec_stat_mod_folio: refused by --deny-symbol"));

        let plan = plan_of(&btf, &k, &[]);
        assert!(session(&plan, vec![]).missing_points().is_empty());
        let fell_back = Refusal {
            symbol: "iommu_map".into(),
            program_type: Some(ProgramKind::FentryFexit),
            error: "EINVAL".into(),
            fallback: Fallback::Attached {
                program_type: ProgramKind::KprobeKretprobe,
            },
        };
        assert!(session(&plan, vec![fell_back]).missing_points().is_empty());
        let refused = Refusal {
            symbol: "iommu_map".into(),
            program_type: Some(ProgramKind::Kprobe),
            error: "kprobe refused: EBUSY".into(),
            fallback: Fallback::None,
        };
        let missing = session(&plan, vec![refused]).missing_points();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].point, "map");
        assert!(missing[0].why.contains("EBUSY"));
    }
}
