//! Kernel knowledge: the logical probe points, the driver ops and domain structs we know,
//! and which functions have trampoline programs. Each entry names the kernel versions and
//! source files it comes from (docs/kernel-facts.md). `plan.rs` turns these tables into a
//! plan for one kernel.

use crate::session::ProgramKind::{self, Fentry, FentryFexit, Fexit};
pub(super) use crate::session::RefKind;

/// How a driver allocation op receives its arguments; the eBPF entry program per shape.
#[derive(Clone, Copy, Debug)]
pub(super) struct OpShape {
    /// Symbol suffix after the driver prefix.
    pub(super) suffix: &'static str,
    pub(super) entry_program: &'static str,
    /// Parameter names the entry program expects, in order (checked against BTF).
    pub(super) params: &'static [&'static str],
}

pub(super) const OP_SHAPES: &[OpShape] = &[
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
pub(super) struct DriverSpec {
    pub(super) name: &'static str,
    /// Symbol prefix of its ops (`intel_iommu_domain_alloc_user`, ...).
    pub(super) prefix: &'static str,
    /// The driver's domain struct, embedding `struct iommu_domain` as member `domain`.
    pub(super) domain_struct: &'static str,
    /// A member only this driver's `domain_struct` has, to tell it from another driver's
    /// struct of the same name.
    pub(super) marker: &'static str,
    /// Members of `domain_struct` copied into the event, as `name` or `name=path.in.struct`;
    /// missing ones are skipped, and at most `DRIVER_WORDS` are kept, in this order.
    pub(super) fields: &'static [&'static str],
    /// Its `iommufd_viommu_ops.alloc_domain_nested` (6.13+), `(viommu, flags, user_data)`:
    /// nested domains allocated through a vIOMMU (docs/kernel-facts.md §7.3).
    pub(super) viommu_nested_ops: &'static [&'static str],
    /// Where its page table's top grows: (symbol, eBPF program, parameters it reads).
    pub(super) top_growth: &'static [(&'static str, &'static str, &'static [&'static str])],
}

/// Parameters of a vIOMMU's `alloc_domain_nested` (include/linux/iommufd.h, 7.3).
pub(super) const VIOMMU_NESTED_PARAMS: &[&str] = &["viommu", "flags", "user_data"];

pub(super) const DRIVERS: &[DriverSpec] = &[
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
        viommu_nested_ops: &[],
        top_growth: &[],
    },
    // drivers/iommu/amd/amd_iommu_types.h: struct protection_domain. 6.12: the io-pgtable
    // v1 table's level mode (`iop.mode`, PAGE_MODE_3_LEVEL at allocation, grown on map);
    // 7.x: the generic page table's AMDv1 top, as for the mock (docs/kernel-facts.md §9).
    DriverSpec {
        name: "amd",
        prefix: "amd_iommu",
        domain_struct: "protection_domain",
        marker: "domain",
        fields: &[
            "pd_mode",
            "mode=iop.mode",
            "top_of_table=amdv1.amdpt.common.top_of_table",
            "max_vasz_lg2=amdv1.amdpt.common.max_vasz_lg2",
        ],
        viommu_nested_ops: &[],
        // 6.12: amd/iommu.c:1836, global, sole caller increase_address_space after
        // `iop.mode += 1`; 7.x: amd/iommu.c:2630, static, address-taken (the generic page
        // table's `change_top` driver op), called once per increase_top with the new top.
        top_growth: &[
            (
                "amd_iommu_update_and_flush_device_table",
                "pt_grow_v1",
                &["domain"],
            ),
            (
                "amd_iommu_change_top",
                "pt_grow_top",
                &["iommu_table", "top_paddr", "top_level"],
            ),
        ],
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
        viommu_nested_ops: &["arm_vsmmu_alloc_domain_nested"],
        top_growth: &[],
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
        viommu_nested_ops: &["mock_viommu_alloc_domain_nested"],
        top_growth: &[],
    },
];

/// One core probe point: a single symbol with an entry and an exit program.
pub(super) struct CorePoint {
    pub(super) point: &'static str,
    pub(super) what: &'static str,
    pub(super) symbols: &'static [&'static str],
    pub(super) entry_program: &'static str,
    pub(super) exit_program: Option<&'static str>,
    /// Parameter names the entry program relies on, checked against BTF when present.
    pub(super) params: &'static [&'static str],
}

