//! Golden captures recorded on real kernels in the VM harness (`cargo xtask vm-test`, then
//! copied here): they must replay through the reference models with zero divergence, and an
//! edited copy must be reported as diverging at the edited event.

use std::path::PathBuf;

use iommu_trace::capture::{read_all, CaptureSource};
use iommu_trace::events::{Event, EventBody};
use iommu_trace::replay::{replay, replay_file, Choice, ReplayOptions, Report};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

/// A golden capture replayed as `iommu-trace replay` does it (options from its header).
fn replay_golden(name: &str) -> Report {
    replay_file(&[golden_path(name)], &Choice::default(), |_| {})
        .expect("replay")
        .report
}

fn golden(name: &str) -> Vec<Event> {
    let path = golden_path(name);
    let (_, events, ending) =
        read_all(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(ending.is_finalized(), "{name}: {ending}");
    events
}

fn first_divergence(report: &Report) -> u64 {
    report
        .first_divergence()
        .unwrap_or_else(|| panic!("no divergence reported:\n{report}"))
        .1
        .event_index
}

/// Index of the first event at or after `from` that closes an operation on `domain`
/// (the event the replay compares the buffered page changes against).
fn next_op_of(events: &[Event], from: usize, domain: u64) -> usize {
    (from..events.len())
        .find(|&i| {
            matches!(
                &events[i].body,
                EventBody::Map(m) | EventBody::Unmap(m) if m.domain.0 == domain
            ) || matches!(&events[i].body, EventBody::DomainFree(f) if f.domain.0 == domain)
        })
        .expect("an operation follows")
}

#[test]
fn golden_captures_replay_with_zero_divergence() {
    for name in [
        "6.12-vtd-exercise.itc",
        "6.12-mock-exercise.itc",
        "6.12-arm64-smmuv3-exercise.itc",
        "6.12-amd-exercise.itc",
    ] {
        let events = golden(name);
        let report = replay(&events, &ReplayOptions::default());
        assert!(report.all_verified(), "{name}:\n{report}");
        assert!(!report.domains.is_empty(), "{name}: no domain");
    }
}

// arm64 (QEMU virt, emulated SMMUv3): the stage-1 LPAE tables of real SMMUv3 domains,
// with the stage and the SMMU's address sizes read through BTF.
#[test]
fn the_smmuv3_golden_capture_has_real_stage_1_tables() {
    let events = golden("6.12-arm64-smmuv3-exercise.itc");
    let report = replay(&events, &ReplayOptions::default());
    let smmu: Vec<_> = report
        .domains
        .iter()
        .filter(|d| d.driver == "arm-smmu-v3")
        .collect();
    assert!(smmu.len() >= 2, "{report}");
    for d in smmu {
        assert!(d.observed.allocated > 0 && d.maps > 0, "{report}");
        assert!(
            d.model.as_deref().unwrap_or("").contains("LPAE S1 4K"),
            "{:?}",
            d.model
        );
    }
}

// Recorded on 7.3 (generic page table: VT-d in the vtdss format, the selftest mock in
// AMDv1's 2K-granule "mock" format; whole-range unmap; on arm64 io-pgtable-arm's 7.x
// rules). The kernel behaviour comes from the features the capture's session detected,
// as `iommu-trace replay`, `serve --verify` and `top` do (one path: `replay_file`).
#[test]
fn golden_7_3_captures_verify_under_the_detected_behaviour() {
    use iommu_trace::model::{SmmuBehaviour, VtdBehaviour};
    for (name, want_drivers) in [
        ("7.3-vtd-mock-exercise.itc", &["intel", "mock"][..]),
        ("7.3-mock-exercise.itc", &["mock"][..]),
        ("7.3-amd-mock-exercise.itc", &["amd", "mock"][..]),
        // arm64: SMMUv3 stage 1 and (NEST_PARENT) stage 2 under io-pgtable-arm's 7.x rules.
        (
            "7.3-arm64-smmuv3-mock-exercise.itc",
            &["arm-smmu-v3", "mock"][..],
        ),
    ] {
        let done = replay_file(&[golden_path(name)], &Choice::default(), |_| {}).expect("replay");
        assert_eq!(done.warning, None, "{name}");
        let report = done.report;
        assert_eq!(
            report.options.behaviour.vtd,
            VtdBehaviour::GenericPtWholeRange,
            "{name}"
        );
        assert!(report.all_verified(), "{name}:\n{report}");
        if name.contains("arm64") {
            assert_eq!(report.options.behaviour.smmu, SmmuBehaviour::V7, "{name}");
            assert!(
                report
                    .domains
                    .iter()
                    .any(|d| d.model.as_deref().unwrap_or("").contains("LPAE S2")),
                "{name}: no stage-2 domain:\n{report}"
            );
        }
        for d in want_drivers {
            assert!(
                report
                    .domains
                    .iter()
                    .any(|r| r.driver == *d && r.observed.allocated > 0),
                "{name}: no {d} domain with page-table pages:\n{report}"
            );
        }
    }
}

#[test]
fn the_vtd_golden_capture_covers_the_interesting_paths() {
    let events = golden("6.12-vtd-exercise.itc");
    let count = |f: &dyn Fn(&EventBody) -> bool| events.iter().filter(|e| f(&e.body)).count();
    assert!(
        count(&|b| matches!(b, EventBody::Map(m) if m.size >= 2 << 20 && m.iova % (2 << 20) == 0))
            > 0,
        "no 2M-aligned map"
    );
    assert!(
        count(&|b| matches!(b, EventBody::DomainFree(_))) >= 2,
        "domains not destroyed"
    );
    // Unmaps that freed a table (its pt_free comes right before it) and partial unmaps that
    // left the emptied table in place.
    let (mut freed, mut kept) = (0, 0);
    for w in events.windows(2) {
        if let EventBody::Unmap(u) = &w[1].body {
            match &w[0].body {
                EventBody::PtFree(p) if p.domain == u.domain => freed += 1,
                _ => kept += 1,
            }
        }
    }
    assert!(
        freed > 0 && kept > 0,
        "unmaps freeing tables: {freed}, keeping them: {kept}"
    );
}

#[test]
fn a_dropped_page_free_diverges_at_its_operation() {
    // VT-d frees tables at unmaps; SMMUv3 (io-pgtable-arm) and AMD v1 only at domain free.
    for (name, cause) in [
        ("6.12-vtd-exercise.itc", iommu_trace::events::PtCause::Unmap),
        (
            "6.12-arm64-smmuv3-exercise.itc",
            iommu_trace::events::PtCause::Free,
        ),
        ("6.12-amd-exercise.itc", iommu_trace::events::PtCause::Free),
    ] {
        let mut events = golden(name);
        let i = events
            .iter()
            .position(
                |e| matches!(&e.body, EventBody::PtFree(p) if p.cause == cause && p.domain.0 != 0),
            )
            .unwrap_or_else(|| panic!("{name}: no table freed by {cause:?}"));
        let EventBody::PtFree(p) = &events[i].body else {
            unreachable!()
        };
        let domain = p.domain.0;
        events.remove(i);
        let report = replay(&events, &ReplayOptions::default());
        assert!(!report.all_verified(), "{name}");
        assert_eq!(
            first_divergence(&report),
            next_op_of(&events, i, domain) as u64,
            "{name}: {report}"
        );
    }
}

#[test]
fn a_moved_map_diverges_at_the_operation_it_displaced() {
    let mut events = golden("6.12-vtd-exercise.itc");
    // A map that allocated page-table pages (its pt_alloc events come right before it) and
    // whose domain's next operation is an unmap of it.
    let (j, k) = (1..events.len())
        .filter(|&j| {
            matches!(&events[j].body, EventBody::Map(_))
                && matches!(&events[j - 1].body, EventBody::PtAlloc(_))
        })
        .find_map(|j| {
            let EventBody::Map(m) = &events[j].body else {
                return None;
            };
            let k = next_op_of(&events, j + 1, m.domain.0);
            matches!(&events[k].body, EventBody::Unmap(_)).then_some((j, k))
        })
        .expect("a map that allocated tables, then unmapped");
    // Move the map after the unmap: the tables it allocated now precede an unmap of a range
    // that is not mapped yet, which the model does not predict.
    let moved = events.remove(j);
    events.insert(k, moved);
    let report = replay(&events, &ReplayOptions::default());
    assert!(!report.all_verified());
    assert_eq!(first_divergence(&report), (k - 1) as u64, "{report}");
}

// Three front ends, one verdict: `replay`, `serve --verify` (its summary of the same
// replay) and `top --from` (the detail view's verdict, replayed from the domain's kept
// history with the options the capture's session gives) agree on every golden capture.
#[test]
fn replay_serve_and_top_give_the_same_verdicts() {
    use iommu_trace::capture::CaptureReader;
    use iommu_trace::export::ReplaySummary;
    use iommu_trace::tui::board::Judgement;
    use iommu_trace::tui::{Model, SessionInfo};
    use std::collections::BTreeMap;

    let dir = golden_path("");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".itc"))
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let path = dir.join(&name);
        let report = replay_golden(&name);
        let serve = ReplaySummary::of(&report);

        let mut reader = CaptureReader::open(&path).unwrap();
        let mut top = Model::new(SessionInfo::for_capture(reader.header(), &name, 0.0));
        for e in reader.by_ref() {
            top.apply(e.expect("a golden capture reads whole"));
        }

        // Per domain pointer, the verdict classes each front end gave, in any order.
        let mut by_replay: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for d in &report.domains {
            let class = match &d.verdict {
                _ if report.capture_wide_gap() => "unverifiable",
                iommu_trace::replay::Verdict::Verified => "verified",
                iommu_trace::replay::Verdict::Diverged => "diverged",
                iommu_trace::replay::Verdict::Unverifiable(_) => "unverifiable",
            };
            by_replay.entry(d.domain.0).or_default().push(class);
        }
        let mut counted = BTreeMap::new();
        for classes in by_replay.values() {
            for c in classes {
                *counted.entry(c.to_string()).or_insert(0u64) += 1;
            }
        }
        for (verdict, n) in &serve.domains_by_verdict {
            assert_eq!(
                counted.get(verdict).copied().unwrap_or(0),
                *n,
                "{name}: serve --verify counts {n} {verdict}, replay {counted:?}"
            );
        }

        let mut compared = 0;
        for row in top.domain_rows(true) {
            let v = top.verdict(&row);
            let text = v.verdict;
            let class = match v.judgement {
                // A truncated history is not the whole domain.
                _ if text.contains("(first ") => continue,
                Judgement::None => continue,
                Judgement::Verified => "verified",
                Judgement::Diverged => "diverged",
                Judgement::Unverifiable => "unverifiable",
            };
            let replayed = by_replay.get(&row.d.domain.0).cloned().unwrap_or_default();
            assert!(
                replayed.contains(&class),
                "{name}: top says {text:?} for domain {:#x}, replay says {replayed:?}",
                row.d.domain.0
            );
            compared += 1;
        }
        assert!(compared > 0, "{name}: top gave no verdict to compare");
    }
}

