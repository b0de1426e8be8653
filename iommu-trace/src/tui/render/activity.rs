//! The activity view: rate sparklines, allocation latency per driver, failures.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

use super::{bold, dim};
use crate::events::errno_name;
use crate::state::{Histogram, LATENCY_BOUNDS_NS};
use crate::tui::board::{Model, RATE_NAMES};
use crate::tui::format::{flag_names, fmt_dur};

/// Histogram buckets as block characters, one per bucket.
fn bucket_bar(h: &Histogram) -> String {
    const BLOCKS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut prev = 0;
    let mut counts: Vec<u64> = Vec::with_capacity(LATENCY_BOUNDS_NS.len() + 1);
    for (_, c) in h.cumulative() {
        counts.push(c - prev);
        prev = c;
    }
    counts.push(h.count() - prev);
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    counts
        .iter()
        .map(|n| {
            if *n == 0 {
                '·'
            } else {
                BLOCKS[((n * 8).div_ceil(max)).clamp(1, 8) as usize]
            }
        })
        .collect()
}

pub(super) fn draw_activity(f: &mut Frame, area: Rect, model: &Model) {
    let st = model.state();
    let rates = model.rates();
    let shown = [1usize, 2, 3, 4, 5, 6, 0, 7];
    let n_rates = shown.len() as u16;
    let mut drivers: Vec<(String, Histogram)> = Vec::new();
    for ((drv, _kind), h) in st.alloc_latency() {
        let name = st.driver_name(*drv).to_string();
        match drivers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, acc)) => merge(acc, h),
            None => {
                let mut acc = Histogram::default();
                merge(&mut acc, h);
                drivers.push((name, acc));
            }
        }
    }
    drivers.sort_by(|a, b| a.0.cmp(&b.0));
    let [rl, ra, ll, la, fl, fa] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(n_rates),
        Constraint::Length(1),
        Constraint::Length(drivers.len().max(1) as u16 + 1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(Line::styled("rates per second (oldest left)", bold())),
        rl,
    );
    for (i, idx) in shown.iter().enumerate() {
        let r = Rect {
            y: ra.y + i as u16,
            height: 1,
            ..ra
        };
        if r.y >= ra.y + ra.height {
            break;
        }
        let [label, spark, value] = Layout::horizontal([
            Constraint::Length(8),
            Constraint::Min(1),
            Constraint::Length(20),
        ])
        .areas(r);
        f.render_widget(Paragraph::new(format!(" {:<7}", RATE_NAMES[*idx])), label);
        // Newest at the right edge.
        let mut data = rates.series(*idx, spark.width as usize);
        let pad = (spark.width as usize).saturating_sub(data.len());
        data.splice(0..0, std::iter::repeat_n(0, pad));
        let style = if *idx == 7 && rates.peak(7) > 0 {
            Style::default().fg(Color::Red)
        } else {
            Style::default().fg(Color::Cyan)
        };
        f.render_widget(Sparkline::default().data(&data).style(style), spark);
        f.render_widget(
            Paragraph::new(format!(
                " {:>6}/s pk {:>6}",
                rates.last(*idx),
                rates.peak(*idx)
            )),
            value,
        );
    }
    f.render_widget(
        Paragraph::new(Line::styled(
            format!(
                "allocation latency per driver (buckets {}..{} and above)",
                fmt_dur(LATENCY_BOUNDS_NS[0]),
                fmt_dur(LATENCY_BOUNDS_NS[LATENCY_BOUNDS_NS.len() - 1])
            ),
            bold(),
        )),
        ll,
    );
    let mut lat: Vec<Line> = drivers
        .iter()
        .map(|(name, h)| {
            let q = |q| {
                h.quantile_upper_ns(q)
                    .map_or(">1s".to_string(), |n| format!("≤{}", fmt_dur(n)))
            };
            Line::raw(format!(
                " {:<11} n {:<6} p50 {:<8} p99 {:<8} |{}|",
                name,
                h.count(),
                q(0.5),
                q(0.99),
                bucket_bar(h)
            ))
        })
        .collect();
    if lat.is_empty() {
        lat.push(Line::styled(" no allocations yet", dim()));
    }
    f.render_widget(Paragraph::new(lat), la);
    f.render_widget(
        Paragraph::new(Line::styled(
            "failures (errno, with the flags that caused them)",
            bold(),
        )),
        fl,
    );
    let mut fails: Vec<(String, String, String, i32, u64)> = st
        .allocs()
        .iter()
        .filter(|(k, _)| k.errno != 0)
        .map(|(k, n)| {
            (
                st.driver_name(k.driver).to_string(),
                k.kind.name().to_string(),
                flag_names(k.flags),
                k.errno,
                *n,
            )
        })
        .collect();
    fails.sort();
    let mut lines: Vec<Line> = fails
        .iter()
        .map(|(d, k, fl, e, n)| {
            Line::styled(
                format!(
                    " domain_alloc {d:<11} {k:<7} flags {fl:<11} {:<11} x{n}",
                    errno_name(*e)
                ),
                Style::default().fg(Color::Yellow),
            )
        })
        .collect();
    let mut hw: Vec<(i32, u64)> = st
        .hwpt_allocs()
        .iter()
        .filter(|(e, _)| **e != 0)
        .map(|(e, n)| (*e, *n))
        .collect();
    hw.sort();
    if !hw.is_empty() {
        lines.push(Line::styled(
            format!(
                " IOMMU_HWPT_ALLOC ioctl: {}",
                hw.iter()
                    .map(|(e, n)| format!("{} x{n}", errno_name(*e)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Style::default().fg(Color::Yellow),
        ));
    }
    let map_fail: u64 = st
        .map_ops()
        .iter()
        .filter(|(k, _)| k.errno != 0)
        .map(|(_, t)| t.ops)
        .sum();
    if map_fail > 0 {
        lines.push(Line::styled(
            format!(" map/unmap failures: {map_fail}"),
            Style::default().fg(Color::Yellow),
        ));
    }
    let pins = st.pins();
    if !pins.refusals().is_empty() {
        lines.push(Line::styled(
            format!(
                " pin refused: {}",
                pins.refusals()
                    .iter()
                    .map(|(c, n)| format!("{} x{n}", c.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Style::default().fg(Color::Red),
        ));
        // The last one, explained: why IOAS_MAP (or the attach) said ENOMEM.
        if let Some(why) = pins.recent_refusals().last() {
            lines.push(Line::styled(
                format!("  last: {why}"),
                Style::default().fg(Color::Red),
            ));
        }
    }
    if lines.is_empty() {
        lines.push(Line::styled(" none", dim()));
    }
    f.render_widget(
        Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }),
        fa,
    );
}

fn merge(acc: &mut Histogram, h: &Histogram) {
    // Histogram has no merge: re-observe each bucket's upper bound (same bucket).
    let mut prev = 0;
    for (b, c) in h.cumulative() {
        for _ in prev..c {
            acc.observe(b);
        }
        prev = c;
    }
    for _ in prev..h.count() {
        acc.observe(u64::MAX);
    }
}
