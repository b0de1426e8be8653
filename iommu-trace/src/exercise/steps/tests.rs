use libc::{EBUSY, EINVAL, ENOTTY, EOPNOTSUPP};

use super::*;
use crate::exercise::report::AllocKind;

#[test]
fn iova_layout_fits_window_and_is_disjoint() {
    let ranges = [
        (IOVA_SINGLE, PAGE_4K),
        (IOVA_RUN, RUN_PAGES * PAGE_4K),
        (IOVA_ADJ, ADJ_AREAS * ADJ_PAGES * PAGE_4K),
        (IOVA_FULL, FULL_PAGES * PAGE_4K),
        (IOVA_HUGE, 2 * HUGE_2M),
        (IOVA_LOOP, 4096 * PAGE_4K),
        (IOVA_PREMAP, PREMAP_PAGES * PAGE_4K),
        (IOVA_LEFTOVER, LEFTOVER_PAGES * PAGE_4K),
        (
            super::pin_sharing::IOVA_PIN_FIRST,
            super::pin_sharing::PIN_SPAN,
        ),
    ];
    for (i, &(a, al)) in ranges.iter().enumerate() {
        assert!(a + al <= super::super::IOVA_WINDOW);
        for &(b, bl) in &ranges[i + 1..] {
            assert!(a + al <= b || b + bl <= a, "{a:#x} overlaps {b:#x}");
        }
    }
    assert_eq!(IOVA_FULL % HUGE_2M, 0);
    assert_eq!(IOVA_HUGE % HUGE_2M, 0);
    // The default window lies inside the selftest mock aperture.
    let base = super::super::DEFAULT_IOVA_BASE;
    assert!(base >= MOCK_APERTURE_START);
    assert!(base + super::super::IOVA_WINDOW - 1 <= MOCK_APERTURE_LAST);
}

#[test]
fn step_builder_and_record() {
    let opts = ExerciseOptions::default();
    let mut r = Runner {
        opts: &opts,
        iommufd: -1,
        report: Report::default(),
        ledger: Ledger::default(),
        buf: None,
        buf_cursor: 0,
        huge: None,
        huge_tried: false,
        owned_hwpts: Vec::new(),
        vfio_attached: None,
        viommus: Vec::new(),
    };
    r.record(
        step(
            "a",
            StepGroup::Negative,
            "IOMMU_DESTROY",
            Some(IOMMU_DESTROY),
        )
        .errno(EBUSY)
        .expect(EBUSY),
    );
    r.record(
        step("b", StepGroup::Setup, "close", None)
            .errno(0)
            .expect(EINVAL),
    );
    // With fd -1 every ioctl fails with EBADF, and the failure is recorded, not fatal.
    assert_eq!(r.ioas_alloc("c", "x"), None);
    assert!(!r.map("d", StepGroup::Map, 1, None, PAGE_4K, 0, 0));
    let s = &r.report.steps;
    assert_eq!(s.len(), 4);
    assert_eq!(s[0].as_expected, Some(true));
    assert_eq!(s[0].errno_name.as_deref(), Some("EBUSY"));
    assert_eq!(s[1].as_expected, Some(false));
    assert_eq!(s[2].errno, Some(libc::EBADF));
    assert_eq!(s[2].seq, 2);
    assert_eq!(s[3].errno, None);
}

#[test]
fn pages_wrap_around() {
    let opts = ExerciseOptions::default();
    let mut r = Runner {
        opts: &opts,
        iommufd: -1,
        report: Report::default(),
        ledger: Ledger::default(),
        buf: Some(Mapping::anon_4k(8 * 4096).unwrap()),
        buf_cursor: 0,
        huge: None,
        huge_tried: false,
        owned_hwpts: Vec::new(),
        vfio_attached: None,
        viommus: Vec::new(),
    };
    let a = r.pages(4).unwrap();
    let b = r.pages(4).unwrap();
    assert_eq!(b, a + 4 * 4096);
    assert_eq!(r.pages(2).unwrap(), a);
    assert_eq!(r.pages(9), None);
}

fn fake_opts(vfio: VfioSelect) -> ExerciseOptions {
    ExerciseOptions {
        iommu_path: "/dev/null".into(),
        vfio,
        hugepages: false,
        loop_iterations: 100,
        ..Default::default()
    }
}

