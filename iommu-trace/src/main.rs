//! The `iommu-trace` command line: parse arguments, call the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use iommu_trace::capture::inspect::Format;
use iommu_trace::collect::LiveOptions;
use iommu_trace::commands;
use iommu_trace::text;

#[derive(Parser)]
#[command(
    version,
    about = "See, and verify, what the Linux IOMMU does for user space (iommufd domains and I/O page tables)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show what this kernel offers: each probe point, the symbol and program type chosen,
    /// and why anything is missing. Needs no privileges.
    Probes {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Treat this symbol as missing (repeatable), to see how the plan degrades.
        #[arg(long = "deny-symbol", value_name = "SYMBOL")]
        deny: Vec<String>,
        /// Plan for another kernel: its BTF (a copy of /sys/kernel/btf/vmlinux).
        #[arg(long, value_name = "FILE")]
        btf: Option<PathBuf>,
        /// Plan for another kernel: its symbols (a copy of /proc/kallsyms).
        #[arg(long, value_name = "FILE")]
        kallsyms: Option<PathBuf>,
    },
    /// Record events to a capture file until Ctrl-C, SIGTERM or --duration.
    Record {
        /// The capture file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Stop after this many seconds (more than 0, at most 10 years).
        #[arg(long, value_name = "SECONDS", value_parser = seconds)]
        duration: Option<Duration>,
        /// Rotate: write FILE's parts NAME.000000.EXT, NAME.000001.EXT, ..., starting a new
        /// one once the current one holds this many bytes (K, M, G suffixes: KiB, MiB, GiB).
        /// Each part is a complete capture; `inspect`, `replay`, `top --from` and `serve
        /// --from` read the parts given together as one stream.
        #[arg(long, value_name = "BYTES", value_parser = byte_size)]
        rotate_size: Option<u64>,
        /// Rotate (as --rotate-size) once the current part is this many seconds old.
        #[arg(long, value_name = "SECONDS", value_parser = seconds)]
        rotate_every: Option<Duration>,
        /// With rotation: keep only the newest N parts, deleting older ones.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        rotate_keep: Option<u64>,
        #[command(flatten)]
        live: LiveArgs,
        /// Create this file once the probes are attached.
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
    },
    /// Print a capture: every event as text or JSON lines, or its summary.
    Inspect {
        /// The capture: one file, or the parts of a rotated recording (read as one stream).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// text or jsonl
        #[arg(long, default_value = "text")]
        format: Format,
        /// Print only the counts.
        #[arg(long)]
        summary: bool,
    },
    /// Verify a capture against the reference VT-d / SMMUv3 page-table allocators, page for
    /// page.
    ///
    /// Exit status: 0 every domain verified, the capture read whole, nothing lost; 1 a
    /// domain diverged in a complete capture; 3 not everything could be verified (events
    /// lost, a damaged or truncated capture, probe points missing, a domain the models cannot
    /// check); 2 an error.
    Replay {
        /// The capture: one file, or the parts of a rotated recording (read as one stream).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// auto (by driver), vtd or smmuv3
        #[arg(long, default_value = "auto")]
        model: iommu_trace::model::ModelSelect,
        /// VT-d kernel behaviour: legacy (6.12-6.18), generic-pt (6.19), generic-pt-whole-range
        /// (7.0+). Default: what the capture's probe plan detected in the traced kernel.
        #[arg(long)]
        vtd: Option<iommu_trace::model::VtdBehaviour>,
        /// SMMUv3 io-pgtable-arm behaviour: 6.12 or 7. Default: from the capture.
        #[arg(long)]
        smmu: Option<iommu_trace::model::SmmuBehaviour>,
        /// Also replay every domain's maps and unmaps under other page-table formats and
        /// report their page-table memory (peak and final).
        #[arg(long)]
        what_if: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drive every iommufd allocation path and print, as JSON, what was done and what the
    /// kernel answered (the workload the tests and the demo trace).
    Exercise(iommu_trace::exercise::ExerciseArgs),
    /// Prometheus exporter: trace this host (or read a capture with --from) and serve
    /// metrics on /metrics and /healthz until Ctrl-C or SIGTERM.
    Serve {
        /// Address to listen on (loopback by default; 0.0.0.0:9464 to expose it).
        #[arg(long, default_value = commands::serve::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Serve the metrics of this capture instead of tracing (then keep serving); the
        /// parts of a rotated recording are read as one stream.
        #[arg(long, value_name = "FILE", num_args = 1..)]
        from: Vec<PathBuf>,
        /// Owner cgroups given their own series; the others are summed as "other".
        #[arg(long, value_name = "N", default_value_t = 10)]
        top_cgroups: usize,
        #[command(flatten)]
        live: LiveArgs,
        /// Write the listening address to this file once metrics are served.
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
        /// With --from: replay the capture against the reference models and export verdicts.
        #[arg(long, requires = "from")]
        verify: bool,
        /// With --from: feed the capture this many times (0: until stopped), for load tests.
        #[arg(long, value_name = "N", default_value_t = 1, requires = "from")]
        repeat: u64,
        /// With --from: feed at most this many events per second (0.001 to 1e9).
        #[arg(long, value_name = "EVENTS", requires = "from", value_parser = rate)]
        rate: Option<f64>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell) to standard
    /// output, e.g. `iommu-trace completions bash > /etc/bash_completion.d/iommu-trace`.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (iommu-trace.1 and one per subcommand) into DIR (packaging).
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Print the JSON Schema (2020-12) of one line of `inspect --format jsonl` (events) or
    /// of `replay --json` (replay); the package installs both in /usr/share/iommu-trace/schemas/.
    Schema {
        #[arg(value_enum)]
        document: commands::schema::Document,
    },
    /// Live full-screen view of IOMMU domains, page tables, rates and failures (or browse a
    /// capture with --from). Keys: q quit, p pause, s sort, / filter, tab view, ? help.
    Top {
        /// Browse this capture instead of tracing this host; the parts of a rotated recording
        /// are read as one stream.
        #[arg(long, value_name = "FILE", num_args = 1..)]
        from: Vec<PathBuf>,
        /// With --from: replay at N times real time (0.001 to 1e6); 0 = as fast as possible,
        /// then hold.
        #[arg(long, value_name = "N", default_value_t = 1.0, requires = "from", value_parser = speed)]
        speed: f64,
        /// Milliseconds between screen refreshes.
        #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(20..=10_000))]
        refresh_ms: u64,
        #[command(flatten)]
        live: LiveArgs,
        /// Append logs to this file (the screen is the TUI's; by default logs are dropped).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
}

/// Writes to standard output. A reader that went away (`| head`) ends the command quietly,
/// as other Unix filters do; any other failure (a full disk, /dev/full) is an error, never a
/// panic.
fn out(text: impl std::fmt::Display) -> Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match write!(o, "{text}").and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(anyhow::anyhow!("writing to standard output: {e}")),
    }
}

