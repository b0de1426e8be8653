//! `/proc/kallsyms`: which functions exist in this kernel, where, and how many times.

use std::collections::HashMap;

/// One kallsyms entry of a function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// 0 when kernel pointers are hidden from us (kptr_restrict, not root).
    pub addr: u64,
    /// `T`/`t`: text, global/local.
    pub kind: char,
    pub module: Option<String>,
}

use super::tables::LINEAR_MAP_BASES;

/// Function symbols by name, and the few data symbols the programs read
/// (`LINEAR_MAP_BASES`; data symbols are listed only with CONFIG_KALLSYMS_ALL, as
/// distributions build kernels). Names can repeat
/// (static functions of the same name in different files): an ambiguous name cannot be
/// attached by name.
#[derive(Default)]
pub struct Kallsyms {
    by_name: HashMap<String, Vec<Symbol>>,
    data: HashMap<String, u64>,
}

impl Kallsyms {
    pub fn read() -> std::io::Result<Kallsyms> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    pub fn parse(text: &str) -> Kallsyms {
        let mut by_name: HashMap<String, Vec<Symbol>> = HashMap::new();
        let mut data = HashMap::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let kind = kind.chars().next().unwrap_or('?');
            if matches!(kind, 'D' | 'd') && LINEAR_MAP_BASES.contains(&name) {
                data.insert(name.to_string(), u64::from_str_radix(addr, 16).unwrap_or(0));
                continue;
            }
            if !matches!(kind, 'T' | 't') {
                continue;
            }
            let module = it
                .next()
                .map(|m| m.trim_matches(|c| c == '[' || c == ']').to_string());
            by_name.entry(name.to_string()).or_default().push(Symbol {
                addr: u64::from_str_radix(addr, 16).unwrap_or(0),
                kind,
                module,
            });
        }
        Kallsyms { by_name, data }
    }

    /// Whether one of the data symbols kept is listed (its address may be hidden).
    pub fn has_data(&self, name: &str) -> bool {
        self.data.contains_key(name)
    }

    /// The address of one of the data symbols kept, when listed and visible (not zeroed by
    /// kptr_restrict, as for a user without CAP_SYSLOG).
    pub fn data_addr(&self, name: &str) -> Option<u64> {
        self.data.get(name).copied().filter(|a| *a != 0)
    }

    pub fn get(&self, name: &str) -> &[Symbol] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Out-of-line copies the compiler made (`name.constprop.0`, `name.isra.0`, ...): they
    /// mean the function exists but cannot be targeted by name.
    pub fn clones_of(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.");
        let mut v: Vec<String> = self
            .by_name
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Whether addresses are visible (they are all zero when kptr_restrict hides them).
    pub fn addresses_visible(&self) -> bool {
        self.by_name.values().flatten().any(|s| s.addr != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_functions_modules_and_clones() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T iommu_map\n\
             ffffffff81000100 t intel_iommu_domain_alloc_user\n\
             ffffffff81000200 d some_data\n\
             ffffffff81c83220 D page_offset_base\n\
             ffffffff81000300 t iommu_alloc_pages_node.constprop.0\n\
             ffffffff81000400 t iommu_alloc_pages_node.constprop.0\n\
             ffffffffc0000000 t mock_domain_alloc_user\t[iommufd]\n",
        );
        assert_eq!(k.get("iommu_map")[0].addr, 0xffffffff81000000);
        assert_eq!(k.get("some_data"), &[]);
        assert_eq!(k.data_addr("some_data"), None);
        assert_eq!(k.data_addr("page_offset_base"), Some(0xffffffff81c83220));
        assert_eq!(k.get("page_offset_base"), &[]);
        // Hidden (not root, no CAP_SYSLOG): listed, no address.
        let hidden = Kallsyms::parse("0000000000000000 D vmemmap_base\n");
        assert_eq!(hidden.data_addr("vmemmap_base"), None);
        assert!(hidden.has_data("vmemmap_base"));
        assert!(!k.has_data("some_data"));
        assert_eq!(
            k.get("mock_domain_alloc_user")[0].module.as_deref(),
            Some("iommufd")
        );
        assert_eq!(
            k.clones_of("iommu_alloc_pages_node"),
            vec!["iommu_alloc_pages_node.constprop.0"]
        );
        assert_eq!(k.get("iommu_alloc_pages_node.constprop.0").len(), 2);
        assert!(k.addresses_visible());
        assert!(!Kallsyms::parse("0000000000000000 T iommu_map\n").addresses_visible());
    }
}
