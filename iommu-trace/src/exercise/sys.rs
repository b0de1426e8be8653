//! Thin unsafe wrappers: ioctl returning an errno, anonymous / hugetlb mappings.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `errno` of the last failed libc call.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Issue `_IO` ioctl `req` with a pointer to `arg`; returns 0 or the errno.
///
/// `T` must be the `#[repr(C)]` struct the command expects (see `uapi`).
pub fn ioctl<T>(fd: RawFd, req: u32, arg: &mut T) -> i32 {
    #[cfg(test)]
    if let Some(e) = FAKE_KERNEL.with(|f| {
        f.borrow_mut()
            .as_mut()
            .map(|k| k(fd, req, arg as *mut T as *mut u8))
    }) {
        return e;
    }
    // SAFETY: `arg` is a valid, exclusively borrowed repr(C) struct for the duration of the
    // call; the kernel reads/writes at most its declared `size`/`argsz`, which callers set
    // to size_of::<T>() or less.
    let rc = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if rc < 0 {
        last_errno()
    } else {
        0
    }
}

/// Test hook: when set (per thread), `ioctl` calls this instead of the kernel.
#[cfg(test)]
pub type FakeKernel = Box<dyn FnMut(RawFd, u32, *mut u8) -> i32>;
/// The request the fake kernel gets when an fd is closed.
#[cfg(test)]
pub const FAKE_CLOSE: u32 = u32::MAX;

/// A memfd of `len` bytes (for IOAS_MAP_FILE), named after the step that maps it.
pub fn memfd(name: &str, len: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated name and flags; the fd returned is ours.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone()?).set_len(len)?;
    Ok(fd)
}

/// A pipe's two ends, closed on drop.
fn pipe() -> Result<(OwnedFd, OwnedFd), i32> {
    let mut fds = [0; 2];
    // SAFETY: an array of two fds, as pipe2 wants; on success both are ours.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(last_errno());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// A system call returning -1 with EINTR is made again.
fn retry_eintr(mut f: impl FnMut() -> isize) -> isize {
    loop {
        let rc = f();
        if rc >= 0 || last_errno() != libc::EINTR {
            return rc;
        }
    }
}

/// Runs `call` in a forked child and returns the child's pid, `call`'s answer and what
/// `inspect(pid)` returns, run here while the child, its answer given, still lives (so that
/// its `/proc/PID` can be read); then lets the child exit and reaps it. Errors: the errno of
/// `pipe2`, `fork` or the read of the answer, EPIPE when the child died before answering.
///
/// # Safety
///
/// A fork copies the calling thread only: a lock another thread held stays taken in the
/// child. If other threads may exist, `call` must not allocate or take locks (an ioctl is
/// fine). A panic in `call` ends the child with EIO as its answer, not in the parent's
/// frames.
pub unsafe fn in_child<T>(
    call: impl FnOnce() -> i32,
    inspect: impl FnOnce(libc::pid_t) -> T,
) -> Result<(libc::pid_t, i32, T), i32> {
    let (answer_rx, answer_tx) = pipe()?;
    let (release_rx, release_tx) = pipe()?;
    // SAFETY: the caller vouches for `call`; the child then writes, reads and _exits only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_errno());
    }
    if pid == 0 {
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or(libc::EIO);
        let mut byte = 0u8;
        // SAFETY: plain system calls on the inherited pipe ends; _exit runs no destructor
        // and no handler of the parent's.
        unsafe {
            libc::write(answer_tx.as_raw_fd(), (&e as *const i32).cast(), 4);
            // Until the parent has looked at us, or died (then read returns 0).
            libc::close(release_tx.as_raw_fd());
            retry_eintr(|| libc::read(release_rx.as_raw_fd(), (&mut byte as *mut u8).cast(), 1));
            libc::_exit(0);
        }
    }
    // Our copy of the answer's write end closed first: a child that died before answering
    // gives end of file, not a hang.
    drop(answer_tx);
    let mut e = 0i32;
    // SAFETY: reading at most 4 bytes into an i32 from our pipe end.
    let got = retry_eintr(|| unsafe {
        libc::read(answer_rx.as_raw_fd(), (&mut e as *mut i32).cast(), 4)
    });
    let result = match got {
        4 => Ok((pid, e, inspect(pid))),
        n if n < 0 => Err(last_errno()),
        _ => Err(libc::EPIPE),
    };
    // Closing the release pipe lets the child exit (also when `inspect` panicked: drops).
    drop((release_tx, release_rx, answer_rx));
    // SAFETY: waiting for the child we forked.
    retry_eintr(|| unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) } as isize);
    result
}

/// Closes `fd`; the errno, 0 on success.
pub fn close(fd: RawFd) -> i32 {
    #[cfg(test)]
    FAKE_KERNEL.with(|f| {
        if let Some(k) = f.borrow_mut().as_mut() {
            k(fd, FAKE_CLOSE, std::ptr::null_mut());
        }
    });
    // SAFETY: the caller owns fd and gives it up.
    if unsafe { libc::close(fd) } < 0 {
        last_errno()
    } else {
        0
    }
}
#[cfg(test)]
thread_local! {
    pub static FAKE_KERNEL: std::cell::RefCell<Option<FakeKernel>> =
        const { std::cell::RefCell::new(None) };
}

