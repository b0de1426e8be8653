//! The iommufd object events against ground truth counted by ftrace kprobe events on the same
//! kernel functions (tests/vm/object-truth.sh): every object the kernel published, aborted
//! or destroyed is in the capture with the same pointer, id and type, nothing else is, and
//! every object published during the workload is destroyed by its end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::{ensure, read, s, u};

/// One ftrace kprobe event: its name and its `key=value` arguments.
pub(super) struct Hit {
    /// The thread it ran on.
    tid: u64,
    pub(super) name: String,
    args: BTreeMap<String, String>,
}

impl Hit {
    pub(super) fn num(&self, key: &str) -> Result<u64, String> {
        let v = self
            .args
            .get(key)
            .ok_or_else(|| format!("{}: no {key}", self.name))?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        }
        .map_err(|e| format!("{}: {key}={v}: {e}", self.name))
    }
}

/// `  task-1 [000] ..... 1.5: finalize: (iommufd_object_finalize+0x4/0x60) obj=0x.. id=1 type=4`
pub(super) fn parse(line: &str) -> Option<Hit> {
    let task = line[..line.find(" [")?].trim();
    let tid = task.rsplit_once('-')?.1.parse().ok()?;
    let open = line.find(": (")?;
    let name = line[..open].rsplit(' ').next()?.to_string();
    let close = open + line[open..].find(')')?;
    let args = line[close + 1..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Hit { tid, name, args })
}

/// The object type a destroy op's event is for: `destroy_ioas_destroy` -> `ioas`,
/// `destroy_access_destroy_object` -> `access`.
fn destroyed_type(event: &str) -> Option<&str> {
    let op = event.strip_prefix("destroy_")?;
    op.strip_suffix("_destroy_object")
        .or_else(|| op.strip_suffix("_destroy"))
}

