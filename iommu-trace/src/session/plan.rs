//! The probe plan as data: which kernel symbols serve each logical probe point on the traced
//! kernel, with which eBPF programs, and why a candidate is left out. `probe/` computes it;
//! `iommu-trace probes --json` prints it and every capture header records it, so its JSON
//! shape is a stable interface (docs/capture-format.md).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::features::KernelFeatures;

/// The kind of eBPF program pair attached to a symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProgramKind {
    #[serde(rename = "kprobe+kretprobe")]
    KprobeKretprobe,
    #[serde(rename = "kprobe")]
    Kprobe,
    #[serde(rename = "fentry+fexit")]
    FentryFexit,
    #[serde(rename = "fentry")]
    Fentry,
    /// An fexit alone: it sees the arguments and the return value.
    #[serde(rename = "fexit")]
    Fexit,
}

impl ProgramKind {
    pub const ALL: [ProgramKind; 5] = [
        ProgramKind::KprobeKretprobe,
        ProgramKind::Kprobe,
        ProgramKind::FentryFexit,
        ProgramKind::Fentry,
        ProgramKind::Fexit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProgramKind::KprobeKretprobe => "kprobe+kretprobe",
            ProgramKind::Kprobe => "kprobe",
            ProgramKind::FentryFexit => "fentry+fexit",
            ProgramKind::Fentry => "fentry",
            ProgramKind::Fexit => "fexit",
        }
    }

    /// Trampoline programs (fentry/fexit) need BTF to load; kprobes do not.
    pub fn is_trampoline(self) -> bool {
        matches!(
            self,
            ProgramKind::FentryFexit | ProgramKind::Fentry | ProgramKind::Fexit
        )
    }

    pub fn from_name(name: &str) -> Option<ProgramKind> {
        ProgramKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A symbol attached for a logical point.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub symbol: String,
    pub program_type: ProgramKind,
    pub entry_program: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_program: Option<String>,
    /// Index into `Plan::drivers` for driver ops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<usize>,
    /// Address from kallsyms, 0 when hidden (not root).
    #[serde(skip)]
    pub addr: u64,
    /// What to attach instead if this kind of program is refused (kprobes for trampolines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Box<Attachment>>,
}

/// Why a candidate symbol is not in the plan. Its text (`Display`) is what `probes` prints
/// and what the plan's JSON holds; [`GapReason::parse`] reads it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GapReason {
    /// `--deny-symbol`: refused on purpose, to see how a kernel without it degrades.
    Denied,
    /// Not built in, not loaded, or renamed in this version.
    NotInKernel,
    /// Only compiler clones (`.isra.0`, ...) exist, which cannot be targeted.
    Inlined { clones: Vec<String> },
    /// Several functions share the name.
    Ambiguous { count: usize },
    /// BTF shows parameters the probe does not expect.
    UnexpectedSignature {
        actual: Vec<String>,
        expected: Vec<String>,
    },
    /// The page-table statistic the hook watches is not in BTF.
    NoPageTableStat,
    /// The iommu-pages functions exist, but the `struct page` of the address an allocation
    /// returns cannot be computed: the statistics hook serves instead.
    NoLinearMap,
    /// No allocation op of any driver we know is in the kernel.
    NoKnownDriver,
    /// A reason this version does not know (read from a file written by another version).
    Other(String),
}

const DENIED: &str = "refused by --deny-symbol";
const NOT_IN_KERNEL: &str = "not in this kernel (not built in, or renamed in this version)";
const INLINED: (&str, &str) = (
    "inlined: only compiler clones exist (",
    "), which cannot be targeted",
);
const AMBIGUOUS: (&str, &str) = (
    "ambiguous: ",
    " functions share this name, attaching by name would pick one",
);
const SIGNATURE: (&str, &str, &str) = (
    "unexpected signature: BTF has (",
    "), the probe expects (",
    ")",
);
const NO_PT_STAT: &str = "no NR_SECONDARY_PAGETABLE in BTF (kernel older than 6.1 or no BTF)";
const NO_LINEAR_MAP: &str = "not used: the struct page of an allocated address cannot be \
                             computed here (it needs x86-64's page_offset_base and \
                             vmemmap_base in kallsyms, SPARSEMEM_VMEMMAP, and the page and \
                             folio layout in BTF), so the statistics hook serves";
const NO_DRIVER: &str = "no known IOMMU driver op in this kernel (no intel, amd, arm-smmu-v3 \
                         or iommufd selftest driver built in or loaded)";

fn list(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(", ").map(str::to_string).collect()
    }
}