// Format 3 captures with the iommufd object events (the VM scenario `exercise`, whose
// objects the VM check compared one for one with ftrace kprobe events): the graph is
// consistent, every object is destroyed by the end, each domain names its HWPT, and the
// format-2 captures above still read.
#[test]
fn golden_object_captures_have_a_consistent_graph() {
    for (name, types) in [
        (
            "6.12-vtd-objects.itc",
            &["device", "hwpt_paging", "ioas"][..],
        ),
        (
            "7.3-vtd-mock-objects.itc",
            &[
                "device",
                "hwpt_nested",
                "hwpt_paging",
                "ioas",
                "selftest",
                "viommu",
                "vdevice",
                "veventq",
                "hw_queue",
                "fault",
                "access",
            ][..],
        ),
    ] {
        let report = replay_golden(name);
        assert!(report.all_verified(), "{name}:\n{report}");
        let objects = report.objects.as_ref().expect("object events");
        assert!(
            objects.findings.is_empty() && objects.unchecked.is_none(),
            "{report}"
        );
        assert_eq!(objects.created, objects.destroyed, "{name}:\n{report}");
        assert!(objects.alive_at_end.is_empty(), "{report}");
        assert!(objects.aborted > 0, "{name}: the exercise's failed creates");
        for t in types {
            assert!(objects.created.contains_key(*t), "{name}: no {t}\n{report}");
        }
        assert!(
            report.domains.iter().all(|d| d.hwpt.is_some()),
            "{name}: a domain without its HWPT:\n{report}"
        );
    }
    // 7.3: nested domains allocated through a vIOMMU name it, and objects left alive are
    // destroyed by the close of their iommufd.
    let events = golden("7.3-vtd-mock-objects.itc");
    let viommus: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ObjectAlloc(o) if o.object == "viommu" => Some(o.id),
            _ => None,
        })
        .collect();
    let through: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::DomainAlloc(a) if a.op == iommu_trace::events::AllocOp::ViommuNested => {
                Some(a)
            }
            _ => None,
        })
        .collect();
    assert_eq!(through.len(), 3);
    assert!(through
        .iter()
        .all(|a| a.errno == 0 && viommus.contains(&a.viommu_id.unwrap())));
    assert!(events.iter().any(|e| matches!(
        &e.body,
        EventBody::ObjectDestroy(o) if o.object == "viommu"
            && o.how == iommu_trace::events::DestroyHow::Close
    )));
}

