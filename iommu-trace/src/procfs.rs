//! What the kernel itself reports of a process's pinned and locked memory: `VmPin` and
//! `VmLck` of `/proc/PID/status` (`mm->pinned_vm` and `mm->locked_vm`, in kB:
//! fs/proc/task_mmu.c `task_mem`; docs/kernel-facts.md §8.2). The ledger is reconciled
//! with it while a traced process is alive; the exercise samples its own.

/// `VmPin` and `VmLck` of one process, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryHeld {
    pub pinned_bytes: u64,
    pub locked_bytes: u64,
}

/// `VmPin` and `VmLck` of the text of a `/proc/PID/status`; `None` if either is missing
/// (a kernel thread, a process that exited while it was read).
pub fn parse_status(status: &str) -> Option<MemoryHeld> {
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|v| v.saturating_mul(1024))
    };
    Some(MemoryHeld {
        pinned_bytes: kb("VmPin:")?,
        locked_bytes: kb("VmLck:")?,
    })
}

/// Reads them for `pid` (`"self"` for this process); `None` when the process is gone or
/// has no mm.
pub fn memory_held(pid: &str) -> Option<MemoryHeld> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Reads them for each traced process `(pid, comm)`; `None` for one that is gone, or none of
/// whose threads has the traced name (its pid reused, or this /proc in another pid
/// namespace than the events'), or whose name the events did not give (the creator never
/// called in itself: it cannot be told from another process with its pid). The events name
/// the calling thread, not the process: the leader is tried first, then every thread.
/// Not caught: a process of the same name reusing the pid, or an exec that kept it.
pub fn memory_held_of(procs: &[(u32, String)]) -> Vec<(u32, Option<MemoryHeld>)> {
    procs
        .iter()
        .map(|(pid, comm)| {
            let held = (!comm.is_empty() && has_thread_named(*pid, comm))
                .then(|| memory_held(&pid.to_string()))
                .flatten();
            (*pid, held)
        })
        .collect()
}

fn has_thread_named(pid: u32, comm: &str) -> bool {
    let named = |path: std::path::PathBuf| {
        std::fs::read(path).is_ok_and(|c| String::from_utf8_lossy(&c).trim_end() == comm)
    };
    if named(format!("/proc/{pid}/comm").into()) {
        return true;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| named(t.path().join("comm")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_bytes() {
        let status = "Name:\tqemu\nVmLck:\t       8 kB\nVmPin:\t   65536 kB\nVmHWM:\t 1 kB\n";
        assert_eq!(
            parse_status(status),
            Some(MemoryHeld {
                pinned_bytes: 64 << 20,
                locked_bytes: 8192
            })
        );
        // A kernel thread has no Vm lines; a damaged line is not a zero.
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
        assert_eq!(parse_status("VmLck:\t8 kB\nVmPin:\tx kB\n"), None);
    }

    #[test]
    fn this_process_is_read_by_pid_and_name() {
        assert!(memory_held("self").is_some());
        let pid = std::process::id();
        let name = std::fs::read_to_string("/proc/self/comm").unwrap();
        let read = memory_held_of(&[
            (pid, name.trim().to_string()),
            (pid, String::new()),
            (pid, "not-this-one".into()),
        ]);
        assert!(read[0].1.is_some(), "{read:?}");
        // No name to check, or another name: not this process, as far as we can tell.
        assert_eq!((read[1], read[2]), ((pid, None), (pid, None)));
    }
}
