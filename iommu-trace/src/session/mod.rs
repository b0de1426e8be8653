//! The tracing session in a kernel-free vocabulary: what was planned on the traced kernel,
//! what the kernel accepted, its page-table features, and its release. `probe/` is the only
//! producer; the capture header records a [`Session`], and `capture/`, `replay/`, `state/`,
//! `export/` and `tui/` read it from here, never from `probe/`. This module imports nothing
//! else from the crate (docs/ARCHITECTURE.md, "What may import what").

mod attach;
mod features;
mod plan;

pub use attach::{recording_kind, Fallback, ProbeStatus, ProgramRunStats, Refusal};
pub use features::KernelFeatures;
pub use plan::{
    Attachment, DriverField, DriverInfo, Gap, GapReason, MissingPoint, ObjectRef, ObjectRefs, Plan,
    PointPlan, PointStatus, ProgramKind, RefKind, OBJECT_TYPES, TOP_GROWTH_POINT,
};

use serde::{Deserialize, Serialize};

/// One tracing session: the plan computed for the traced kernel and the attachments the
/// kernel refused. Live front ends build it at start-up; a capture's header records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub plan: Plan,
    #[serde(default)]
    pub refused: Vec<Refusal>,
    /// Only this process was traced (`--pid`): what other processes did to its objects (a
    /// passed fd closed elsewhere) is not in the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_pid: Option<u32>,
}

impl Session {
    pub fn kernel_release(&self) -> &str {
        &self.plan.kernel_release
    }

    pub fn features(&self) -> &KernelFeatures {
        &self.plan.features
    }

    /// Every planned attachment with whether (and with which program kind) it records.
    pub fn probe_status(&self) -> Vec<ProbeStatus> {
        let mut out = Vec::new();
        for p in &self.plan.points {
            if p.attach.is_empty() {
                out.push(ProbeStatus {
                    point: p.point.clone(),
                    symbol: String::new(),
                    program_type: None,
                    attached: false,
                });
            }
            for a in &p.attach {
                let recording = recording_kind(a, &self.refused);
                out.push(ProbeStatus {
                    point: p.point.clone(),
                    symbol: a.symbol.clone(),
                    program_type: Some(recording.unwrap_or(a.program_type)),
                    attached: recording.is_some(),
                });
            }
        }
        out
    }

    /// Attachments that record (first choice or fallback).
    pub fn attached_count(&self) -> usize {
        self.plan
            .attachments()
            .filter(|a| recording_kind(a, &self.refused).is_some())
            .count()
    }

    /// Probe points that record nothing: none of their symbols was in the plan, or the
    /// kernel refused every attachment (a refusal that fell back to a kprobe still records).
    /// `point` is in the plan and recorded: attached, and not refused.
    pub fn records(&self, point: &str) -> bool {
        self.plan.points.iter().any(|p| p.point == point)
            && self.missing_points().iter().all(|m| m.point != point)
    }

    pub fn missing_points(&self) -> Vec<MissingPoint> {
        let mut out = Vec::new();
        for p in &self.plan.points {
            let why: Vec<String> = if p.attach.is_empty() {
                p.gaps
                    .iter()
                    .map(|g| format!("{}: {}", g.symbol, g.reason))
                    .collect()
            } else if p
                .attach
                .iter()
                .all(|a| recording_kind(a, &self.refused).is_none())
            {
                p.attach
                    .iter()
                    .filter_map(|a| self.refused.iter().find(|r| r.symbol == a.symbol))
                    .map(|r| format!("{}: {r}", r.symbol))
                    .collect()
            } else {
                continue;
            };
            out.push(MissingPoint {
                point: p.point.clone(),
                why: if why.is_empty() {
                    "no candidate symbol".into()
                } else {
                    why.join("; ")
                },
            });
        }
        out
    }
}

/// The running kernel's release (`uname -r`).
pub fn running_kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    // One derivation for every front end: a capture's header and a live tracer give the
    // same status for the same plan and refusals.
    #[test]
    fn probe_status_follows_the_refusals() {
        let att = |symbol: &str, ty: ProgramKind, fallback: Option<Attachment>| Attachment {
            symbol: symbol.into(),
            program_type: ty,
            entry_program: "p".into(),
            exit_program: None,
            driver: None,
            addr: 0,
            fallback: fallback.map(Box::new),
        };
        let point = |name: &str, attach: Vec<Attachment>| PointPlan {
            point: name.into(),
            what: String::new(),
            attach,
            gaps: vec![],
        };
        // From JSON, as a capture header holds it (and robust to fields added later).
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "kernel_release": "6.12",
            "points": [],
            "drivers": [],
            "offsets": [],
            "blockers": [],
        }))
        .expect("a minimal plan");
        let kp = ProgramKind::KprobeKretprobe;
        let plan = Plan {
            points: vec![
                point(
                    "map",
                    vec![att(
                        "iommu_map",
                        ProgramKind::FentryFexit,
                        Some(att("iommu_map", kp, None)),
                    )],
                ),
                point("unmap", vec![att("iommu_unmap", kp, None)]),
                point("free", vec![att("iommu_domain_free", kp, None)]),
                point("pt_pages", vec![]),
            ],
            ..plan
        };
        let refused = vec![
            Refusal::from_v1_text(
                "iommu_map",
                "fentry+fexit refused (EINVAL); using kprobe+kretprobe",
            ),
            Refusal::from_v1_text("iommu_unmap", "attaching failed"),
        ];
        let session = Session {
            plan: plan.clone(),
            refused,
            filter_pid: None,
        };
        let got: Vec<_> = session
            .probe_status()
            .into_iter()
            .map(|p| (p.point, p.symbol, p.program_type, p.attached))
            .collect();
        let s = |x: &str| x.to_string();
        assert_eq!(
            got,
            vec![
                (s("map"), s("iommu_map"), Some(kp), true),
                (s("unmap"), s("iommu_unmap"), Some(kp), false),
                (s("free"), s("iommu_domain_free"), Some(kp), true),
                (s("pt_pages"), s(""), None, false),
            ]
        );
        assert_eq!(session.attached_count(), 2);
        // Nothing refused: every first choice records.
        let clean = Session {
            plan,
            refused: vec![],
            filter_pid: None,
        };
        let status = clean.probe_status();
        assert_eq!(
            (status[0].attached, status[0].program_type),
            (true, Some(ProgramKind::FentryFexit))
        );
        assert_eq!(clean.attached_count(), 3);
    }
}
