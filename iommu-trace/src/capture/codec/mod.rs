//! Records inside frames: the compact event encoding, with the interning and prediction
//! state that the writer keeps and the reader rebuilds (see the layout in `mod.rs`).

mod decode;
mod encode;
mod varint;

use crate::events::MapOp;

pub(crate) use decode::{Decoded, Decoder};
pub(crate) use encode::{encode_trailer, Encoder};
pub(crate) use varint::Dec;

pub(crate) const TAG_TASK: u8 = 0;
pub(crate) const TAG_PTR: u8 = 1;
pub(crate) const TAG_RESET: u8 = 2;
pub(crate) const TAG_TRAILER: u8 = 3;
const TAG_DOMAIN_ALLOC: u8 = 16;
const TAG_HWPT_ALLOC: u8 = 17;
const TAG_DOMAIN_FREE: u8 = 18;
const TAG_MAP: u8 = 19;
const TAG_UNMAP: u8 = 20;
const TAG_PT_ALLOC: u8 = 21;
const TAG_PT_FREE: u8 = 22;
const TAG_LOST: u8 = 23;
const TAG_OBJECT_ALLOC: u8 = 24;
const TAG_OBJECT_ABORT: u8 = 25;
const TAG_OBJECT_DESTROY: u8 = 26;
const TAG_IOAS_OP: u8 = 27;
const TAG_OPTION: u8 = 28;
const TAG_PIN: u8 = 29;
const TAG_PT_GROW: u8 = 30;

// Flags common to all events.
const SAME_CPU: u8 = 0x01;
const SAME_TASK: u8 = 0x02;
// map / unmap
const M_IOVA_PREDICTED: u8 = 0x04;
const M_DONE_IS_SIZE: u8 = 0x08;
const M_OK: u8 = 0x10;
const M_PADDR_PREDICTED: u8 = 0x20;
const M_SIZE_IN_PAGES: u8 = 0x40;
// pt_alloc / pt_free
const P_CHARGED: u8 = 0x04;
const P_MEMCG_ZERO: u8 = 0x08;
const P_MEMCG_IS_CGROUP: u8 = 0x10;
const P_CAUSE_SHIFT: u8 = 5;
const P_ONE_PAGE: u8 = 0x80;
// domain_alloc / hwpt_alloc
const A_OK: u8 = 0x04;
const A_DATA: u8 = 0x08;
const A_DRIVER_FIELDS: u8 = 0x10;
const A_VIOMMU: u8 = 0x20;
// object_alloc / object_abort
const O_OK: u8 = 0x04;
const O_DOMAIN: u8 = 0x08;
const O_VIRT_ID: u8 = 0x10;
const O_ERRNO: u8 = 0x20;
// ioas op / option / pin: 0x04 = errno 0 (as O_OK)
const I_USER_VA: u8 = 0x08;
const I_FD: u8 = 0x10;
const I_START: u8 = 0x20;
const I_SRC_IOAS: u8 = 0x40;
const I_SRC_IOVA: u8 = 0x80;
const PIN_UID: u8 = 0x08;
const PIN_MM: u8 = 0x10;
const PIN_LIMIT: u8 = 0x20;
/// Most references an object record may hold (the kernel side has 4 slots).
const MAX_OBJECT_REFS: u64 = 16;

const PAGE: u64 = 4096;

/// Table sizes past which the writer emits a reset (the reader refuses bigger tables).
pub(crate) const MAX_TASKS: usize = 1 << 16;
pub(crate) const MAX_PTRS: usize = 1 << 20;

/// Per-pointer predictions: where the next map / unmap of this domain probably starts.
#[derive(Clone, Copy, Debug, Default)]
struct PtrState {
    map_iova: u64,
    map_paddr: u64,
    unmap_iova: u64,
}

impl PtrState {
    fn predict(&self, map: bool) -> (u64, u64) {
        if map {
            (self.map_iova, self.map_paddr)
        } else {
            (self.unmap_iova, 0)
        }
    }

    fn advance(&mut self, map: bool, m: &MapOp) {
        if map {
            self.map_iova = m.iova.wrapping_add(m.size);
            self.map_paddr = m.paddr.wrapping_add(m.size);
        } else {
            self.unmap_iova = m.iova.wrapping_add(m.size);
        }
    }
}

/// State the writer and the reader keep identically.
#[derive(Debug)]
struct Tables {
    prev_ts: u64,
    prev_cpu: Option<u32>,
    prev_task: Option<u32>,
    ptrs: Vec<PtrState>,
}

impl Tables {
    fn new(base_ts: u64) -> Tables {
        Tables {
            prev_ts: base_ts,
            prev_cpu: None,
            prev_task: None,
            ptrs: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.prev_cpu = None;
        self.prev_task = None;
        self.ptrs.clear();
    }
}
