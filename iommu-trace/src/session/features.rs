//! Page-table behaviours of the traced kernel that the reference models must follow.
//! `probe/features.rs` detects them from BTF and kallsyms (never from the version number);
//! in JSON they are a list of names, as `probes --json` has always printed them.

use serde::{Deserialize, Serialize};

/// What the traced kernel's page-table code does (docs/kernel-facts.md §4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct KernelFeatures {
    /// VT-d page tables come from the generic page table (6.19+).
    pub vtd_generic_pt: bool,
    /// The core hands the whole unmap range to the generic page table (7.0+).
    pub generic_pt_whole_range_unmap: bool,
    /// io-pgtable-arm's 7.x rules: stage-2 concatenation only when mandatory, no split of a
    /// partially unmapped block.
    pub io_pgtable_arm_concat_mandatory: bool,
    /// Names this version does not know (from a file written by a newer one), kept as read.
    pub unknown: Vec<String>,
}

const VTD_GENERIC_PT: &str = "vtd_generic_pt";
const WHOLE_RANGE_UNMAP: &str = "generic_pt_whole_range_unmap";
const ARM_CONCAT_MANDATORY: &str = "io_pgtable_arm_concat_mandatory";

impl KernelFeatures {
    /// The names of the features present, in a fixed order.
    pub fn names(&self) -> Vec<String> {
        let known = [
            (self.vtd_generic_pt, VTD_GENERIC_PT),
            (self.generic_pt_whole_range_unmap, WHOLE_RANGE_UNMAP),
            (self.io_pgtable_arm_concat_mandatory, ARM_CONCAT_MANDATORY),
        ];
        known
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| n.to_string())
            .chain(self.unknown.iter().cloned())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }
}

impl From<Vec<String>> for KernelFeatures {
    fn from(names: Vec<String>) -> KernelFeatures {
        let mut f = KernelFeatures::default();
        for n in names {
            match n.as_str() {
                VTD_GENERIC_PT => f.vtd_generic_pt = true,
                WHOLE_RANGE_UNMAP => f.generic_pt_whole_range_unmap = true,
                ARM_CONCAT_MANDATORY => f.io_pgtable_arm_concat_mandatory = true,
                _ => f.unknown.push(n),
            }
        }
        f
    }
}

impl From<KernelFeatures> for Vec<String> {
    fn from(f: KernelFeatures) -> Vec<String> {
        f.names()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_a_list_of_names_in_json() {
        let f = KernelFeatures {
            vtd_generic_pt: true,
            io_pgtable_arm_concat_mandatory: true,
            ..Default::default()
        };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"["vtd_generic_pt","io_pgtable_arm_concat_mandatory"]"#
        );
        let back: KernelFeatures = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        let newer: KernelFeatures = serde_json::from_str(r#"["vtd_generic_pt","amd_v2"]"#).unwrap();
        assert!(newer.vtd_generic_pt);
        assert_eq!(newer.unknown, vec!["amd_v2".to_string()]);
    }
}