#[test]
fn full_run_against_fake_kernel() {
    let st = super::super::fake::install(true);
    let opts = fake_opts(VfioSelect::Path("/dev/null".into()));
    let report = super::super::run(&opts).unwrap();
    super::super::fake::uninstall();
    let st = st.borrow();
    if let Some(p) = std::env::var_os("EXERCISE_FAKE_REPORT") {
        std::fs::write(p, report.to_json_pretty()).unwrap();
    }

    let mut names = std::collections::HashSet::new();
    for s in &report.steps {
        assert!(names.insert(s.name.clone()), "duplicate step {}", s.name);
        if s.expected_errno.is_some() {
            assert_eq!(s.as_expected, Some(true), "{s:#?}");
        }
    }
    let errno = |n: &str| report.step(n).unwrap_or_else(|| panic!("{n}")).errno;
    // Past a 48-bit aperture the IOAS refuses the IOVA; within it, the map is made.
    assert_eq!(errno("map_4k_at_2e39"), Some(0));
    assert_eq!(errno("unmap_4k_at_2e39"), Some(0));
    assert_eq!(errno("map_4k_at_2e48"), Some(EINVAL));
    assert!(report.step("unmap_4k_at_2e48").is_none());
    assert_eq!(errno("hwpt_alloc_paging"), Some(0));
    assert_eq!(errno("hwpt_alloc_paging_nest_parent"), Some(EOPNOTSUPP));
    assert_eq!(errno("hwpt_alloc_paging_dirty_tracking"), Some(EOPNOTSUPP));
    assert_eq!(errno("get_hw_info"), Some(0));
    assert_eq!(errno("hwpt_alloc_nested_vtd_s1"), Some(EINVAL));
    assert_eq!(errno("attach_ioas_auto_domain"), Some(0));
    assert_eq!(errno("mock_hwpt_alloc_nested_selftest"), Some(0));
    assert_eq!(errno("destroy_attached_hwpt_busy"), Some(EBUSY));
    assert_eq!(
        errno("mock_destroy_nest_parent_with_child_busy"),
        Some(EBUSY)
    );
    assert_eq!(report.mock.available, Some(true));
    assert_eq!(report.hugepages.available, Some(false));
    assert!(report.step("map_huge_2m_0").is_none());

    let t = &report.totals;
    let a = &t.expected_domain_allocations;
    assert_eq!(a["vfio_paging"], 1);
    assert_eq!(a["vfio_auto"], 1);
    assert_eq!(a.get("vfio_nested"), None);
    // The second iommufd, closed with a mock device (its auto domain) and a NEST_PARENT
    // hwpt alive, adds one of each; the close frees them. The fake has no vIOMMU (6.12).
    assert_eq!(a["mock_auto"], 2);
    assert_eq!(a["mock_paging"], 5);
    assert_eq!(a["mock_nested"], 1);
    assert_eq!(a["total"], 10);
    assert_eq!(&t.expected_domain_frees, a);
    assert_eq!(st.domains_allocated, 10);
    assert_eq!(st.domains_freed, 10);
    assert_eq!(st.live_objects(), 0);
    assert_eq!(report.viommu.errno, Some(libc::ENOTTY));
    assert_eq!(errno("close_second_iommufd_with_objects_alive"), Some(0));

    for h in &t.hwpts {
        let (m, u) = st.domain_bytes.get(&h.id).copied().unwrap_or((0, 0));
        assert_eq!((h.bytes_mapped, h.bytes_unmapped), (m, u), "{h:#?}");
        assert_eq!(h.bytes_mapped, h.bytes_unmapped);
        assert!(h.freed);
    }
    // The auto domain was filled with the area mapped before any domain existed.
    let auto = t.hwpts.iter().find(|h| h.label == "auto_domain").unwrap();
    assert_eq!(auto.bytes_filled_at_alloc, PREMAP_PAGES * PAGE_4K);
    for i in &t.ioas {
        assert_eq!(i.live_bytes, 0);
        assert!(i.destroyed);
        assert_eq!(i.bytes_mapped, i.bytes_unmapped);
    }
    let l = report.loop_result.as_ref().unwrap();
    assert_eq!((l.ops, l.map_errors, l.unmap_errors), (200, 0, 0));
    assert_eq!(l.domains_reached, 1);
    let paging = t
        .allocations
        .iter()
        .find(|x| x.kind == AllocKind::Paging && x.device == DeviceKind::Vfio && x.flags == 1)
        .unwrap();
    assert_eq!((paging.attempts, paging.succeeded), (1, 0));
    // The report serializes.
    assert!(report
        .to_json_pretty()
        .contains("\"expected_domain_allocations\""));
}

