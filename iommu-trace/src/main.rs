//! The `iommu-trace` command line: parse arguments, call the library.

fn main() {
    println!("iommu-trace");
}
