//! `iommu-trace exercise`: a workload generator that drives every iommufd domain-allocation
//! path and a set of IOAS map/unmap patterns, and reports exactly what it did and what the
//! kernel answered, so tests can compare the tracer's counts against it.
//!
//! Paths driven (see `steps/` for the exact sequence and the expected 6.12 answers):
//! * `/dev/iommu` + a VFIO device cdev (`/dev/vfio/devices/vfioN`): IOMMU_IOAS_ALLOC,
//!   VFIO_DEVICE_BIND_IOMMUFD, IOMMU_HWPT_ALLOC (paging with flags 0 / NEST_PARENT /
//!   DIRTY_TRACKING, nested with IOMMU_HWPT_DATA_VTD_S1, invalid variants),
//!   VFIO_DEVICE_ATTACH_IOMMUFD_PT to the IOAS (auto domain) and to an explicit hwpt,
//!   IOMMU_IOAS_MAP/UNMAP patterns, IOMMU_DESTROY, detach, close;
//! * the iommufd selftest mock (IOMMU_TEST_CMD, `CONFIG_IOMMUFD_TEST` only): mock device
//!   with auto domain, paging/nest-parent/dirty hwpts, nested with IOMMU_HWPT_DATA_SELFTEST.
//!
//! Entry points: [`run`] with [`ExerciseOptions`], or [`run_cli`] with the clap
//! [`ExerciseArgs`].

#[cfg(test)]
mod fake;
mod ledger;
pub mod report;
mod steps;
mod sys;
pub mod uapi;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use report::{
    AllocKind, AllocTotal, Availability, DeviceKind, HwptTotals, IoasTotals, LoopResult, Report,
    Step, StepGroup, Totals, VfioInfo,
};

/// Default `/dev/iommu`.
pub const DEFAULT_IOMMU_PATH: &str = "/dev/iommu";
/// Where VFIO device cdevs live.
pub const VFIO_DEVICES_DIR: &str = "/dev/vfio/devices";
/// Default IOVA base: 1 GiB. 2M aligned, inside the mock aperture (16 MiB .. 2 GiB) and far
/// from the x86 MSI window (0xfee00000); the run uses [base, base + 64 MiB).
pub const DEFAULT_IOVA_BASE: u64 = 0x4000_0000;
/// IOVA window the patterns use above the base.
pub const IOVA_WINDOW: u64 = 64 << 20;

/// Which VFIO device to use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VfioSelect {
    /// First `/dev/vfio/devices/vfio*` (by number); an error if there is none.
    #[default]
    Auto,
    /// This cdev.
    Path(PathBuf),
    /// Do not use VFIO; only the selftest mock (needs CONFIG_IOMMUFD_TEST).
    Disabled,
}

/// Selected step groups. `Setup` steps always run when VFIO is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSet {
    pub alloc: bool,
    pub negative: bool,
    pub map: bool,
    pub huge: bool,
    pub mock: bool,
    pub loop_: bool,
}

impl StepSet {
    pub const ALL: StepSet = StepSet {
        alloc: true,
        negative: true,
        map: true,
        huge: true,
        mock: true,
        loop_: true,
    };
    pub const NONE: StepSet = StepSet {
        alloc: false,
        negative: false,
        map: false,
        huge: false,
        mock: false,
        loop_: false,
    };

    pub fn contains(&self, g: StepGroup) -> bool {
        match g {
            StepGroup::Setup => true,
            StepGroup::Alloc => self.alloc,
            StepGroup::Negative => self.negative,
            StepGroup::Map => self.map,
            StepGroup::Huge => self.huge,
            StepGroup::Mock => self.mock,
            StepGroup::Loop => self.loop_,
        }
    }
}

impl Default for StepSet {
    fn default() -> Self {
        StepSet::ALL
    }
}

impl FromStr for StepSet {
    type Err = String;

