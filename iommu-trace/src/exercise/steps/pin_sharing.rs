//! How pins are shared and counted (docs/kernel-facts.md §8.1), with a memory sample after
//! each phase for the VM check to reconcile with the capture: one buffer mapped by two
//! IOAS_MAPs (two `iopt_pages`: pinned and accounted twice), an IOAS_COPY of one of them
//! (the copy shares its `iopt_pages`: nothing new pinned), on 7.x an IOAS_MAP_FILE of a
//! memfd; then the copy unmapped (its pages stay pinned for the original) and the rest.

use super::{Runner, PAGE_4K};

/// Where this step maps: between the adjacent areas and the full table (mod.rs), 64 KiB
/// apart.
pub(super) const IOVA_PIN_FIRST: u64 = 0x0030_0000;
const IOVA_PIN_AGAIN: u64 = IOVA_PIN_FIRST + 0x1_0000;
const IOVA_PIN_COPY: u64 = IOVA_PIN_FIRST + 0x2_0000;
const IOVA_PIN_FILE: u64 = IOVA_PIN_FIRST + 0x3_0000;
#[cfg(test)]
pub(super) const PIN_SPAN: u64 = 0x4_0000;
const PIN_PAGES: u64 = 4;

impl Runner<'_> {
    pub(super) fn pin_sharing(&mut self, prefix: &str, ioas: u32) {
        let (base, len) = (self.base(), PIN_PAGES * PAGE_4K);
        let name = |s: &str| format!("{prefix}pin_{s}");
        let Some(va) = self.pages(PIN_PAGES) else {
            return;
        };
        let g = crate::exercise::report::StepGroup::Map;
        self.sample_memory("pin_before");
        let first = self.map(
            &name("map_buffer"),
            g,
            ioas,
            Some(va),
            len,
            base + IOVA_PIN_FIRST,
            0,
        );
        let again = self.map(
            &name("map_same_buffer_again"),
            g,
            ioas,
            Some(va),
            len,
            base + IOVA_PIN_AGAIN,
            0,
        );
        self.sample_memory("pin_one_buffer_mapped_twice");
        let copied = first
            && self.copy(
                &name("copy"),
                ioas,
                base + IOVA_PIN_FIRST,
                base + IOVA_PIN_COPY,
                len,
            );
        self.sample_memory("pin_copied");
        let file = self.map_memfd(&name("map_file_memfd"), ioas, len, base + IOVA_PIN_FILE, 0);
        self.sample_memory("pin_memfd_mapped");
        for (done, iova, what) in [
            (copied, IOVA_PIN_COPY, "unmap_copy"),
            (first, IOVA_PIN_FIRST, "unmap_buffer"),
            (again, IOVA_PIN_AGAIN, "unmap_buffer_again"),
            (file, IOVA_PIN_FILE, "unmap_file"),
        ] {
            if done {
                self.unmap(&name(what), g, ioas, base + iova, len, 0, Some(len));
                self.sample_memory(&format!("pin_{what}"));
            }
        }
    }
}