/// Symbolic name of an errno ("EOPNOTSUPP"), "OK" for 0.
pub fn errno_name(errno: i32) -> String {
    if errno == 0 {
        return "OK".to_string();
    }
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

pub const PAGE_4K: u64 = 4096;
pub const HUGE_2M: u64 = 2 << 20;

/// A private anonymous mapping, unmapped on drop.
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
    pub hugetlb: bool,
}

impl Mapping {
    /// `len` bytes of 4K anonymous memory, THP disabled (MADV_NOHUGEPAGE) so that the
    /// kernel sees runs of individual 4K pages, every page touched.
    pub fn anon_4k(len: usize) -> Result<Mapping, i32> {
        let m = Self::mmap(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)?;
        // SAFETY: madvise on a mapping we own. Failure is harmless (THP may be disabled).
        unsafe {
            libc::madvise(m.ptr, len, libc::MADV_NOHUGEPAGE);
        }
        m.touch(PAGE_4K as usize);
        Ok(m)
    }

    /// Like `anon_4k`, but no two neighbouring pages physically adjacent (almost surely):
    /// each is faulted in between two pages of a spacer mapping, dropped afterwards. A map of
    /// it takes one `iommu_map` per page, whatever free memory looked like, so that runs of
    /// a benchmark map the same way (adjacent pages coalesce into fewer calls: runs of the
    /// 16-page loop differed by 3x before).
    pub fn anon_4k_scattered(len: usize) -> Result<Mapping, i32> {
        let m = Self::mmap(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)?;
        let spacer = Self::mmap(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)?;
        // SAFETY: madvise on mappings we own. Failure is harmless (THP may be disabled).
        unsafe {
            libc::madvise(m.ptr, len, libc::MADV_NOHUGEPAGE);
            libc::madvise(spacer.ptr, len, libc::MADV_NOHUGEPAGE);
        }
        let page = PAGE_4K as usize;
        for off in (0..len).step_by(page) {
            for b in [&m, &spacer] {
                // SAFETY: off < len, inside both RW mappings.
                unsafe { (b.ptr as *mut u8).add(off).write_volatile(1) };
            }
        }
        Ok(m)
    }

    /// `len` bytes backed by 2M hugetlb pages (each page physically contiguous and 2M
    /// aligned). Fails with ENOMEM when no hugepages are reserved (vm.nr_hugepages).
    pub fn hugetlb_2m(len: usize) -> Result<Mapping, i32> {
        let mut m = Self::mmap(
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
        )?;
        m.hugetlb = true;
        m.touch(HUGE_2M as usize);
        Ok(m)
    }

    fn mmap(len: usize, flags: libc::c_int) -> Result<Mapping, i32> {
        // SAFETY: fresh anonymous mapping, no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_errno());
        }
        Ok(Mapping {
            ptr,
            len,
            hugetlb: false,
        })
    }

    fn touch(&self, stride: usize) {
        let base = self.ptr as *mut u8;
        let mut off = 0;
        while off < self.len {
            // SAFETY: off < len, inside our RW mapping.
            unsafe { base.add(off).write_volatile((off / stride) as u8 | 1) };
            off += stride;
        }
    }

    /// User virtual address of byte `offset`.
    pub fn addr(&self, offset: u64) -> u64 {
        debug_assert!(offset <= self.len as u64);
        self.ptr as u64 + offset
    }

    pub fn len(&self) -> u64 {
        self.len as u64
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; nothing borrows into it past this point.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_child_answers_while_the_child_lives_then_reaps_it() {
        // The child is not a zombie yet while inspected: its status has a memory part
        // (a zombie's has no VmPin line).
        // SAFETY: the child only returns a number.
        let (pid, answer, alive) = unsafe {
            in_child(
                || 7,
                |pid| crate::procfs::memory_held(&pid.to_string()).is_some(),
            )
        }
        .unwrap();
        assert!(pid > 0 && pid as u32 != std::process::id());
        assert_eq!(answer, 7);
        assert!(alive, "the child was gone before it was inspected");
        // Reaped: no child of that pid is left to wait for.
        // SAFETY: a non-blocking wait on a pid we forked.
        let rc = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!((rc, last_errno()), (-1, libc::ECHILD));
    }

    // A child that dies before answering is EPIPE, not a hang. (A panicking `call` is not
    // tried here: its message takes the stderr lock, which another test thread may have
    // held at the fork.)
    #[test]
    fn in_child_reports_a_child_that_died_before_answering() {
        // SAFETY: the child exits at once.
        let died = unsafe { in_child(|| libc::_exit(3), |_| ()) };
        assert_eq!(died.map(|(_, e, _)| e), Err(libc::EPIPE));
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(0), "OK");
        assert_eq!(errno_name(libc::EOPNOTSUPP), "EOPNOTSUPP");
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(libc::ENOTTY), "ENOTTY");
    }

    #[test]
    fn anon_mapping() {
        let m = Mapping::anon_4k(16 * 4096).unwrap();
        assert_eq!(m.len(), 16 * 4096);
        assert_eq!(m.addr(0) % 4096, 0);
        assert_eq!(m.addr(4096), m.addr(0) + 4096);
    }

    #[test]
    fn ioctl_on_bad_fd_reports_errno() {
        let mut d = crate::exercise::uapi::IommuDestroy { size: 8, id: 1 };
        assert_eq!(
            ioctl(-1, crate::exercise::uapi::IOMMU_DESTROY, &mut d),
            libc::EBADF
        );
    }
}
