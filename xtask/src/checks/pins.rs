//! Pinned guest memory: the `pin` events of a capture against the kernel's own counters, read
//! by the workload itself from /proc/self/status (`VmPin` = `mm->pinned_vm`, `VmLck` =
//! `mm->locked_vm`) at named points (docs/kernel-facts.md §8); the IOAS ioctl events against
//! the calls the workload made.

use serde_json::Value;

use super::{ensure, s, u};

/// A pin event's signed field.
fn i(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// The workload's step named `name`.
fn step<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["steps"]
        .as_array()?
        .iter()
        .find(|st| s(st, "name") == name)
}

/// The workload's memory sample labelled `label`: its `VmPin` and `VmLck`, in bytes.
fn sample(report: &Value, label: &str) -> Result<(i64, i64), String> {
    let x = report["memory_samples"]
        .as_array()
        .and_then(|all| all.iter().find(|x| s(x, "label") == label))
        .ok_or_else(|| format!("the workload took no {label:?} sample"))?;
    Ok((i(x, "pinned_bytes"), i(x, "locked_bytes")))
}

/// What the capture says the workload's mm holds at `ts_ns`: pinned and locked pages since
/// `from_ns`. Every accounted change of an `iopt_pages` the workload created moves its
/// `pinned_vm` (all modes); only mode `mm` moves its `locked_vm`.
fn implied(pins: &[&Value], from_ns: u64, ts_ns: u64) -> (i64, i64) {
    pins.iter()
        .filter(|p| u(p, "ts_ns") > from_ns && u(p, "ts_ns") < ts_ns)
        .fold((0, 0), |(pinned, locked), p| {
            let charged_mm = if s(p, "mode") == "mm" {
                i(p, "charged")
            } else {
                0
            };
            (pinned + i(p, "pages"), locked + charged_mm)
        })
}