impl GapReason {
    /// Reads back a reason's text (the inverse of `Display`); unknown texts are kept as
    /// `Other`.
    pub fn parse(text: &str) -> GapReason {
        let between = |pre: &str, post: &str| text.strip_prefix(pre)?.strip_suffix(post);
        if text == DENIED {
            GapReason::Denied
        } else if text == NOT_IN_KERNEL {
            GapReason::NotInKernel
        } else if text == NO_PT_STAT {
            GapReason::NoPageTableStat
        } else if text == NO_LINEAR_MAP {
            GapReason::NoLinearMap
        } else if text == NO_DRIVER {
            GapReason::NoKnownDriver
        } else if let Some(clones) = between(INLINED.0, INLINED.1) {
            GapReason::Inlined {
                clones: list(clones),
            }
        } else if let Some(count) = between(AMBIGUOUS.0, AMBIGUOUS.1).and_then(|n| n.parse().ok()) {
            GapReason::Ambiguous { count }
        } else if let Some((actual, expected)) =
            between(SIGNATURE.0, SIGNATURE.2).and_then(|inner| inner.split_once(SIGNATURE.1))
        {
            GapReason::UnexpectedSignature {
                actual: list(actual),
                expected: list(expected),
            }
        } else {
            GapReason::Other(text.to_string())
        }
    }
}

impl fmt::Display for GapReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GapReason::Denied => f.write_str(DENIED),
            GapReason::NotInKernel => f.write_str(NOT_IN_KERNEL),
            GapReason::Inlined { clones } => {
                write!(f, "{}{}{}", INLINED.0, clones.join(", "), INLINED.1)
            }
            GapReason::Ambiguous { count } => write!(f, "{}{count}{}", AMBIGUOUS.0, AMBIGUOUS.1),
            GapReason::UnexpectedSignature { actual, expected } => write!(
                f,
                "{}{}{}{}{}",
                SIGNATURE.0,
                actual.join(", "),
                SIGNATURE.1,
                expected.join(", "),
                SIGNATURE.2
            ),
            GapReason::NoPageTableStat => f.write_str(NO_PT_STAT),
            GapReason::NoLinearMap => f.write_str(NO_LINEAR_MAP),
            GapReason::NoKnownDriver => f.write_str(NO_DRIVER),
            GapReason::Other(text) => f.write_str(text),
        }
    }
}

impl Serialize for GapReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GapReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(GapReason::parse(&String::deserialize(d)?))
    }
}

/// A candidate symbol that will not be attached, and why.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub symbol: String,
    pub reason: GapReason,
}

/// How much of a point the plan can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointStatus {
    /// Every candidate the kernel has is planned.
    Ok,
    /// Something is planned, but a candidate was refused on purpose (`--deny-symbol`).
    Degraded,
    /// Nothing to attach: the point records nothing.
    Missing,
}

impl PointStatus {
    pub fn name(self) -> &'static str {
        match self {
            PointStatus::Ok => "ok",
            PointStatus::Degraded => "degraded",
            PointStatus::Missing => "missing",
        }
    }
}

impl fmt::Display for PointStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The probe point of a page table's top growing (`pt_grow` events): `probe/` plans it, the
/// replay checks growing tables against it where a session recorded it.
pub const TOP_GROWTH_POINT: &str = "pt_grow";

/// One logical probe point and what serves it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PointPlan {
    pub point: String,
    pub what: String,
    pub attach: Vec<Attachment>,
    pub gaps: Vec<Gap>,
}

impl PointPlan {
    pub fn status(&self) -> PointStatus {
        if self.attach.is_empty() {
            PointStatus::Missing
        } else if self.gaps.iter().any(|g| g.reason == GapReason::Denied) {
            PointStatus::Degraded
        } else {
            PointStatus::Ok
        }
    }
}

/// A driver field copied into allocation events, relative to the `iommu_domain` pointer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DriverField {
    pub name: String,
    /// Relative to the domain pointer, or to the pointer at `deref` when set.
    pub offset: i32,
    /// Offset (from the domain pointer) of a pointer to follow first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deref: Option<i32>,
    pub size: u32,
    /// For bitfields: shift and width inside the byte read.
    pub bit_shift: u32,
    pub bit_width: u32,
}

/// A driver whose allocation ops are attached; its index is the event's driver id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DriverInfo {
    pub name: String,
    pub fields: Vec<DriverField>,
}

/// Everything decided about the traced kernel.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub kernel_release: String,
    pub points: Vec<PointPlan>,
    pub drivers: Vec<DriverInfo>,
    /// Offsets and values read from BTF, by name (what went into the eBPF CONFIG).
    pub offsets: Vec<(String, i64)>,
    /// Reasons tracing cannot work at all on this kernel (empty when it can).
    pub blockers: Vec<String>,
    /// Kernel behaviours the reference models must follow, detected from BTF and kallsyms.
    #[serde(default)]
    pub features: KernelFeatures,
    /// The iommufd object types of this kernel with their numbers (`enum
    /// iommufd_object_type`, read from BTF: the numbering differs between kernels), named
    /// as in [`OBJECT_TYPES`]. Empty when the BTF has no such enum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_types: Vec<(String, i64)>,
    /// What each object type's publication records besides its id, slot by slot (what went
    /// into the eBPF CONFIG's `object_refs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_refs: Vec<ObjectRefs>,
    /// Where x86-64's `page_offset_base` and `vmemmap_base` are (kallsyms; 0: hidden or
    /// absent), for the page-table hooks of 6.15+. Never written to a capture or `probes
    /// --json`: a kernel address there would give away the kernel's randomized offset.
    #[serde(skip)]
    pub linear_map_bases: [u64; 2],
}

