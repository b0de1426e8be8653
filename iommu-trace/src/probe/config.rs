//! The eBPF programs' CONFIG global, built from a plan: the BTF offsets and the driver table
//! (Rust eBPF has no CO-RE, so user space computes every offset the programs read).

use iommu_trace_common::{
    ref_kind, Config, DriverFields, ObjectRef, DRIVER_WORDS, MAX_DRIVERS, MAX_OBJECT_TYPES,
    PAGES_BLOCK,
};

use crate::session::{Plan, RefKind};

/// Builds the eBPF CONFIG global from the plan's BTF offsets and driver table.
pub fn ebpf_config(plan: &Plan, filter_pid: u32) -> Config {
    let get = |name: &str| -> u32 {
        plan.offsets
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v as u32)
            .unwrap_or(Config::UNSET)
    };
    let mut c = Config::unset();
    [c.page_offset_base_addr, c.vmemmap_base_addr] = plan.linear_map_bases;
    c.page_struct_size = get("sizeof(page)");
    c.folio_flags_1 = get("folio._flags_1");
    c.pg_head = get("PG_head");
    c.domain_type = get("iommu_domain.type");
    c.domain_pgsize_bitmap = get("iommu_domain.pgsize_bitmap");
    c.domain_aperture_start = get("iommu_domain.geometry.aperture_start");
    c.domain_aperture_end = get("iommu_domain.geometry.aperture_end");
    c.user_data_type = get("iommu_user_data.type");
    c.user_data_uptr = get("iommu_user_data.uptr");
    c.user_data_len = get("iommu_user_data.len");
    c.ucmd_cmd = get("iommufd_ucmd.cmd");
    c.ucmd_new_obj = get("iommufd_ucmd.new_obj");
    c.ucmd_ictx = get("iommufd_ucmd.ictx");
    c.pages_npinned = get("iopt_pages.npinned");
    c.pages_npages = get("iopt_pages.npages");
    c.pages_account_mode = get("iopt_pages.account_mode");
    c.pages_source_task = get("iopt_pages.source_task");
    c.pages_source_user = get("iopt_pages.source_user");
    c.pages_source_mm = get("iopt_pages.source_mm");
    c.pages_block = pages_block(
        &[
            c.pages_npinned,
            c.pages_npages,
            c.pages_account_mode,
            c.pages_source_task,
            c.pages_source_user,
            c.pages_source_mm,
        ],
        get("sizeof(iopt_pages)"),
    );
    c.task_tgid = get("task_struct.tgid");
    c.task_signal = get("task_struct.signal");
    // `rlim[RLIMIT_MEMLOCK].rlim_cur`: RLIMIT_MEMLOCK is 8 (asm-generic/resource.h, used by
    // x86 and arm64), `struct rlimit` two unsigned longs.
    let rlim = get("signal_struct.rlim");
    c.signal_memlock = if rlim == Config::UNSET {
        rlim
    } else {
        rlim + 8 * 16
    };
    c.user_uid = get("user_struct.uid");
    c.user_locked_vm = get("user_struct.locked_vm");
    c.mm_locked_vm = get("mm_struct.locked_vm");
    c.mm_pinned_vm = get("mm_struct.pinned_vm");
    c.task_pid = get("task_struct.pid");
    c.task_comm = get("task_struct.comm");
    c.task_cgroups = get("task_struct.cgroups");
    c.css_set_dfl_cgrp = get("css_set.dfl_cgrp");
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
    // `struct iommufd_object` has `type` at +8 and `id` at +12 in 6.12 and 7.3
    // (docs/kernel-facts.md §7.1). With iommufd a module its BTF is not in vmlinux: fall
    // back to that layout rather than record every object as id 0.
    let or = |v: u32, fixed: u32| if v == Config::UNSET { fixed } else { v };
    c.object_type = or(get("iommufd_object.type"), 8);
    c.object_id = or(get("iommufd_object.id"), 12);
    c.viommu_hwpt = get("iommufd_viommu.hwpt");
    c.hwpt_domain = get("iommufd_hw_pagetable.domain");
    c.pdom_domain = get("protection_domain.domain");
    c.pdom_mode = get("protection_domain.iop.mode");
    c.pt_iommu_domain = get("pt_iommu.domain");
    for (name, value) in &plan.object_types {
        let Ok(t) = usize::try_from(*value) else {
            continue;
        };
        if t >= MAX_OBJECT_TYPES {
            continue;
        }
        for (slot, r) in plan.object_refs_of(name).iter().enumerate() {
            c.object_refs[t][slot] = ObjectRef {
                offset: r.offset,
                kind: match r.kind {
                    RefKind::Object => ref_kind::OBJECT,
                    RefKind::Domain => ref_kind::DOMAIN,
                    RefKind::Value => ref_kind::VALUE,
                },
            };
        }
    }
    c.filter_pid = filter_pid;
    for (i, d) in plan.drivers.iter().enumerate().take(MAX_DRIVERS) {
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

/// The start of one `PAGES_BLOCK`-byte read that covers every field at `offsets` (each at
/// most 8 bytes) and stays inside the struct (`size` bytes: the read must not run into the
/// next object, or a guard page), or unset when the fields are missing, spread wider, or the
/// struct is smaller than the window: the pin probe then reads them one by one. Each read is
/// a helper call on the map loop's path.
fn pages_block(offsets: &[u32], size: u32) -> u32 {
    if offsets.contains(&Config::UNSET) || size == Config::UNSET || size < PAGES_BLOCK {
        return Config::UNSET;
    }
    let first = offsets.iter().min().map_or(0, |m| m & !7);
    let end = offsets.iter().max().map_or(0, |m| m + 8);
    // As far back as the struct's end allows, so the window ends inside it.
    let start = first.min((size - PAGES_BLOCK) & !7);
    if end <= start + PAGES_BLOCK {
        start
    } else {
        Config::UNSET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 6.12's layout (pahole: 152 bytes, fields at 40..97) fits one read that ends inside
    // the struct; a field missing or out of reach, or no size, means one read each.
    #[test]
    fn the_pages_fields_share_one_read_when_they_fit() {
        let fields = [48, 40, 96, 64, 80, 72];
        assert_eq!(pages_block(&fields, 152), 24);
        assert_eq!(pages_block(&fields, 400), 40);
        assert_eq!(pages_block(&fields, 120), Config::UNSET);
        assert_eq!(pages_block(&fields, Config::UNSET), Config::UNSET);
        assert_eq!(pages_block(&[48, 40, 200, 64, 80, 72], 400), Config::UNSET);
        assert_eq!(
            pages_block(&[48, Config::UNSET, 96, 64, 80, 72], 400),
            Config::UNSET
        );
        // The window's last byte is the last field's.
        assert_eq!(pages_block(&[40, 160], 400), 40);
        assert_eq!(pages_block(&[40, 161], 400), Config::UNSET);
    }
}
