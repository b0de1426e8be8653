//! The iommufd object events against ground truth counted by ftrace kprobe events on the same
//! kernel functions (tests/vm/object-truth.sh): every object the kernel published, aborted
//! or destroyed is in the capture with the same pointer, id and type, nothing else is, and
//! every object published during the workload is destroyed by its end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::{ensure, read, s, u};

/// One ftrace kprobe event: its name and its `key=value` arguments.
struct Hit {
    name: String,
    args: BTreeMap<String, String>,
}

impl Hit {
    fn num(&self, key: &str) -> Result<u64, String> {
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

/// `  task-1 [000] ..... 1.5: finalize: (iommufd_object_finalize+0x4/0x80) obj=0x.. id=1 type=4`
fn parse(line: &str) -> Option<Hit> {
    let open = line.find(": (")?;
    let name = line[..open].rsplit(' ').next()?.to_string();
    let close = open + line[open..].find(')')?;
    let args = line[close + 1..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Hit { name, args })
}

/// The object type a destroy op's event is for: `destroy_ioas_destroy` -> `ioas`,
/// `destroy_access_destroy_object` -> `access`.
fn destroyed_type(event: &str) -> Option<&str> {
    let op = event.strip_prefix("destroy_")?;
    op.strip_suffix("_destroy_object")
        .or_else(|| op.strip_suffix("_destroy"))
}

/// How many times each (object pointer, id[, type]) was seen: pointers and ids are reused.
type Counts<K> = BTreeMap<K, u32>;
type Key = (u64, u64, String);

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
    aborted: Counts<(u64, u64)>,
    destroyed: Counts<Key>,
    /// ftrace's type number of each published object -> the type its destroy op names.
    type_numbers: BTreeMap<(u64, u64), u64>,
}

/// What the kernel did, from the ftrace events in order: a destroy op run for an object
/// still pending (allocated, neither published nor aborted) is part of an abort.
fn kernel_truth(trace: &str) -> Result<Lifetimes, String> {
    let mut t = Lifetimes::default();
    let mut pending = BTreeSet::new();
    for hit in trace.lines().filter_map(parse) {
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
            "finalize" | "abort" => {
                let key = (hit.num("obj")?, hit.num("id")?);
                pending.remove(&key.0);
                if hit.name == "finalize" {
                    count(&mut t.published, key);
                    t.type_numbers.insert(key, hit.num("type")?);
                } else {
                    count(&mut t.aborted, key);
                }
            }
            name => {
                let ty = destroyed_type(name).ok_or_else(|| format!("unknown event {name}"))?;
                let obj = hit.num("obj")?;
                if !pending.contains(&obj) {
                    count(&mut t.destroyed, (obj, hit.num("id")?, ty.to_string()));
                }
            }
        }
    }
    Ok(t)
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
            "object_abort" => count(&mut aborted, key),
            "object_destroy" => count(&mut destroyed, (key.0, key.1, s(e, "object").to_string())),
            _ => {}
        }
    }
    let diff = |what: &str, want: &Counts<(u64, u64)>, got: &Counts<(u64, u64)>| {
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
                "{what}: ftrace saw {}, the capture has {}; ((obj, id), ftrace, capture) that \
                 differ: {differ:x?}",
                total(want),
                total(got)
            )
        })
    };
    diff("objects published", &truth.published, &published)?;
    diff("objects aborted", &truth.aborted, &aborted)?;
    ensure(truth.destroyed == destroyed, || {
        format!(
            "objects destroyed: ftrace saw {:x?}, the capture has {destroyed:x?}",
            truth.destroyed
        )
    })?;
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
    // The capture's type names: one per kernel type number, and the name of the destroy op
    // that ran for the object.
    let mut by_number: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for (key, n) in &truth.type_numbers {
        by_number.entry(*n).or_default().insert(names[key].as_str());
    }
    ensure(by_number.values().all(|v| v.len() == 1), || {
        format!("one kernel type number, several names in the capture: {by_number:?}")
    })?;
    for (obj, id, ty) in truth.destroyed.keys() {
        if let Some(name) = names.get(&(*obj, *id)) {
            ensure(name == ty, || {
                format!(
                    "object {id} ({obj:#x}) is a {name} in the capture, destroyed by the {ty} op"
                )
            })?;
        }
    }
    // Everything published during the workload is gone by its end (its fds closed).
    let alive: Vec<_> = published
        .iter()
        .filter(|((obj, id), n)| {
            let gone: u32 = destroyed
                .iter()
                .filter(|((o, i, _), _)| (o, i) == (obj, id))
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

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "\
 iommu-trace-90 [000] ..... 5.1: alloc: (iommufd_ioas_alloc+0x2a/0x90 <- _iommufd_object_alloc) obj=0xffff888100001000
 iommu-trace-90 [000] ..... 5.2: finalize: (iommufd_object_finalize+0x4/0x60) obj=0xffff888100001000 id=1 type=4
 iommu-trace-90 [001] ..... 5.3: alloc: (iommufd_hwpt_alloc+0x2a/0x90 <- _iommufd_object_alloc) obj=0xffff888100002000
 iommu-trace-90 [001] ..... 5.4: destroy_hwpt_paging_destroy: (iommufd_hwpt_paging_destroy+0x4/0x60) obj=0xffff888100002000 id=2 type=2
 iommu-trace-90 [001] ..... 5.5: abort: (iommufd_object_abort+0x4/0x60) obj=0xffff888100002000 id=2 type=2
 iommu-trace-90 [000] ..... 5.6: alloc: (iommufd_ioas_alloc+0x2a/0x90 <- _iommufd_object_alloc) obj=0xfffffffffffffff4
 iommu-trace-90 [000] ..... 5.7: destroy_ioas_destroy: (iommufd_ioas_destroy+0x4/0x60) obj=0xffff888100001000 id=1 type=4
";

    fn capture(destroy_how: &str) -> Vec<Value> {
        [
            r#"{"event":"object_alloc","object":"ioas","id":1,"obj":"0xffff888100001000","errno":0}"#,
            r#"{"event":"object_abort","object":"hwpt_paging","id":2,"obj":"0xffff888100002000"}"#,
            r#"{"event":"object_alloc","object":"ioas","id":0,"obj":"0x0","errno":12}"#,
            &format!(
                r#"{{"event":"object_destroy","object":"{destroy_how}","id":1,"obj":"0xffff888100001000","how":"close"}}"#
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
    }
}