/// How one reference of a published object is read and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    /// Another object: its id.
    Object,
    /// The `struct iommu_domain` pointer (a HWPT's domain).
    Domain,
    /// A plain value (a vDEVICE's virtual id).
    Value,
}

/// One reference slot: its name, kind and offset from the object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub kind: RefKind,
    pub offset: u32,
}

/// The reference slots of one object type, in slot order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRefs {
    pub object: String,
    pub refs: Vec<ObjectRef>,
}

/// Every iommufd object type iommu-trace knows, by the name it gives it (the kernel's
/// `IOMMUFD_OBJ_*` enumerator, lower case; `IOMMUFD_OBJ_SELFTEST` is the selftest's), in the
/// order the kernels added them (docs/kernel-facts.md §7).
pub const OBJECT_TYPES: &[&str] = &[
    "device",
    "hwpt_paging",
    "hwpt_nested",
    "ioas",
    "access",
    "fault",
    "viommu",
    "vdevice",
    "veventq",
    "hw_queue",
    "selftest",
];

impl Plan {
    /// The name of object type number `value` on this kernel (`unknown` if not in its enum).
    pub fn object_type_name(&self, value: u32) -> &str {
        self.object_types
            .iter()
            .find(|(_, v)| *v == value as i64)
            .map_or("unknown", |(n, _)| n.as_str())
    }

    /// The reference slots recorded for an object type.
    pub fn object_refs_of(&self, object: &str) -> &[ObjectRef] {
        self.object_refs
            .iter()
            .find(|r| r.object == object)
            .map_or(&[], |r| r.refs.as_slice())
    }

    /// Known object types this kernel does not have (empty when its types are unknown).
    pub fn object_types_absent(&self) -> Vec<&'static str> {
        if self.object_types.is_empty() {
            return Vec::new();
        }
        OBJECT_TYPES
            .iter()
            .copied()
            .filter(|t| !self.object_types.iter().any(|(n, _)| n == t))
            .collect()
    }
}

impl Plan {
    pub fn point(&self, name: &str) -> Option<&PointPlan> {
        self.points.iter().find(|p| p.point == name)
    }

    /// Every attachment, in plan order.
    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.points.iter().flat_map(|p| p.attach.iter())
    }
}

/// A probe point that recorded nothing, and why (for the consumers of a capture).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MissingPoint {
    /// The logical probe point (`iommu-trace probes` lists them).
    pub point: String,
    /// Why it recorded nothing.
    pub why: String,
}

impl fmt::Display for MissingPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.point, self.why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The texts are in every capture written so far and in `probes --json`: each must read
    // back as the reason it was written from.
    #[test]
    fn every_reason_reads_back_from_its_text() {
        let reasons = [
            GapReason::Denied,
            GapReason::NotInKernel,
            GapReason::Inlined {
                clones: vec!["f.isra.0".into(), "f.cold".into()],
            },
            GapReason::Ambiguous { count: 2 },
            GapReason::UnexpectedSignature {
                actual: vec!["dev".into(), "user_data".into(), "flags".into()],
                expected: vec!["dev".into(), "flags".into(), "user_data".into()],
            },
            GapReason::NoPageTableStat,
            GapReason::NoLinearMap,
            GapReason::NoKnownDriver,
            GapReason::Other("something new".into()),
        ];
        for r in reasons {
            assert_eq!(GapReason::parse(&r.to_string()), r, "{r}");
        }
    }

    // Texts written by earlier versions, verbatim: they must keep their meaning.
    #[test]
    fn texts_of_earlier_captures_keep_their_meaning() {
        assert_eq!(
            GapReason::parse("refused by --deny-symbol"),
            GapReason::Denied
        );
        assert_eq!(
            GapReason::parse(
                "ambiguous: 2 functions share this name, attaching by name would pick one"
            ),
            GapReason::Ambiguous { count: 2 }
        );
        assert_eq!(
            GapReason::parse("not in this kernel (not built in, or renamed in this version)"),
            GapReason::NotInKernel
        );
    }

    // `probes` lays them out in columns: width and alignment apply.
    #[test]
    fn names_pad_like_strings() {
        assert_eq!(format!("[{:<8}]", PointStatus::Ok), "[ok      ]");
        assert_eq!(format!("[{:>8}]", ProgramKind::Kprobe), "[  kprobe]");
    }

    #[test]
    fn program_kinds_keep_their_names() {
        for k in ProgramKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
            assert_eq!(ProgramKind::from_name(k.name()), Some(k));
        }
    }
}
