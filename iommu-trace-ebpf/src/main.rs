//! eBPF programs of iommu-trace.
//!
//! Logical probe points (user space maps each to a kernel symbol at run time, see
//! `iommu-trace/src/probe/plan.rs`):
//! - the iommufd `IOMMU_HWPT_ALLOC` ioctl handler and `iommufd_hwpt_paging_alloc`: context
//!   (explicit vs auto domain) and the ioctl's own result;
//! - the driver's domain-allocation op (three argument shapes across kernel versions);
//! - `iommu_domain_free`, `iommu_map`, `iommu_unmap` on the domains we saw allocated;
//! - the `NR_SECONDARY_PAGETABLE` statistic update that every iommu-pages allocation and free
//!   makes (`__lruvec_stat_mod_folio`), attributed to the domain operation the thread is in;
//! - iommufd objects allocated, published, aborted and destroyed, with the ioctl, file
//!   release or unbind that caused it;
//! - the IOAS mapping ioctls and each change of the pinned-page accounting;
//! - a tracked domain's page table growing its top (AMD's driver hook).
//!
//! Rust eBPF has no CO-RE: kernel struct fields are read at offsets that user space computed
//! from the running kernel's BTF and wrote into `CONFIG`.
#![no_std]
#![no_main]

// Before the other modules: they use its `cfg!` macro.
#[macro_use]
mod maps;

mod domain_alloc;
mod domain_ops;
mod helpers;
mod hwpt;
mod objects;
mod pins;
mod pt_grow;
mod pt_pages;
mod thread_ctx;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