/// The error and its causes, each said once: a cause whose text the message already holds
/// (an OS error quoted by the error that wraps it) is not repeated.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// A number in `range`, finite, for a flag whose message says what it means.
fn number_in(s: &str, range: std::ops::RangeInclusive<f64>, what: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number: give {what}"))?;
    if v.is_finite() && range.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{s} is out of range: give {what}, from {} to {}",
            range.start(),
            range.end()
        ))
    }
}

/// `--duration`: seconds, more than 0 and at most ten years.
fn seconds(s: &str) -> Result<Duration, String> {
    let v = number_in(s, 0.0..=315_576_000.0, "a positive number of seconds")?;
    if v == 0.0 {
        return Err("0 is out of range: give a positive number of seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

/// `--rotate-size`: bytes, with an optional K, M or G suffix (powers of 1024); at least
/// 64 KiB, the size of one frame, so that a part holds more than its header.
fn byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => {
            return Err(format!(
                "{s:?}: give bytes, with an optional K, M or G suffix"
            ))
        }
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size: give bytes, e.g. 65536, 512K or 100M"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s} is too large"))?;
    if bytes < 64 << 10 {
        return Err(format!(
            "{s} is too small: give at least 64K (one capture frame)"
        ));
    }
    Ok(bytes)
}

/// `serve --rate`: events per second.
fn rate(s: &str) -> Result<f64, String> {
    number_in(s, 0.001..=1e9, "a number of events per second")
}

/// `top --speed`: times real time, or 0 for as fast as possible.
fn speed(s: &str) -> Result<f64, String> {
    let v = number_in(
        s,
        0.0..=1e6,
        "a factor of real time (2 = twice as fast), or 0",
    )?;
    if v != 0.0 && v < 0.001 {
        return Err(format!(
            "{s} is out of range: give a factor of real time from 0.001 to 1e6, or 0"
        ));
    }
    Ok(v)
}

/// How to trace this host (`record`, `serve` and `top` alike).
#[derive(clap::Args)]
struct LiveArgs {
    /// Kernel ring-buffer size in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 22)]
    ringbuf_size: u32,
    /// Only trace this process.
    #[arg(long, value_name = "PID", default_value_t = 0)]
    pid: u32,
    /// Treat this symbol as missing (repeatable), to test degraded kernels.
    #[arg(long = "deny-symbol", value_name = "SYMBOL")]
    deny: Vec<String>,
    /// Benchmarks only: attach every program, each returning at once, and record nothing
    /// (what the attach points cost by themselves).
    #[arg(long, hide = true)]
    floor: bool,
}

impl From<LiveArgs> for LiveOptions {
    fn from(a: LiveArgs) -> LiveOptions {
        LiveOptions {
            ringbuf_bytes: a.ringbuf_size,
            filter_pid: a.pid,
            deny: a.deny,
            floor: a.floor,
        }
    }
}

