//! The pinned-page accounting over a capture, replayed against a model of the kernel's
//! (docs/kernel-facts.md §8.4):
//!
//! * per `iopt_pages`, the pages charged so far (the kernel's `last_npinned`). The pin and
//!   unpin paths move `npinned` first; the accounting call then charges the difference and,
//!   on success, sets `last_npinned = npinned`. So a charge of `n` must leave `C + n` pinned
//!   (`C` charged before) and a successful uncharge `C - n`; a refused charge leaves the
//!   `C + n` just pinned and `C` charged (the caller unpins them without another call).
//!   `IOAS_CHANGE_PROCESS` moves a whole charge to a new target: an uncharge of all `C`
//!   pages with nothing unpinned; its new charge goes through a stack `iopt_pages` of size 0.
//! * per charge, the limit check (`incr_user_locked_vm`, `__account_locked_vm`): refused
//!   exactly when the target's locked pages before the call plus the charge exceed
//!   `RLIMIT_MEMLOCK >> PAGE_SHIFT`. The target's total also holds charges made outside
//!   iommufd (mlock, io_uring, VFIO type1), so the model takes the total the kernel reported
//!   and checks the decision, not the total.
//!
//! A call that breaks either is a finding, reported like a page-table divergence (which
//! event, expected vs observed); the model then takes the kernel's figures and goes on. A
//! limit decision on a target other creators charge too is only a note: the total is read
//! after the call, and their concurrent calls can move it in between. A failed uncharge
//! (per-mm, the creator's mm gone) unpins without moving the charge; an `iopt_pages` it
//! leaves with nothing pinned may be freed, so the model forgets it.
//! An `iopt_pages` first seen already holding pins (made before the capture started) is
//! adopted with the count its first call implies.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::events::{KernelPtr, Pin, PinMode};
use crate::uapi::errno::ENOMEM;

/// One accounting call the model did not expect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PinFinding {
    /// Index (0-based, in the stream) of the `pin` event.
    pub event_index: u64,
    /// The `iopt_pages` it accounts.
    pub iopt_pages: KernelPtr,
    /// What the model expected instead, and the last call before it on the same pages.
    pub what: String,
}

/// What the replay found about the pinned-page accounting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PinsReport {
    /// Accounting calls replayed.
    pub calls: u64,
    /// Distinct `iopt_pages` seen (an address reused after a free counts once).
    pub iopt_pages: u64,
    /// `iopt_pages` first seen already holding pins the capture did not see being made.
    pub adopted: u64,
    /// Charges refused (`ENOMEM`), and how many of them the limit check predicted.
    pub refused: u64,
    /// Of the refused charges, those the limit check predicted.
    pub refusals_predicted: u64,
    /// Pages still pinned (and accounted) when the capture ended, per accounting mode.
    pub pinned_at_end: BTreeMap<&'static str, u64>,
    /// Calls that contradict the model, in stream order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<PinFinding>,
    /// Limit decisions the totals contradict on a target other creators charge too: the
    /// total is read after the call, so their concurrent charges or uncharges can explain
    /// it (not findings).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<PinFinding>,
    /// Why the accounting was not checked (a probe point recorded nothing, a --pid
    /// capture, events lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<String>,
}

impl PinsReport {
    pub fn set_unchecked(&mut self, why: String) {
        self.findings.clear();
        self.unchecked = Some(why);
    }

    pub(super) fn write_text(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match (&self.unchecked, self.findings.is_empty()) {
            (Some(why), _) => format!("not checked: {why}"),
            (None, true) => "consistent".to_string(),
            (None, false) => "DIVERGED".to_string(),
        };
        writeln!(f, "pinned-page accounting: {verdict}")?;
        writeln!(
            f,
            "  {} calls on {} iopt_pages ({} holding pins before the capture); {} charges \
             refused, {} of them predicted by the limit check",
            self.calls, self.iopt_pages, self.adopted, self.refused, self.refusals_predicted
        )?;
        if !self.pinned_at_end.is_empty() {
            let parts: Vec<String> = self
                .pinned_at_end
                .iter()
                .map(|(mode, n)| format!("{n} (mode {mode})"))
                .collect();
            writeln!(f, "  pages still pinned at the end: {}", parts.join(", "))?;
        }
        for p in &self.findings {
            writeln!(
                f,
                "  at event {}: iopt_pages {}: {}",
                p.event_index, p.iopt_pages, p.what
            )?;
        }
        for p in &self.notes {
            writeln!(
                f,
                "  note, at event {}: iopt_pages {}: {} (a target other processes charge too: \
                 not decisive)",
                p.event_index, p.iopt_pages, p.what
            )?;
        }
        Ok(())
    }
}

/// One `iopt_pages` as the model knows it.
struct Pages {
    /// Pages charged (the kernel's `last_npinned`).
    charged: u64,
    mode: PinMode,
    /// The last call seen on it.
    last_event: u64,
}

/// The accounting model, fed the `pin` events of a stream.
#[derive(Default)]
pub(super) struct PinLedger {
    pages: FxHashMap<u64, Pages>,
    /// Per accounting target (mode, uid or mm), the creators seen charging it.
    creators: FxHashMap<(u8, u64), Vec<u32>>,
    report: PinsReport,
    seen: bool,
}

