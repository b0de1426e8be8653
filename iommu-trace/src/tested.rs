//! The kernels this release was tested on: the VM matrix of `cargo xtask vm-test`.
//! `iommu-trace --version` prints it; xtask includes this file and checks that its matrix
//! is this one, so the two cannot drift apart.

/// One cell of the matrix: a kernel release, a guest architecture, the emulated IOMMUs.
pub struct TestedKernel {
    pub version: &'static str,
    pub arch: &'static str,
    pub iommus: &'static [&'static str],
}

pub const TESTED_KERNELS: &[TestedKernel] = &[
    TestedKernel {
        version: "6.12",
        arch: "x86_64",
        iommus: &["Intel VT-d", "AMD-Vi"],
    },
    TestedKernel {
        version: "7.3",
        arch: "x86_64",
        iommus: &["Intel VT-d", "AMD-Vi"],
    },
    TestedKernel {
        version: "6.12",
        arch: "arm64",
        iommus: &["Arm SMMUv3"],
    },
    TestedKernel {
        version: "7.3",
        arch: "arm64",
        iommus: &["Arm SMMUv3"],
    },
];