// Dropping an object's destroy from a real capture breaks the graph at the end of the
// capture (the object outlives its iommufd's close), or at its domain's free.
#[test]
fn a_dropped_object_destroy_breaks_the_graph() {
    let mut events = golden("7.3-vtd-mock-objects.itc");
    let at = events
        .iter()
        .position(|e| matches!(&e.body, EventBody::ObjectDestroy(o) if o.object == "hwpt_paging"))
        .expect("a hwpt destroy");
    events.remove(at);
    let report = replay(&events, &ReplayOptions::default());
    let objects = report.objects.as_ref().expect("object events");
    assert!(!objects.findings.is_empty(), "{report}");
    // It shows at the free of the HWPT's domain, the next domain_free after the gap.
    let free = (at..events.len())
        .find(|&i| matches!(events[i].body, EventBody::DomainFree(_)))
        .expect("the domain's free");
    assert_eq!(objects.findings[0].event_index, free as u64, "{report}");
    assert!(
        objects.findings[0].what.contains("still holds it"),
        "{report}"
    );
    assert!(!report.all_verified());
}

/// The refusals of the limits run in a pin capture, by accounting mode: per-user IOAS_MAP and
/// HWPT_ALLOC, on 7.3 per-user MAP_FILE and a child's IOAS_CHANGE_PROCESS too, then per-mm
/// IOAS_MAP.
fn limits_run_refusals(name: &str) -> Vec<iommu_trace::events::PinMode> {
    use iommu_trace::events::PinMode::{Mm, User};
    if name.starts_with("7.") {
        vec![User, User, User, User, Mm]
    } else {
        vec![User, User, Mm]
    }
}