    /// `all`, `none`, or a comma list of `alloc,negative,map,huge,mock,loop`; a leading
    /// `-` removes a group from `all` (`all,-huge` or just `-huge,-mock`).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = StepSet::NONE;
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .collect();
        if items.is_empty() {
            return Err("empty step list".into());
        }
        if items[0].starts_with('-') {
            set = StepSet::ALL;
        }
        for item in items {
            let (on, name) = match item.strip_prefix('-') {
                Some(n) => (false, n),
                None => (true, item),
            };
            match name {
                "all" if on => set = StepSet::ALL,
                "none" if on => set = StepSet::NONE,
                "alloc" => set.alloc = on,
                "negative" => set.negative = on,
                "map" => set.map = on,
                "huge" => set.huge = on,
                "mock" => set.mock = on,
                "loop" => set.loop_ = on,
                _ => {
                    return Err(format!(
                        "unknown step group {item:?} (expected all, none, alloc, negative, \
                         map, huge, mock, loop, optionally prefixed with -)"
                    ))
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Display for StepSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.alloc, "alloc"),
            (self.negative, "negative"),
            (self.map, "map"),
            (self.huge, "huge"),
            (self.mock, "mock"),
            (self.loop_, "loop"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// What to exercise.
#[derive(Debug, Clone, PartialEq)]
pub struct ExerciseOptions {
    /// `/dev/iommu`.
    pub iommu_path: PathBuf,
    pub vfio: VfioSelect,
    pub steps: StepSet,
    /// Map/unmap loop iterations (0 = no loop). Needs `steps.loop_`.
    pub loop_iterations: u64,
    /// 4K pages per map in the loop.
    pub loop_pages: u32,
    /// Use 2M hugetlb pages for the contiguous run (needs `steps.huge`).
    pub hugepages: bool,
    /// 2M-aligned IOVA base of the [base, base + 64 MiB) window the run uses.
    pub iova_base: u64,
    /// Sample the cgroup's sec_pagetables at the start, at the VFIO flow's peak (all its
    /// domains live) and at the end. Each sample first waits for the kernel's periodic
    /// memcg stat flush (2 s, mm/memcontrol.c FLUSH_TIME).
    pub sample_cgroup: bool,
    /// Run only the pinned-memory limits flow, as this unprivileged user
    /// (`steps/pin_limits.rs`).
    pub pin_limits: Option<PinLimits>,
    /// At the VFIO flow's peak (all its domains live, its mappings pinned), create this file
    /// and wait until it is removed (at most a minute): an observer reads what the process
    /// holds.
    pub hold_file: Option<PathBuf>,
}

/// The user and RLIMIT_MEMLOCK of the pinned-memory limits flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PinLimits {
    pub uid: u32,
    /// Bytes, a multiple of 4 KiB, at least 8 KiB.
    pub memlock: u64,
}

impl Default for ExerciseOptions {
    fn default() -> Self {
        ExerciseOptions {
            iommu_path: PathBuf::from(DEFAULT_IOMMU_PATH),
            vfio: VfioSelect::Auto,
            steps: StepSet::ALL,
            loop_iterations: 0,
            loop_pages: 16,
            hugepages: true,
            iova_base: DEFAULT_IOVA_BASE,
            sample_cgroup: false,
            pin_limits: None,
            hold_file: None,
        }
    }
}

impl ExerciseOptions {
    /// Checks the options themselves (no system access).
    pub fn validate(&self) -> Result<()> {
        if !self.iova_base.is_multiple_of(sys::HUGE_2M) {
            return Err(ExerciseError::BadOption(format!(
                "iova base {:#x} is not 2 MiB aligned",
                self.iova_base
            )));
        }
        if self.iova_base.checked_add(IOVA_WINDOW).is_none() {
            return Err(ExerciseError::BadOption(format!(
                "iova base {:#x} + 64 MiB overflows",
                self.iova_base
            )));
        }
        if self.loop_pages == 0 || u64::from(self.loop_pages) * sys::PAGE_4K > 16 << 20 {
            return Err(ExerciseError::BadOption(
                "loop pages must be between 1 and 4096".into(),
            ));
        }
        if let Some(l) = self.pin_limits {
            if l.uid == 0 || l.memlock < 2 * sys::PAGE_4K || !l.memlock.is_multiple_of(sys::PAGE_4K)
            {
                return Err(ExerciseError::BadOption(
                    "--pin-limits-as needs a non-root uid and --memlock a multiple of 4 KiB, at \
                     least 8 KiB"
                        .into(),
                ));
            }
        }
        if self.vfio == VfioSelect::Disabled && !self.steps.mock {
            return Err(ExerciseError::BadOption(
                "nothing to exercise: VFIO is disabled and the mock step group is not selected"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Why a run could not start (problems during the run are recorded in the report).
#[derive(Debug, thiserror::Error)]
pub enum ExerciseError {
    #[error("invalid option: {0}")]
    BadOption(String),
    #[error(
        "{path} does not exist: the kernel has no iommufd. Use a kernel with CONFIG_IOMMUFD=y/m \
         (and CONFIG_VFIO_DEVICE_CDEV=y), then `modprobe iommufd` (stock Debian kernels have it \
         disabled)"
    )]
    NoIommufd { path: PathBuf },
    #[error(
        "permission denied opening {path}: run as root (or give this user read/write access \
         to {path}; mapping memory also needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK)"
    )]
    NoPermission { path: PathBuf },
    #[error(
        "no VFIO device cdev in {dir}: needs CONFIG_VFIO_DEVICE_CDEV=y and a device bound to \
         vfio-pci, e.g. `modprobe vfio-pci; echo vfio-pci > \
         /sys/bus/pci/devices/<BDF>/driver_override; echo <BDF> > /sys/bus/pci/drivers_probe`; \
         or pass --no-vfio to exercise only the selftest mock (CONFIG_IOMMUFD_TEST)"
    )]
    NoVfioDevice { dir: PathBuf },
    #[error(
        "VFIO is disabled and the selftest mock is not available ({errno_name}): the kernel \
         needs CONFIG_IOMMUFD_TEST=y; nothing was exercised"
    )]
    NothingToExercise { errno_name: String },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = ExerciseError> = std::result::Result<T, E>;

/// Runs the exercise and returns the report. Only missing prerequisites are errors; every
/// ioctl failure is recorded in the report and the run continues where that makes sense.
pub fn run(opts: &ExerciseOptions) -> Result<Report> {
    opts.validate()?;
    steps::run(opts)
}

/// First `/dev/vfio/devices/vfioN` by N.
pub fn discover_vfio_device(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix("vfio")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().next().map(|(_, p)| p)
}

/// Command-line arguments of `iommu-trace exercise` (flatten into the subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct ExerciseArgs {
    /// VFIO device cdev to use (default: the first /dev/vfio/devices/vfioN).
    #[arg(long, value_name = "PATH", conflicts_with = "no_vfio")]
    pub vfio_device: Option<PathBuf>,
    /// Do not use VFIO; exercise only the selftest mock (CONFIG_IOMMUFD_TEST).
    #[arg(long)]
    pub no_vfio: bool,
    /// The iommufd device node.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_IOMMU_PATH)]
    pub iommu_dev: PathBuf,
    /// Step groups: all, none, or a comma list of alloc,negative,map,huge,mock,loop
    /// (prefix with - to remove one, e.g. -huge).
    #[arg(long, value_name = "GROUPS", default_value = "all")]
    pub steps: StepSet,
    /// Run N map/unmap iterations on the IOAS and report elapsed time and ops/s.
    #[arg(long = "loop", value_name = "N", default_value_t = 0)]
    pub loop_iterations: u64,
    /// 4K pages per map in the loop.
    #[arg(long, value_name = "PAGES", default_value_t = 16)]
    pub loop_pages: u32,
    /// Do not use 2M hugetlb pages.
    #[arg(long)]
    pub no_hugepages: bool,
    /// 2M-aligned IOVA base (decimal or 0x hex) of the 64 MiB window the run uses.
    #[arg(long, value_name = "IOVA", default_value = "0x40000000", value_parser = parse_u64)]
    pub iova_base: u64,
    /// Sample the cgroup's memory.stat sec_pagetables at start, peak and end (adds ~9 s).
    #[arg(long)]
    pub sample_cgroup: bool,
    /// Run only the pinned-memory limits flow: as root, switch a second iommufd to per-mm
    /// accounting, then become this user (no capabilities) under `--memlock` and meet the
    /// RLIMIT_MEMLOCK refusals of IOAS_MAP and HWPT_ALLOC on the selftest mock.
    #[arg(long, value_name = "UID")]
    pub pin_limits_as: Option<u32>,
    /// RLIMIT_MEMLOCK for `--pin-limits-as`, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 65536,
        requires = "pin_limits_as"
    )]
    pub memlock: u64,
    /// At the VFIO flow's peak (all its domains live, its mappings pinned), create FILE and
    /// wait until it is removed (at most a minute), so that another tool can read what this
    /// process holds pinned meanwhile.
    #[arg(long, value_name = "FILE")]
    pub hold_file: Option<PathBuf>,
    /// Write the JSON report here instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let s = s.trim().replace('_', "");
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