/// How many times each (object pointer, id, ...) was seen: pointers and ids are reused.
type Counts<K> = BTreeMap<K, u32>;
/// A destruction: object pointer, id, type, how.
type Key = (u64, u64, String, &'static str);
/// An abort: object pointer, id, errno (`None` outside an iommufd ioctl).
type AbortKey = (u64, u64, Option<i64>);

fn count<K: Ord>(c: &mut Counts<K>, k: K) {
    *c.entry(k).or_default() += 1;
}

fn total<K>(c: &Counts<K>) -> u64 {
    c.values().map(|&n| n as u64).sum()
}

#[derive(Default)]
struct Lifetimes {
    allocs: u64,
    failed_allocs: u64,
    published: Counts<(u64, u64)>,
    aborted: Counts<AbortKey>,
    destroyed: Counts<Key>,
    /// ftrace's type number of each published object -> the type its destroy op names.
    type_numbers: BTreeMap<(u64, u64), u64>,
}

/// A thread's context, from the ioctl, release and unbind probes.
#[derive(Default)]
struct Thread {
    /// The iommufd ioctl it is in, and the aborts made inside it (their errno is its result).
    ioctl: Option<(u64, Vec<(u64, u64)>)>,
    /// Release and unbind, outermost first.
    contexts: Vec<&'static str>,
    /// The object `iommufd_object_abort_and_destroy` is aborting, until an out-of-line
    /// `iommufd_object_abort` or its return aborts it (docs/kernel-facts.md §6.3).
    abort_and_destroy: Option<(u64, u64)>,
}

/// `IOMMU_DESTROY` (include/uapi/linux/iommufd.h).
const IOMMU_DESTROY: u64 = 0x3b80;

/// What the kernel did, from the ftrace events in order: a destroy op run for an object
/// still pending (allocated, neither published nor aborted) is part of an abort; a
/// destruction's path is the outermost release or unbind the thread is in, else
/// IOMMU_DESTROY's ioctl, else a put; an abort's errno is its ioctl's result.
fn kernel_truth(trace: &str) -> Result<Lifetimes, String> {
    let mut t = Lifetimes::default();
    let mut pending = BTreeSet::new();
    let mut threads: BTreeMap<u64, Thread> = BTreeMap::new();
    for hit in trace.lines().filter_map(parse) {
        let th = threads.entry(hit.tid).or_default();
        match hit.name.as_str() {
            "alloc" => {
                let obj = hit.num("obj")?;
                t.allocs += 1;
                if obj >= 0xffff_ffff_ffff_f001 {
                    t.failed_allocs += 1;
                } else {
                    pending.insert(obj);
                }
            }
            "finalize" => {
                let key = (hit.num("obj")?, hit.num("id")?);
                pending.remove(&key.0);
                count(&mut t.published, key);
                t.type_numbers.insert(key, hit.num("type")?);
            }
            "abort" => {
                let key = (hit.num("obj")?, hit.num("id")?);
                if th.abort_and_destroy.is_some_and(|(obj, _)| obj == key.0) {
                    th.abort_and_destroy = None;
                }
                abort(&mut t, &mut pending, th, key);
            }
            "abort_destroy" => th.abort_and_destroy = Some((hit.num("obj")?, hit.num("id")?)),
            // Still aborting at the return: the compiler inlined `iommufd_object_abort`.
            "abort_destroy_ret" => {
                if let Some(key) = th.abort_and_destroy.take() {
                    abort(&mut t, &mut pending, th, key);
                }
            }
            "ioctl" => th.ioctl = Some((hit.num("cmd")?, Vec::new())),
            "ioctl_ret" => {
                let ret: i64 = hit
                    .args
                    .get("ret")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(0);
                if let Some((_, aborts)) = th.ioctl.take() {
                    for (obj, id) in aborts {
                        count(&mut t.aborted, (obj, id, Some((-ret).max(0))));
                    }
                }
            }
            "fops_release" => th.contexts.push("close"),
            "device_unbind" => th.contexts.push("unbind"),
            "fops_release_ret" | "device_unbind_ret" => {
                th.contexts.pop();
            }
            // The page-table growths in the same trace are `capture::top_growths`'.
            "grow" => {}
            name => {
                let ty = destroyed_type(name).ok_or_else(|| format!("unknown event {name}"))?;
                let obj = hit.num("obj")?;
                if !pending.contains(&obj) {
                    let how = match (th.contexts.first(), &th.ioctl) {
                        (Some(c), _) => c,
                        (None, Some((IOMMU_DESTROY, _))) => "destroy",
                        _ => "put",
                    };
                    count(&mut t.destroyed, (obj, hit.num("id")?, ty.to_string(), how));
                }
            }
        }
    }
    Ok(t)
}

/// An object's id released unpublished: its errno is the result of the ioctl it is in.
fn abort(t: &mut Lifetimes, pending: &mut BTreeSet<u64>, th: &mut Thread, key: (u64, u64)) {
    pending.remove(&key.0);
    match &mut th.ioctl {
        Some((_, aborts)) => aborts.push(key),
        None => count(&mut t.aborted, (key.0, key.1, None)),
    }
}

/// The keys seen a different number of times by ftrace and in the capture.
fn diff<K: Ord + std::fmt::Debug>(
    what: &str,
    want: &Counts<K>,
    got: &Counts<K>,
) -> Result<(), String> {
    let keys: BTreeSet<_> = want.keys().chain(got.keys()).collect();
    let differ: Vec<_> = keys
        .into_iter()
        .filter(|k| want.get(k) != got.get(k))
        .map(|k| {
            (
                k,
                want.get(k).copied().unwrap_or(0),
                got.get(k).copied().unwrap_or(0),
            )
        })
        .collect();
    ensure(differ.is_empty(), || {
        format!(
            "{what}: ftrace saw {}, the capture has {}; (key, ftrace, capture) that differ: \
             {differ:x?}",
            total(want),
            total(got)
        )
    })
}

fn ptr(v: &Value, key: &str) -> u64 {
    let hex = s(v, key);
    u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap_or(0)
}

/// The capture's object events agree with the kernel's own functions, one for one.
pub(super) fn objects_match_the_kernel(dir: &Path, events: &[Value]) -> Result<(), String> {
    let trace = read(dir, "object-truth.txt").map_err(|e| {
        let why = read(dir, "object-truth.err").unwrap_or_default();
        format!("no ftrace ground truth ({e}) {why}")
    })?;
    let overrun = read(dir, "object-truth-overrun.txt").unwrap_or_default();
    ensure(
        overrun
            .lines()
            .all(|l| l.split_whitespace().last() == Some("0")),
        || format!("the ftrace buffer overran, the ground truth is incomplete:\n{overrun}"),
    )?;
    let truth = kernel_truth(&trace)?;
    ensure(!truth.published.is_empty(), || {
        format!("ftrace saw no object published: the workload made none?\n{trace}")
    })?;

    let mut published = Counts::new();
    let mut aborted = Counts::new();
    let mut destroyed = Counts::new();
    let mut failed = 0u64;
    let mut names = BTreeMap::new();
    for e in events {
        let key = (ptr(e, "obj"), u(e, "id"));
        match s(e, "event") {
            "object_alloc" if u(e, "errno") != 0 => failed += 1,
            "object_alloc" => {
                count(&mut published, key);
                names.insert(key, s(e, "object").to_string());
            }
            "object_abort" => {
                let errno = e.get("errno").and_then(Value::as_i64);
                count(&mut aborted, (key.0, key.1, errno))
            }
            "object_destroy" => {
                let how = match s(e, "how") {
                    "destroy" => "destroy",
                    "unbind" => "unbind",
                    "close" => "close",
                    "put" => "put",
                    _ => "?",
                };
                count(
                    &mut destroyed,
                    (key.0, key.1, s(e, "object").to_string(), how),
                )
            }
            _ => {}
        }
    }
    diff("objects published", &truth.published, &published)?;
    diff("objects aborted", &truth.aborted, &aborted)?;
    diff(
        "objects destroyed (obj, id, type, how)",
        &truth.destroyed,
        &destroyed,
    )?;
    ensure(failed == truth.failed_allocs, || {
        format!(
            "failed allocations: ftrace {}, capture {failed}",
            truth.failed_allocs
        )
    })?;
    ensure(
        truth.allocs == total(&truth.published) + total(&truth.aborted) + failed,
        || {
            format!(
                "_iommufd_object_alloc ran {} times, but {} published + {} aborted + {failed} \
                 failed",
                truth.allocs,
                total(&truth.published),
                total(&truth.aborted)
            )
        },
    )?;
    // The capture's type names: one per kernel type number. (That each destroyed object's
    // name is its destroy op's type is in the destroyed multiset above.)
    let mut by_number: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for (key, n) in &truth.type_numbers {
        by_number.entry(*n).or_default().insert(names[key].as_str());
    }
    ensure(by_number.values().all(|v| v.len() == 1), || {
        format!("one kernel type number, several names in the capture: {by_number:?}")
    })?;
    // Everything published during the workload is gone by its end (its fds closed).
    let alive: Vec<_> = published
        .iter()
        .filter(|((obj, id), n)| {
            let gone: u32 = destroyed
                .iter()
                .filter(|((o, i, _, _), _)| (o, i) == (obj, id))
                .map(|(_, d)| *d)
                .sum();
            gone < **n
        })
        .map(|(k, _)| (k, names[k].as_str()))
        .collect();
    ensure(alive.is_empty(), || {
        format!("objects never destroyed although the workload exited: {alive:x?}")
    })
}

/// The workload's vIOMMU objects and its close with objects alive, in the capture: on a
/// kernel with the vIOMMU (the workload says so; 6.12 answers ENOTTY) every vIOMMU object
/// type is created and destroyed, each nested domain allocated through a vIOMMU names a
/// published vIOMMU, and the close of the second iommufd destroys its objects as `close`.
pub(super) fn viommu_and_close(report: &Value, events: &[Value]) -> Result<(), String> {
    if report["mock"]["available"].as_bool() != Some(true) {
        return Ok(());
    }
    let closed: Vec<&str> = events
        .iter()
        .filter(|e| s(e, "event") == "object_destroy" && s(e, "how") == "close")
        .map(|e| s(e, "object"))
        .collect();
    for t in ["ioas", "device", "hwpt_paging", "selftest"] {
        ensure(closed.contains(&t), || {
            format!("no {t} destroyed by the close of the second iommufd: {closed:?}")
        })?;
    }
    let viommu = &report["viommu"];
    match viommu["available"].as_bool() {
        Some(true) => {}
        _ if viommu["errno_name"].as_str() == Some("ENOTTY") => return Ok(()),
        _ => return Err(format!("the vIOMMU flow did not run: {viommu}")),
    }
    let created = |t: &str| {
        events
            .iter()
            .filter(|e| {
                s(e, "event") == "object_alloc" && s(e, "object") == t && u(e, "errno") == 0
            })
            .count()
    };
    for t in [
        "viommu", "vdevice", "veventq", "hw_queue", "fault", "access",
    ] {
        ensure(created(t) > 0, || format!("no {t} object in the capture"))?;
    }
    ensure(
        closed.contains(&"viommu") && closed.contains(&"vdevice"),
        || format!("the close did not destroy the second vIOMMU and vDEVICE: {closed:?}"),
    )?;
    let viommu_ids: BTreeSet<u64> = events
        .iter()
        .filter(|e| s(e, "event") == "object_alloc" && s(e, "object") == "viommu")
        .map(|e| u(e, "id"))
        .collect();
    let through: Vec<&Value> = events
        .iter()
        .filter(|e| s(e, "event") == "domain_alloc" && s(e, "op") == "viommu_nested")
        .collect();
    let ok = through.iter().filter(|e| u(e, "errno") == 0).count();
    // Two in the flow (one with a FAULT queue) and one in the closed context.
    ensure(ok >= 3, || {
        format!("{ok} nested domains allocated through a vIOMMU in the capture, 3 expected")
    })?;
    for e in &through {
        ensure(
            viommu_ids.contains(&u(e, "viommu_id"))
                && s(e, "driver") == "mock"
                && e["data"]["type"] == "selftest",
            || format!("a nested allocation through a vIOMMU without its vIOMMU or data: {e}"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\
 iommu-trace-90 [000] ..... 5.1: alloc: (iommufd_ioas_alloc+0x2a/0x90 <- _iommufd_object_alloc) obj=0xffff888100001000
 iommu-trace-90 [000] ..... 5.2: finalize: (iommufd_object_finalize+0x4/0x60) obj=0xffff888100001000 id=1 type=4
 iommu-trace-90 [001] ..... 5.25: ioctl: (iommufd_fops_ioctl+0x0/0x60) cmd=0x3b89
 iommu-trace-90 [001] ..... 5.3: alloc: (iommufd_hwpt_alloc+0x2a/0x90 <- _iommufd_object_alloc) obj=0xffff888100002000
 iommu-trace-90 [001] ..... 5.4: destroy_hwpt_paging_destroy: (iommufd_hwpt_paging_destroy+0x4/0x60) obj=0xffff888100002000 id=2 type=2
 iommu-trace-90 [001] ..... 5.5: abort: (iommufd_object_abort+0x4/0x60) obj=0xffff888100002000 id=2 type=2
 iommu-trace-90 [001] ..... 5.55: ioctl_ret: (__x64_sys_ioctl+0x9/0x60 <- iommufd_fops_ioctl) ret=-95
 iommu-trace-90 [000] ..... 5.6: alloc: (iommufd_ioas_alloc+0x2a/0x90 <- _iommufd_object_alloc) obj=0xfffffffffffffff4
 iommu-trace-90 [000] ..... 5.65: fops_release: (iommufd_fops_release+0x0/0x60)
 iommu-trace-90 [000] ..... 5.66: device_unbind: (iommufd_device_unbind+0x0/0x60)
 iommu-trace-90 [000] ..... 5.7: destroy_ioas_destroy: (iommufd_ioas_destroy+0x4/0x60) obj=0xffff888100001000 id=1 type=4
 iommu-trace-90 [000] ..... 5.71: device_unbind_ret: (iommufd_selftest_destroy+0x9/0x60 <- iommufd_device_unbind)
 iommu-trace-90 [000] ..... 5.72: fops_release_ret: (__fput+0x9/0x60 <- iommufd_fops_release)
";

    fn capture(destroy_how: &str) -> Vec<Value> {
        capture_with(destroy_how, "close", 95)
    }

    fn capture_with(object: &str, how: &str, errno: i32) -> Vec<Value> {
        [
            r#"{"event":"object_alloc","object":"ioas","id":1,"obj":"0xffff888100001000","errno":0}"#,
            &format!(
                r#"{{"event":"object_abort","object":"hwpt_paging","id":2,"obj":"0xffff888100002000","errno":{errno}}}"#
            ),
            r#"{"event":"object_alloc","object":"ioas","id":0,"obj":"0x0","errno":12}"#,
            &format!(
                r#"{{"event":"object_destroy","object":"{object}","id":1,"obj":"0xffff888100001000","how":"{how}"}}"#
            ),
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    }

    fn check(events: &[Value]) -> Result<(), String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("object-truth-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("object-truth.txt"), TRACE).unwrap();
        std::fs::write(dir.join("object-truth-overrun.txt"), "overrun: 0\n").unwrap();
        let r = objects_match_the_kernel(&dir, events);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    #[test]
    fn the_destroy_half_of_an_abort_is_not_a_destroy() {
        let t = kernel_truth(TRACE).unwrap();
        assert_eq!(t.allocs, 3);
        assert_eq!(t.failed_allocs, 1);
        assert_eq!(total(&t.destroyed), 1);
        assert_eq!(check(&capture("ioas")), Ok(()));
    }

    // `iommufd_object_abort_and_destroy` around the abort: with the abort out of line it
    // is one abort, not two; inlined (no `abort` line), its return is the abort.
    #[test]
    fn an_abort_inlined_into_abort_and_destroy_is_counted_once() {
        let entry = " iommu-trace-90 [001] ..... 5.35: abort_destroy: (iommufd_object_abort_and_destroy+0x4/0x60) obj=0xffff888100002000 id=2\n";
        let ret = " iommu-trace-90 [001] ..... 5.52: abort_destroy_ret: (iommufd_hwpt_alloc+0x9/0x60 <- iommufd_object_abort_and_destroy)\n";
        let abort_line = TRACE
            .lines()
            .find(|l| l.contains(" abort: "))
            .expect("an abort");
        let mut out_of_line = String::new();
        let mut inlined = String::new();
        for line in TRACE.lines() {
            if line.contains(" destroy_hwpt_paging_destroy: ") {
                out_of_line.push_str(entry);
                inlined.push_str(entry);
            }
            out_of_line.push_str(line);
            out_of_line.push('\n');
            if line != abort_line {
                inlined.push_str(line);
                inlined.push('\n');
            }
            if line == abort_line {
                out_of_line.push_str(ret);
                inlined.push_str(ret);
            }
        }
        for trace in [&out_of_line, &inlined] {
            let t = kernel_truth(trace).unwrap();
            assert_eq!(total(&t.aborted), 1, "{trace}");
            assert_eq!(
                t.aborted.keys().next(),
                Some(&(0xffff888100002000, 2, Some(95)))
            );
            assert_eq!(total(&t.destroyed), 1);
        }
    }

    #[test]
    fn a_missing_or_misnamed_object_fails() {
        let mut events = capture("ioas");
        events.remove(1);
        assert!(check(&events).unwrap_err().contains("objects aborted"));
        let err = check(&capture("hwpt_paging")).unwrap_err();
        assert!(err.contains("objects destroyed"), "{err}");
        let mut events = capture("ioas");
        events.pop();
        assert!(check(&events).unwrap_err().contains("objects destroyed"));
        // The path of a destruction and an abort's errno are checked too: the outermost
        // context is the close, and the ioctl returned -EOPNOTSUPP.
        let err = check(&capture_with("ioas", "unbind", 95)).unwrap_err();
        assert!(err.contains("objects destroyed"), "{err}");
        let err = check(&capture_with("ioas", "close", 22)).unwrap_err();
        assert!(err.contains("objects aborted"), "{err}");
    }
}
