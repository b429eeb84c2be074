//! The device-mapper control interface (`/dev/mapper/control`, the kernel's
//! `include/uapi/linux/dm-ioctl.h`), for what kios-init needs of it: one read-only
//! device with one target (the store's dm-verity device), and its removal. No
//! `dmsetup` or `veritysetup` exists on a node.
//!
//! Every request is a `struct dm_ioctl` (312 bytes), followed for a table load by
//! one `struct dm_target_spec` (40 bytes) and the target's parameters, NUL-ended,
//! in a buffer aligned to 8 bytes; `data_size` is the whole buffer.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use crate::system::{DmTarget, Errno};

const CONTROL: &str = "/dev/mapper/control";
const HEADER: usize = 312;
const SPEC: usize = 40;
const NAME_LEN: usize = 128;
const READONLY_FLAG: u32 = 1;
/// The interface version asked for: major 4, any minor the kernel has.
const VERSION: [u32; 3] = [4, 0, 0];

/// `_IOWR(0xfd, nr, struct dm_ioctl)` (the same on x86_64 and aarch64).
const fn iowr(nr: u64) -> u64 {
    (3 << 30) | ((HEADER as u64) << 16) | (0xfd << 8) | nr
}
const DEV_CREATE: u64 = iowr(3);
const DEV_REMOVE: u64 = iowr(4);
const DEV_SUSPEND: u64 = iowr(6);
const TABLE_LOAD: u64 = iowr(9);

/// A request buffer: `u64`s so that it is 8-byte aligned, as the kernel expects.
struct Request(Vec<u64>);

impl Request {
    /// The header for device `name`, with `extra` bytes after it.
    fn new(name: &str, extra: usize, flags: u32, targets: u32) -> Result<Request, Errno> {
        if name.is_empty() || name.len() >= NAME_LEN || name.contains('/') {
            return Err(Errno(libc::EINVAL));
        }
        let size = (HEADER + extra).div_ceil(8) * 8;
        let mut r = Request(vec![0u64; size / 8]);
        let b = r.bytes_mut();
        for (i, v) in VERSION.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b[12..16].copy_from_slice(&(size as u32).to_ne_bytes()); // data_size
        b[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes()); // data_start
        b[20..24].copy_from_slice(&targets.to_ne_bytes()); // target_count
        b[28..32].copy_from_slice(&flags.to_ne_bytes()); // flags
        b[48..48 + name.len()].copy_from_slice(name.as_bytes()); // name
        Ok(r)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.0.len() * 8;
        // SAFETY: the Vec<u64> owns `len` initialised bytes; u8 has no alignment or
        // validity requirements, and the borrow of self keeps the Vec alive and
        // unaliased for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), len) }
    }

    /// The `dev` field the kernel filled in (new_encode_dev form).
    fn dev(&mut self) -> u64 {
        let b = self.bytes_mut();
        let mut d = [0u8; 8];
        d.copy_from_slice(&b[40..48]);
        u64::from_ne_bytes(d)
    }

    fn send(&mut self, fd: &std::fs::File, request: u64) -> Result<(), Errno> {
        let ptr = self.0.as_mut_ptr();
        // SAFETY: `ptr` points at `data_size` bytes we own, aligned to 8, which the
        // kernel reads and writes back within that size; the fd is open.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, ptr) };
        if rc < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }
}

fn control() -> Result<std::fs::File, Errno> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL)
        .map_err(|e| Errno::from_io(&e))
}

/// Creates `name`, loads `target` read-only, resumes it; returns `/dev/dm-N`. On a
/// failure after the create, the device is removed again.
pub fn create(name: &str, target: &DmTarget<'_>) -> Result<String, Errno> {
    let fd = control()?;
    let mut create = Request::new(name, 0, 0, 0)?;
    create.send(&fd, DEV_CREATE)?;
    let dev = create.dev();
    let loaded = load_and_resume(&fd, name, target);
    if let Err(e) = loaded {
        let _ = remove(name);
        return Err(e);
    }
    // new_encode_dev: minor's low 8 bits, major, then minor's high bits.
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    Ok(format!("/dev/dm-{minor}"))
}

fn load_and_resume(fd: &std::fs::File, name: &str, t: &DmTarget<'_>) -> Result<(), Errno> {
    if t.kind.len() >= 16 || t.params.contains('\0') {
        return Err(Errno(libc::EINVAL));
    }
    let spec_len = (SPEC + t.params.len() + 1).div_ceil(8) * 8;
    let mut load = Request::new(name, spec_len, READONLY_FLAG, 1)?;
    let b = load.bytes_mut();
    let s = &mut b[HEADER..];
    s[0..8].copy_from_slice(&0u64.to_ne_bytes()); // sector_start
    s[8..16].copy_from_slice(&t.sectors.to_ne_bytes()); // length
    s[20..24].copy_from_slice(&(spec_len as u32).to_ne_bytes()); // next
    s[24..24 + t.kind.len()].copy_from_slice(t.kind.as_bytes()); // target_type
    s[SPEC..SPEC + t.params.len()].copy_from_slice(t.params.as_bytes());
    load.send(fd, TABLE_LOAD)?;
    // DM_DEV_SUSPEND without the suspend flag resumes: the loaded table goes live.
    let mut resume = Request::new(name, 0, 0, 0)?;
    resume.send(fd, DEV_SUSPEND)
}

pub fn remove(name: &str) -> Result<(), Errno> {
    let fd = control()?;
    Request::new(name, 0, 0, 0)?.send(&fd, DEV_REMOVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_are_the_kernels() {
        // As strace shows them for dmsetup: DM_DEV_CREATE is 0xc138fd03.
        assert_eq!(DEV_CREATE, 0xc138_fd03);
        assert_eq!(DEV_REMOVE, 0xc138_fd04);
        assert_eq!(DEV_SUSPEND, 0xc138_fd06);
        assert_eq!(TABLE_LOAD, 0xc138_fd09);
    }

    #[test]
    fn the_header_carries_version_sizes_and_name_and_names_are_checked() {
        let mut r = Request::new("kios-store", 50, READONLY_FLAG, 1).unwrap();
        let b = r.bytes_mut();
        assert_eq!(b.len(), 368); // 312 + 50, rounded up to 8
        assert_eq!(&b[0..4], &4u32.to_ne_bytes());
        assert_eq!(&b[12..16], &368u32.to_ne_bytes());
        assert_eq!(&b[16..20], &312u32.to_ne_bytes());
        assert_eq!(&b[20..24], &1u32.to_ne_bytes());
        assert_eq!(&b[28..32], &1u32.to_ne_bytes());
        assert_eq!(&b[48..58], b"kios-store");
        assert_eq!(b[58], 0);
        assert!(Request::new("", 0, 0, 0).is_err());
        assert!(Request::new("a/b", 0, 0, 0).is_err());
        assert!(Request::new(&"x".repeat(128), 0, 0, 0).is_err());
    }
}
