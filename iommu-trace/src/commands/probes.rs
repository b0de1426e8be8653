//! `iommu-trace probes`: what this kernel offers, what will attach, what is missing and why.

use std::fmt::Write as _;

use crate::probe::privileges::Missing;
use crate::session::Plan;
use crate::text::printable;

/// The human-readable report. Works without privileges (addresses are then hidden, which
/// does not change what can be attached); `missing`: the capabilities this process lacks
/// to trace.
pub fn report(plan: &Plan, missing: &[Missing]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "kernel {}", printable(&plan.kernel_release));
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|m| m.name).collect();
        let _ = writeln!(
            s,
            "note: this process lacks {}: this report is complete, but tracing needs them (or root)",
            names.join(" and ")
        );
    }
    if !plan.features.is_empty() {
        let _ = writeln!(
            s,
            "page-table behaviour detected: {}",
            plan.features.names().join(", ")
        );
    }
    if plan.object_types.is_empty() {
        let _ = writeln!(
            s,
            "iommufd object types: unknown (no enum iommufd_object_type in the kernel's BTF)"
        );
    } else {
        let names: Vec<_> = plan.object_types.iter().map(|(n, _)| n.as_str()).collect();
        let _ = writeln!(s, "iommufd object types: {}", printable(&names.join(", ")));
        let absent = plan.object_types_absent();
        if !absent.is_empty() {
            let _ = writeln!(s, "    not in this kernel: {}", absent.join(", "));
        }
    }
    for b in &plan.blockers {
        let _ = writeln!(s, "BLOCKED: {b}");
    }
    for p in &plan.points {
        let _ = writeln!(s, "\n{:<18} {:<8} {}", p.point, p.status(), p.what);
        for a in &p.attach {
            let driver = a
                .driver
                .and_then(|d| plan.drivers.get(d))
                .map(|d| format!(" [driver {}]", d.name))
                .unwrap_or_default();
            let fallback = a
                .fallback
                .as_ref()
                .map(|f| format!(" (else {})", f.program_type))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "    + {:<40} {}{}{}",
                printable(&a.symbol),
                a.program_type,
                fallback,
                printable(&driver)
            );
        }
        for g in &p.gaps {
            // Symbols come from the kallsyms file given: print them safely.
            let _ = writeln!(
                s,
                "    - {:<40} {}",
                printable(&g.symbol),
                printable(&g.reason.to_string())
            );
        }
    }
    if !plan.drivers.is_empty() {
        let _ = writeln!(s, "\ndriver fields read from each new domain:");
        for d in &plan.drivers {
            let fields: Vec<_> = d.fields.iter().map(|f| f.name.as_str()).collect();
            let _ = writeln!(s, "    {:<12} {}", d.name, fields.join(", "));
        }
    }
    s
}