impl ExerciseArgs {
    pub fn to_options(&self) -> ExerciseOptions {
        let mut steps = self.steps;
        // `--loop N` asks for the loop whatever the step list says.
        steps.loop_ |= self.loop_iterations > 0;
        ExerciseOptions {
            iommu_path: self.iommu_dev.clone(),
            vfio: if self.no_vfio {
                VfioSelect::Disabled
            } else if let Some(p) = &self.vfio_device {
                VfioSelect::Path(p.clone())
            } else {
                VfioSelect::Auto
            },
            steps,
            loop_iterations: self.loop_iterations,
            loop_pages: self.loop_pages,
            hugepages: !self.no_hugepages,
            iova_base: self.iova_base,
            sample_cgroup: self.sample_cgroup,
            pin_limits: self.pin_limits_as.map(|uid| PinLimits {
                uid,
                memlock: self.memlock,
            }),
            hold_file: self.hold_file.clone(),
        }
    }
}

/// `iommu-trace exercise`: run, write the JSON report (stdout or `--output`), log a summary.
pub fn run_cli(args: &ExerciseArgs) -> anyhow::Result<Report> {
    // Opened first: `--pin-limits-as` gives up root during the run.
    let file = args
        .output
        .as_ref()
        .map(|p| {
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))
        })
        .transpose()?;
    let report = run(&args.to_options())?;
    let json = report.to_json_pretty();
    match (file, &args.output) {
        (Some(mut f), Some(p)) => f
            .write_all((json + "\n").as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?,
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(json.as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    let failed = report
        .steps
        .iter()
        .filter(|s| s.as_expected == Some(false))
        .count();
    log::info!(
        "exercise: {} steps, {} domain allocations, {} unexpected results",
        report.steps.len(),
        report
            .totals
            .expected_domain_allocations
            .get("total")
            .copied()
            .unwrap_or(0),
        failed
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExerciseArgs,
    }

    fn parse(argv: &[&str]) -> ExerciseArgs {
        Cli::try_parse_from(std::iter::once("exercise").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn step_set_parsing() {
        assert_eq!("all".parse::<StepSet>().unwrap(), StepSet::ALL);
        assert_eq!("none".parse::<StepSet>().unwrap(), StepSet::NONE);
        let s: StepSet = "alloc,map".parse().unwrap();
        assert!(s.alloc && s.map && !s.huge && !s.mock && !s.loop_ && !s.negative);
        let s: StepSet = "-huge,-mock".parse().unwrap();
        assert!(s.alloc && s.map && !s.huge && !s.mock && s.loop_ && s.negative);
        let s: StepSet = "all,-loop".parse().unwrap();
        assert!(!s.loop_ && s.alloc);
        assert!("bogus".parse::<StepSet>().is_err());
        assert!("".parse::<StepSet>().is_err());
        assert_eq!(
            StepSet::ALL.to_string(),
            "alloc,negative,map,huge,mock,loop"
        );
        assert_eq!(StepSet::NONE.to_string(), "none");
        assert!(StepSet::NONE.contains(StepGroup::Setup));
        assert!(!StepSet::NONE.contains(StepGroup::Mock));
    }

    #[test]
    fn default_args() {
        let o = parse(&[]).to_options();
        assert_eq!(o, ExerciseOptions::default());
        o.validate().unwrap();
    }

    #[test]
    fn args_to_options() {
        let o = parse(&[
            "--vfio-device",
            "/dev/vfio/devices/vfio3",
            "--steps",
            "loop",
            "--loop",
            "1000",
            "--loop-pages",
            "4",
            "--no-hugepages",
            "--iova-base",
            "0x8000_0000",
        ])
        .to_options();
        assert_eq!(o.vfio, VfioSelect::Path("/dev/vfio/devices/vfio3".into()));
        assert_eq!(o.steps, "loop".parse().unwrap());
        assert_eq!(o.loop_iterations, 1000);
        assert_eq!(o.loop_pages, 4);
        assert!(!o.hugepages);
        assert_eq!(o.iova_base, 0x8000_0000);
        o.validate().unwrap();

        let o = parse(&["--no-vfio", "--steps", "mock"]).to_options();
        assert_eq!(o.vfio, VfioSelect::Disabled);
        o.validate().unwrap();
        assert!(Cli::try_parse_from(["x", "--no-vfio", "--vfio-device", "/x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--steps", "nope"]).is_err());
    }

    #[test]
    fn validation_errors() {
        let bad = ExerciseOptions {
            iova_base: 0x1000,
            ..Default::default()
        };
        assert!(matches!(bad.validate(), Err(ExerciseError::BadOption(_))));
        let bad = ExerciseOptions {
            vfio: VfioSelect::Disabled,
            steps: "map".parse().unwrap(),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = ExerciseOptions {
            loop_pages: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        // The limits run: never as root, and a limit of whole 4 KiB pages, two at least.
        for (uid, memlock) in [(0, 65536), (65534, 4096), (65534, 65537)] {
            let bad = ExerciseOptions {
                pin_limits: Some(PinLimits { uid, memlock }),
                ..Default::default()
            };
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("--pin-limits-as"), "{uid} {memlock}: {err}");
        }
        let good = ExerciseOptions {
            pin_limits: Some(PinLimits {
                uid: 65534,
                memlock: 65536,
            }),
            ..Default::default()
        };
        good.validate().unwrap();
    }

    #[test]
    fn missing_iommufd_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ExerciseOptions {
            iommu_path: dir.path().join("iommu"),
            ..Default::default()
        };
        let err = run(&opts).unwrap_err();
        assert!(matches!(err, ExerciseError::NoIommufd { .. }), "{err}");
        assert!(err.to_string().contains("CONFIG_IOMMUFD"));
    }

    #[test]
    fn vfio_discovery_picks_lowest_number() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(discover_vfio_device(dir.path()), None);
        for n in ["vfio10", "vfio2", "noise", "vfioX"] {
            std::fs::write(dir.path().join(n), b"").unwrap();
        }
        assert_eq!(
            discover_vfio_device(dir.path()),
            Some(dir.path().join("vfio2"))
        );
        assert_eq!(discover_vfio_device(&dir.path().join("missing")), None);
    }
}