impl PinLedger {
    pub(super) fn pin(&mut self, index: u64, p: &Pin) {
        self.seen = true;
        self.report.calls += 1;
        self.limit_check(index, p);
        // CHANGE_PROCESS charges the new target through a stack `iopt_pages` of size 0:
        // not one of the mappings' (ioas.c `charge_current`).
        if p.total_pages == 0 {
            return;
        }
        let n = p.pages.unsigned_abs();
        let (charge, ok) = (p.pages > 0, p.errno == 0);
        let observed = p.pinned_pages;
        let Some(st) = self.pages.get_mut(&p.iopt_pages.0) else {
            // First call seen: what it implies was charged before it.
            let before = if charge {
                observed.checked_sub(n)
            } else {
                observed.checked_add(n)
            };
            self.report.iopt_pages += 1;
            let Some(before) = before else {
                self.finding(
                    index,
                    p.iopt_pages,
                    format!("{observed} pages pinned after charging {n}: fewer than the charge"),
                );
                return;
            };
            if before > 0 {
                self.report.adopted += 1;
            }
            if !ok && !charge && observed == 0 {
                // A failed uncharge of all its pins: it may be freed now (below).
                return;
            }
            let charged = if ok { observed } else { before };
            self.pages.insert(
                p.iopt_pages.0,
                Pages {
                    charged,
                    mode: p.mode,
                    last_event: index,
                },
            );
            return;
        };
        let held = st.charged;
        let last = std::mem::replace(&mut st.last_event, index);
        st.mode = p.mode;
        let expected = if charge {
            held.checked_add(n)
        } else if ok && observed == held && n == held {
            // CHANGE_PROCESS: the whole charge moves to the new target, nothing unpinned.
            Some(held)
        } else {
            held.checked_sub(n)
        };
        // A successful call records what is pinned now; a refused one leaves the charge.
        if ok {
            st.charged = observed;
        }
        // A failed uncharge (per-mm, the creator's mm gone: an exit with the iommufd open)
        // unpins all the same but leaves `last_npinned`; with nothing left pinned the
        // `iopt_pages` may be freed, and a new one at its address starts from 0: forget it.
        let forget = !ok && !charge && observed == 0;
        if forget {
            self.pages.remove(&p.iopt_pages.0);
        }
        if expected == Some(observed) && observed <= p.total_pages {
            return;
        }
        let what = if charge {
            format!(
                "{observed} pages pinned after a charge of {n}, expected {} ({held} charged \
                 before, last call at event {last}): a pin or unpin between them was not seen",
                held.saturating_add(n)
            )
        } else if n > held {
            format!(
                "uncharging {n} pages but only {held} were charged (last call at event {last}): \
                 a charge was not seen, or this uncharge is one too many"
            )
        } else {
            format!(
                "{observed} pages pinned after an uncharge of {n}, expected {} ({held} charged \
                 before, last call at event {last})",
                held - n
            )
        };
        let what = if observed > p.total_pages {
            format!(
                "{what}; and {observed} pinned exceeds its size of {} pages",
                p.total_pages
            )
        } else {
            what
        };
        self.finding(index, p.iopt_pages, what);
    }

    /// The kernel's limit check on a charge, replayed with the limit and total it saw.
    fn limit_check(&mut self, index: u64, p: &Pin) {
        let refused = p.errno == ENOMEM;
        if refused {
            self.report.refused += 1;
        }
        if p.pages <= 0 || !matches!(p.mode, PinMode::User | PinMode::Mm) {
            return;
        }
        if p.errno != 0 && !refused {
            return;
        }
        let n = p.pages.unsigned_abs();
        let page = p.page_size();
        // The kernel compares pages: the limit rounded down (`>> PAGE_SHIFT`).
        let Some(limit) = p.limit_bytes.map(|b| b / page) else {
            if refused {
                self.finding(
                    index,
                    p.iopt_pages,
                    format!("a charge of {n} pages refused under an unlimited RLIMIT_MEMLOCK"),
                );
            }
            return;
        };
        let after = p.locked_bytes / page;
        // Refused: the total is the one the check saw; charged: it includes this charge.
        let before = if refused {
            after
        } else {
            after.saturating_sub(n)
        };
        let over = before.saturating_add(n) > limit;
        // The total is read after the call: on a target other creators charge too, their
        // concurrent calls can move it in between.
        let key = match p.mode {
            PinMode::User => (1, p.target_uid.unwrap_or(0) as u64),
            _ => (2, p.target_mm.map_or(0, |m| m.0)),
        };
        let creators = self.creators.entry(key).or_default();
        if !creators.contains(&p.target_pid) {
            creators.push(p.target_pid);
        }
        let shared = creators.len() > 1;
        let what = match (refused, over) {
            (true, true) => {
                self.report.refusals_predicted += 1;
                return;
            }
            (false, false) => return,
            (true, false) => format!(
                "a charge of {n} pages refused, but {before} locked + {n} is within the \
                 limit of {limit} pages"
            ),
            (false, true) => format!(
                "a charge of {n} pages accepted, but {before} locked + {n} exceeds the \
                 limit of {limit} pages"
            ),
        };
        if shared {
            self.report.notes.push(PinFinding {
                event_index: index,
                iopt_pages: p.iopt_pages,
                what,
            });
        } else {
            self.finding(index, p.iopt_pages, what);
        }
    }

    /// Events were lost: what the model holds may be missing calls. Start over from what
    /// the next calls imply.
    pub(super) fn lost(&mut self) {
        self.pages.clear();
    }

    fn finding(&mut self, index: u64, pages: KernelPtr, what: String) {
        self.report.findings.push(PinFinding {
            event_index: index,
            iopt_pages: pages,
            what,
        });
    }

    pub(super) fn finish(mut self) -> Option<PinsReport> {
        if !self.seen {
            return None;
        }
        for st in self.pages.values().filter(|st| st.charged > 0) {
            *self.report.pinned_at_end.entry(st.mode.name()).or_default() += st.charged;
        }
        Some(self.report)
    }
}