/// At each point the workload sampled, `VmPin` and `VmLck` moved from the first sample by
/// exactly what the capture's `pin` events for the workload's mappings add up to; and the
/// workload pinned something (the check cannot pass on an empty capture).
pub(super) fn pinned_memory_matches_the_kernel(
    report: &Value,
    pid: u64,
    events: &[Value],
) -> Result<(), String> {
    let page = report["page_size"].as_u64().filter(|p| *p > 0).ok_or(
        "the workload's report has no page_size (an iommu-trace older than the pin events)",
    )?;
    let samples = report["memory_samples"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first = samples
        .first()
        .ok_or("the workload sampled no /proc/self/status")?;
    let read = |x: &Value, key: &str| -> Result<i64, String> {
        x[key].as_u64().map(|v| v as i64).ok_or_else(|| {
            format!(
                "sample {}: no {key} (/proc/self/status unread)",
                s(x, "label")
            )
        })
    };
    let (pin0, lck0) = (read(first, "pinned_bytes")?, read(first, "locked_bytes")?);
    let pins: Vec<&Value> = events
        .iter()
        .filter(|e| s(e, "event") == "pin" && u(e, "target_pid") == pid && u(e, "errno") == 0)
        .collect();
    ensure(pins.iter().any(|p| i(p, "pages") > 0), || {
        format!("the capture has no pin event for the workload (pid {pid}): nothing to reconcile")
    })?;
    let mut mismatches = Vec::new();
    for x in &samples[1..] {
        let (pinned, locked) = implied(&pins, u(first, "ts_ns"), u(x, "ts_ns"));
        let want = (pin0 + pinned * page as i64, lck0 + locked * page as i64);
        let got = (read(x, "pinned_bytes")?, read(x, "locked_bytes")?);
        if want != got {
            mismatches.push(format!(
                "at {}: the capture implies VmPin {} and VmLck {} bytes, the kernel says {} and {}",
                s(x, "label"),
                want.0,
                want.1,
                got.0,
                got.1
            ));
        }
    }
    ensure(mismatches.is_empty(), || mismatches.join("; "))
}

/// One IOAS operation as (ioas, iova, length, source, errno): source is the user address of
/// a map, the source IOVA of a copy, the file offset of a map_file.
type IoasCall = (u64, u64, u64, u64, u64);

/// The workload's IOAS_MAP and IOAS_UNMAP calls, in order, as its report records them and as
/// the capture's `ioas_map` / `ioas_unmap` events do: the same calls with the same inputs,
/// the same results and, on success, the same outputs (the IOVA chosen, the bytes unmapped).
pub(super) fn ioas_ops_match_the_workload(
    report: &Value,
    pid: u64,
    events: &[Value],
) -> Result<(), String> {
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    // The map loop is one step for many calls; the scenarios that compare calls run none.
    // (A call refused before its handler, in `iommufd_fops_ioctl`, would have no event: the
    // workload makes none.)
    ensure(!steps.iter().any(|st| s(st, "call").contains('+')), || {
        "the workload ran the map loop: its calls are not one step each".to_string()
    })?;
    // (call, event, the field naming its source: user_va, the copy's src_iova, the file
    // offset), and whether the workload must have made one.
    for (call, event, source, required) in [
        ("IOMMU_IOAS_MAP", "ioas_map", "user_va", true),
        ("IOMMU_IOAS_UNMAP", "ioas_unmap", "user_va", true),
        ("IOMMU_IOAS_COPY", "ioas_copy", "src_iova", false),
        ("IOMMU_IOAS_MAP_FILE", "ioas_map_file", "start", false),
        // No IOAS, address or length: 0 on both sides.
        (
            "IOMMU_IOAS_CHANGE_PROCESS",
            "ioas_change_process",
            "start",
            false,
        ),
    ] {
        let want: Vec<IoasCall> = steps
            .iter()
            // ENOTTY: an ioctl this kernel does not have, refused before any handler. A
            // child's call is its own process's (`change_process_moves_the_charge`).
            .filter(|st| s(st, "call") == call && st["errno"].is_u64() && u(st, "errno") != 25)
            .filter(|st| s(&st["params"], "caller") != "child")
            .map(|st| {
                let (p, out, ok) = (&st["params"], &st["outputs"], u(st, "errno") == 0);
                let iova = if ok && out["iova"].is_u64() {
                    u(out, "iova")
                } else {
                    u(p, "iova")
                };
                let length = if ok && out["unmapped"].is_u64() {
                    u(out, "unmapped")
                } else {
                    u(p, "length")
                };
                (u(p, "ioas_id"), iova, length, u(p, source), u(st, "errno"))
            })
            .collect();
        let got: Vec<IoasCall> = events
            .iter()
            .filter(|e| s(e, "event") == event && u(e, "pid") == pid)
            .map(|e| {
                let (ioas, iova, length) = (u(e, "ioas"), u(e, "iova"), u(e, "length"));
                (ioas, iova, length, u(e, source), u(e, "errno"))
            })
            .collect();
        ensure(!required || !want.is_empty(), || {
            format!("the workload made no {call}")
        })?;
        ensure(want == got, || {
            let at = want.iter().zip(&got).position(|(w, g)| w != g);
            format!(
                "{call}: the workload made {} calls, the capture has {} {event} events; first \
                 difference at {at:?}: (ioas, iova, length, user_va, errno) workload {:?}, \
                 capture {:?}",
                want.len(),
                got.len(),
                at.and_then(|i| want.get(i)),
                at.and_then(|i| got.get(i))
            )
        })?;
    }
    Ok(())
}

/// How pins are shared, from the kernel's own counter (`VmPin`, read by the workload between
/// the phases of `steps/pin_sharing.rs`), independently of the probes: one buffer mapped
/// twice is pinned twice, a copy pins nothing, a memfd mapping (7.x) pins its pages,
/// unmapping the copy unpins nothing, each original unpins its own. And the workload runs
/// as root, with CAP_IPC_LOCK: every pin of its mappings is in mode `none` and its `VmLck`
/// never moves (the CAP_IPC_LOCK run, no accounting).
pub(super) fn pin_sharing_matches_the_kernel(
    report: &Value,
    pid: u64,
    events: &[Value],
) -> Result<(), String> {
    let at = |label: &str| sample(report, label);
    let errno = |name: &str| step(report, name).map(|st| u(st, "errno"));
    // steps/pin_sharing.rs maps 4 pages of 4 KiB (the exercise's page) each time.
    let len = 4 * 4096;
    let memfd = match errno("mock_pin_map_file_memfd") {
        Some(0) => len,
        Some(25) => 0,
        other => return Err(format!("mock_pin_map_file_memfd: errno {other:?}")),
    };
    let phases = [
        ("pin_before", "pin_one_buffer_mapped_twice", 2 * len),
        ("pin_one_buffer_mapped_twice", "pin_copied", 0),
        ("pin_copied", "pin_memfd_mapped", memfd),
        ("pin_memfd_mapped", "pin_unmap_copy", 0),
        ("pin_unmap_copy", "pin_unmap_buffer", -len),
        ("pin_unmap_buffer", "pin_unmap_buffer_again", -len),
    ];
    let mut wrong = Vec::new();
    for (from, to, want) in phases {
        let ((p0, l0), (p1, l1)) = (at(from)?, at(to)?);
        if p1 - p0 != want || l1 != l0 {
            wrong.push(format!(
                "{from} -> {to}: VmPin moved {} bytes (want {want}), VmLck {}",
                p1 - p0,
                l1 - l0
            ));
        }
    }
    ensure(wrong.is_empty(), || wrong.join("; "))?;
    let charged: Vec<&Value> = events
        .iter()
        .filter(|e| s(e, "event") == "pin" && u(e, "target_pid") == pid)
        .filter(|e| s(e, "mode") != "none" || i(e, "charged") != 0)
        .collect();
    ensure(charged.is_empty(), || {
        format!(
            "the root workload (CAP_IPC_LOCK) had {} pins accounted: {:?}",
            charged.len(),
            charged.first()
        )
    })
}

/// The limits run exits with its per-mm iommufd open and pinned (`steps/pin_limits.rs`):
/// the fd is released after `exit_mm()`, so each uncharge of those pins fails with EINVAL
/// (the creator's mm is gone) while the pages are unpinned all the same: the capture shows
/// them, in mode `mm`, leaving every `iopt_pages` of the run with nothing pinned.
pub(super) fn exit_uncharge_fails_and_unpins(pid: u64, events: &[Value]) -> Result<(), String> {
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| s(e, "event") == "pin" && u(e, "target_pid") == pid)
        .filter(|e| u(e, "errno") == 22)
        .collect();
    ensure(!failed.is_empty(), || {
        "no uncharge failed with EINVAL when the limits run exited with its per-mm iommufd \
         open"
            .to_string()
    })?;
    let wrong: Vec<&&Value> = failed
        .iter()
        .filter(|e| s(e, "mode") != "mm" || i(e, "pages") >= 0 || u(e, "pinned_pages") != 0)
        .collect();
    ensure(wrong.is_empty(), || {
        format!("EINVAL on something else than a per-mm uncharge to nothing: {wrong:?}")
    })
}

