//! The checks of a capture against the workload's report, shared by the `exercise` and
//! `mock` scenarios: ioctls, domain allocations, mapped bytes, page-table pages, replay.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{ensure, jsonl, rc, read, s, u, vmstat, Outcome};

/// Inputs shared by the exercise checks.
pub(super) struct Exercise {
    pub(super) report: Value,
    pub(super) pid: u64,
    pub(super) events: Vec<Value>,
}

impl Exercise {
    pub(super) fn load(dir: &Path) -> Result<Exercise, String> {
        let report: Value = serde_json::from_str(&read(dir, "exercise.json")?)
            .map_err(|e| format!("exercise.json: {e}"))?;
        let pid = read(dir, "exercise.pid")?
            .trim()
            .parse()
            .map_err(|e| format!("exercise.pid: {e}"))?;
        Ok(Exercise {
            report,
            pid,
            events: jsonl(dir, "exercise.jsonl")?,
        })
    }

    /// Events the workload caused, in order.
    fn ours<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |e| s(e, "event") == kind && u(e, "pid") == self.pid)
    }

    fn steps(&self) -> &[Value] {
        self.report["steps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The capture replays through the reference models with zero divergence: every domain of
/// the workload verified, page for page.
fn replay_verifies(dir: &Path, x: &Exercise) -> Result<(), String> {
    let report: Value = serde_json::from_str(&read(dir, "replay.json")?)
        .map_err(|e| format!("replay.json: {e}"))?;
    let text = read(dir, "replay.txt").unwrap_or_default();
    ensure(rc(dir, "replay.rc")? == 0, || {
        format!("replay did not verify:\n{text}")
    })?;
    let domains = report["domains"].as_array().cloned().unwrap_or_default();
    for d in our_domains(x) {
        let r = domains
            .iter()
            .find(|r| s(r, "domain") == d)
            .ok_or_else(|| format!("domain {d} is not in the replay report"))?;
        ensure(r["verdict"] == "verified", || {
            format!("domain {d}: {}", r["verdict"])
        })?;
    }
    Ok(())
}

/// The checks of the capture against the workload's report, shared by the scenarios.
/// `hw_iommu`: the VM had the architecture's emulated IOMMU (real page tables, charged).
pub(super) fn capture_checks(dir: &Path, out: &mut Vec<Outcome>, hw_iommu: bool) {
    match Exercise::load(dir) {
        Ok(x) => {
            out.push(Outcome::from("no_loss", no_loss(&x)));
            out.push(Outcome::from("workload_as_expected", as_expected(&x)));
            out.push(Outcome::from("hwpt_alloc_ioctls_match", hwpt_ioctls(&x)));
            out.push(Outcome::from("domain_allocs_match", domain_allocs(&x)));
            out.push(Outcome::from("map_unmap_bytes_per_domain", map_bytes(&x)));
            out.push(Outcome::from(
                "pt_pages_balance_per_domain",
                pt_balance(&x, hw_iommu),
            ));
            out.push(Outcome::from("pt_pages_match_vmstat", pt_vmstat(&x, dir)));
            out.push(Outcome::from(
                "objects_match_the_kernel",
                super::objects::objects_match_the_kernel(dir, &x.events),
            ));
            out.push(Outcome::from(
                "ioas_ops_match_the_workload",
                super::pins::ioas_ops_match_the_workload(&x.report, x.pid, &x.events),
            ));
            out.push(Outcome::from(
                "pinned_memory_matches_the_kernel",
                super::pins::pinned_memory_matches_the_kernel(&x.report, x.pid, &x.events),
            ));
            out.push(Outcome::from(
                "viommu_objects_and_close",
                super::objects::viommu_and_close(&x.report, &x.events),
            ));
            out.push(Outcome::from(
                "replay_verifies_page_for_page",
                replay_verifies(dir, &x),
            ));
            out.push(Outcome::from(
                "top_growths_match_the_kernel",
                top_growths(dir, &x),
            ));
            if hw_iommu {
                out.push(Outcome::from(
                    "pt_pages_charged_to_cgroup",
                    pt_charged(&x, dir),
                ));
            }
        }
        Err(e) => out.push(Outcome::fail("exercise_results", e)),
    }
}

/// The biggest a part of a rotated recording may be: its limit (`--rotate-size 64K` in
/// tests/vm/exercise.sh) plus one frame (64 KiB) and a header: a part closes at the first
/// event after the limit.
const MAX_PART_BYTES: u64 = (64 << 10) * 2 + (64 << 10);

/// A recording rotated into parts under the map/unmap loop (tests/vm/exercise.sh, `rot/`):
/// several parts, none over the limit, and the parts read as one stream pass the checks a
/// single capture passes, replay verifying across the part boundaries.
pub(super) fn rotated_capture_checks(dir: &Path, out: &mut Vec<Outcome>) {
    let rot = dir.join("rot");
    out.push(Outcome::from("rotation_writes_bounded_parts", parts(&rot)));
    match Exercise::load(&rot) {
        Ok(x) => {
            out.push(Outcome::from("rotated_no_loss", no_loss(&x)));
            out.push(Outcome::from(
                "rotated_domain_allocs_match",
                domain_allocs(&x),
            ));
            out.push(Outcome::from(
                "rotated_map_unmap_bytes_per_domain",
                map_bytes(&x),
            ));
            out.push(Outcome::from(
                "rotated_pt_pages_balance_per_domain",
                pt_balance(&x, true),
            ));
            out.push(Outcome::from(
                "rotated_replay_verifies_across_parts",
                replay_verifies(&rot, &x),
            ));
        }
        Err(e) => out.push(Outcome::fail("rotated_results", e)),
    }
}

fn parts(rot: &Path) -> Result<(), String> {
    ensure(rc(rot, "record.rc")? == 0, || {
        format!(
            "the rotating recorder failed: {}",
            read(rot, "record.log").unwrap_or_default()
        )
    })?;
    let mut sizes = Vec::new();
    let entries = std::fs::read_dir(rot).map_err(|e| format!("{}: {e}", rot.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("rec.") && name.ends_with(".itc") {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            sizes.push((name, len));
        }
    }
    sizes.sort();
    eprintln!("rotation: {} parts: {sizes:?}", sizes.len());
    ensure(sizes.len() >= 3, || {
        format!(
            "the loop rotated into {} part(s), expected at least 3",
            sizes.len()
        )
    })?;
    for (i, (name, len)) in sizes.iter().enumerate() {
        ensure(name == &format!("rec.{i:06}.itc"), || {
            format!("part {i} is named {name}")
        })?;
        ensure(*len <= MAX_PART_BYTES, || {
            format!("{name} holds {len} bytes, over the limit and a frame")
        })?;
    }
    let warnings = read(rot, "inspect.err").unwrap_or_default();
    ensure(!warnings.contains("warning"), || {
        format!("reading the parts as one stream warned: {warnings}")
    })
}

/// The capture's `pt_grow` events against ftrace's hits on the same driver hook
/// (tests/vm/object-truth.sh): as many, and on 7.x (whose hook takes the new level) the same
/// levels. Where the workload had an AMD domain, its maps beyond 2^39 and 2^48 must have
/// grown the table at least twice.
fn top_growths(dir: &Path, x: &Exercise) -> Result<(), String> {
    let trace = read(dir, "object-truth.txt")?;
    let truth: Vec<_> = trace
        .lines()
        .filter_map(super::objects::parse)
        .filter(|h| h.name == "grow")
        .collect();
    let ours: Vec<&Value> = x
        .events
        .iter()
        .filter(|e| s(e, "event") == "pt_grow")
        .collect();
    ensure(ours.len() == truth.len(), || {
        format!(
            "the capture has {} pt_grow events, ftrace saw {} growths",
            ours.len(),
            truth.len()
        )
    })?;
    let mut kernel_levels: Vec<u64> = truth
        .iter()
        .filter_map(|h| h.num("top_level").ok().map(|l| l + 1))
        .collect();
    if !kernel_levels.is_empty() {
        let mut levels: Vec<u64> = ours.iter().map(|e| u(e, "levels")).collect();
        levels.sort_unstable();
        kernel_levels.sort_unstable();
        ensure(levels == kernel_levels, || {
            format!("levels in the capture {levels:?}, in the kernel {kernel_levels:?}")
        })?;
    }
    let amd = x
        .events
        .iter()
        .any(|e| s(e, "event") == "domain_alloc" && s(e, "driver") == "amd" && u(e, "errno") == 0);
    ensure(!amd || truth.len() >= 2, || {
        format!(
            "an AMD domain mapped beyond 2^39 and 2^48 but ftrace saw {} growths",
            truth.len()
        )
    })
}

/// Every step whose answer the kernel fixes got that answer (the workload's own report).
fn as_expected(x: &Exercise) -> Result<(), String> {
    let bad: Vec<String> = x
        .steps()
        .iter()
        .filter(|st| st["as_expected"].as_bool() == Some(false))
        .map(|st| {
            format!(
                "{}: errno {} (expected {})",
                s(st, "name"),
                st["errno"],
                st["expected_errno"]
            )
        })
        .collect();
    ensure(!x.steps().is_empty() && bad.is_empty(), || {
        format!("steps with an unexpected answer: {bad:?}")
    })
}

fn no_loss(x: &Exercise) -> Result<(), String> {
    let lost: Vec<_> = x
        .events
        .iter()
        .filter(|e| s(e, "event") == "lost")
        .collect();
    ensure(lost.is_empty(), || format!("events were lost: {lost:?}"))
}

/// Every IOMMU_HWPT_ALLOC the workload made is in the capture, in order, with its flags,
/// data type and the kernel's errno.
fn hwpt_ioctls(x: &Exercise) -> Result<(), String> {
    let want: Vec<(u64, u64, i64)> = x
        .steps()
        .iter()
        .filter(|st| s(st, "call") == "IOMMU_HWPT_ALLOC")
        .map(|st| {
            (
                u(&st["params"], "flags"),
                u(&st["params"], "data_type"),
                st["errno"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let got: Vec<(u64, u64, i64)> = x
        .ours("hwpt_alloc")
        .map(|e| {
            (
                u(e, "flags"),
                u(e, "data_type"),
                e["errno"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    ensure(!want.is_empty(), || {
        "the workload made no IOMMU_HWPT_ALLOC".into()
    })?;
    ensure(want == got, || {
        format!("IOMMU_HWPT_ALLOC (flags, data_type, errno):\n  workload: {want:?}\n  capture:  {got:?}")
    })
}

fn device_of(driver: &str) -> &str {
    match driver {
        "mock" => "mock",
        _ => "vfio",
    }
}

/// Successful domain allocations per device kind and domain kind equal what the workload
/// created; each has the workload's pid and comm and a latency; each failure at a driver
/// matches a failed ioctl with the same errno.
fn domain_allocs(x: &Exercise) -> Result<(), String> {
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: Vec<i64> = Vec::new();
    for e in x.ours("domain_alloc") {
        ensure(u(e, "latency_ns") > 0, || format!("no latency: {e}"))?;
        ensure(s(e, "comm") == "iommu-trace", || {
            format!("comm is not the workload's: {e}")
        })?;
        let errno = e["errno"].as_i64().unwrap_or(-1);
        if errno == 0 {
            *got.entry(format!("{}_{}", device_of(s(e, "driver")), s(e, "kind")))
                .or_default() += 1;
        } else {
            failures.push(errno);
        }
    }
    let total: u64 = got.values().sum();
    got.insert("total".into(), total);
    let want: BTreeMap<String, u64> = x.report["totals"]["expected_domain_allocations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    ensure(got == want, || {
        format!("successful domain allocations by kind:\n  workload: {want:?}\n  capture:  {got:?}")
    })?;
    let failed_ioctls: Vec<i64> = x
        .steps()
        .iter()
        .filter(|st| s(st, "call") == "IOMMU_HWPT_ALLOC")
        .filter_map(|st| st["errno"].as_i64())
        .filter(|&e| e != 0)
        .collect();
    for f in &failures {
        ensure(failed_ioctls.contains(f), || {
            format!("a driver failed with errno {f}, but no HWPT_ALLOC of the workload did: {failed_ioctls:?}")
        })?;
    }
    Ok(())
}

/// The workload's domains, in allocation order.
fn our_domains(x: &Exercise) -> Vec<String> {
    x.ours("domain_alloc")
        .filter(|e| e["errno"].as_i64() == Some(0))
        .map(|e| s(e, "domain").to_string())
        .collect()
}

/// Map and unmap events carry the domain and add up, per domain, to the bytes the
/// workload's ledger says each hwpt received (matched in creation order).
fn map_bytes(x: &Exercise) -> Result<(), String> {
    let domains = our_domains(x);
    let hwpts = x.report["totals"]["hwpts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure(domains.len() == hwpts.len(), || {
        format!(
            "{} domains captured, {} hwpts in the workload's ledger",
            domains.len(),
            hwpts.len()
        )
    })?;
    // Per domain lifetime (the n-th of our allocations): a freed domain's pointer is reused.
    let mut lifetime: BTreeMap<&str, usize> = BTreeMap::new();
    let mut next = 0usize;
    let mut mapped = vec![0u64; domains.len()];
    let mut unmapped = vec![0u64; domains.len()];
    for e in &x.events {
        let d = s(e, "domain");
        match s(e, "event") {
            "domain_alloc" if u(e, "pid") == x.pid && e["errno"].as_i64() == Some(0) => {
                lifetime.insert(d, next);
                next += 1;
            }
            "map" | "unmap" => {
                if let Some(&i) = lifetime.get(d) {
                    let t = if s(e, "event") == "map" {
                        &mut mapped
                    } else {
                        &mut unmapped
                    };
                    t[i] += u(e, "done");
                }
            }
            "domain_free" => {
                lifetime.remove(d);
            }
            _ => {}
        }
    }
    let mut problems = Vec::new();
    for (i, (d, h)) in domains.iter().zip(&hwpts).enumerate() {
        // The ledger's bytes_mapped includes what the IOAS held when the hwpt was made
        // (bytes_filled_at_alloc), which iopt_table_add_domain maps into it.
        let want_map = u(h, "bytes_mapped");
        let want_unmap = u(h, "bytes_unmapped");
        let (m, un) = (mapped[i], unmapped[i]);
        if (m, un) != (want_map, want_unmap) {
            problems.push(format!(
                "hwpt {} ({}) = domain {d}: mapped {m} unmapped {un}, workload says {want_map} / {want_unmap}",
                u(h, "id"),
                s(h, "label")
            ));
        }
    }
    ensure(mapped.iter().sum::<u64>() > 0, || {
        "no bytes mapped at all".into()
    })?;
    ensure(problems.is_empty(), || problems.join("\n"))
}

/// Page-table pages allocated minus freed, per domain, never goes negative and is zero once
/// the domain is freed; every domain of the workload is freed.
/// `require_pages`: the driver has real page tables (VT-d; the 6.12 mock keeps an xarray).
fn pt_balance(x: &Exercise, require_pages: bool) -> Result<(), String> {
    let domains = our_domains(x);
    let mut live: BTreeMap<&str, i64> = BTreeMap::new();
    let mut freed: Vec<&str> = Vec::new();
    for e in &x.events {
        let d = s(e, "domain");
        match s(e, "event") {
            "pt_alloc" => *live.entry(d).or_default() += u(e, "pages") as i64,
            "pt_free" => {
                let v = live.entry(d).or_default();
                *v -= u(e, "pages") as i64;
                ensure(*v >= 0, || {
                    format!("domain {d} freed more page-table pages than it had, at {e}")
                })?;
            }
            "domain_free" => {
                ensure(live.get(d).copied().unwrap_or(0) == 0, || {
                    format!(
                        "domain {d} freed with {} page-table pages outstanding",
                        live[d]
                    )
                })?;
                freed.push(d);
            }
            _ => {}
        }
    }
    for d in &domains {
        ensure(freed.contains(&d.as_str()), || {
            format!("domain {d} was never freed")
        })?;
    }
    ensure(live.get("0x0").copied().unwrap_or(0) == 0, || {
        format!(
            "{} page-table pages allocated by failed allocations were not freed",
            live["0x0"]
        )
    })?;
    let allocated: u64 = x
        .events
        .iter()
        .filter(|e| s(e, "event") == "pt_alloc")
        .map(|e| u(e, "pages"))
        .sum();
    ensure(allocated > 0 || !require_pages, || {
        "no page-table page was seen at all".into()
    })
}

/// The total of all page-table page changes equals the change of nr_iommu_pages.
fn pt_vmstat(x: &Exercise, dir: &Path) -> Result<(), String> {
    let delta = vmstat(dir, "vmstat-after.txt")? - vmstat(dir, "vmstat-before.txt")?;
    let captured: i64 = x
        .events
        .iter()
        .map(|e| match s(e, "event") {
            "pt_alloc" => u(e, "pages") as i64,
            "pt_free" => -(u(e, "pages") as i64),
            _ => 0,
        })
        .sum();
    ensure(captured == delta, || {
        format!("captured page-table pages net {captured}, /proc/vmstat nr_iommu_pages changed by {delta}")
    })
}

/// Pages charged to a memory cgroup are charged to the workload's cgroup, and the charged
/// pages the capture holds at each point the workload sampled its cgroup equal the change of
/// that cgroup's `sec_pagetables` (memory.stat) since the start.
fn pt_charged(x: &Exercise, dir: &Path) -> Result<(), String> {
    let cg: u64 = read(dir, "cgroup-id.txt")?
        .trim()
        .parse()
        .map_err(|e| format!("cgroup-id.txt: {e}"))?;
    let mut charged = 0;
    for e in x.ours("pt_alloc") {
        if e["charged"].as_bool() == Some(true) {
            charged += u(e, "pages");
            ensure(u(e, "memcg_id") == cg, || {
                format!(
                    "page charged to memcg {} instead of the workload's cgroup {cg}: {e}",
                    u(e, "memcg_id")
                )
            })?;
            ensure(u(e, "cgroup_id") == cg, || {
                format!("event not from the workload's cgroup: {e}")
            })?;
        }
    }
    ensure(charged > 0, || {
        "no page-table page was charged to the workload's cgroup".into()
    })?;
    let samples = x.report["cgroup_samples"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sample = |label: &str| -> Result<(u64, i64), String> {
        let smp = samples
            .iter()
            .find(|smp| s(smp, "label") == label)
            .ok_or_else(|| format!("the workload took no {label:?} cgroup sample: {samples:?}"))?;
        let bytes = smp["sec_pagetables"]
            .as_i64()
            .ok_or_else(|| format!("cgroup sample {label:?} has no value: {smp}"))?;
        Ok((u(smp, "ts_ns"), bytes))
    };
    let (_, start) = sample("start")?;
    let mut problems = Vec::new();
    for label in ["peak", "end"] {
        let (ts, bytes) = sample(label)?;
        let captured: i64 = x
            .events
            .iter()
            .filter(|e| {
                u(e, "ts_ns") < ts && e["charged"].as_bool() == Some(true) && u(e, "memcg_id") == cg
            })
            .map(|e| match s(e, "event") {
                "pt_alloc" => u(e, "pages") as i64,
                "pt_free" => -(u(e, "pages") as i64),
                _ => 0,
            })
            .sum();
        let kernel = (bytes - start) / 4096;
        if captured != kernel {
            problems.push(format!(
                "at {label}: capture holds {captured} charged pages, sec_pagetables grew by {kernel} pages"
            ));
        }
        if label == "peak" && captured == 0 {
            problems.push("no charged page-table page was live at the peak".into());
        }
    }
    ensure(problems.is_empty(), || problems.join("\n"))
}
