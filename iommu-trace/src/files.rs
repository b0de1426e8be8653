//! Files a user names: only regular ones are read (a FIFO would block on open, /dev/zero
//! would never end), and a kernel description (`--btf`, `--kallsyms`) only up to a size no
//! real one reaches. A leaf: captures and the probe plan both use it.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// What kind of file `path` is, when it is not a regular one.
pub fn not_regular(path: &Path) -> Option<&'static str> {
    let t = std::fs::metadata(path).ok()?.file_type();
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// The file's bytes: a regular file of at most `limit` bytes, else an error saying which.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    if let Some(kind) = not_regular(path) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file"),
        ));
    }
    let mut data = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!(
                "it is larger than {} MiB, more than any real one",
                limit >> 20
            ),
        ));
    }
    Ok(data)
}