pub(super) const CORE_POINTS: &[CorePoint] = &[
    CorePoint {
        point: "hwpt_alloc_ioctl",
        what: "IOMMU_HWPT_ALLOC ioctl: flags, data type, result (iommufd/hw_pagetable.c)",
        symbols: &["iommufd_hwpt_alloc"],
        entry_program: "hwpt_alloc_ioctl_entry",
        exit_program: Some("hwpt_alloc_ioctl_exit"),
        params: &["ucmd"],
    },
    CorePoint {
        point: "hwpt_paging_alloc",
        what: "iommufd paging-domain allocation, tells auto domains from explicit ones",
        symbols: &["iommufd_hwpt_paging_alloc"],
        entry_program: "hwpt_paging_alloc_entry",
        exit_program: Some("hwpt_paging_alloc_exit"),
        params: &[],
    },
    CorePoint {
        point: "domain_free",
        what: "iommu_domain_free (iommu.c)",
        symbols: &["iommu_domain_free"],
        entry_program: "domain_free_entry",
        exit_program: Some("domain_free_exit"),
        params: &["domain"],
    },
    CorePoint {
        point: "map",
        what: "iommu_map with the domain pointer (the map tracepoint lacks it)",
        symbols: &["iommu_map"],
        entry_program: "map_entry",
        exit_program: Some("map_exit"),
        params: &["domain", "iova", "paddr", "size"],
    },
    CorePoint {
        point: "unmap",
        what: "iommu_unmap / iommu_unmap_fast with the domain pointer",
        symbols: &["iommu_unmap", "iommu_unmap_fast"],
        entry_program: "unmap_entry",
        exit_program: Some("unmap_exit"),
        params: &["domain", "iova", "size"],
    },
    // iommufd objects (docs/kernel-facts.md §7.2; iommufd/main.c in 6.12 and 7.3). The
    // per-type creating handlers and destroy ops are `OBJECT_CREATE_HANDLERS` and
    // `OBJECT_DESTROY_OPS`.
    CorePoint {
        point: "object_alloc",
        what: "iommufd object allocated, id reserved: type, size (iommufd/main.c)",
        symbols: &["_iommufd_object_alloc"],
        entry_program: "object_alloc_entry",
        exit_program: Some("object_alloc_exit"),
        params: &["ictx", "size", "type"],
    },
    CorePoint {
        point: "object_publish",
        what: "iommufd object published under its id, with the objects it refers to",
        symbols: &["iommufd_object_finalize"],
        entry_program: "object_publish",
        exit_program: None,
        params: &["ictx", "obj"],
    },
    CorePoint {
        point: "object_abort",
        what: "iommufd object allocated but never published (a failed create)",
        symbols: &["iommufd_object_abort"],
        entry_program: "object_abort",
        exit_program: None,
        params: &["ictx", "obj"],
    },
    // Where a compiler inlined `iommufd_object_abort` into this caller (6.12 without
    // DEBUG_ENTRY: docs/kernel-facts.md §6.3), its aborts are seen only here.
    CorePoint {
        point: "object_abort_destroy",
        what: "iommufd_object_abort_and_destroy: aborts of objects already initialized, \
               when the abort is inlined into it",
        symbols: &["iommufd_object_abort_and_destroy"],
        entry_program: "object_abort_and_destroy_entry",
        exit_program: Some("object_abort_and_destroy_exit"),
        params: &["ictx", "obj"],
    },
    CorePoint {
        point: "destroy_ioctl",
        what: "IOMMU_DESTROY's handler: objects destroyed by it (static, main.c)",
        symbols: &["iommufd_destroy"],
        entry_program: "destroy_ioctl_entry",
        exit_program: Some("object_ioctl_exit"),
        params: &["ucmd"],
    },
    // Pinned guest memory (docs/kernel-facts.md §8): the charge function, static in 6.12
    // (pages.c, out of line: two callers), global in 7.x. The IOAS ioctls are `IOAS_OPS`.
    CorePoint {
        point: "pin_accounting",
        what: "pinned pages of an iopt_pages charged or uncharged, with target and limit \
               (iommufd/pages.c)",
        symbols: &["do_update_pinned", "iopt_pages_update_pinned"],
        entry_program: "pin_entry",
        exit_program: Some("pin_exit"),
        params: &["pages", "npages", "inc", "user"],
    },
    CorePoint {
        point: "iommufd_release",
        what: "the iommufd file released: objects destroyed by an fd close (static, main.c)",
        symbols: &["iommufd_fops_release"],
        entry_program: "fd_release_entry",
        exit_program: Some("destroy_context_exit"),
        params: &["inode", "filp"],
    },
    CorePoint {
        point: "device_unbind",
        what: "iommufd_device_unbind: objects destroyed by a device unbind (device.c)",
        symbols: &["iommufd_device_unbind"],
        entry_program: "device_unbind_entry",
        exit_program: Some("destroy_context_exit"),
        params: &["idev"],
    },
];