#[test]
fn fake_run_with_hugepages_requested() {
    let _st = super::super::fake::install(true);
    let opts = ExerciseOptions {
        hugepages: true,
        ..fake_opts(VfioSelect::Path("/dev/null".into()))
    };
    let report = super::super::run(&opts).unwrap();
    super::super::fake::uninstall();
    let mmap = report.step("mmap_hugetlb_2m").unwrap();
    match report.hugepages.available {
        Some(true) => {
            assert!(mmap.ok());
            assert_eq!(
                report.step("unmap_across_huge_and_4k").unwrap().outputs["unmapped"],
                HUGE_2M + 16 * PAGE_4K
            );
            assert!(report.step("mock_map_huge_2m_1").unwrap().ok());
        }
        _ => {
            // No hugetlb pages reserved on this host: recorded, huge steps skipped.
            assert_ne!(mmap.errno, Some(0));
            assert!(report.step("map_huge_2m_0").is_none());
        }
    }
    for s in &report.steps {
        if s.expected_errno.is_some() {
            assert_eq!(s.as_expected, Some(true), "{s:#?}");
        }
    }
    assert!(report.totals.ioas.iter().all(|i| i.live_bytes == 0));
}

/// The huge patterns with a stand-in buffer (this host may have no hugetlb pages).
#[test]
fn huge_patterns_against_fake_kernel() {
    let st = super::super::fake::install(true);
    let opts = fake_opts(VfioSelect::Disabled);
    let mut r = Runner {
        opts: &opts,
        iommufd: -1,
        report: Report::default(),
        ledger: Ledger::default(),
        buf: Some(Mapping::anon_4k(64 * 4096).unwrap()),
        buf_cursor: 0,
        huge: Some(Mapping::anon_4k(2 * HUGE_2M as usize).unwrap()),
        huge_tried: true,
        owned_hwpts: Vec::new(),
        vfio_attached: None,
        viommus: Vec::new(),
    };
    let ioas = r.ioas_alloc("ioas", "x").unwrap();
    r.patterns_huge("", ioas);
    super::super::fake::uninstall();
    let names: Vec<&str> = r.report.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ioas",
            "map_huge_2m_0",
            "map_huge_2m_1",
            "unmap_huge_2m_1",
            "map_4k_in_former_huge",
            "unmap_across_huge_and_4k"
        ]
    );
    assert!(r.report.steps.iter().all(|s| s.as_expected == Some(true)));
    assert_eq!(r.ledger.ioas_live_bytes(ioas), 0);
    assert_eq!(st.borrow().live_objects(), 1);
}

#[test]
fn fake_kernel_without_selftest_mock() {
    let _st = super::super::fake::install(false);
    let report = super::super::run(&fake_opts(VfioSelect::Path("/dev/null".into()))).unwrap();
    assert_eq!(report.mock.available, Some(false));
    assert_eq!(report.mock.errno, Some(ENOTTY));
    assert_eq!(report.totals.expected_domain_allocations["total"], 2);
    let err = super::super::run(&fake_opts(VfioSelect::Disabled)).unwrap_err();
    super::super::fake::uninstall();
    assert!(
        matches!(err, ExerciseError::NothingToExercise { .. }),
        "{err}"
    );
}

#[test]
fn mock_only_run_loops_on_the_mock_ioas() {
    let _st = super::super::fake::install(true);
    let report = super::super::run(&fake_opts(VfioSelect::Disabled)).unwrap();
    super::super::fake::uninstall();
    assert!(report.vfio.is_none());
    assert_eq!(report.loop_result.as_ref().unwrap().domains_reached, 5);
    assert!(report.step("mock_map_unmap_loop").unwrap().ok());
}
