//! Loading the eBPF object and attaching the plan's programs.

use std::collections::BTreeSet;

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{FEntry, FExit, KProbe},
    Btf, Ebpf, EbpfLoader,
};
use iommu_trace_common::{lost, Config};
use thiserror::Error;

use super::config::ebpf_config;
use crate::session::{Attachment, Fallback, Plan, ProgramKind, Refusal, Session};

/// The eBPF object built by build.rs (empty when built with IOMMU_TRACE_SKIP_EBPF).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/iommu-trace"));

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(
        "iommu-trace lacks {} to trace ({}). Run it as root, or give it exactly what it \
         needs: `sudo setcap cap_bpf,cap_perfmon,cap_syslog+ep $(command -v iommu-trace)`, or \
         in a systemd unit `AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_SYSLOG`. \
         `iommu-trace probes` works without privileges and shows what would be attached; \
         `inspect` and `replay` work on capture files as any user.",
        .0.iter().map(|m| m.name).collect::<Vec<_>>().join(" and "),
        .0.iter().map(|m| format!("{}: {}", m.name, m.for_what)).collect::<Vec<_>>().join("; ")
    )]
    MissingCapabilities(Vec<super::privileges::Missing>),
    #[error("tracing is not possible on this kernel:\n  {}\nRun `iommu-trace probes` for the full report.", .0.join("\n  "))]
    Blocked(Vec<String>),
    #[error(
        "this iommu-trace binary was built without its eBPF programs (IOMMU_TRACE_SKIP_EBPF was \
         set). Rebuild without it, after `cargo xtask setup` installed bpf-linker."
    )]
    NoEbpfObject,
    #[error(
        "--ringbuf-size {0} is invalid: it must be a power of two and at least 4096 (one page)"
    )]
    BadRingSize(u32),
    #[error("loading the eBPF programs failed: {0}. The kernel verifier log, if any, is above; run with RUST_LOG=debug for more.")]
    Load(String),
    #[error("no probe could be attached:\n  {}", .0.iter().map(|r| format!("{}: {r}", r.symbol)).collect::<Vec<_>>().join("\n  "))]
    NothingAttached(Vec<Refusal>),
}

pub struct TracerOptions {
    /// Ring buffer size in bytes (power of two, ≥ page size).
    pub ringbuf_bytes: u32,
    /// Trace only this process (thread group) when non-zero.
    pub filter_pid: u32,
    /// Attach everything, but every program returns at once (the benchmark's floor).
    pub floor: bool,
}

impl Default for TracerOptions {
    fn default() -> Self {
        TracerOptions {
            ringbuf_bytes: 1 << 22,
            filter_pid: 0,
            floor: false,
        }
    }
}

/// Loaded and attached programs. Detached when dropped.
pub struct Tracer {
    ebpf: Ebpf,
    /// The plan and the attachments the kernel refused at attach time (some of which fell
    /// back to kprobes).
    pub session: Session,
}

