//! The replay's memory bound. The models hold tables in proportion to what a capture maps,
//! so a few bytes of capture (one 128 TiB map at a 4 KiB-aligned address: 2^35 PTEs) could
//! make them take all memory. Every model of one replay (what-if variants included) shares
//! one budget of table memory; an operation that could take the models past it is not
//! replayed, and its domain (or what-if row) is reported as beyond the budget instead.
//!
//! Dense 4 KiB mappings cost a model 64 bytes per 2 MiB mapped (one bit per PTE), so the
//! budget covers 8 TiB mapped that way, and far more with huge pages.

use crate::model::Model;

/// Table memory all models of one replay may hold together.
pub(super) const MODEL_BYTES_BUDGET: u64 = 512 << 20;

/// Levels a page table can have (LPAE and VT-d have at most 5; one more as slack).
const MAX_LEVELS: u32 = 6;

/// The most table memory `model` can add mapping `size` bytes, whatever the layout: with
/// `g` bytes per last-level entry and `n` entries per table, the last level keeps a bit per
/// entry and the upper levels a `u32` (`model/store.rs`). Each level may touch two partial
/// tables more than the range spans, and start a new chunk of tables. A model without
/// tables adds nothing.
pub(super) fn worst_case_bytes(size: u64, model: &Model) -> u64 {
    match model.table_geometry() {
        Some((g, n)) => worst_case_for(size, g, n),
        None => 0,
    }
}

fn worst_case_for(size: u64, g: u64, entries: u64) -> u64 {
    let entries = entries.max(2);
    let (leaf_bytes, upper_bytes) = (entries.div_ceil(8), entries * 4);
    let mut total = 0u64;
    let mut span = g.max(1).saturating_mul(entries);
    for level in 0..MAX_LEVELS {
        let (table, chunk) = if level == 0 {
            (leaf_bytes, 256)
        } else {
            (upper_bytes, 16)
        };
        let tables = (size / span).saturating_add(2 + chunk);
        total = total.saturating_add(tables.saturating_mul(table));
        span = span.saturating_mul(entries);
    }
    total
}

/// What the models of one replay hold.
#[derive(Debug, Default)]
pub(super) struct Budget {
    used: u64,
}

impl Budget {
    /// Would `more` bytes still fit?
    pub(super) fn admits(&self, more: u64) -> bool {
        self.used.saturating_add(more) <= MODEL_BYTES_BUDGET
    }

    /// Runs `op` on `model` and accounts for the memory it took or gave back.
    pub(super) fn run<T>(&mut self, model: &mut Model, op: impl FnOnce(&mut Model) -> T) -> T {
        let before = model.model_bytes();
        let out = op(model);
        self.used = (self.used + model.model_bytes()).saturating_sub(before);
        out
    }

    /// A new model, already built.
    pub(super) fn add(&mut self, model: &Model) {
        self.used = self.used.saturating_add(model.model_bytes());
    }

    /// A model dropped.
    pub(super) fn remove(&mut self, model: &Model) {
        self.used = self.used.saturating_sub(model.model_bytes());
    }

    /// Why `what` was not replayed.
    pub(super) fn refusal(what: &str, worst: u64) -> String {
        format!(
            "{what} could take the models up to {} MiB more, beyond the replay's budget of {} MiB \
             of model tables (replay/budget.rs): not modelled",
            worst.div_ceil(1 << 20),
            MODEL_BYTES_BUDGET >> 20
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_grows_with_the_map_and_shrinks_with_the_granule() {
        let small = worst_case_for(4096, 4096, 512);
        assert!(small < 256 << 10, "{small}");
        // A realistic 1 TiB map fits; 128 TiB at 4 KiB does not (2^35 PTEs: 4 GiB of bits).
        assert!(worst_case_for(1 << 40, 4096, 512) < MODEL_BYTES_BUDGET / 8);
        assert!(worst_case_for(1 << 47, 4096, 512) >= 4 << 30);
        assert!(worst_case_for(u64::MAX, 4096, 512) > MODEL_BYTES_BUDGET);
        // A 64 KiB granule: tables of 8192 entries, fewer of them.
        assert!(worst_case_for(1 << 40, 1 << 16, 8192) < worst_case_for(1 << 40, 4096, 512));
        // The AMDv1 mock's 2 KiB entries: twice the tables of 4 KiB ones.
        assert!(worst_case_for(1 << 47, 2048, 512) >= 8 << 30);
    }

    #[test]
    fn the_account_follows_the_models_memory() {
        let cfg = crate::model::ModelConfig::Vtd(crate::model::VtdConfig {
            levels: 4,
            gaw: 48,
            superpage: 2,
            first_stage: false,
            flavour: crate::model::VtdFlavour::Legacy,
            format: crate::model::vtd::PtFormat::Vtdss,
        });
        let mut b = Budget::default();
        let mut m = cfg.build();
        m.domain_alloc(&mut crate::model::PageLog::new());
        b.add(&m);
        let mut log = crate::model::PageLog::new();
        let worst = worst_case_bytes(64 << 20, &m);
        b.run(&mut m, |m| m.map(0, 0x1000, 64 << 20, &mut log))
            .expect("a 64 MiB map");
        assert!(b.used <= worst + 4096, "{} > {worst}", b.used);
        assert_eq!(b.used, m.model_bytes());
        assert!(b.used > 0);
        b.remove(&m);
        assert_eq!(b.used, 0);
    }
}