// Format 4 captures of the `mock` VM scenario, whose pins the VM check reconciled with the
// workload's VmPin / VmLck: every process's pins return to zero once its mappings are gone
// (on 7.3 the limits run's child too, which took the pins with IOAS_CHANGE_PROCESS and gave
// them back), and the unprivileged limits run's refusals explain themselves. They still
// replay with zero divergence.
#[test]
fn golden_pin_captures_balance_and_explain_their_refusals() {
    use std::collections::BTreeMap;

    use iommu_trace::events::PinMode;
    for name in ["6.12-mock-pins.itc", "7.3-mock-pins.itc"] {
        let events = golden(name);
        let mut held: BTreeMap<u32, i64> = BTreeMap::new();
        let mut refusals = Vec::new();
        for e in &events {
            if let EventBody::Pin(p) = &e.body {
                // A per-mm uncharge at exit fails with EINVAL (the creator's mm is gone) and
                // unpins all the same (docs/kernel-facts.md §8.4): the 7.3 capture's run
                // exits with pins.
                let exit_unpin = p.errno == libc::EINVAL && p.pages < 0;
                if p.errno == 0 || exit_unpin {
                    *held.entry(p.target_pid).or_default() += p.pages;
                } else {
                    refusals.push((p.mode, p.refusal().expect("a refusal explains itself")));
                }
            }
        }
        // 7.3: the limits run's child holds pins for a while (IOAS_CHANGE_PROCESS).
        let processes = if name.starts_with("7.") { 3 } else { 2 };
        assert_eq!(
            held.len(),
            processes,
            "{name}: the exercise and the limits run: {held:?}"
        );
        assert!(
            held.values().all(|&n| n == 0),
            "{name}: pins left: {held:?}"
        );
        let modes: Vec<PinMode> = refusals.iter().map(|r| r.0).collect();
        assert_eq!(modes, limits_run_refusals(name), "{name}");
        // Each mapping asked for 32 KiB past the 64 KiB limit; the child's IOAS_CHANGE_PROCESS
        // (7.3) for 8 KiB past it, which it says is because the move charges before it
        // uncharges.
        let (moves, maps): (Vec<_>, Vec<_>) = refusals
            .iter()
            .partition(|(_, why)| why.contains("IOAS_CHANGE_PROCESS charges the caller"));
        assert!(
            maps.iter()
                .all(|(_, why)| why.contains("of 64.0 KiB: raise that limit by at least 32.0 KiB")),
            "{name}: {refusals:?}"
        );
        assert_eq!(
            moves.len(),
            usize::from(name.starts_with("7.")),
            "{name}: {moves:?}"
        );
        assert!(
            moves
                .iter()
                .all(|(_, why)| why.contains("of 64.0 KiB: raise that limit by at least 8.0 KiB")),
            "{name}: {moves:?}"
        );
        let maps = events
            .iter()
            .filter(|e| matches!(&e.body, EventBody::IoasMap(o) if o.errno == 12))
            .count();
        assert_eq!(maps, 2, "{name}: the two refused IOAS_MAPs");
        let report = replay_golden(name);
        assert!(report.all_verified(), "{name}:\n{report}");
        // The live ledger ends where the kernel did: nothing pinned, and the refusals by
        // cause, each explained with what the traced mappings held of the total.
        let mut state = iommu_trace::state::State::new();
        // The object view's pins per IOAS: claimed by real IOAS operations, never more than
        // what is pinned.
        let mut most_claimed = 0;
        let mut moved_to_child = false;
        for e in &events {
            state.apply(e);
            // The child's IOAS_CHANGE_PROCESS returned: the ledger has the memfd's 8 pages
            // in the child.
            if matches!(&e.body, EventBody::IoasChangeProcess(o) if o.errno == 0) && !moved_to_child
            {
                let procs = state.pins().processes();
                let child = procs.get(&e.pid).map(|p| p.pinned_pages);
                assert_eq!(child, Some(8), "{name}: the child's pins: {procs:?}");
                moved_to_child = true;
            }
            let pins = state.pins();
            let claimed: u64 = pins.pinned_pages_by_ioas().values().sum();
            let pinned: u64 = pins.processes().values().map(|p| p.pinned_pages).sum();
            assert!(claimed <= pinned, "{name}: {claimed} claimed of {pinned}");
            most_claimed = most_claimed.max(claimed);
        }
        assert!(most_claimed > 0, "{name}: no pin was attributed to an IOAS");
        assert_eq!(moved_to_child, name.starts_with("7."), "{name}");
        let pins = state.pins();
        assert!(
            pins.processes().is_empty(),
            "{name}: {:?}",
            pins.processes()
        );
        use iommu_trace::state::RefusalCause;
        let causes: Vec<(RefusalCause, u64)> =
            pins.refusals().iter().map(|(c, n)| (*c, *n)).collect();
        let per_user = limits_run_refusals(name).len() as u64 - 1;
        assert_eq!(
            causes,
            [
                (RefusalCause::MemlockUser, per_user),
                (RefusalCause::MemlockMm, 1)
            ],
            "{name}"
        );
        assert!(
            pins.recent_refusals()
                .all(|w| w.contains("this process's iommufd mappings")),
            "{name}: {:?}",
            pins.recent_refusals().collect::<Vec<_>>()
        );
    }
}