/// The IOAS mapping ioctls' handlers (`iommufd_ioctl_ops`, iommufd/ioas.c and main.c;
/// `int (struct iommufd_ucmd *)`, global but `iommufd_option`, static in main.c and out of
/// line) and their entry programs; `ioas_op_exit` is the
/// return of all. MAP_FILE and CHANGE_PROCESS are 7.x: gaps on 6.12.
pub(super) const IOAS_OPS: &[(&str, &str)] = &[
    ("iommufd_ioas_map", "ioas_map_entry"),
    ("iommufd_ioas_map_file", "ioas_map_file_entry"),
    ("iommufd_ioas_copy", "ioas_copy_entry"),
    ("iommufd_ioas_unmap", "ioas_unmap_entry"),
    ("iommufd_ioas_change_process", "ioas_change_process_entry"),
    ("iommufd_option", "option_entry"),
];

/// The handler of the ioctl that creates each object type (`iommufd_ioctl_ops`,
/// iommufd/main.c, 6.12 and 7.3), all `int (struct iommufd_ucmd *)`: an abort inside one gets
/// its errno. Hooked instead of `iommufd_fops_ioctl`, which every IOAS_MAP/UNMAP passes.
/// DEVICE and ACCESS objects are created outside iommufd's ioctls (VFIO, the selftest's
/// command); HWPT_NESTED through `iommufd_hwpt_alloc`.
pub(super) const OBJECT_CREATE_HANDLERS: &[(&str, &str)] = &[
    ("ioas", "iommufd_ioas_alloc_ioctl"),
    ("hwpt_paging", "iommufd_hwpt_alloc"),
    ("fault", "iommufd_fault_alloc"),
    ("viommu", "iommufd_viommu_alloc_ioctl"),
    ("vdevice", "iommufd_vdevice_alloc_ioctl"),
    ("veventq", "iommufd_veventq_alloc"),
    ("hw_queue", "iommufd_hw_queue_alloc_ioctl"),
    ("selftest", "iommufd_test"),
];

/// Each object type's destroy op (`iommufd_object_ops[type].destroy`, iommufd/main.c), the
/// one hook every destruction path reaches: IOMMU_DESTROY, unbind, an auto domain's put and
/// the fd close, which bypasses `iommufd_object_remove` (docs/kernel-facts.md §7.2). All
/// global in 6.12 and 7.3. By type name as in `session::OBJECT_TYPES`.
pub(super) const OBJECT_DESTROY_OPS: &[(&str, &str)] = &[
    ("device", "iommufd_device_destroy"),
    ("hwpt_paging", "iommufd_hwpt_paging_destroy"),
    ("hwpt_nested", "iommufd_hwpt_nested_destroy"),
    ("ioas", "iommufd_ioas_destroy"),
    ("access", "iommufd_access_destroy_object"),
    ("fault", "iommufd_fault_destroy"),
    ("viommu", "iommufd_viommu_destroy"),
    ("vdevice", "iommufd_vdevice_destroy"),
    ("veventq", "iommufd_veventq_destroy"),
    ("hw_queue", "iommufd_hw_queue_destroy"),
    ("selftest", "iommufd_selftest_destroy"),
];

/// What a published object of one type refers to, read at `iommufd_object_finalize`.
pub(super) struct ObjectRefSpec {
    pub(super) object: &'static str,
    /// Its container struct.
    pub(super) strukt: &'static str,
    /// (reference name, member path, kind).
    pub(super) refs: &'static [(&'static str, &'static str, RefKind)],
}

/// Members missing from the running kernel's BTF are skipped (6.12's nested HWPT has no
/// `viommu`). Only members set before publication: an ACCESS is published before its IOAS
/// is attached (`iommufd_access_create`, 6.12 device.c:985), so it records none. Structs from iommufd/iommufd_private.h (6.12, 7.3) and include/linux/iommufd.h
/// (7.3).
pub(super) const OBJECT_REFS: &[ObjectRefSpec] = &[
    ObjectRefSpec {
        object: "hwpt_paging",
        strukt: "iommufd_hwpt_paging",
        refs: &[
            ("ioas", "ioas", RefKind::Object),
            ("fault", "common.fault", RefKind::Object),
            ("domain", "common.domain", RefKind::Domain),
        ],
    },
    ObjectRefSpec {
        object: "hwpt_nested",
        strukt: "iommufd_hwpt_nested",
        refs: &[
            ("parent", "parent", RefKind::Object),
            ("viommu", "viommu", RefKind::Object),
            ("fault", "common.fault", RefKind::Object),
            ("domain", "common.domain", RefKind::Domain),
        ],
    },
    ObjectRefSpec {
        object: "viommu",
        strukt: "iommufd_viommu",
        refs: &[("hwpt", "hwpt", RefKind::Object)],
    },
    ObjectRefSpec {
        object: "vdevice",
        strukt: "iommufd_vdevice",
        refs: &[
            ("viommu", "viommu", RefKind::Object),
            ("device", "idev", RefKind::Object),
            ("virt_id", "virt_id", RefKind::Value),
        ],
    },
    ObjectRefSpec {
        object: "veventq",
        strukt: "iommufd_veventq",
        refs: &[("viommu", "viommu", RefKind::Object)],
    },
    ObjectRefSpec {
        object: "hw_queue",
        strukt: "iommufd_hw_queue",
        refs: &[
            ("viommu", "viommu", RefKind::Object),
            ("access", "access", RefKind::Object),
        ],
    },
];

