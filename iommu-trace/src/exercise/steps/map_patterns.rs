//! IOAS map/unmap patterns: 4K singles, runs, adjacent areas and partial unmaps, a full 2M
//! leaf table, 2M hugetlb areas, the benchmark loop, and the maps around domain teardown.

use std::time::Instant;

use libc::{EEXIST, ENOENT};
use serde_json::json;

use super::{step, Runner, StepExt, RW};
use super::{ADJ_AREAS, ADJ_PAGES, FULL_PAGES, IOVA_ADJ, IOVA_FULL, IOVA_HUGE, IOVA_LEFTOVER};
use super::{IOVA_LOOP, IOVA_RUN, IOVA_SINGLE, LEFTOVER_PAGES, RUN_PAGES};
use crate::exercise::report::{LoopResult, StepGroup};
use crate::exercise::sys::{errno_name, ioctl, Mapping, HUGE_2M, PAGE_4K};
use crate::exercise::uapi::*;

impl Runner<'_> {
    /// Unmap-all with the domains still there, then one more area that the domains will
    /// still hold when they are destroyed (exercising `iopt_table_remove_domain`).
    pub(super) fn teardown_maps_start(&mut self, prefix: &str, ioas: u32) {
        self.unmap_all(&format!("{prefix}unmap_all"), ioas);
        if self.on(StepGroup::Map) {
            let va = self.pages(LEFTOVER_PAGES);
            let base = self.base();
            self.map(
                &format!("{prefix}map_left_for_destroy"),
                StepGroup::Map,
                ioas,
                va,
                LEFTOVER_PAGES * PAGE_4K,
                base + IOVA_LEFTOVER,
                0,
            );
        }
    }

    /// After the domains are gone: unmap what is left in the IOAS (no page tables touched).
    pub(super) fn teardown_maps_end(&mut self, prefix: &str, ioas: u32) {
        if self.ledger.ioas_live_bytes(ioas) > 0 {
            self.unmap_all(&format!("{prefix}unmap_all_without_domains"), ioas);
        }
    }

    pub(super) fn patterns_4k(&mut self, p: &str, ioas: u32) {
        let b = self.base();
        let g = StepGroup::Map;
        let neg = self.on(StepGroup::Negative);
        let n = |s: &str| format!("{p}{s}");

        // Single page: map, whole unmap.
        let va = self.pages(1);
        self.map(
            &n("map_4k_single"),
            g,
            ioas,
            va,
            PAGE_4K,
            b + IOVA_SINGLE,
            0,
        );
        self.unmap(
            &n("unmap_4k_single"),
            g,
            ioas,
            b + IOVA_SINGLE,
            PAGE_4K,
            0,
            Some(PAGE_4K),
        );

        // A run of 4K pages in one area.
        let run = RUN_PAGES * PAGE_4K;
        let va = self.pages(RUN_PAGES);
        self.map(&n("map_4k_run"), g, ioas, va, run, b + IOVA_RUN, 0);
        if neg {
            let va = self.pages(1);
            self.map(
                &n("map_overlapping_eexist"),
                StepGroup::Negative,
                ioas,
                va,
                PAGE_4K,
                b + IOVA_RUN + PAGE_4K,
                EEXIST,
            );
            self.unmap(
                &n("unmap_inside_area_enoent"),
                StepGroup::Negative,
                ioas,
                b + IOVA_RUN + PAGE_4K,
                PAGE_4K,
                ENOENT,
                None,
            );
        }

        // Adjacent areas: unmapping some of them is a partial unmap of the page table.
        let area = ADJ_PAGES * PAGE_4K;
        for i in 0..ADJ_AREAS {
            let va = self.pages(ADJ_PAGES);
            self.map(
                &n(&format!("map_adjacent_area_{i}")),
                g,
                ioas,
                va,
                area,
                b + IOVA_ADJ + i * area,
                0,
            );
        }
        self.unmap(
            &n("unmap_adjacent_areas_2_to_5"),
            g,
            ioas,
            b + IOVA_ADJ + 2 * area,
            4 * area,
            0,
            Some(4 * area),
        );
        if neg {
            // Starts inside area 0: the first area found straddles the start, so nothing
            // is unmapped (io_pagetable.c iopt_unmap_iova_range).
            self.unmap(
                &n("unmap_straddling_area_enoent"),
                StepGroup::Negative,
                ioas,
                b + IOVA_ADJ + PAGE_4K,
                area,
                ENOENT,
                None,
            );
        }
        self.unmap(
            &n("unmap_across_areas_with_hole"),
            g,
            ioas,
            b + IOVA_ADJ,
            ADJ_AREAS * area,
            0,
            Some(4 * area),
        );

        // 512 4K pages filling one 2M-aligned leaf table, unmapped whole.
        let full = FULL_PAGES * PAGE_4K;
        let va = self.pages(FULL_PAGES);
        self.map(&n("map_4k_full_table"), g, ioas, va, full, b + IOVA_FULL, 0);
        self.unmap(
            &n("unmap_4k_full_table"),
            g,
            ioas,
            b + IOVA_FULL,
            full,
            0,
            Some(full),
        );

        self.unmap(&n("unmap_4k_run"), g, ioas, b + IOVA_RUN, run, 0, Some(run));
        if neg {
            self.unmap(
                &n("unmap_nothing_enoent"),
                StepGroup::Negative,
                ioas,
                b + IOVA_RUN,
                run,
                ENOENT,
                None,
            );
        }
    }

    pub(super) fn patterns_huge(&mut self, p: &str, ioas: u32) {
        let Some(hva) = self.huge_buffer() else {
            return;
        };
        let b = self.base() + IOVA_HUGE;
        let g = StepGroup::Huge;
        let n = |s: &str| format!("{p}{s}");
        // Two 2M-aligned, physically contiguous 2M areas (superpage candidates).
        self.map(&n("map_huge_2m_0"), g, ioas, Some(hva), HUGE_2M, b, 0);
        self.map(
            &n("map_huge_2m_1"),
            g,
            ioas,
            Some(hva + HUGE_2M),
            HUGE_2M,
            b + HUGE_2M,
            0,
        );
        self.unmap(
            &n("unmap_huge_2m_1"),
            g,
            ioas,
            b + HUGE_2M,
            HUGE_2M,
            0,
            Some(HUGE_2M),
        );
        // 4K pages where the second 2M page was.
        let va = self.pages(16);
        self.map(
            &n("map_4k_in_former_huge"),
            g,
            ioas,
            va,
            16 * PAGE_4K,
            b + HUGE_2M,
            0,
        );
        self.unmap(
            &n("unmap_across_huge_and_4k"),
            g,
            ioas,
            b,
            2 * HUGE_2M,
            0,
            Some(HUGE_2M + 16 * PAGE_4K),
        );
    }

    /// One page at 2^39 and one at 2^48 above the base, where a table that starts with 3
    /// levels (AMD io-pgtable v1, 6.12) must grow its top twice: each map expected to
    /// succeed where the IOAS allows the IOVA (IOMMU_IOAS_IOVA_RANGES: every domain's
    /// aperture), EINVAL where not (a reserved range, `iopt_check_iova`); unmapped at once.
    pub(super) fn patterns_beyond_the_table(&mut self, p: &str, ioas: u32) {
        let ranges = self.allowed_iovas(ioas);
        for (what, iova) in [("2e39", 1u64 << 39), ("2e48", 1u64 << 48)] {
            let iova = iova + self.base() + IOVA_SINGLE;
            let inside = ranges
                .iter()
                .any(|&(start, last)| start <= iova && iova + PAGE_4K - 1 <= last);
            let va = self.pages(1);
            let name = format!("{p}map_4k_at_{what}");
            let expected = if inside { 0 } else { libc::EINVAL };
            if self.map(&name, StepGroup::Map, ioas, va, PAGE_4K, iova, expected) {
                let name = format!("{p}unmap_4k_at_{what}");
                self.unmap(&name, StepGroup::Map, ioas, iova, PAGE_4K, 0, Some(PAGE_4K));
            }
        }
    }

    /// IOMMU_IOAS_IOVA_RANGES: the IOVA ranges (inclusive) the IOAS allows now.
    fn allowed_iovas(&mut self, ioas: u32) -> Vec<(u64, u64)> {
        let mut ranges = [[0u64; 2]; 16];
        let mut cmd = IommuIoasIovaRanges {
            size: size32::<IommuIoasIovaRanges>(),
            ioas_id: ioas,
            num_iovas: ranges.len() as u32,
            allowed_iovas: ranges.as_mut_ptr() as u64,
            ..Default::default()
        };
        let e = ioctl(self.iommufd, IOMMU_IOAS_IOVA_RANGES, &mut cmd);
        let n = (cmd.num_iovas as usize).min(ranges.len());
        self.record(
            step(
                "ioas_iova_ranges",
                StepGroup::Map,
                "IOMMU_IOAS_IOVA_RANGES",
                Some(IOMMU_IOAS_IOVA_RANGES),
            )
            .params(json!({ "ioas_id": ioas }))
            .errno(e)
            .expect(0)
            .out("num_iovas", n as u64)
            .note(
                ranges[..n]
                    .iter()
                    .map(|r| format!("{:#x}..={:#x}", r[0], r[1]))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        );
        if e != 0 {
            return Vec::new();
        }
        ranges[..n].iter().map(|r| (r[0], r[1])).collect()
    }

    pub(super) fn map_loop(&mut self, p: &str, ioas: u32) {
        let iterations = self.opts.loop_iterations;
        let len = u64::from(self.opts.loop_pages) * PAGE_4K;
        let iova = self.base() + IOVA_LOOP;
        let name = format!("{p}map_unmap_loop");
        let loop_step = || {
            step(
                &name,
                StepGroup::Loop,
                "IOMMU_IOAS_MAP+IOMMU_IOAS_UNMAP",
                None,
            )
        };
        // Its own buffer, pages scattered: every run maps them the same way.
        let buf = match Mapping::anon_4k_scattered(len as usize) {
            Ok(b) => b,
            Err(e) => {
                let skipped = format!("skipped: no user memory ({})", errno_name(e));
                self.record(loop_step().note(skipped));
                return;
            }
        };
        let va = buf.addr(0);
        let fd = self.iommufd;
        let (mut map_err, mut unmap_err, mut first) = (0u64, 0u64, None);
        let start = Instant::now();
        for _ in 0..iterations {
            let mut m = IommuIoasMap {
                size: size32::<IommuIoasMap>(),
                flags: IOMMU_IOAS_MAP_FIXED_IOVA | RW,
                ioas_id: ioas,
                user_va: va,
                length: len,
                iova,
                ..Default::default()
            };
            let e = ioctl(fd, IOMMU_IOAS_MAP, &mut m);
            if e != 0 {
                map_err += 1;
                first.get_or_insert(e);
            }
            let mut u = IommuIoasUnmap {
                size: size32::<IommuIoasUnmap>(),
                ioas_id: ioas,
                iova,
                length: len,
            };
            let e = ioctl(fd, IOMMU_IOAS_UNMAP, &mut u);
            if e != 0 || u.length != len {
                unmap_err += 1;
                first.get_or_insert(if e != 0 { e } else { libc::EIO });
            }
        }
        let elapsed = start.elapsed();
        let ops = 2 * iterations;
        let secs = elapsed.as_secs_f64();
        let domains = self.ledger.domains_in(ioas);
        self.ledger.map_n(ioas, len, iterations - map_err, map_err);
        self.ledger
            .unmap_n(ioas, len, iterations - unmap_err, unmap_err);
        let res = LoopResult {
            ioas_id: ioas,
            iterations,
            bytes_per_map: len,
            iova,
            ops,
            map_errors: map_err,
            unmap_errors: unmap_err,
            first_errno: first,
            elapsed_ns: elapsed.as_nanos() as u64,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            domains_reached: domains,
        };
        let e = first.unwrap_or(0);
        self.record(
            loop_step()
                .params(json!({
                    "ioas_id": ioas,
                    "iterations": iterations,
                    "length": len,
                    "iova": iova,
                    "user_va": va,
                }))
                .errno(e)
                .expect(0)
                .out("ops", ops)
                .out("map_errors", map_err)
                .out("unmap_errors", unmap_err)
                .out("elapsed_ns", res.elapsed_ns)
                .out("domains_reached", domains.into()),
        );
        log::info!(
            "exercise loop: {iterations} x map+unmap of {len} bytes into {domains} domain(s) in \
             {:.3} s = {:.0} ops/s",
            secs,
            res.ops_per_sec
        );
        self.report.loop_result = Some(res);
    }
}