// The accounting model (replay/pins.rs) follows every call of both pin captures (7.3: an
// IOAS_CHANGE_PROCESS to a child and back among them), and predicts each of their refusals
// from the limit and total the kernel compared.
#[test]
fn golden_pin_captures_replay_the_accounting_with_zero_divergence() {
    for name in ["6.12-mock-pins.itc", "7.3-mock-pins.itc"] {
        let events = golden(name);
        let calls = events
            .iter()
            .filter(|e| matches!(e.body, EventBody::Pin(_)))
            .count() as u64;
        let report = replay(&events, &ReplayOptions::default());
        let pins = report.pins.as_ref().expect("pin events");
        assert!(pins.findings.is_empty(), "{name}:\n{report}");
        assert_eq!(pins.calls, calls, "{name}");
        let refusals = limits_run_refusals(name).len() as u64;
        assert_eq!(
            (pins.refused, pins.refusals_predicted),
            (refusals, refusals),
            "{name}"
        );
        assert_eq!(pins.adopted, 0, "{name}: the capture saw every pin made");
        assert!(
            pins.pinned_at_end.values().all(|&n| n == 0),
            "{name}: {:?}",
            pins.pinned_at_end
        );
    }
}

// Dropping one successful unpin from a real capture: the model still holds those pages
// charged, and the next call on the same `iopt_pages` (or on the next one the slab puts at
// its address) contradicts it, so the report names that call and the window the unpin was
// missing from.
#[test]
fn a_dropped_unpin_diverges_at_the_next_call_on_its_pages() {
    for name in ["6.12-mock-pins.itc", "7.3-mock-pins.itc"] {
        let mut events = golden(name);
        let unpin = |e: &Event| matches!(&e.body, EventBody::Pin(p) if p.pages < 0 && p.errno == 0 && p.total_pages > 0);
        let pages_of = |e: &Event| match &e.body {
            EventBody::Pin(p) => Some(p.iopt_pages),
            _ => None,
        };
        // An unpin followed by another call on the same address, so the gap can show.
        let at = (0..events.len())
            .find(|&i| {
                unpin(&events[i])
                    && events[i + 1..]
                        .iter()
                        .any(|e| pages_of(e) == pages_of(&events[i]))
            })
            .expect("an unpin with a later call on its iopt_pages");
        let pages = pages_of(&events[at]);
        let previous = (0..at)
            .rev()
            .find(|&i| pages_of(&events[i]) == pages)
            .expect("the call that pinned them");
        events.remove(at);
        let next = (at..events.len())
            .find(|&i| pages_of(&events[i]) == pages)
            .expect("the next call on those pages");
        let report = replay(&events, &ReplayOptions::default());
        let pins = report.pins.as_ref().expect("pin events");
        assert_eq!(pins.findings.len(), 1, "{name}:\n{report}");
        let f = &pins.findings[0];
        assert_eq!(f.event_index, next as u64, "{name}:\n{report}");
        assert_eq!(Some(f.iopt_pages), pages, "{name}");
        assert!(
            f.what.contains(&format!("last call at event {previous}")),
            "{name}: {}",
            f.what
        );
        assert!(!report.all_verified(), "{name}");
    }
}

