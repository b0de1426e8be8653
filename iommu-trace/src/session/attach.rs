//! What the kernel said when the tracer attached the plan: the attachments it refused, and
//! the probe status every front end shows (one derivation, live or from a capture).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::plan::{Attachment, ProgramKind};

/// What happened after the kernel refused an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Fallback {
    /// There was no fallback: the symbol records nothing.
    None,
    /// The fallback attached (kprobes for a refused trampoline): the symbol records.
    Attached { program_type: ProgramKind },
    /// The fallback was refused too.
    Failed { error: String },
}

/// An attachment of the plan that the kernel refused at attach time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub symbol: String,
    /// The program kind refused (`None` when read from an old capture that did not say).
    pub program_type: Option<ProgramKind>,
    /// The loader's or the kernel's error.
    pub error: String,
    pub fallback: Fallback,
}

impl Refusal {
    /// Reads the text that format-1 captures stored as an attach failure's `reason`
    /// (written by the 0.1 tracer as "T refused (E); using F", "E; fallback: E2" or "E").
    pub fn from_v1_text(symbol: &str, reason: &str) -> Refusal {
        let mut r = Refusal {
            symbol: symbol.to_string(),
            program_type: None,
            error: reason.to_string(),
            fallback: Fallback::None,
        };
        if let Some((head, using)) = reason.rsplit_once("; using ") {
            if let Some(fb) = ProgramKind::from_name(using) {
                r.fallback = Fallback::Attached { program_type: fb };
                r.error = head.to_string();
                if let Some((kind, rest)) = head.split_once(" refused (") {
                    if let (Some(k), Some(error)) =
                        (ProgramKind::from_name(kind), rest.strip_suffix(')'))
                    {
                        r.program_type = Some(k);
                        r.error = error.to_string();
                    }
                }
            }
        } else if let Some((error, fb)) = reason.split_once("; fallback: ") {
            r.error = error.to_string();
            r.fallback = Fallback::Failed {
                error: fb.to_string(),
            };
        }
        r
    }
}

impl fmt::Display for Refusal {
    /// The reason, as warnings print it: "T refused (E); using F", "E; fallback: E2", "E".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.fallback, self.program_type) {
            (Fallback::Attached { program_type: fb }, Some(kind)) => {
                write!(f, "{kind} refused ({}); using {fb}", self.error)
            }
            (Fallback::Attached { program_type: fb }, None) => {
                write!(f, "{}; using {fb}", self.error)
            }
            (Fallback::Failed { error }, _) => write!(f, "{}; fallback: {error}", self.error),
            (Fallback::None, _) => f.write_str(&self.error),
        }
    }
}

/// One planned attachment of a logical probe point, and whether it records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    pub point: String,
    /// Empty when the point has nothing to attach on this kernel.
    pub symbol: String,
    /// The program kind that records (the fallback's when the first choice was refused);
    /// `None` when the point has nothing to attach.
    pub program_type: Option<ProgramKind>,
    pub attached: bool,
}

/// The program kind recording for `a`, or `None` when the kernel refused it for good.
pub fn recording_kind(a: &Attachment, refused: &[Refusal]) -> Option<ProgramKind> {
    match refused.iter().find(|r| r.symbol == a.symbol) {
        None => Some(a.program_type),
        Some(Refusal {
            fallback: Fallback::Attached { program_type },
            ..
        }) => Some(*program_type),
        Some(_) => None,
    }
}

/// One eBPF program's own cost, as the kernel accounts it (BPF_ENABLE_STATS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRunStats {
    pub program: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_attach_failures_read_as_refusals() {
        let r = Refusal::from_v1_text(
            "iommu_map",
            "fentry+fexit refused (attaching map_fentry: EINVAL); using kprobe+kretprobe",
        );
        assert_eq!(r.program_type, Some(ProgramKind::FentryFexit));
        assert_eq!(r.error, "attaching map_fentry: EINVAL");
        assert!(matches!(r.fallback, Fallback::Attached { .. }));
        assert_eq!(
            r.to_string(),
            "fentry+fexit refused (attaching map_fentry: EINVAL); using kprobe+kretprobe"
        );

        let r = Refusal::from_v1_text("iommu_map", "kprobe refused: EBUSY");
        assert_eq!(r.fallback, Fallback::None);
        assert_eq!(r.fallback, Fallback::None);
        assert_eq!(r.to_string(), "kprobe refused: EBUSY");

        let r = Refusal::from_v1_text("iommu_map", "loading map_fentry: E2BIG; fallback: EBUSY");
        assert_eq!(
            r.fallback,
            Fallback::Failed {
                error: "EBUSY".into()
            }
        );
        assert_eq!(r.to_string(), "loading map_fentry: E2BIG; fallback: EBUSY");
    }
}
