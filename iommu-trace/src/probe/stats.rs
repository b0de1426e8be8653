//! The kernel's own cost accounting for our eBPF programs (BPF_ENABLE_STATS): run time and
//! run count per program, for the exporter's self-metrics.

use crate::session::{Attachment, ProgramRunStats, Session};

/// The kernel's run-time statistics for the session's programs, while `_fd` keeps
/// BPF_ENABLE_STATS on.
pub struct RunStats {
    _fd: std::os::fd::OwnedFd,
    /// Program names as the kernel stores them (at most 15 bytes).
    names: Vec<String>,
}

impl RunStats {
    pub fn enable(session: &Session) -> Option<RunStats> {
        let fd = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!(
                    "BPF_ENABLE_STATS failed ({e}): eBPF run-time metrics are off (turning the \
                     statistics on and listing programs need CAP_SYS_ADMIN)"
                );
                return None;
            }
        };
        let mut names: Vec<String> = Vec::new();
        let mut add = |a: &Attachment| {
            for n in std::iter::once(&a.entry_program).chain(a.exit_program.iter()) {
                let short: String = n.chars().take(15).collect();
                if !names.contains(&short) {
                    names.push(short);
                }
            }
        };
        for a in session.plan.attachments() {
            add(a);
            if let Some(fb) = a.fallback.as_deref() {
                add(fb);
            }
        }
        Some(RunStats { _fd: fd, names })
    }

    pub fn read(&self) -> Vec<ProgramRunStats> {
        let mut out: Vec<ProgramRunStats> = Vec::new();
        for info in aya::programs::loaded_programs().flatten() {
            let Some(name) = info.name_as_str() else {
                continue;
            };
            if !self.names.iter().any(|n| n == name) {
                continue;
            }
            let (t, c) = (info.run_time().as_nanos() as u64, info.run_count());
            match out.iter_mut().find(|s| s.program == name) {
                Some(s) => {
                    s.run_time_ns += t;
                    s.run_count += c;
                }
                None => out.push(ProgramRunStats {
                    program: name.to_string(),
                    run_time_ns: t,
                    run_count: c,
                }),
            }
        }
        out
    }
}
