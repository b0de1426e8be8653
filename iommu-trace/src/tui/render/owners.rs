//! The owners view: per-process and per-cgroup tables.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Row, Table};
use ratatui::Frame;

use super::bold;
use crate::state::Reconciliation;
use crate::tui::app::App;
use crate::tui::board::{Model, OwnerRow};
use crate::tui::format::fmt_bytes;

fn owner_table(
    title: &str,
    first: &str,
    rows: &[OwnerRow],
    skip: usize,
    with_name: bool,
) -> Table<'static> {
    let mut head = vec![first.to_string()];
    if with_name {
        head.push("COMM".into());
    }
    head.extend(["DOMAINS", "MAPPED", "PT C/U", "PINNED"].map(String::from));
    // Processes only: the kernel's own VmPin is read per process.
    if with_name {
        head.push("VMPIN".into());
    }
    head.extend(["MEMLOCK", "ALLOCS", "FAILED"].map(String::from));
    let trows: Vec<Row> = rows
        .iter()
        .skip(skip)
        .map(|r| {
            let mut c = vec![r.id.to_string()];
            if with_name {
                c.push(r.name.clone());
            }
            c.push(r.domains.to_string());
            c.push(fmt_bytes(r.mapped_bytes));
            c.push(format!("{}/{}", r.pt_charged, r.pt_uncharged));
            c.push(fmt_bytes(r.pinned_bytes));
            if with_name {
                c.push(r.kernel_pinned.map_or("-".into(), |(bytes, verdict)| {
                    let mark = match verdict {
                        Reconciliation::Unchecked => "?",
                        Reconciliation::Matches => "=",
                        Reconciliation::KernelPinsMore(_) => "+",
                        Reconciliation::LedgerExceeds(_) => "!",
                    };
                    format!("{mark}{}", fmt_bytes(bytes))
                }));
            }
            c.push(r.memlock_headroom.map_or("-".into(), |h| {
                format!("{:.0}%", (h * 100.0).clamp(0.0, 100.0))
            }));
            c.push(r.allocs.to_string());
            c.push(r.failures.to_string());
            let row = Row::new(c);
            // Under 10% headroom the next IOAS_MAP or attach may fail (the exporter's alert).
            // Fewer pins than the ledger holds: events were lost, or the ledger is wrong.
            let short = matches!(r.kernel_pinned, Some((_, Reconciliation::LedgerExceeds(_))));
            if r.memlock_headroom.is_some_and(|h| h < 0.1) || short {
                row.style(Style::default().fg(Color::Red))
            } else if r.failures > 0 {
                row.style(Style::default().fg(Color::Yellow))
            } else {
                row
            }
        })
        .collect();
    // 80 columns: COMM gives up three characters to VMPIN.
    let mut widths = vec![Constraint::Length(7)];
    if with_name {
        widths.push(Constraint::Length(12));
    }
    widths.extend([
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(6),
    ]);
    if with_name {
        widths.push(Constraint::Length(7));
    }
    widths.extend([
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Min(6),
    ]);
    Table::new(trows, widths)
        .header(Row::new(head).style(bold()))
        .block(Block::default().title(Span::styled(title.to_string(), bold())))
}

pub(super) fn draw_owners(f: &mut Frame, area: Rect, app: &App, model: &Model) {
    let procs = model.process_rows();
    let cgroups = model.cgroup_rows();
    let [p, c] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let skip_p = app.owners_scroll.min(procs.len().saturating_sub(1));
    f.render_widget(
        owner_table(
            "processes (PINNED: guest memory its mappings pin; VMPIN: the kernel's own count, live: = the same, + more pinned outside iommufd or before tracing, ! less: events lost, ? not compared yet; MEMLOCK: headroom under RLIMIT_MEMLOCK; FAILED: domain allocations + IOMMU_HWPT_ALLOC ioctls)",
            "PID",
            &procs,
            skip_p,
            true,
        ),
        p,
    );
    f.render_widget(
        owner_table("owner cgroups", "CGROUP", &cgroups, 0, false),
        c,
    );
}