/// IOAS_CHANGE_PROCESS in the limits run (`steps/change_process.rs`), from the kernel's own
/// counters first: with user memory mapped it is refused (EINVAL); a child's call moves the
/// MAP_FILE pages to the child (its `VmPin`, read from its /proc while it lived, holds them;
/// this process's loses them), this process's call brings them back. Then the capture: the
/// child's `ioas_change_process`, its charge (the child's uid and pid, the child's
/// `pinned_vm` after it equal to the `VmPin` read) and this process's uncharge.
/// `has_ioctl`: the kernel has the ioctl (its handler is in /proc/kallsyms, read by the
/// scenario); a kernel that has it may not answer ENOTTY.
pub(super) fn change_process_moves_the_charge(
    report: &Value,
    pid: u64,
    events: &[Value],
    has_ioctl: bool,
) -> Result<(), String> {
    let find =
        |name: &str| step(report, name).ok_or_else(|| format!("the limits run has no step {name}"));
    let refused = find("limits_change_process_user_memory")?;
    if !has_ioctl {
        return ensure(u(refused, "errno") == 25, || {
            format!("no IOAS_CHANGE_PROCESS in kallsyms, yet the ioctl answered {refused}")
        });
    }
    ensure(u(refused, "errno") == 22, || {
        format!("IOAS_CHANGE_PROCESS with user memory mapped: {refused}")
    })?;
    let half = u(&find("limits_map_file_half")?["params"], "length") as i64;
    let child = find("limits_change_process_child")?;
    let back = find("limits_change_process_back")?;
    for st in [child, back] {
        ensure(u(st, "errno") == 0, || format!("{st}"))?;
    }
    let child_pid = u(&child["outputs"], "child_pid");
    let child_vmpin = child["outputs"]["child_pinned_bytes"]
        .as_i64()
        .ok_or("the child's VmPin was not read")?;
    ensure(child_vmpin == half, || {
        format!("the child's VmPin after its call is {child_vmpin} bytes, not the {half} moved")
    })?;
    let vmpin = |label: &str| sample(report, label).map(|(pinned, _)| pinned);
    let (before, out, back_in) = (
        vmpin("change_process_before")?,
        vmpin("change_process_moved_out")?,
        vmpin("change_process_moved_back")?,
    );
    ensure(out - before == -half && back_in - out == half, || {
        format!(
            "this process's VmPin moved {} then {} bytes around the two calls, not -{half} \
             then +{half}",
            out - before,
            back_in - out
        )
    })?;
    // The capture: the child's call and the two halves of its move.
    ensure(
        events.iter().any(|e| {
            s(e, "event") == "ioas_change_process" && u(e, "pid") == child_pid && u(e, "errno") == 0
        }),
        || format!("no ioas_change_process event of the child (pid {child_pid})"),
    )?;
    let uid = u(&find("drop_privileges")?["params"], "uid");
    let page = report["page_size"].as_i64().unwrap_or(4096);
    let by_child: Vec<&Value> = events
        .iter()
        .filter(|e| s(e, "event") == "pin" && u(e, "pid") == child_pid)
        .collect();
    let charge = by_child.iter().find(|e| u(e, "target_pid") == child_pid);
    ensure(
        charge.is_some_and(|e| {
            i(e, "charged") * page == half
                && s(e, "mode") == "user"
                && u(e, "target_uid") == uid
                && i(e, "pinned_vm_bytes") == child_vmpin
        }),
        || {
            format!("the child's charge (+{half} bytes to uid {uid}, its pinned_vm {child_vmpin}) is not in the capture: {by_child:?}")
        },
    )?;
    ensure(
        by_child
            .iter()
            .any(|e| u(e, "target_pid") == pid && i(e, "charged") * page == -half),
        || format!("no uncharge of -{half} bytes from pid {pid} by the child: {by_child:?}"),
    )?;
    // This process's call back uncharges the child (gone by then).
    ensure(
        events.iter().any(|e| {
            s(e, "event") == "pin"
                && u(e, "pid") == pid
                && u(e, "target_pid") == child_pid
                && i(e, "charged") * page == -half
                && u(e, "errno") == 0
        }),
        || format!("no uncharge of -{half} bytes from the child (pid {child_pid}) by pid {pid}"),
    )?;
    // One page more cannot move: the child's call is refused and nothing moves (its charge
    // is refused in the capture, its VmPin stays 0, this process's gains only the page).
    let over = find("limits_change_process_child_over_half")?;
    let over_pid = u(&over["outputs"], "child_pid");
    ensure(
        u(over, "errno") == 12 && over["outputs"]["child_pinned_bytes"].as_i64() == Some(0),
        || format!("the child's call over half the limit: {over}"),
    )?;
    let refused_at = vmpin("change_process_refused")?;
    ensure(refused_at - back_in == page, || {
        format!(
            "this process's VmPin moved {} bytes over the refused call and the one page mapped \
             before it, not {page}",
            refused_at - back_in
        )
    })?;
    ensure(
        events.iter().any(|e| {
            s(e, "event") == "pin"
                && u(e, "pid") == over_pid
                && u(e, "target_pid") == over_pid
                && u(e, "errno") == 12
                && i(e, "pages") * page == half + page
        }),
        || {
            format!(
                "no refused charge of {} bytes to the child (pid {over_pid})",
                half + page
            )
        },
    )
}