impl Tracer {
    pub fn start(plan: &Plan, opts: &TracerOptions) -> Result<Tracer, LoadError> {
        // What the kernel lacks first: no privilege fixes a kernel without iommufd.
        if !plan.blockers.is_empty() {
            return Err(LoadError::Blocked(plan.blockers.clone()));
        }
        let missing = super::privileges::missing();
        if !missing.is_empty() {
            return Err(LoadError::MissingCapabilities(missing));
        }
        if EBPF_OBJECT.is_empty() {
            return Err(LoadError::NoEbpfObject);
        }
        if !opts.ringbuf_bytes.is_power_of_two() || opts.ringbuf_bytes < 4096 {
            return Err(LoadError::BadRingSize(opts.ringbuf_bytes));
        }
        let mut config: Config = ebpf_config(plan, opts.filter_pid);
        // Batch wakeups: the reader is woken when a quarter of the ring is used, and drains
        // on a short timer otherwise (collect/).
        config.wakeup_bytes = opts.ringbuf_bytes / 4;
        config.floor = opts.floor as u32;
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", opts.ringbuf_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| LoadError::Load(format!("{e:#}")))?;

        // Driver op addresses -> driver index, for the shared allocation programs. With
        // IBT the kprobe sits after the 4-byte endbr64, and bpf_get_func_ip reports that.
        {
            let map = ebpf
                .map_mut("DRIVER_BY_IP")
                .ok_or_else(|| LoadError::Load("map DRIVER_BY_IP missing".into()))?;
            let mut by_ip: BpfHashMap<&mut MapData, u64, u32> =
                BpfHashMap::try_from(map).map_err(|e| LoadError::Load(e.to_string()))?;
            for a in plan.attachments() {
                if let (Some(d), true) = (a.driver, a.addr != 0) {
                    for ip in [a.addr, a.addr + 4] {
                        by_ip
                            .insert(ip, d as u32, 0)
                            .map_err(|e| LoadError::Load(e.to_string()))?;
                    }
                }
            }
        }

        let mut loaded = BTreeSet::new();
        let mut btf = None;
        let mut attached = 0usize;
        let mut refused = Vec::new();
        for a in plan.attachments() {
            let Err(error) = attach(&mut ebpf, &mut loaded, &mut btf, a) else {
                attached += 1;
                continue;
            };
            let fallback = match a.fallback.as_deref() {
                None => Fallback::None,
                Some(fb) => match attach(&mut ebpf, &mut loaded, &mut btf, fb) {
                    Ok(()) => {
                        attached += 1;
                        Fallback::Attached {
                            program_type: fb.program_type,
                        }
                    }
                    Err(error) => Fallback::Failed { error },
                },
            };
            refused.push(Refusal {
                symbol: a.symbol.clone(),
                program_type: Some(a.program_type),
                error,
                fallback,
            });
        }
        attached -= whole_pairs_only(&mut ebpf, plan, &mut refused);
        if attached == 0 {
            return Err(LoadError::NothingAttached(refused));
        }
        let session = Session {
            plan: plan.clone(),
            refused,
            filter_pid: (opts.filter_pid != 0).then_some(opts.filter_pid),
        };
        // With both iommufd contexts seen, a paging-domain allocation outside them is the DMA
        // API's, not iommufd's: leave it (and its maps) untraced. Without them it could be
        // an auto domain, so everything stays.
        if session.records("hwpt_paging_alloc") && session.records("hwpt_alloc_ioctl") {
            let map = ebpf
                .map_mut("IOMMUFD_ONLY")
                .ok_or_else(|| LoadError::Load("map IOMMUFD_ONLY missing".into()))?;
            let mut only: Array<&mut MapData, u32> =
                Array::try_from(map).map_err(|e| LoadError::Load(e.to_string()))?;
            only.set(0, 1, 0)
                .map_err(|e| LoadError::Load(e.to_string()))?;
        }
        Ok(Tracer { ebpf, session })
    }

    /// Takes the ring buffer (once) for the collector.
    pub fn take_ring(&mut self) -> Option<RingBuf<MapData>> {
        let map = self.ebpf.take_map("EVENTS")?;
        RingBuf::try_from(map).ok()
    }

    /// Per-CPU loss counters summed per reason: (ringbuf_full, context_full), and per CPU.
    pub fn lost_per_cpu(&self) -> Vec<[u64; lost::COUNT as usize]> {
        let Some(map) = self.ebpf.map("LOST") else {
            return vec![];
        };
        let Ok(arr) = PerCpuArray::<&MapData, u64>::try_from(map) else {
            return vec![];
        };
        let mut per_cpu: Vec<[u64; lost::COUNT as usize]> = Vec::new();
        for reason in 0..lost::COUNT {
            if let Ok(values) = arr.get(&reason, 0) {
                for (cpu, v) in values.iter().enumerate() {
                    if per_cpu.len() <= cpu {
                        per_cpu.resize(cpu + 1, [0; lost::COUNT as usize]);
                    }
                    per_cpu[cpu][reason as usize] = *v;
                }
            }
        }
        per_cpu
    }
}

/// The points whose attachments count only together: 6.15+'s page-table pair (the
/// allocation's fexit and the free's fentry). With one half refused, the other would count
/// pages allocated and never freed (or the reverse) and the replay would report a false
/// imbalance; unloaded, the point reads as missing and nothing is claimed.
const WHOLE_OR_NONE: &[&str] = &["pt_alloc_fexit", "pt_free_fentry"];

/// Unloads what attached of a pair whose other half was refused, recording why; returns
/// how many attachments that took away.
fn whole_pairs_only(ebpf: &mut Ebpf, plan: &Plan, refused: &mut Vec<Refusal>) -> usize {
    let pair: Vec<&Attachment> = plan
        .attachments()
        .filter(|a| WHOLE_OR_NONE.contains(&a.entry_program.as_str()))
        .collect();
    let is_refused =
        |a: &Attachment, refused: &[Refusal]| refused.iter().any(|r| r.symbol == a.symbol);
    let Some(first_refused) = pair.iter().find(|a| is_refused(a, refused)) else {
        return 0;
    };
    let reason = format!("unloaded: its pair {} was refused", first_refused.symbol);
    let mut taken = 0;
    for a in pair
        .iter()
        .filter(|a| !is_refused(a, refused))
        .collect::<Vec<_>>()
    {
        let unloaded = unload_trampoline(ebpf, &a.entry_program);
        refused.push(Refusal {
            symbol: a.symbol.clone(),
            program_type: Some(a.program_type),
            error: match unloaded {
                Ok(()) => reason.clone(),
                Err(e) => format!("{reason}; unloading it failed too: {e}"),
            },
            fallback: Fallback::None,
        });
        taken += 1;
    }
    taken
}

/// Loads (once) and attaches the programs of one attachment.
fn attach(
    ebpf: &mut Ebpf,
    loaded: &mut BTreeSet<String>,
    btf: &mut Option<Btf>,
    a: &Attachment,
) -> Result<(), String> {
    let programs = std::iter::once(&a.entry_program).chain(a.exit_program.iter());
    if a.program_type.is_trampoline() {
        if btf.is_none() {
            *btf = Some(Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {e}"))?);
        }
        let btf = btf.as_ref().expect("set above");
        let names: Vec<&String> = programs.collect();
        let attached = attach_trampolines(ebpf, loaded, btf, a, &names);
        if let Err((done, error)) = attached {
            // A pair counts whole or not at all: an fentry whose fexit was refused would
            // leave the thread's context waiting for an exit that never runs (an IOAS
            // handler's batch of map calls would not go out at its end: thread_ctx.rs).
            for name in &names[..done] {
                if let Err(e) = unload_trampoline(ebpf, name) {
                    log::warn!("unloading {name} after its pair was refused: {e}");
                }
                loaded.remove(name.as_str());
            }
            return Err(error);
        }
        return Ok(());
    }
    for name in programs {
        attach_one(ebpf, loaded, name, &a.symbol)?;
    }
    Ok(())
}

/// Loads and attaches the programs of a trampoline attachment, in order; on an error, how
/// many attached before it.
fn attach_trampolines(
    ebpf: &mut Ebpf,
    loaded: &mut BTreeSet<String>,
    btf: &Btf,
    a: &Attachment,
    names: &[&String],
) -> Result<(), (usize, String)> {
    for (i, &name) in names.iter().enumerate() {
        let attached = (|| {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} is not in the eBPF object"))?;
            // The first program is an fentry, but for an fexit alone.
            if i == 0 && a.program_type != ProgramKind::Fexit {
                let p: &mut FEntry = prog.try_into().map_err(|e| format!("{name}: {e}"))?;
                if loaded.insert(name.clone()) {
                    p.load(&a.symbol, btf)
                        .map_err(|e| format!("loading {name}: {e:#}"))?;
                }
                p.attach().map_err(|e| format!("attaching {name}: {e:#}"))?;
            } else {
                let p: &mut FExit = prog.try_into().map_err(|e| format!("{name}: {e}"))?;
                if loaded.insert(name.clone()) {
                    p.load(&a.symbol, btf)
                        .map_err(|e| format!("loading {name}: {e:#}"))?;
                }
                p.attach().map_err(|e| format!("attaching {name}: {e:#}"))?;
            }
            Ok(())
        })();
        attached.map_err(|e| (i, e))?;
    }
    Ok(())
}

/// Unloads a trampoline program, which detaches it.
fn unload_trampoline(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    match ebpf.program_mut(name) {
        Some(aya::programs::Program::FEntry(p)) => p.unload().map_err(|e| e.to_string()),
        Some(aya::programs::Program::FExit(p)) => p.unload().map_err(|e| e.to_string()),
        _ => Err(format!("program {name} is not a trampoline")),
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    loaded: &mut BTreeSet<String>,
    program: &str,
    symbol: &str,
) -> Result<(), String> {
    let prog: &mut KProbe = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} is not in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("program {program}: {e}"))?;
    if loaded.insert(program.to_string()) {
        prog.load()
            .map_err(|e| format!("loading {program} failed: {e:#}"))?;
    }
    prog.attach(symbol, 0)
        .map_err(|e| format!("attaching {program} failed: {e:#}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::kallsyms::Kallsyms;
    use crate::probe::plan::{compute, PlanInputs};

    #[test]
    fn a_kernel_without_btf_or_iommufd_is_refused_with_what_is_missing() {
        let kallsyms = Kallsyms::parse("ffffffff81000000 T iommu_map\n");
        let plan = compute(&PlanInputs {
            kernel_release: "6.1.0-debian".into(),
            btf: None,
            kallsyms: &kallsyms,
            deny: &[],
        });
        let err = Tracer::start(&plan, &TracerOptions::default())
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(matches!(err, LoadError::Blocked(_)), "{text}");
        assert!(text.contains("CONFIG_DEBUG_INFO_BTF"), "{text}");
        assert!(text.contains("CONFIG_IOMMUFD"), "{text}");
        assert!(text.contains("iommu-trace probes"), "{text}");
    }

    #[test]
    fn errors_say_what_to_do() {
        let missing = LoadError::MissingCapabilities(vec![super::super::privileges::Missing {
            name: "CAP_PERFMON",
            for_what: "attaching tracing programs and kprobes",
        }])
        .to_string();
        assert!(missing.contains("lacks CAP_PERFMON"), "{missing}");
        assert!(
            missing.contains("setcap cap_bpf,cap_perfmon,cap_syslog+ep"),
            "{missing}"
        );
        assert!(missing.contains("AmbientCapabilities"), "{missing}");
        assert!(LoadError::BadRingSize(1000)
            .to_string()
            .contains("power of two"));
        assert!(LoadError::NoEbpfObject
            .to_string()
            .contains("cargo xtask setup"));
    }
}
