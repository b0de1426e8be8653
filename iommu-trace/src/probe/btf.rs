//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets,
//! enum values and function parameter names, which is all the probe plan needs.
//!
//! Format: Documentation/bpf/btf.rst (struct btf_header, struct btf_type and the per-kind
//! trailers). Written here rather than taken from a crate: aya-obj keeps its BTF types
//! crate-private, and the other maintained reader is LGPL.

use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
}

const BTF_MAGIC: u16 = 0xeb9f;

// BTF_KIND_* (include/uapi/linux/btf.h)
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Clone, Debug)]
enum Type {
    Struct {
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        values: Vec<(String, i64)>,
    },
    /// typedef, const, volatile, restrict, type tag: points at another type.
    Alias(u32),
    Func {
        proto: u32,
    },
    FuncProto {
        params: Vec<String>,
    },
    Int {
        size: u32,
    },
    Ptr {
        to: u32,
    },
    Other {
        size: u32,
    },
}

/// A struct type of this BTF, by type id (see [`Btf::struct_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StructRef(u32);

/// A member of a struct found by path, with its position relative to the outer struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Byte offset of the storage unit holding the member.
    pub byte_offset: u32,
    /// Size in bytes of the member's type (for a bitfield: of its storage type).
    pub size: u32,
    /// For a bitfield: the bit position inside the byte at `byte_offset` and its width.
    pub bit_shift: u32,
    pub bit_width: u32,
}