// 7.3 under QEMU's AMD IOMMU: the AMD domains use the generic page table's AMDv1 format,
// whose top grows on map (a 3-level table at allocation, a 4th level for the map beyond 2^39,
// a 5th for the one beyond 2^48); every domain verifies, the selftest mock's beside them.
#[test]
fn the_7_3_amd_capture_verifies_its_growing_tables() {
    let name = "7.3-amd-mock-exercise.itc";
    let events = golden(name);
    let report = replay_golden(name);
    assert!(report.all_verified(), "{report}");
    let amd: Vec<_> = report
        .domains
        .iter()
        .filter(|d| d.driver == "amd" && d.maps > 0)
        .collect();
    assert_eq!(amd.len(), 2, "{report}");
    for d in amd {
        assert!(
            d.model.as_deref().unwrap_or("").contains("AMDv1"),
            "{report}"
        );
        // The maps beyond 2^39 and 2^48 each allocate a new top before the path's tables.
        for (beyond, pages) in [(1u64 << 39, 4), (1 << 48, 5)] {
            let at = events
                .iter()
                .position(|e| {
                    matches!(&e.body, EventBody::Map(m) if m.domain == d.domain && m.iova >= beyond && m.iova < beyond << 1)
                })
                .unwrap_or_else(|| panic!("no map of {:#x} beyond {beyond:#x}", d.domain.0));
            let allocs = events[..at]
                .iter()
                .rev()
                .take_while(|e| matches!(&e.body, EventBody::PtAlloc(p) if p.domain == d.domain))
                .count();
            assert_eq!(allocs, pages, "map at event {at}");
        }
    }
}