/// The page-table page hook: iommu-pages accounting updates NR_SECONDARY_PAGETABLE through
/// `__lruvec_stat_mod_folio` from 6.11 to 7.x (iommu-pages.h / iommu-pages.c).
/// `__lruvec_stat_mod_folio` (6.11 mm/memcontrol.c) was renamed `lruvec_stat_mod_folio`
/// (7.3 mm/memcontrol.c, same arguments); the first one this kernel has is used.
pub(super) const PT_SYMBOLS: &[&str] = &["__lruvec_stat_mod_folio", "lruvec_stat_mod_folio"];

/// Where the iommu-pages helpers are functions (6.15+, drivers/iommu/iommu-pages.c), the
/// page-table pages' own hooks: (symbol, parameters, trampoline kind, program). Preferred
/// to the statistics hook, which every page of the host passes (docs/kernel-facts.md §3.2).
/// The free hook is static but out of line in our 7.3 builds (System.map `t`; callers:
/// `iommu_free_pages`, `iommu_put_pages_list`, and on arm64 `iommu_pages_free_incoherent`).
pub(super) const PT_PRECISE: &[(&str, &[&str], ProgramKind, &str)] = &[
    (
        "iommu_alloc_pages_node_sz",
        &["nid", "gfp", "size"],
        Fexit,
        "pt_alloc_fexit",
    ),
    ("__iommu_free_desc", &["iopt"], Fentry, "pt_free_fentry"),
];

/// The kallsyms data symbols that place the linear map and the `struct page` array on
/// x86-64 (randomized at boot): with them an allocation's address gives its page.
pub(super) const LINEAR_MAP_BASES: [&str; 2] = ["page_offset_base", "vmemmap_base"];

/// A function only a kernel with SPARSEMEM_VMEMMAP has (arch/x86/mm/init_64.c): without
/// it `struct page`s are not one array, and an address does not give its page that way.
pub(super) const VMEMMAP_WITNESS: &str = "vmemmap_populate";

/// Functions that also have trampoline programs: (symbol, arity, the kind, its first
/// program, its second). Chosen when BTF shows the function with that arity; the kprobe
/// programs stay as the fallback. An fexit alone serves where nothing is needed from the
/// entry: it sees the arguments and the return value.
pub(super) const TRAMPOLINES: &[(&str, usize, ProgramKind, &str, Option<&str>)] = &[
    ("iommu_map", 6, FentryFexit, "map_fentry", Some("map_fexit")),
    (
        "iommu_unmap",
        3,
        FentryFexit,
        "unmap_fentry",
        Some("unmap_fexit"),
    ),
    (
        "iommu_unmap_fast",
        4,
        FentryFexit,
        "unmap_fast_fentry",
        Some("unmap_fast_fexit"),
    ),
    // Per IOAS_MAP / IOAS_UNMAP, in the map loops: trampolines, not kprobes' traps. The
    // entry is kept for the ioctl's latency.
    (
        "iommufd_ioas_map",
        1,
        FentryFexit,
        "ioas_map_fentry",
        Some("ioas_map_fexit"),
    ),
    (
        "iommufd_ioas_unmap",
        1,
        FentryFexit,
        "ioas_unmap_fentry",
        Some("ioas_unmap_fexit"),
    ),
    ("do_update_pinned", 4, Fexit, "pin_fexit", None),
    ("iopt_pages_update_pinned", 4, Fexit, "pin_fexit", None),
    ("__lruvec_stat_mod_folio", 3, Fentry, "pt_stat_fentry", None),
    ("lruvec_stat_mod_folio", 3, Fentry, "pt_stat_fentry", None),
];
