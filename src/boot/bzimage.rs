//! The x86 Linux boot protocol's setup header: the kernel's version string.
//!
//! Reference: the Linux boot protocol, `Documentation/arch/x86/boot.rst` (formerly
//! `Documentation/x86/boot.rst`), "The Real-Mode Kernel Header". Only the fields
//! needed to find `kernel_version` are read; nothing here loads or checks a kernel.

use std::io::{Read, Seek, SeekFrom};

use super::BootError;

/// boot.rst: `setup_sects` (u8) at 0x1f1 ... `kernel_version` (u16) at 0x20e; one read
/// covers them.
const HEADER_START: u64 = 0x1f1;
const HEADER_LEN: usize = 0x210 - 0x1f1;
/// Offsets within that read.
const SETUP_SECTS: usize = 0;
const MAGIC: usize = 0x202 - 0x1f1; // "HdrS"
const KERNEL_VERSION: usize = 0x20e - 0x1f1;

/// The longest version string accepted; real ones are about 100 bytes.
const MAX_VERSION_LEN: u64 = 512;

/// Reads the kernel version string of an x86 bzImage, e.g.
/// `"6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian ..."`.
///
/// boot.rst: `kernel_version`, if non-zero, is a pointer to a NUL-terminated string
/// "less 0x200": the string is at file offset `kernel_version + 0x200`, inside the
/// real-mode setup code (`(setup_sects + 1) * 512` bytes; `setup_sects` 0 means 4).
pub fn kernel_version<R: Read + Seek>(r: &mut R) -> Result<String, BootError> {
    let io = |action: &'static str| {
        move |source| BootError::Io {
            action: format!("{action} the kernel's setup header"),
            source,
        }
    };
    r.seek(SeekFrom::Start(HEADER_START))
        .map_err(io("seeking to"))?;
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => BootError::NotBzImage {
            why: "it is too short to hold a setup header".into(),
        },
        _ => io("reading")(e),
    })?;
    if &h[MAGIC..MAGIC + 4] != b"HdrS" {
        return Err(BootError::NotBzImage {
            why: "there is no \"HdrS\" magic at offset 0x202".into(),
        });
    }
    let pointer = u64::from(u16::from_le_bytes([
        h[KERNEL_VERSION],
        h[KERNEL_VERSION + 1],
    ]));
    if pointer == 0 {
        return Err(BootError::NotBzImage {
            why: "its setup header has no kernel_version string (the field at 0x20e is 0)".into(),
        });
    }
    let setup_sects = match h[SETUP_SECTS] {
        0 => 4,
        n => u64::from(n),
    };
    let at = pointer + 0x200;
    let setup_end = (setup_sects + 1) * 512;
    if at >= setup_end {
        return Err(BootError::NotBzImage {
            why: format!(
                "its kernel_version pointer ({pointer:#x}) points past the setup code \
                 ({setup_end:#x} bytes)"
            ),
        });
    }
    r.seek(SeekFrom::Start(at)).map_err(io("seeking in"))?;
    let mut bytes = Vec::new();
    r.take(MAX_VERSION_LEN.min(setup_end - at))
        .read_to_end(&mut bytes)
        .map_err(io("reading"))?;
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| BootError::NotBzImage {
            why: format!("its kernel_version string at {at:#x} is not NUL-terminated"),
        })?;
    bytes.truncate(end);
    String::from_utf8(bytes).map_err(|_| BootError::NotBzImage {
        why: format!("its kernel_version string at {at:#x} is not UTF-8"),
    })
}

/// The kernel release (what `uname -r` prints) from a version string: its first word.
/// `"6.1.0-56-amd64 (debian-kernel@...) #1 SMP ..."` -> `"6.1.0-56-amd64"`.
pub fn kernel_release(version: &str) -> &str {
    version.split_whitespace().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fake bzImage: just enough setup header to carry a version string.
    fn bzimage(version: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[0x1f1] = 3; // setup_sects: the setup code is 4 * 512 bytes
        b[0x202..0x206].copy_from_slice(b"HdrS");
        let pointer: u16 = 0x500;
        b[0x20e..0x210].copy_from_slice(&pointer.to_le_bytes());
        let at = usize::from(pointer) + 0x200;
        b[at..at + version.len()].copy_from_slice(version);
        b
    }

    #[test]
    fn version_string_is_read_from_the_setup_header() {
        let v = "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC";
        let got = kernel_version(&mut Cursor::new(bzimage(v.as_bytes()))).unwrap();
        assert_eq!(got, v);
        assert_eq!(kernel_release(&got), "6.1.0-56-amd64");
    }

    #[test]
    fn a_file_without_hdrs_is_not_a_bzimage() {
        let mut b = bzimage(b"6.1");
        b[0x202] = b'X';
        let err = kernel_version(&mut Cursor::new(b)).unwrap_err();
        assert!(matches!(err, BootError::NotBzImage { .. }), "{err:?}");
        let err = kernel_version(&mut Cursor::new(vec![0u8; 0x100])).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
    }

    #[test]
    fn an_unterminated_or_misplaced_version_is_an_error() {
        let mut b = bzimage(&[b'x'; 0x100]);
        b[0x1f1] = 1; // setup code is now 2 * 512 bytes; the pointer lies past it
        assert!(kernel_version(&mut Cursor::new(b)).is_err());
        let mut b = bzimage(b"");
        for x in &mut b[0x700..0xa00] {
            *x = b'x';
        }
        let err = kernel_version(&mut Cursor::new(b)).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }
}
