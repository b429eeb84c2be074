//! The disk `kios-build run` boots: the file the user names, in any format kios-build
//! writes, made a raw disk QEMU boots from a snapshot.
//!
//! A raw image is used as it is. Every other format is unpacked into the run's
//! private work folder first, sparsely (a block of zeros becomes a hole), so one
//! boot path serves them all and the architecture can be read from the raw disk's
//! ESP: qcow2, VHD and VMDK with `qemu-img convert` (qemu-utils, beside QEMU
//! anyway), raw.zst and raw.xz with our own decoders, GCE's tar.gz by reading its
//! `disk.raw` entry. The unpacked disk is bounded by the largest disk kios-build
//! makes, so a hostile archive cannot fill the host's disk.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::RunError;

/// The largest raw disk an unpacked image may come to: the profile's own bound.
const MAX_DISK: u64 = 4 << 40;
const BLOCK: usize = 64 * 1024;

/// The formats `run` tells apart by their first (or last) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
    Zstd,
    Xz,
    GceTarGz,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Qcow2 => "qcow2",
            Kind::Vhd => "vhd",
            Kind::Vmdk => "vmdk",
            Kind::Zstd => "raw.zst",
            Kind::Xz => "raw.xz",
            Kind::GceTarGz => "gce",
        }
    }
}

/// The format of `f`, by magic numbers; `None` for a file that is none of them
/// (not a kios-build image).
pub fn kind(f: &mut File) -> io::Result<Option<Kind>> {
    let len = f.seek(SeekFrom::End(0))?;
    let mut head = vec![0u8; 1024];
    f.seek(SeekFrom::Start(0))?;
    let n = f.take(1024).read(&mut head)?;
    head.truncate(n);
    let mut tail = [0u8; 8];
    if len >= 512 {
        f.seek(SeekFrom::Start(len - 512))?;
        f.read_exact(&mut tail)?;
    }
    Ok(if head.starts_with(b"QFI\xfb") {
        Some(Kind::Qcow2)
    } else if head.starts_with(b"KDMV") {
        Some(Kind::Vmdk)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Kind::Zstd)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Kind::Xz)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some(Kind::GceTarGz)
    } else if &tail == b"conectix" {
        Some(Kind::Vhd)
    } else if head.len() >= 520 && &head[512..520] == b"EFI PART" {
        Some(Kind::Raw)
    } else {
        None
    })
}

/// The raw disk to boot for `image`: itself, or an unpacked copy in `work`.
pub fn raw_disk(image: &Path, work: &Path) -> Result<(PathBuf, &'static str), RunError> {
    let io = |source| RunError::Read {
        path: image.to_path_buf(),
        source,
    };
    let mut f = crate::untrusted::open_regular(image).map_err(io)?;
    let kind = kind(&mut f)
        .map_err(io)?
        .ok_or_else(|| RunError::NotAnImage {
            path: image.to_path_buf(),
        })?;
    if kind == Kind::Raw {
        return Ok((image.to_path_buf(), kind.name()));
    }
    let out = work.join("disk.raw");
    let unpacked = match kind {
        Kind::Qcow2 | Kind::Vmdk | Kind::Vhd => qemu_img(image, kind, &out),
        Kind::Zstd => {
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            let d = zstd::stream::read::Decoder::new(f).map_err(io)?;
            sparse_copy(d, &out)
        }
        Kind::Xz => {
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            sparse_copy(xz2::read::XzDecoder::new(f), &out)
        }
        Kind::GceTarGz => {
            f.seek(SeekFrom::Start(0)).map_err(io)?;
            gce_disk(f, &out)
        }
        Kind::Raw => Ok(()),
    };
    unpacked.map_err(|source| RunError::Unpack {
        path: image.to_path_buf(),
        format: kind.name(),
        source,
    })?;
    Ok((out, kind.name()))
}

/// `qemu-img convert` to a sparse raw file.
fn qemu_img(image: &Path, kind: Kind, out: &Path) -> io::Result<()> {
    let format = match kind {
        Kind::Qcow2 => "qcow2",
        Kind::Vmdk => "vmdk",
        _ => "vpc",
    };
    let o = Command::new("qemu-img")
        .args(["convert", "-q", "-f", format, "-O", "raw"])
        .arg(image)
        .arg(out)
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("qemu-img (apt-get install qemu-utils): {e}"),
            )
        })?;
    if !o.status.success() {
        return Err(io::Error::other(format!(
            "qemu-img convert: {}",
            crate::untrusted::shown_bytes(&o.stderr)
        )));
    }
    Ok(())
}

/// Copies `r` to `out`, leaving holes for blocks of zeros, up to [`MAX_DISK`].
fn sparse_copy(r: impl Read, out: &Path) -> io::Result<()> {
    let mut r = crate::untrusted::Limited::new(r, MAX_DISK);
    let mut w = File::create(out)?;
    let mut buf = vec![0u8; BLOCK];
    let mut len = 0u64;
    loop {
        let mut n = 0;
        while n < BLOCK {
            match r.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            w.seek(SeekFrom::Start(len))?;
            w.write_all(&buf[..n])?;
        }
        len += n as u64;
        if n < BLOCK {
            break;
        }
    }
    w.set_len(len)?;
    Ok(())
}

/// The `disk.raw` entry of a GCE image (a gzip'd tar, its entry possibly sparse).
fn gce_disk(f: File, out: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.path()?.as_os_str() == "disk.raw" {
            return sparse_copy(entry, out);
        }
    }
    Err(io::Error::other("the archive has no disk.raw entry"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_and_the_length_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * BLOCK + 10];
        data[BLOCK + 1] = 7;
        let out = dir.path().join("d");
        sparse_copy(&data[..], &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&out).unwrap();
        assert!(
            m.blocks() * 512 < data.len() as u64,
            "{} blocks",
            m.blocks()
        );
    }

    #[test]
    fn formats_are_told_by_their_magic() {
        let dir = tempfile::tempdir().unwrap();
        let check = |bytes: &[u8]| {
            let p = dir.path().join("f");
            std::fs::write(&p, bytes).unwrap();
            kind(&mut File::open(&p).unwrap()).unwrap()
        };
        let mut raw = vec![0u8; 2048];
        raw[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(check(&raw), Some(Kind::Raw));
        let mut vhd = raw.clone();
        let n = vhd.len();
        vhd[n - 512..n - 504].copy_from_slice(b"conectix");
        assert_eq!(check(&vhd), Some(Kind::Vhd));
        assert_eq!(check(b"QFI\xfb...."), Some(Kind::Qcow2));
        assert_eq!(check(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Kind::Zstd));
        assert_eq!(check(b"hello, world"), None);
    }
}
