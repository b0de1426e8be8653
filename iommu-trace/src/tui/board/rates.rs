//! Per-second event rates in the model's clock, for the activity view's sparklines.

use std::collections::VecDeque;

use super::RATE_SECONDS;

/// The rate series, in [`Rates`] order.
pub const RATE_NAMES: [&str; 8] = [
    "events", "allocs", "frees", "maps", "unmaps", "pt+", "pt-", "lost",
];
pub(super) const R_EVENTS: usize = 0;
pub(super) const R_ALLOCS: usize = 1;
pub(super) const R_FREES: usize = 2;
pub(super) const R_MAPS: usize = 3;
pub(super) const R_UNMAPS: usize = 4;
pub(super) const R_PT_ALLOC: usize = 5;
pub(super) const R_PT_FREE: usize = 6;
pub(super) const R_LOST: usize = 7;

/// Per-second counters in the model's clock: the current second and those before it.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    cur_sec: Option<u64>,
    cur: [u64; RATE_NAMES.len()],
    /// Completed seconds, oldest first.
    hist: VecDeque<[u64; RATE_NAMES.len()]>,
}

impl Rates {
    pub(super) fn roll_to(&mut self, sec: u64) {
        match self.cur_sec {
            None => self.cur_sec = Some(sec),
            Some(c) if sec > c => {
                let gap = (sec - c).min(RATE_SECONDS as u64 + 1);
                self.hist.push_back(self.cur);
                for _ in 1..gap {
                    self.hist.push_back([0; RATE_NAMES.len()]);
                }
                while self.hist.len() > RATE_SECONDS {
                    self.hist.pop_front();
                }
                self.cur = [0; RATE_NAMES.len()];
                self.cur_sec = Some(sec);
            }
            // Late by a little (events of other CPUs): counted in the current second.
            Some(_) => {}
        }
    }

    pub(super) fn add(&mut self, ts_ns: u64, series: usize, n: u64) {
        self.roll_to(ts_ns / 1_000_000_000);
        self.cur[series] += n;
    }

    /// The last `n` completed seconds of one series, oldest first.
    pub fn series(&self, idx: usize, n: usize) -> Vec<u64> {
        let skip = self.hist.len().saturating_sub(n);
        self.hist.iter().skip(skip).map(|s| s[idx]).collect()
    }

    /// The last completed second of a series (the current one if none completed yet).
    pub fn last(&self, idx: usize) -> u64 {
        self.hist.back().map_or(self.cur[idx], |s| s[idx])
    }

    /// The highest one-second value of a series over the history.
    pub fn peak(&self, idx: usize) -> u64 {
        self.hist
            .iter()
            .map(|s| s[idx])
            .chain(std::iter::once(self.cur[idx]))
            .max()
            .unwrap_or(0)
    }
}
