//! The detail view of one domain: what it is, who owns it, what it maps and holds, the
//! reference model's verdict, page-table growth and recent events.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline};
use ratatui::Frame;

use super::{bold, dim, loud};
use crate::tui::board::{DomainRow, Judgement, Model};
use crate::tui::format::{describe, flag_names, fmt_bytes, fmt_dur, fmt_secs, short_ptr};

pub(super) fn draw_detail(f: &mut Frame, area: Rect, row: &DomainRow, model: &Model) {
    let d = row.d;
    let st = model.state();
    let start = model.now_ns().saturating_sub(model.uptime_ns());
    let block = Block::default()
        .borders(Borders::TOP)
        .title(format!(" domain {:#x} (esc: back) ", d.domain.0));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let op = d.op.map_or("not seen", crate::events::AllocOp::name);
    let state = match row.freed_ts_ns {
        Some(t) => Span::styled(
            format!("FREED at +{}", fmt_secs(t.saturating_sub(start))),
            Style::default().fg(Color::Yellow),
        ),
        None => Span::styled("live", Style::default().fg(Color::Green)),
    };
    let extra = row.extra;
    let verdict = model.verdict(row);
    let vstyle = match verdict.judgement {
        Judgement::Verified => Style::default()
            .fg(Color::Green)
            .add_modifier(Modifier::BOLD),
        Judgement::Diverged => loud(),
        Judgement::Unverifiable | Judgement::None => Style::default().fg(Color::Yellow),
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw(format!(
                "driver {}  op {}  kind {}  flags {}  parent {}  ",
                st.driver_name(d.driver),
                op,
                d.kind.name(),
                flag_names(d.flags),
                short_ptr(row.parent().0, true)
            )),
            state,
        ]),
        Line::raw(format!(
            "owner pid {} ({})  cgroup {}  allocated at +{} in {}  age {}",
            d.pid,
            d.comm,
            d.cgroup_id,
            fmt_secs(d.alloc_ts_ns.saturating_sub(start)),
            fmt_dur(d.alloc_latency_ns),
            fmt_dur(
                row.freed_ts_ns
                    .unwrap_or(model.now_ns())
                    .saturating_sub(d.alloc_ts_ns)
            ),
        )),
        Line::raw(format!(
            "mapped {} now  maps {}  unmaps {}",
            fmt_bytes(d.mapped_bytes),
            d.maps,
            d.unmaps
        )),
        Line::raw(format!(
            "page-table pages held {} ({} charged, {} uncharged)  allocated {}  freed {}  peak {}",
            d.pt_pages(),
            d.pt_charged,
            d.pt_uncharged,
            d.pt_allocated,
            d.pt_freed,
            extra.map_or(0, |e| e.pt_peak)
        )),
        Line::from(vec![
            Span::raw("reference model: "),
            Span::styled(verdict.verdict.clone(), vstyle),
        ]),
    ];
    if let Some(levels) = d.top_levels {
        // AMD: the table's top grew as IOVAs rose (pt_grow events).
        lines.insert(
            lines.len() - 1,
            Line::raw(format!(
                "table top grew {} time(s), to {levels} levels",
                d.top_growths
            )),
        );
    }
    for l in &verdict.detail {
        lines.push(Line::styled(format!("  {l}"), dim()));
    }
    let info_h = lines.len() as u16;
    let [info, glabel, graph, rlabel, recent] = Layout::vertical([
        Constraint::Length(info_h),
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(inner);
    f.render_widget(Paragraph::new(lines), info);
    let growth: Vec<u64> = extra.map_or(Vec::new(), |e| {
        let skip = e.growth.len().saturating_sub(graph.width as usize);
        e.growth.iter().skip(skip).copied().collect()
    });
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                "page-table growth: pages held after each of the last {} page-table events",
                growth.len()
            ),
            bold(),
        )),
        glabel,
    );
    f.render_widget(
        Sparkline::default()
            .data(&growth)
            .style(Style::default().fg(Color::Cyan)),
        graph,
    );
    f.render_widget(
        Paragraph::new(Line::styled("recent events", bold())),
        rlabel,
    );
    let evs = extra.map_or(Vec::new(), |e| e.recent(recent.height as usize));
    let lines: Vec<Line> = evs.iter().map(|e| Line::raw(describe(e, start))).collect();
    f.render_widget(Paragraph::new(lines), recent);
}
