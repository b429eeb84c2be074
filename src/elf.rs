//! What kios-build needs to know of an ELF file (System V gABI, "ELF Header",
//! "Program Header", "Dynamic Section"): its class and machine, its interpreter
//! (`PT_INTERP`) and the libraries and search paths of its dynamic section
//! (`DT_NEEDED`, `DT_RUNPATH`, `DT_RPATH`). The kios-init check (static, the image's
//! architecture) and the system tree check both read files through it.
//!
//! Written for hostile files: only 64-bit little-endian ELF is parsed (anything else
//! is reported as what it is), every offset and length is checked against the file,
//! and each read is bounded, so a 2 GB "library" or a header claiming a huge table
//! costs a few kilobytes.

use std::io;

use crate::le::{le16, le32, le64};

/// `e_machine` values (gABI).
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// The most read for one table or string section.
const MAX_TABLE: u64 = 1 << 20;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// Random access to a file's bytes, bounded by its length.
pub trait ReadAt {
    fn len(&self) -> u64;
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, pos)
    }
}

/// The name of an ELF machine, for messages.
pub fn machine_name(m: u16) -> String {
    match m {
        EM_X86_64 => "x86_64".into(),
        EM_AARCH64 => "aarch64".into(),
        3 => "i386".into(),
        40 => "arm (32-bit)".into(),
        other => format!("ELF machine {other}"),
    }
}

/// What an ELF file is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Elf {
    /// 32 or 64.
    pub class: u8,
    pub machine: u16,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    /// `DT_RUNPATH`, else `DT_RPATH`, split at `:`.
    pub search: Vec<String>,
}

/// Whether the first bytes are an ELF magic.
pub fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

fn read(f: &dyn ReadAt, pos: u64, len: u64) -> io::Result<Vec<u8>> {
    if len > MAX_TABLE {
        return Err(bad("a table larger than 1 MiB"));
    }
    let end = pos
        .checked_add(len)
        .ok_or_else(|| bad("an offset past 2^64"))?;
    if end > f.len() {
        return Err(bad("a table past the end of the file"));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_at(pos, &mut buf)?;
    Ok(buf)
}

/// The NUL-terminated string at `at` in `table`.
fn string_at(table: &[u8], at: u64) -> io::Result<String> {
    let start = usize::try_from(at).map_err(|_| bad("a string offset out of range"))?;
    let rest = table
        .get(start..)
        .ok_or_else(|| bad("a string offset past its table"))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("an unterminated string"))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Reads the ELF file `f`. An ELF32 or big-endian file gives its class and machine
/// only (it is of another architecture than any kiOS image).
pub fn read_elf(f: &dyn ReadAt) -> io::Result<Elf> {
    let h = read(f, 0, 64.min(f.len()))?;
    if h.len() < 20 || !is_elf(&h) {
        return Err(bad("not an ELF file"));
    }
    let class = match h[4] {
        1 => 32,
        2 => 64,
        _ => return Err(bad("an unknown ELF class")),
    };
    let little = h[5] == 1;
    let machine = if little {
        le16(&h, 18)
    } else {
        u16::from_be_bytes([h[18], h[19]])
    };
    let mut elf = Elf {
        class,
        machine,
        ..Elf::default()
    };
    if class != 64 || !little || h.len() < 64 {
        return Ok(elf);
    }
    let (phoff, phentsize, phnum) = (
        le64(&h, 32),
        u64::from(le16(&h, 54)),
        u64::from(le16(&h, 56)),
    );
    if phnum == 0 {
        return Ok(elf);
    }
    if phentsize < 56 {
        return Err(bad("program headers smaller than 56 bytes"));
    }
    let table = read(f, phoff, phentsize * phnum)?;
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum as usize {
        let p = &table[i * phentsize as usize..];
        let (kind, offset, vaddr, filesz) = (le32(p, 0), le64(p, 8), le64(p, 16), le64(p, 32));
        match kind {
            PT_INTERP => {
                let bytes = read(f, offset, filesz.min(4096))?;
                elf.interpreter = Some(string_at(&bytes, 0).unwrap_or_default());
            }
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            _ => {}
        }
    }
    let Some((offset, size)) = dynamic else {
        return Ok(elf);
    };
    let entries = read(f, offset, size)?;
    let (mut strtab, mut strsz) = (None, None);
    let (mut needed, mut runpath, mut rpath) = (Vec::new(), None, None);
    for e in entries.chunks_exact(16) {
        let (tag, val) = (le64(e, 0), le64(e, 8));
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed.push(val),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_RUNPATH => runpath = Some(val),
            DT_RPATH => rpath = Some(val),
            _ => {}
        }
    }
    let (Some(addr), Some(size)) = (strtab, strsz) else {
        return if needed.is_empty() {
            Ok(elf)
        } else {
            Err(bad("DT_NEEDED without a string table"))
        };
    };
    // DT_STRTAB is an address: the PT_LOAD segment that holds it gives its offset.
    let at = loads
        .iter()
        .find(|(v, _, sz)| addr >= *v && addr - v < *sz)
        .map(|(v, o, _)| o + (addr - v))
        .ok_or_else(|| bad("the string table is in no loaded segment"))?;
    let strings = read(f, at, size)?;
    for n in needed {
        elf.needed.push(string_at(&strings, n)?);
    }
    if let Some(p) = runpath.or(rpath) {
        elf.search = string_at(&strings, p)?
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ReadAt for Vec<u8> {
        fn len(&self) -> u64 {
            self.as_slice().len() as u64
        }
        fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
            let p = pos as usize;
            buf.copy_from_slice(&self[p..p + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn this_test_binary_is_read_as_what_it_is() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = read_elf(&me).unwrap();
        assert_eq!(elf.class, 64);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(elf.machine, EM_X86_64);
        // The test binary is dynamically linked against the C library.
        assert!(elf.interpreter.is_some(), "{elf:?}");
        assert!(
            elf.needed.iter().any(|n| n.starts_with("libc.so")),
            "{elf:?}"
        );
    }

    #[test]
    fn damaged_headers_are_errors_not_panics() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for cut in [0usize, 4, 19, 63, 64, 200, 4096] {
            let _ = read_elf(&me[..cut.min(me.len())].to_vec());
        }
        let mut huge = me[..64].to_vec();
        huge[56..58].copy_from_slice(&u16::MAX.to_le_bytes()); // e_phnum
        huge[54..56].copy_from_slice(&u16::MAX.to_le_bytes()); // e_phentsize
        assert!(read_elf(&huge).is_err());
        assert!(read_elf(&b"not an elf at all".to_vec()).is_err());
    }
}