/// The clap definition, with `--version`'s long text: what a bug report needs besides the
/// version (the capture format it writes and reads, the kernels it was tested on).
fn command() -> clap::Command {
    let mut text = format!(
        "{}\ncapture format {} (reads formats {} to {})\ntested kernels (the VM matrix):",
        env!("CARGO_PKG_VERSION"),
        iommu_trace::capture::FORMAT_VERSION,
        iommu_trace::capture::MIN_FORMAT_VERSION,
        iommu_trace::capture::FORMAT_VERSION,
    );
    for k in iommu_trace::tested::TESTED_KERNELS {
        text.push_str(&format!(
            "\n  Linux {} {}: {}",
            k.version,
            k.arch,
            k.iommus.join(", ")
        ));
    }
    Cli::command().long_version(text)
}

/// Man pages generated from the clap definitions: the top page and one per visible
/// subcommand (`iommu-trace-record.1`, ...), as `man iommu-trace-record` finds them.
fn write_man_pages(dir: &std::path::Path) -> Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = command();
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "iommu-trace", &mut script);
            out(String::from_utf8_lossy(&script))?;
        }
        Cmd::Man { dir } => write_man_pages(&dir)?,
        Cmd::Schema { document } => out(document.render())?,
        Cmd::Probes {
            json,
            deny,
            btf,
            kallsyms,
        } => {
            let plan = iommu_trace::probe::discover(
                &deny,
                &iommu_trace::probe::Sources { btf, kallsyms },
            )?;
            if json {
                out(format_args!("{}\n", serde_json::to_string_pretty(&plan)?))?;
            } else {
                out(commands::probes::report(
                    &plan,
                    &iommu_trace::probe::privileges::missing(),
                ))?;
            }
        }
        Cmd::Record {
            output,
            duration,
            rotate_size,
            rotate_every,
            rotate_keep,
            live,
            ready_file,
        } => {
            if rotate_keep.is_some() && rotate_size.is_none() && rotate_every.is_none() {
                anyhow::bail!(
                    "--rotate-keep needs --rotate-size or --rotate-every: without rotation \
                     there is one file to keep"
                );
            }
            commands::record::run(commands::record::RecordOptions {
                output,
                duration,
                rotation: iommu_trace::capture::Rotation {
                    max_bytes: rotate_size,
                    every: rotate_every,
                    keep: rotate_keep.map(|n| n as usize),
                },
                live: live.into(),
                ready_file,
            })?;
        }
        Cmd::Inspect {
            files,
            format,
            summary,
        } => {
            let mut stdout = std::io::stdout().lock();
            let s = commands::inspect::run(&files, format, summary, &mut stdout)?;
            if summary {
                out(format_args!("{s}\n"))?;
            }
        }
        Cmd::Replay {
            files,
            model,
            vtd,
            smmu,
            what_if,
            json,
        } => {
            let opts = iommu_trace::replay::Choice {
                model,
                vtd,
                smmu,
                what_if,
            };
            let report = commands::replay::run(&files, &opts)?;
            if json {
                out(format_args!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                out(&report)?;
            }
            return Ok(ExitCode::from(report.outcome().exit_status()));
        }
        Cmd::Serve {
            listen,
            from,
            top_cgroups,
            live,
            ready_file,
            verify,
            repeat,
            rate,
        } => commands::serve::run(commands::serve::ServeOptions {
            listen,
            from,
            top_cgroups,
            live: live.into(),
            ready_file,
            verify,
            repeat,
            rate,
        })?,
        Cmd::Top {
            from,
            speed,
            refresh_ms,
            live,
            log,
        } => commands::top::run(commands::top::TopOptions {
            from,
            speed,
            refresh: Duration::from_millis(refresh_ms),
            live: live.into(),
            log,
        })?,
        Cmd::Exercise(args) => {
            iommu_trace::exercise::run_cli(&args)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            use std::io::Write;
            // Log lines quote what the kernel or a file said: escaped for the terminal.
            let message = record.args().to_string();
            writeln!(
                buf,
                "[{} {}] {}",
                record.level(),
                record.target(),
                text::printable_lines(&message)
            )
        })
        .init();
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if matches!(
        cli.cmd,
        Cmd::Probes { .. }
            | Cmd::Inspect { .. }
            | Cmd::Replay { .. }
            | Cmd::Exercise(_)
            | Cmd::Completions { .. }
            | Cmd::Schema { .. }
    ) {
        // Commands whose output goes to a pager or `head`: end quietly when the reader goes
        // away, as other Unix filters do, instead of failing on a broken pipe.
        // SAFETY: called before any thread starts; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote files and kernel names: escaped for the terminal.
            eprintln!("error: {}", text::printable_lines(&error_text(&e)));
            ExitCode::from(2)
        }
    }
}
