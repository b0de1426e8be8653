//! The domains table: its columns, and which of them are dropped when the terminal is
//! narrow.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::{bold, dim};
use crate::tui::app::App;
use crate::tui::board::{DomainRow, Model};
use crate::tui::format::{flag_names, fmt_bytes, fmt_dur, short_ptr};

/// A column of the domains table: title, width, and the priority at which it is dropped
/// when the terminal is narrow (higher goes first).
struct Col {
    title: &'static str,
    width: u16,
    prio: u8,
    cell: fn(&DomainRow, &Model, bool) -> String,
}

fn columns() -> Vec<Col> {
    vec![
        Col {
            title: "DOMAIN",
            width: 8,
            prio: 0,
            cell: |r, _, wide| short_ptr(r.d.domain.0, wide),
        },
        Col {
            title: "DRIVER",
            width: 7,
            prio: 0,
            cell: |r, m, _| m.state().driver_name(r.d.driver).to_string(),
        },
        Col {
            title: "KIND",
            width: 6,
            prio: 0,
            cell: |r, _, _| r.d.kind.name().to_string(),
        },
        Col {
            title: "FLAGS",
            width: 5,
            prio: 4,
            cell: |r, _, _| flag_names(r.d.flags),
        },
        Col {
            title: "PARENT",
            width: 8,
            prio: 7,
            cell: |r, _, wide| short_ptr(r.parent().0, wide),
        },
        Col {
            title: "OWNER",
            width: 12,
            prio: 2,
            cell: |r, _, _| format!("{} {}", r.d.pid, r.d.comm),
        },
        Col {
            title: "CGROUP",
            width: 6,
            prio: 5,
            cell: |r, _, _| r.d.cgroup_id.to_string(),
        },
        Col {
            title: "MAPPED",
            width: 7,
            prio: 1,
            cell: |r, _, _| fmt_bytes(r.d.mapped_bytes),
        },
        Col {
            title: "PT C/U",
            width: 7,
            prio: 1,
            cell: |r, _, _| format!("{}/{}", r.d.pt_charged, r.d.pt_uncharged),
        },
        Col {
            title: "MAPS",
            width: 6,
            prio: 5,
            cell: |r, _, _| r.d.maps.to_string(),
        },
        Col {
            title: "UNMAPS",
            width: 6,
            prio: 6,
            cell: |r, _, _| r.d.unmaps.to_string(),
        },
        Col {
            title: "PT+/-",
            width: 7,
            prio: 6,
            cell: |r, _, _| format!("{}/{}", r.d.pt_allocated, r.d.pt_freed),
        },
        Col {
            title: "AGE",
            width: 6,
            prio: 3,
            cell: |r, m, _| {
                let end = r.freed_ts_ns.unwrap_or(m.now_ns());
                fmt_dur(end.saturating_sub(r.d.alloc_ts_ns))
            },
        },
        Col {
            title: "STATE",
            width: 5,
            prio: 1,
            cell: |r, _, _| {
                if r.freed_ts_ns.is_some() {
                    "FREED".into()
                } else if !r.d.seen_alloc {
                    "old".into()
                } else {
                    "live".into()
                }
            },
        },
    ]
}

pub(super) fn draw_domains(f: &mut Frame, area: Rect, app: &App, model: &Model) {
    let rows = app.rows(model);
    let wide = area.width >= 150;
    let mut cols = columns();
    if area.width >= 110 {
        cols[1].width = 11;
        cols[5].width = 18;
    }
    if wide {
        cols[0].width = 18;
        cols[4].width = 18;
        cols[5].width = 20;
        cols[3].width = 11;
    }
    // Drop the least important columns until the rest fit (1 space between columns).
    let mut keep: Vec<bool> = vec![true; cols.len()];
    let fits = |keep: &[bool]| -> bool {
        let w: u16 = cols
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(c, _)| c.width + 1)
            .sum();
        w <= area.width
    };
    for prio in (1..=7).rev() {
        if fits(&keep) {
            break;
        }
        for (i, c) in cols.iter().enumerate() {
            if c.prio == prio {
                keep[i] = false;
            }
        }
    }
    let cols: Vec<&Col> = cols
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .collect();
    // The last column takes what is left.
    let widths: Vec<Constraint> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i + 1 == cols.len() {
                Constraint::Min(c.width)
            } else {
                Constraint::Length(c.width)
            }
        })
        .collect();
    let header = Row::new(cols.iter().map(|c| Cell::from(c.title))).style(bold());
    if rows.is_empty() {
        let msg = if app.filter.is_empty() {
            "No IOMMU domains yet: they appear when user space allocates one through iommufd."
        } else {
            "No domain matches the filter (esc clears it)."
        };
        let table = Table::new(Vec::<Row>::new(), widths).header(header);
        let [t, m] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
        f.render_widget(table, t);
        f.render_widget(Paragraph::new(Span::styled(msg, dim())), m);
        return;
    }
    let trows: Vec<Row> = rows
        .iter()
        .map(|r| {
            let cells: Vec<Cell> = cols
                .iter()
                .map(|c| Cell::from((c.cell)(r, model, wide)))
                .collect();
            let row = Row::new(cells);
            if r.freed_ts_ns.is_some() {
                row.style(dim())
            } else {
                row
            }
        })
        .collect();
    let selected = app.selected.min(rows.len() - 1);
    let table = Table::new(trows, widths)
        .header(header)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut ts = TableState::default().with_selected(Some(selected));
    f.render_stateful_widget(table, area, &mut ts);
}