/// The unprivileged limits run (`exercise --pin-limits-as`, `steps/pin_limits.rs`): every
/// ENOMEM the workload met has its `pin` event, in order, saying why: the RLIMIT_MEMLOCK the
/// workload set, the accounting the kernel used (per-user for the first iommufd, per-mm for
/// the one switched by IOMMU_OPTION), the uid charged, and a locked total that this request
/// takes past the limit.
pub(super) fn enomem_explained(report: &Value, pid: u64, events: &[Value]) -> Result<(), String> {
    let steps = report["steps"].as_array().cloned().unwrap_or_default();
    let find = |name: &str| step(report, name);
    let drop = find("drop_privileges").ok_or("the limits run did not drop privileges")?;
    ensure(u(drop, "errno") == 0, || {
        format!("drop_privileges failed: {drop}")
    })?;
    let (uid, limit) = (
        u(&drop["params"], "uid"),
        u(&drop["params"], "rlimit_memlock"),
    );
    let page = report["page_size"].as_u64().unwrap_or(4096) as i64;
    let bad: Vec<&Value> = steps
        .iter()
        .filter(|st| st["as_expected"] == false)
        .collect();
    ensure(bad.is_empty(), || {
        format!("steps with another answer: {bad:?}")
    })?;
    let enomem: Vec<&Value> = steps.iter().filter(|st| u(st, "errno") == 12).collect();
    let names: Vec<&str> = enomem.iter().map(|st| s(st, "name")).collect();
    // MAP_FILE and IOAS_CHANGE_PROCESS only where the kernel has them
    // (steps/change_process.rs); the latter's refusal is its child's.
    let map_file = find("limits_map_file_over_user").is_some_and(|st| u(st, "errno") != 25);
    let child = find("limits_change_process_child_over_half");
    let child_pid = child.map_or(0, |st| u(&st["outputs"], "child_pid"));
    let wanted: Vec<&str> = [
        "limits_map_over_user",
        "limits_hwpt_alloc_over_user",
        "limits_map_file_over_user",
        "limits_change_process_child_over_half",
        "limits_mm_map_over",
    ]
    .into_iter()
    .filter(|n| map_file || *n != "limits_map_file_over_user")
    .filter(|n| child.is_some() || *n != "limits_change_process_child_over_half")
    .collect();
    ensure(names == wanted, || {
        format!("the run met ENOMEM at {names:?}, not at {wanted:?}")
    })?;
    let wanted_modes: Vec<&str> = names
        .iter()
        .map(|n| {
            if n.starts_with("limits_mm_") {
                "mm"
            } else {
                "user"
            }
        })
        .collect();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| s(e, "event") == "pin" && u(e, "errno") == 12)
        .filter(|e| u(e, "pid") == pid || (child_pid != 0 && u(e, "pid") == child_pid))
        .collect();
    ensure(refused.len() == enomem.len(), || {
        format!(
            "{} ENOMEM in the workload, {} refused pin events in the capture",
            enomem.len(),
            refused.len()
        )
    })?;
    for ((st, p), mode) in enomem.iter().zip(&refused).zip(wanted_modes) {
        let name = s(st, "name");
        ensure(s(p, "mode") == mode, || {
            format!("{name}: mode {}, not {mode}", s(p, "mode"))
        })?;
        ensure(u(p, "limit_bytes") == limit, || {
            format!(
                "{name}: limit_bytes {}, the workload set {limit}",
                p["limit_bytes"]
            )
        })?;
        ensure(mode != "user" || u(p, "target_uid") == uid, || {
            format!("{name}: charged to uid {}, not {uid}", p["target_uid"])
        })?;
        // IOAS_CHANGE_PROCESS charges its caller, the child.
        let target = if name == "limits_change_process_child_over_half" {
            child_pid
        } else {
            pid
        };
        ensure(u(p, "target_pid") == target && i(p, "charged") == 0, || {
            format!(
                "{name}: target_pid {} charged {}",
                p["target_pid"], p["charged"]
            )
        })?;
        let (locked, asked) = (u(p, "locked_bytes") as i64, i(p, "pages") * page);
        ensure(
            asked > 0 && locked <= limit as i64 && locked + asked > limit as i64,
            || format!("{name}: {asked} bytes asked with {locked} locked does not pass {limit}"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pin(ts: u64, pages: i64, mode: &str) -> Value {
        let charged = if mode == "none" { 0 } else { pages };
        json!({"event": "pin", "ts_ns": ts, "pid": 7, "target_pid": 7, "pages": pages,
               "charged": charged, "mode": mode, "errno": 0})
    }

    fn report(samples: &[(&str, u64, u64, u64)]) -> Value {
        let s: Vec<Value> = samples
            .iter()
            .map(|(l, ts, pin, lck)| {
                json!({"label": l, "ts_ns": ts, "pinned_bytes": pin, "locked_bytes": lck})
            })
            .collect();
        json!({"page_size": 4096, "memory_samples": s})
    }

    /// A limits run whose child (pid 9) took 8 pages from pid 7 and gave them back.
    fn change_process_run() -> (Value, Vec<Value>) {
        let p = 4096;
        let mut r = report(&[
            ("change_process_before", 10, 8 * p, 0),
            ("change_process_moved_out", 20, 0, 0),
            ("change_process_moved_back", 30, 8 * p, 0),
            ("change_process_refused", 40, 9 * p, 0),
        ]);
        r["steps"] = json!([
            {"name": "drop_privileges", "errno": 0, "params": {"uid": 65534}},
            {"name": "limits_change_process_user_memory", "errno": 22},
            {"name": "limits_map_file_half", "errno": 0, "params": {"length": 8 * p}},
            {"name": "limits_change_process_child", "errno": 0,
             "outputs": {"child_pid": 9, "child_pinned_bytes": 8 * p}},
            {"name": "limits_change_process_back", "errno": 0},
            {"name": "limits_change_process_child_over_half", "errno": 12,
             "outputs": {"child_pid": 10, "child_pinned_bytes": 0}},
        ]);
        let pin = |pid: u64, target: u64, charged: i64, vm: u64| {
            json!({"event": "pin", "pid": pid, "target_pid": target, "pages": charged,
                   "charged": charged, "mode": "user", "target_uid": 65534,
                   "pinned_vm_bytes": vm, "errno": 0})
        };
        let events = vec![
            pin(9, 9, 8, 8 * p),
            pin(9, 7, -8, 0),
            json!({"event": "ioas_change_process", "pid": 9, "errno": 0}),
            pin(7, 7, 8, 8 * p),
            pin(7, 9, -8, 0),
            json!({"event": "pin", "pid": 10, "target_pid": 10, "pages": 9, "charged": 0,
                   "mode": "user", "errno": 12}),
        ];
        (r, events)
    }

    // The kernel's counters first (the child's and this process's VmPin), then the capture:
    // the child's call, its charge and this process's uncharge.
    #[test]
    fn a_change_process_is_checked_against_both_processes_vmpin() {
        let (r, events) = change_process_run();
        change_process_moves_the_charge(&r, 7, &events, true).unwrap();
        // A kernel with the ioctl may not answer ENOTTY; one without it must.
        let err = change_process_moves_the_charge(&r, 7, &events, false).unwrap_err();
        assert!(err.contains("no IOAS_CHANGE_PROCESS in kallsyms"), "{err}");
        let mut absent = r.clone();
        absent["steps"][1]["errno"] = json!(25);
        change_process_moves_the_charge(&absent, 7, &[], false).unwrap();
        // The child's VmPin did not gain the pages.
        let mut wrong = r.clone();
        wrong["steps"][3]["outputs"]["child_pinned_bytes"] = json!(0);
        let err = change_process_moves_the_charge(&wrong, 7, &events, true).unwrap_err();
        assert!(err.contains("the child's VmPin"), "{err}");
        // This process's VmPin did not move.
        let mut still = r.clone();
        still["memory_samples"][1]["pinned_bytes"] = json!(8 * 4096);
        let err = change_process_moves_the_charge(&still, 7, &events, true).unwrap_err();
        assert!(err.contains("VmPin moved 0 then"), "{err}");
        // The capture lost the child's charge, this process's uncharge, the uncharge of the
        // child on the way back, or the refused charge.
        for gone in [0, 1, 4, 5] {
            let mut lost = events.clone();
            lost.remove(gone);
            assert!(change_process_moves_the_charge(&r, 7, &lost, true).is_err());
        }
    }

    // Inputs, results and outputs compared call by call; a missing event is a failure.
    #[test]
    fn ioas_calls_are_compared_one_for_one() {
        let report = json!({"steps": [
            {"call": "IOMMU_IOAS_MAP", "errno": 0,
             "params": {"ioas_id": 1, "iova": 4096, "length": 8192, "user_va": 77},
             "outputs": {"iova": 4096}},
            {"call": "IOMMU_IOAS_MAP", "errno": 17,
             "params": {"ioas_id": 1, "iova": 4096, "length": 4096, "user_va": 99},
             "outputs": {}},
            {"call": "IOMMU_IOAS_UNMAP", "errno": 0,
             "params": {"ioas_id": 1, "iova": 0, "length": 18446744073709551615u64},
             "outputs": {"unmapped": 8192}}
        ]});
        let ev = |event: &str, iova: u64, length: u64, user_va: Option<u64>, errno: u64| {
            let mut e = json!({"event": event, "pid": 7, "ioas": 1, "iova": iova,
                               "length": length, "errno": errno});
            if let Some(v) = user_va {
                e["user_va"] = json!(v);
            }
            e
        };
        let events = vec![
            ev("ioas_map", 4096, 8192, Some(77), 0),
            ev("ioas_map", 4096, 4096, Some(99), 17),
            ev("ioas_unmap", 0, 8192, None, 0),
        ];
        ioas_ops_match_the_workload(&report, 7, &events).unwrap();
        let err = ioas_ops_match_the_workload(&report, 7, &events[1..]).unwrap_err();
        assert!(err.contains("IOMMU_IOAS_MAP"), "{err}");
        let mut wrong = events.clone();
        wrong[2]["length"] = json!(4096);
        let err = ioas_ops_match_the_workload(&report, 7, &wrong).unwrap_err();
        assert!(err.contains("IOMMU_IOAS_UNMAP"), "{err}");
    }

    // Pins between samples move VmPin page for page; mode mm also moves VmLck; a refused
    // charge and another process's pins move nothing.
    #[test]
    fn samples_are_reconciled_with_the_pin_events() {
        let mut refused = pin(25, 50, "user");
        refused["errno"] = json!(12);
        let mut other = pin(26, 9, "none");
        other["target_pid"] = json!(8);
        let events = [
            pin(20, 16, "none"),
            pin(30, 4, "mm"),
            refused,
            other,
            pin(50, -20, "mm"),
        ];
        // 20 pages mlock()ed before the start; pinned: +16 +4 -20; locked: +4 -20.
        let p = 4096;
        let good = report(&[
            ("start", 10, 0, 20 * p),
            ("peak", 40, 20 * p, 24 * p),
            ("end", 60, 0, 4 * p),
        ]);
        pinned_memory_matches_the_kernel(&good, 7, &events).unwrap();
        // One unpin missing from the capture: the end sample disagrees.
        let dropped = &events[..4];
        let err = pinned_memory_matches_the_kernel(&good, 7, dropped).unwrap_err();
        assert!(err.contains("at end") && !err.contains("at peak"), "{err}");
        // No pin at all: refused rather than passed.
        let err = pinned_memory_matches_the_kernel(&good, 7, &[]).unwrap_err();
        assert!(err.contains("no pin event"), "{err}");
    }

    // The kernel's VmPin between the sharing phases, and no accounting for root.
    #[test]
    fn pin_sharing_is_read_from_vmpin_and_root_is_unaccounted() {
        let k = 16384;
        let labels = [
            ("pin_before", 0),
            ("pin_one_buffer_mapped_twice", 2 * k),
            ("pin_copied", 2 * k),
            ("pin_memfd_mapped", 3 * k),
            ("pin_unmap_copy", 3 * k),
            ("pin_unmap_buffer", 2 * k),
            ("pin_unmap_buffer_again", k),
        ];
        let report = |copy_pins: u64| {
            let samples: Vec<Value> = labels
                .iter()
                .map(|(l, p)| {
                    let p = if *l == "pin_before" {
                        *p
                    } else {
                        p + copy_pins
                    };
                    json!({"label": l, "pinned_bytes": p, "locked_bytes": 0})
                })
                .collect();
            json!({"page_size": 4096, "memory_samples": samples,
                   "steps": [{"name": "mock_pin_map_file_memfd", "errno": 0}]})
        };
        let events = vec![pin(1, 4, "none"), pin(2, 4, "none")];
        pin_sharing_matches_the_kernel(&report(0), 7, &events).unwrap();
        // A copy that pinned again shows in VmPin.
        let mut r = report(0);
        r["memory_samples"][2]["pinned_bytes"] = json!(3 * k);
        let err = pin_sharing_matches_the_kernel(&r, 7, &events).unwrap_err();
        assert!(
            err.contains("pin_one_buffer_mapped_twice -> pin_copied"),
            "{err}"
        );
        // A pin of root's mappings accounted per user.
        let err = pin_sharing_matches_the_kernel(&report(0), 7, &[pin(1, 4, "user")]).unwrap_err();
        assert!(err.contains("CAP_IPC_LOCK"), "{err}");
    }
}