/// Parsed kernel BTF.
pub struct Btf {
    types: Vec<Type>,
    names: Vec<String>,
    by_name: HashMap<String, Vec<u32>>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let v = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| BtfError::Malformed(format!("type data ends at {}", self.pos)))?;
        self.pos += 4;
        Ok(u32::from_le_bytes(v.try_into().expect("4 bytes")))
    }
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Self::from_file("/sys/kernel/btf/vmlinux")
    }

    pub fn from_file(path: &str) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let hdr = |off: usize| -> Result<u32, BtfError> {
            data.get(off..off + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .ok_or_else(|| BtfError::Malformed("short header".into()))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
            return Err(BtfError::Malformed(
                "bad magic (not little-endian BTF)".into(),
            ));
        }
        let hdr_len = hdr(4)? as usize;
        let (type_off, type_len) = (hdr(8)? as usize, hdr(12)? as usize);
        let (str_off, str_len) = (hdr(16)? as usize, hdr(20)? as usize);
        let types_bytes = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| BtfError::Malformed("type section out of bounds".into()))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?;
        let string_at = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or(&[]);
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };

        // Type id 0 is void.
        let mut types = vec![Type::Other { size: 0 }];
        let mut names = vec![String::new()];
        let mut r = Reader {
            b: types_bytes,
            pos: 0,
        };
        while r.pos < types_bytes.len() {
            let name = string_at(r.u32()?);
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31;
            let ty = match kind {
                KIND_INT => {
                    r.u32()?;
                    Type::Int { size: size_or_type }
                }
                KIND_ARRAY => {
                    let elem = r.u32()?;
                    r.u32()?;
                    let n = r.u32()?;
                    // Size resolved lazily is not needed: arrays are only skipped over.
                    let _ = elem;
                    Type::Other { size: n }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let mname = string_at(r.u32()?);
                        let type_id = r.u32()?;
                        let off = r.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag == 1 {
                            (off & 0xff_ffff, off >> 24)
                        } else {
                            (off, 0)
                        };
                        members.push(Member {
                            name: mname,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    Type::Struct {
                        size: size_or_type,
                        members,
                    }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let n = string_at(r.u32()?);
                        let v = r.u32()? as i32 as i64;
                        values.push((n, v));
                    }
                    Type::Enum { values }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        let n = string_at(r.u32()?);
                        let lo = r.u32()? as u64;
                        let hi = r.u32()? as u64;
                        values.push((n, (hi << 32 | lo) as i64));
                    }
                    Type::Enum { values }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias(size_or_type)
                }
                KIND_FUNC => Type::Func {
                    proto: size_or_type,
                },
                KIND_FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen as usize);
                    for _ in 0..vlen {
                        params.push(string_at(r.u32()?));
                        r.u32()?;
                    }
                    Type::FuncProto { params }
                }
                KIND_VAR | KIND_DECL_TAG => {
                    r.u32()?;
                    Type::Other { size: 0 }
                }
                KIND_DATASEC => {
                    for _ in 0..vlen * 3 {
                        r.u32()?;
                    }
                    Type::Other { size: 0 }
                }
                // PTR, FWD, FLOAT: no trailer.
                2 => Type::Ptr { to: size_or_type },
                7 | 16 => Type::Other { size: size_or_type },
                other => return Err(BtfError::Malformed(format!("unknown BTF kind {other}"))),
            };
            types.push(ty);
            names.push(name);
        }
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, n) in names.iter().enumerate() {
            if !n.is_empty() {
                by_name.entry(n.clone()).or_default().push(id as u32);
            }
        }
        Ok(Btf {
            types,
            names,
            by_name,
        })
    }

    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            match self.types.get(id as usize)? {
                Type::Alias(next) => id = *next,
                t => return Some(t),
            }
        }
        None
    }

    fn type_size(&self, id: u32) -> u32 {
        match self.resolve(id) {
            Some(Type::Struct { size, .. }) | Some(Type::Int { size }) => *size,
            Some(Type::Enum { .. }) => 4,
            Some(Type::Other { size }) => *size,
            Some(Type::Ptr { .. }) => 8,
            _ => 0,
        }
    }

    fn struct_id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().copied().find(|&id| {
            matches!(self.types.get(id as usize), Some(Type::Struct { members, .. }) if !members.is_empty())
        })
    }

    /// The size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.struct_id(name).map(|id| self.type_size(id))
    }

    /// Finds `path` (dot-separated member names, e.g. `geometry.aperture_start`) in struct
    /// `strukt`, looking through anonymous struct and union members as C does.
    pub fn member(&self, strukt: &str, path: &str) -> Option<MemberInfo> {
        self.member_of(StructRef(self.struct_id(strukt)?), path)
    }

    /// The struct named `name` that has member `marker` (anonymous members searched):
    /// two drivers may define structs of one name (arm-smmu and arm-smmu-v3 both have a
    /// `struct arm_smmu_domain` and a `struct arm_smmu_device`, both in vmlinux).
    pub fn struct_with(&self, name: &str, marker: &str) -> Option<StructRef> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .filter(|&id| matches!(self.types.get(id as usize), Some(Type::Struct { .. })))
            .find(|&id| self.find_member(id, marker).is_some())
            .map(StructRef)
    }

    /// The struct that member `pointer` of `s` points to, with the pointer's position: by
    /// the pointer's own type, never by name.
    pub fn pointee(&self, s: StructRef, pointer: &str) -> Option<(MemberInfo, StructRef)> {
        let (off, m) = self.find_member(s.0, pointer)?;
        let Some(Type::Ptr { to }) = self.resolve(m.type_id) else {
            return None;
        };
        let mut to = *to;
        while let Some(Type::Alias(next)) = self.types.get(to as usize) {
            to = *next;
        }
        matches!(self.types.get(to as usize), Some(Type::Struct { .. })).then_some((
            MemberInfo {
                byte_offset: off / 8,
                size: 8,
                bit_shift: 0,
                bit_width: 0,
            },
            StructRef(to),
        ))
    }

    /// Like [`member`](Btf::member), in a struct already found.
    pub fn member_of(&self, s: StructRef, path: &str) -> Option<MemberInfo> {
        let mut id = s.0;
        let mut bits = 0u32;
        let mut found = None;
        for part in path.split('.') {
            let (off, m) = self.find_member(id, part)?;
            bits += off;
            id = m.type_id;
            found = Some(m);
        }
        let m = found?;
        if m.bitfield_size > 0 {
            Some(MemberInfo {
                byte_offset: bits / 8,
                size: 1,
                bit_shift: bits % 8,
                bit_width: m.bitfield_size,
            })
        } else {
            Some(MemberInfo {
                byte_offset: bits / 8,
                size: self.type_size(m.type_id),
                bit_shift: 0,
                bit_width: 0,
            })
        }
    }

    /// (bit offset, member) of `name` in struct `id`, searching anonymous members.
    fn find_member(&self, id: u32, name: &str) -> Option<(u32, Member)> {
        let Some(Type::Struct { members, .. }) = self.resolve(id) else {
            return None;
        };
        for m in members {
            if m.name == name {
                return Some((m.bit_offset, m.clone()));
            }
        }
        for m in members.iter().filter(|m| m.name.is_empty()) {
            if let Some((off, inner)) = self.find_member(m.type_id, name) {
                return Some((m.bit_offset + off, inner));
            }
        }
        None
    }

    /// The enumerators of the enum named `name`, in declaration order.
    pub fn enum_values(&self, name: &str) -> Option<&[(String, i64)]> {
        self.by_name
            .get(name)?
            .iter()
            .find_map(|&id| match self.types.get(id as usize)? {
                Type::Enum { values } => Some(values.as_slice()),
                _ => None,
            })
    }

    /// The value of enumerator `name` in any enum.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.types.iter().find_map(|t| match t {
            Type::Enum { values } => values.iter().find(|(n, _)| n == name).map(|(_, v)| *v),
            _ => None,
        })
    }

    /// Parameter names of function `name`, if it has a BTF FUNC record (i.e. it exists as a
    /// function the kernel can attach to, though it may still be inlined at some call sites).
    pub fn func_params(&self, name: &str) -> Option<Vec<String>> {
        self.by_name.get(name)?.iter().find_map(|&id| {
            let Type::Func { proto } = self.types.get(id as usize)? else {
                return None;
            };
            match self.types.get(*proto as usize)? {
                Type::FuncProto { params } => Some(params.clone()),
                _ => None,
            }
        })
    }

    /// Number of types, for reports.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.len() <= 1
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a tiny BTF blob by hand: enough to test the reader without a kernel.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn w(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_le_bytes());
        }
        fn head(&mut self, name: &str, kind: u32, vlen: u32, flag: u32, st: u32) -> u32 {
            let n = self.s(name);
            self.w(n);
            self.w(kind << 24 | flag << 31 | vlen);
            self.w(st);
            self.next_id += 1;
            self.next_id - 1
        }
        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.head(name, KIND_INT, 0, 0, size);
            self.w(size * 8);
            id
        }
        /// members: (name, type, bit offset, bitfield size)
        pub(crate) fn strukt(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let flag = members.iter().any(|m| m.3 > 0) as u32;
            let id = self.head(name, KIND_STRUCT, members.len() as u32, flag, size);
            for (n, t, off, bits) in members {
                let n = self.s(n);
                self.w(n);
                self.w(*t);
                self.w(if flag == 1 { bits << 24 | off } else { *off });
            }
            id
        }
        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.head("", 2, 0, 0, to)
        }
        pub(crate) fn enumm(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let id = self.head(name, KIND_ENUM, values.len() as u32, 0, 4);
            for (n, v) in values {
                let n = self.s(n);
                self.w(n);
                self.w(*v as u32);
            }
            id
        }
        pub(crate) fn func(&mut self, name: &str, params: &[&str]) -> u32 {
            let proto = self.head("", KIND_FUNC_PROTO, params.len() as u32, 0, 0);
            for p in params {
                let n = self.s(p);
                self.w(n);
                self.w(0);
            }
            self.head(name, KIND_FUNC, 0, 0, proto)
        }
        pub(crate) fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            out.extend_from_slice(&24u32.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend(self.types);
            out.extend(self.strings);
            out
        }
    }

    #[test]
    fn reads_members_through_anonymous_unions_and_bitfields() {
        let mut b = Builder::new();
        let u64t = b.int("u64", 8);
        let intt = b.int("int", 4);
        let u8t = b.int("u8", 1);
        let geom = b.strukt(
            "iommu_domain_geometry",
            16,
            &[
                ("aperture_start", u64t, 0, 0),
                ("aperture_end", u64t, 64, 0),
            ],
        );
        let dom = b.strukt(
            "iommu_domain",
            40,
            &[
                ("type", intt, 0, 0),
                ("pgsize_bitmap", u64t, 64, 0),
                ("geometry", geom, 128, 0),
            ],
        );
        let anon = b.strukt("", 8, &[("gaw", intt, 0, 0), ("agaw", intt, 32, 0)]);
        b.strukt(
            "dmar_domain",
            100,
            &[
                ("flagsbyte", u8t, 8, 1),
                ("use_first_level", u8t, 11, 1),
                ("", anon, 64, 0),
                ("domain", dom, 256, 0),
            ],
        );
        b.enumm(
            "node_stat_item",
            &[("NR_LRU_BASE", 0), ("NR_SECONDARY_PAGETABLE", 41)],
        );
        b.func(
            "intel_iommu_domain_alloc_user",
            &["dev", "flags", "parent", "user_data"],
        );
        let btf = Btf::parse(&b.build()).expect("parses");

        let ap = btf.member("iommu_domain", "geometry.aperture_end").unwrap();
        assert_eq!((ap.byte_offset, ap.size), (24, 8));
        assert_eq!(btf.member("dmar_domain", "agaw").unwrap().byte_offset, 12);
        assert_eq!(btf.member("dmar_domain", "domain").unwrap().byte_offset, 32);
        let ufl = btf.member("dmar_domain", "use_first_level").unwrap();
        assert_eq!((ufl.byte_offset, ufl.bit_shift, ufl.bit_width), (1, 3, 1));
        assert_eq!(btf.member("dmar_domain", "nope"), None);
        assert_eq!(btf.member("no_such_struct", "x"), None);
        assert_eq!(btf.enum_value("NR_SECONDARY_PAGETABLE"), Some(41));
        assert_eq!(
            btf.func_params("intel_iommu_domain_alloc_user").unwrap(),
            vec!["dev", "flags", "parent", "user_data"]
        );
        assert_eq!(btf.func_params("iommu_map"), None);
    }

    #[test]
    fn refuses_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        let mut blob = Builder::new();
        blob.int("int", 4);
        let mut bytes = blob.build();
        bytes.truncate(30);
        assert!(Btf::parse(&bytes).is_err());
    }
}