// An edited 7.3 AMD capture: dropping the new top of the map beyond 2^48, or a table an
// unmap freed, diverges at that operation.
#[test]
fn an_edited_7_3_amd_capture_diverges_at_the_edit() {
    let events = golden("7.3-amd-mock-exercise.itc");
    let map_beyond_2_48 =
        |e: &Event| matches!(&e.body, EventBody::Map(m) if m.iova >= 1 << 48 && m.iova < 1 << 49);
    let map = events
        .iter()
        .position(map_beyond_2_48)
        .expect("a map beyond 2^48");
    let first_alloc = (0..map)
        .rev()
        .take_while(|&i| matches!(&events[i].body, EventBody::PtAlloc(_)))
        .last()
        .expect("tables before it");
    let unmap_free = events
        .iter()
        .position(|e| {
            matches!(&e.body, EventBody::PtFree(p) if p.cause == iommu_trace::events::PtCause::Unmap)
        })
        .expect("a table freed by an unmap");
    for dropped in [first_alloc, unmap_free] {
        let mut edited = events.clone();
        let (EventBody::PtAlloc(iommu_trace::events::PtPages { domain, .. })
        | EventBody::PtFree(iommu_trace::events::PtPages { domain, .. })) = &edited[dropped].body
        else {
            unreachable!()
        };
        let domain = domain.0;
        edited.remove(dropped);
        let report = replay(&edited, &ReplayOptions::default());
        assert!(!report.all_verified());
        assert_eq!(
            first_divergence(&report),
            next_op_of(&edited, dropped, domain) as u64,
            "event {dropped}: {report}"
        );
    }
}

// `replay --what-if`: every real host's domain is also replayed as AMD would hold it (6.12
// io-pgtable v1, 7.x AMDv1), and an AMD domain as a 4-level VT-d table; each format takes
// every map the kernel made but those a 48-bit VT-d table cannot (the AMD exercise's map
// beyond 2^48, and its unmap).
#[test]
fn what_if_compares_with_the_amd_formats() {
    for (name, want) in [
        (
            "6.12-vtd-exercise.itc",
            &["AMD io-pgtable v1", "AMD AMDv1", "VT-d legacy 5-level"][..],
        ),
        (
            "6.12-arm64-smmuv3-exercise.itc",
            &["AMD io-pgtable v1", "AMD AMDv1"][..],
        ),
        (
            "6.12-amd-exercise.itc",
            &["AMD AMDv1", "VT-d legacy 4-level"][..],
        ),
        (
            "7.3-amd-mock-exercise.itc",
            &["AMD io-pgtable v1", "VT-d"][..],
        ),
    ] {
        let choice = Choice {
            what_if: true,
            ..Choice::default()
        };
        let report = replay_file(&[golden_path(name)], &choice, |_| {})
            .expect("replay")
            .report;
        assert!(report.all_verified(), "{name}:\n{report}");
        let events = golden(name);
        let beyond_48_bits = |domain: u64| {
            events
                .iter()
                .filter(|e| match &e.body {
                    EventBody::Map(m) | EventBody::Unmap(m) => {
                        m.domain.0 == domain && m.errno == 0 && m.iova + m.size > 1 << 48
                    }
                    _ => false,
                })
                .count() as u64
        };
        let real: Vec<_> = report
            .what_if
            .iter()
            .filter(|w| {
                w.rows
                    .iter()
                    .any(|r| r.actual && !r.format.contains("mock"))
            })
            .collect();
        assert!(!real.is_empty(), "{name}: no what-if rows:\n{report}");
        for w in real {
            for f in want {
                let row = w
                    .rows
                    .iter()
                    .find(|r| !r.actual && r.format.contains(f))
                    .unwrap_or_else(|| panic!("{name}: no {f} row:\n{report}"));
                let failed = if row.format.contains("VT-d") && row.format.contains("gaw 48") {
                    beyond_48_bits(w.domain.0)
                } else {
                    0
                };
                assert_eq!(row.failed_ops, failed, "{name}: {f}:\n{report}");
                assert!(row.peak_pages > 0, "{name}: {f}:\n{report}");
            }
        }
    }
}

// Format 5 captures under QEMU's AMD IOMMU with the `pt_grow` point recorded: the replay
// (options from the header) checks every growth against the model and verifies; each AMD
// domain grew twice, to 5 levels (6.12: one level per event; 7.3: the map beyond 2^39 adds
// one, the one beyond 2^48 another). Dropping a growth, or changing its levels, diverges at
// the map it belongs to.
#[test]
fn growth_captures_verify_and_an_edited_growth_diverges() {
    for name in [
        "6.12-amd-growth-exercise.itc",
        "7.3-amd-growth-exercise.itc",
    ] {
        let report = replay_golden(name);
        assert!(report.options.top_growth, "{name}: pt_grow not recorded?");
        assert!(report.all_verified(), "{name}:\n{report}");
        let amd: Vec<_> = report
            .domains
            .iter()
            .filter(|d| d.driver == "amd" && d.maps > 0)
            .collect();
        assert_eq!(amd.len(), 2, "{name}:\n{report}");
        for d in amd {
            assert_eq!((d.top_growths, d.top_levels), (2, Some(5)), "{name}");
        }

        let events = golden(name);
        let opts = report.options.clone();
        let grows: Vec<usize> = (0..events.len())
            .filter(|&i| matches!(events[i].body, EventBody::PtGrow(_)))
            .collect();
        assert_eq!(grows.len(), 4, "{name}");
        let at = grows[2];
        let EventBody::PtGrow(g) = &events[at].body else {
            unreachable!()
        };
        let domain = g.domain.0;
        let mut dropped = events.clone();
        dropped.remove(at);
        let mut changed = events.clone();
        if let EventBody::PtGrow(g) = &mut changed[at].body {
            g.levels += 1;
        }
        for (what, edited, from) in [("dropped", dropped, at), ("changed", changed, at + 1)] {
            let r = replay(&edited, &opts);
            assert!(!r.all_verified(), "{name}: {what}");
            assert_eq!(
                first_divergence(&r),
                next_op_of(&edited, from, domain) as u64,
                "{name}: {what}:\n{r}"
            );
        }
    }
}

// Every page a capture's workload pinned is attributed to an IOAS in the live ledger (the
// object view's per-IOAS figure): by the IOAS_MAP/COPY that pinned it, or by the paging HWPT
// whose first domain on the IOAS pinned it (HWPT_ALLOC, or a device attach's auto domain).
// Checked after every operation that ends a pinning (the workloads are one thread: no pin
// of another operation is in flight then).
#[test]
fn every_pinned_page_is_attributed_to_an_ioas() {
    use iommu_trace::state::State;
    for name in [
        "6.12-mock-pins.itc",
        "7.3-mock-pins.itc",
        "6.12-amd-growth-exercise.itc",
        "7.3-amd-growth-exercise.itc",
    ] {
        let mut s = State::new();
        let mut peak = 0u64;
        for (i, e) in golden(name).iter().enumerate() {
            s.apply(e);
            let ends_a_pinning = match &e.body {
                EventBody::IoasMap(_)
                | EventBody::IoasMapFile(_)
                | EventBody::IoasCopy(_)
                | EventBody::HwptAlloc(_) => true,
                EventBody::ObjectAlloc(o) => o.object == "hwpt_paging",
                _ => false,
            };
            if !ends_a_pinning {
                continue;
            }
            let pinned: u64 = s.pins().processes().values().map(|p| p.pinned_pages).sum();
            let by_ioas: u64 = s.pins().pinned_pages_by_ioas().values().sum();
            assert_eq!(by_ioas, pinned, "{name}: event {i}");
            peak = peak.max(pinned);
        }
        assert!(peak > 0, "{name}: nothing pinned");
    }
}
