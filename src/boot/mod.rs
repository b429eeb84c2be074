//! The unified kernel image (UKI): a UEFI stub with the kernel, the initramfs, the
//! command line and the OS identity appended as PE sections; the one file the ESP
//! boots (`EFI/BOOT/BOOTX64.EFI` on amd64, `EFI/BOOT/BOOTAA64.EFI` on arm64, see
//! [`esp_path`]).
//!
//! Input: the stub's bytes (systemd's `linuxx64.efi.stub` or `linuxaa64.efi.stub`) and
//! [`UkiParts`]; output: the
//! UKI, written to any [`Write`] with the kernel and initramfs streamed, never held in
//! memory. [`read_uki`] reads one back (for `inspect` and tests); [`kernel_version`]
//! reads the version string a bzImage carries, which is what `.uname` holds.
//!
//! The layout follows the UAPI group's UKI specification
//! (<https://uapi-group.org/specifications/specs/unified_kernel_image/>) and does what
//! systemd's `ukify` does; the PE rules, with the sections of Microsoft's PE format
//! specification they come from, are in [`pe`] and in `docs/uki.md`:
//! - the stub is parsed (MS-DOS `e_lfanew`, COFF header, PE32+ or PE32 optional header,
//!   section table); a stub that is already signed (certificate table, data directory
//!   4, spec 3.4.3 and 4.7) is refused: its signature could not cover the new sections;
//! - new sections follow the stub's, in the order `.osrel .cmdline .uname .initrd
//!   .linux`; each starts at the previous end rounded up to `SectionAlignment` in
//!   memory and to `FileAlignment` in the file (spec 3.4); all are initialized,
//!   read-only data (`0x40000040`, spec 3.1);
//! - `.linux`'s `VirtualSize` is the kernel's own `SizeOfImage` (if the kernel is a PE
//!   image, and at least its length): the stub may run the kernel in place, where it
//!   decompresses into that space; the others' `VirtualSize` is their length;
//! - `NumberOfSections` and `SizeOfImage` are updated, `CheckSum` and the deprecated
//!   COFF symbol table pointer are zeroed, the new section headers must fit below
//!   `SizeOfHeaders` (spec 3.4.2), and data after the stub's last section is dropped;
//! - nothing time-dependent is added: the output depends on the inputs only.
//!
//! Why our own PE code: a few hundred lines for exactly these rules, where the PE crates
//! either only read or rewrite more than asked. Its output is checked by `objdump` in
//! `tests/uki.rs` and by booting it under OVMF.
//!
//! Signing: [`authenticode`] hashes a written UKI and embeds a signature that
//! `crate::sign` makes. Not done here: `.pcrsig`/`.pcrpkey`/`.dtb`/`.splash`
//! sections; choosing the command line (the profile does); writing the ESP (`disk`).

pub mod authenticode;
mod bzimage;
pub mod measure;
mod pe;
#[cfg(test)]
mod synth;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub use bzimage::{kernel_release, kernel_version};

use crate::profile::Arch;
use crate::tree::{Content, Entry, Tree, TreeError, TreePath};
use pe::{NewSection, PeHeaders, SectionHeader};

/// The parts of a UKI besides the stub. Empty text parts and an empty initrd are left
/// out of the image (the stub treats a missing section as "none").
#[derive(Clone, Debug)]
pub struct UkiParts {
    /// `.osrel`: the image's `os-release` file.
    pub osrel: Vec<u8>,
    /// `.cmdline`: the kernel command line, as the stub passes it (no trailing newline
    /// needed).
    pub cmdline: Vec<u8>,
    /// `.uname`: the kernel release (`uname -r`), see [`kernel_release`].
    pub uname: Vec<u8>,
    /// `.linux`: the kernel image (an EFI-stub bzImage).
    pub linux: Content,
    /// `.initrd`: the initramfs (compressed cpio).
    pub initrd: Content,
}

/// What [`read_uki`] found in a UKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiInfo {
    /// COFF `Machine`, e.g. 0x8664 (x86-64), 0xaa64 (arm64).
    pub machine: u16,
    /// Every section, the stub's own first, in section-table order.
    pub sections: Vec<SectionInfo>,
    /// The text sections, without trailing NUL bytes; empty when the section is absent.
    pub cmdline: String,
    pub uname: String,
    pub osrel: String,
}

/// One section of a PE image, as its section header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub name: String,
    /// `PointerToRawData`.
    pub file_offset: u64,
    /// `SizeOfRawData`: the section's file bytes, a multiple of `FileAlignment`.
    pub file_size: u64,
    /// `VirtualAddress`, relative to the image base.
    pub virtual_address: u64,
    /// `VirtualSize`: the section's size once loaded.
    pub virtual_size: u64,
}

impl From<&SectionHeader> for SectionInfo {
    fn from(s: &SectionHeader) -> Self {
        SectionInfo {
            name: s.name_str(),
            file_offset: s.pointer_to_raw_data.into(),
            file_size: s.size_of_raw_data.into(),
            virtual_address: s.virtual_address.into(),
            virtual_size: s.virtual_size.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(
        "{what} is not a PE (UEFI) image: {why}; check that the file is the EFI binary \
         itself (for the stub, systemd-boot-efi's linuxx64.efi.stub; for the kernel, an \
         x86-64 or arm64 EFI-stub vmlinuz), not a compressed, ELF or truncated file"
    )]
    NotPe { what: &'static str, why: String },

    #[error(
        "the UEFI stub is already signed (certificate table at {offset:#x}, {size} bytes): \
         a signature cannot cover the sections added to it; use the unsigned stub \
         (linuxx64.efi.stub, not linuxx64.efi.stub.signed) and sign the finished UKI"
    )]
    SignedStub { offset: u32, size: u32 },

    #[error(
        "the UEFI stub has no room for {sections} more section headers: its section table \
         would end at byte {needed:#x}, but its headers end at {available:#x} \
         (SizeOfHeaders / the first section's data); use a stub linked with room for \
         more headers, such as systemd's linuxx64.efi.stub"
    )]
    NoRoomForSectionHeaders {
        sections: usize,
        needed: u64,
        available: u64,
    },

    #[error(
        "the kernel is built for machine {kernel:#06x} but the UEFI stub for \
         {stub:#06x} (0x8664 = x86-64, 0xaa64 = arm64); use a stub and a kernel of the \
         same architecture"
    )]
    MachineMismatch { stub: u16, kernel: u16 },

    #[error(
        "the UEFI stub is built for machine {machine:#06x}, not for {arch} ({expected:#06x}); \
         use systemd-boot-efi's {stub} for arch {arch}"
    )]
    StubArch {
        machine: u16,
        expected: u16,
        arch: &'static str,
        stub: &'static str,
    },

    #[error(
        "the UKI already carries a signature (certificate table at {offset:#x}, {size} \
         bytes); sign an unsigned UKI"
    )]
    AlreadySigned { offset: u64, size: u64 },

    #[error("the UKI has no kernel: the .linux part is empty; give the kernel image (vmlinuz)")]
    NoKernel,

    #[error(
        "{what} ({size} bytes) does not fit the 32-bit fields of a PE image (4 GiB); \
         make the initramfs smaller"
    )]
    TooLarge { what: &'static str, size: u64 },

    #[error(
        "{section} was {expected} bytes when the UKI was planned, but {actual} bytes \
         were read; was the input file changed during the build? Build again"
    )]
    ContentChanged {
        section: &'static str,
        expected: u64,
        actual: u64,
    },

    #[error("the UKI's {section} section is damaged: {why}")]
    BadSection { section: String, why: String },

    #[error(
        "the kernel is not an x86 bzImage: {why}; kernel_version needs an x86 boot \
         protocol kernel (vmlinuz), not an ELF vmlinux or an arm64 Image"
    )]
    NotBzImage { why: String },

    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
}

/// The section order of a UKI: ukify's, with `.linux` last so that the kernel may use
/// the address space after its own image (it decompresses in place).
const SECTION_ORDER: [&str; 5] = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"];

/// Where the UKI is installed on the ESP for x86_64: the removable-media boot path
/// (UEFI 2.10, section 3.5.1.1), which firmware boots with no boot entry set.
pub const ESP_PATH_X64: &str = "EFI/BOOT/BOOTX64.EFI";
/// The removable-media boot path for AArch64 (UEFI 2.10, table 3.5.1.1).
pub const ESP_PATH_AA64: &str = "EFI/BOOT/BOOTAA64.EFI";

/// Writes the UKI to `path` (in the private work folder) and returns its size: the
/// build's UKI stage.
pub fn write_uki_file(stub: &[u8], parts: &UkiParts, path: &Path) -> Result<u64, BootError> {
    let io = |source| BootError::Io {
        action: format!("cannot write the unified kernel image {}", path.display()),
        source,
    };
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = io::BufWriter::new(f);
    write_uki(stub, parts, &mut w)?;
    w.flush().map_err(io)?;
    let f = w.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(f.metadata().map_err(io)?.len())
}

/// The ESP's files: the UKI at the path the firmware of `arch` boots by default,
/// nothing else (no boot manager, no entries to keep in step).
pub fn esp_tree(uki: &Path, uki_len: u64, arch: Arch, epoch: u64) -> Result<Tree, TreeError> {
    let mut esp = Tree::new(epoch);
    let mut entry = Entry::file(
        Content::Host {
            path: std::sync::Arc::new(uki.to_path_buf()),
            offset: 0,
            len: uki_len,
        },
        0o644,
    );
    entry.mtime = epoch;
    esp.insert(TreePath::parse(esp_path(arch))?, entry)?;
    Ok(esp)
}

/// The ESP path the firmware of `arch` boots by default.
pub fn esp_path(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => ESP_PATH_X64,
        Arch::Arm64 => ESP_PATH_AA64,
    }
}

/// The COFF `Machine` of `arch`'s EFI binaries (PE spec 3.3.1).
pub fn pe_machine(arch: Arch) -> u16 {
    match arch {
        Arch::Amd64 => pe::MACHINE_AMD64,
        Arch::Arm64 => pe::MACHINE_ARM64,
    }
}

/// The architecture of a COFF `Machine`, for the machines kiOS builds for.
pub fn arch_of_machine(machine: u16) -> Option<Arch> {
    [Arch::Amd64, Arch::Arm64]
        .into_iter()
        .find(|&a| pe_machine(a) == machine)
}

/// Checks that `stub` can carry a UKI for `arch`: a PE image for that machine, not
/// signed, with room in its headers for the sections [`write_uki`] adds. `validate`
/// calls it, so that a bad stub is found before anything is built.
pub fn check_stub(stub: &[u8], arch: Arch) -> Result<(), BootError> {
    let headers = PeHeaders::read(&mut &stub[..], "the UEFI stub")?;
    if headers.machine != pe_machine(arch) {
        return Err(BootError::StubArch {
            machine: headers.machine,
            expected: pe_machine(arch),
            arch: arch.as_str(),
            stub: match arch {
                Arch::Amd64 => "linuxx64.efi.stub",
                Arch::Arm64 => "linuxaa64.efi.stub",
            },
        });
    }
    let new: Vec<NewSection> = SECTION_ORDER
        .iter()
        .map(|&name| NewSection {
            name,
            data_len: 1,
            virtual_size: 0,
        })
        .collect();
    pe::plan_append(&headers, &new)?;
    Ok(())
}

/// The largest text section [`read_uki`] reads; real ones are a few KiB.
const MAX_TEXT_SECTION: u64 = 1 << 20;

/// Writes `stub` with the sections of `parts` appended, as a UKI, to `out`; the kernel
/// and the initramfs are streamed. Returns the bytes written. The output depends only
/// on the inputs (the stub's own timestamp is kept).
pub fn write_uki<W: Write>(stub: &[u8], parts: &UkiParts, out: &mut W) -> Result<u64, BootError> {
    let stub_headers = PeHeaders::read(&mut &stub[..], "the UEFI stub")?;
    let image_len = stub_headers.raw_end();
    if image_len > stub.len() as u64 {
        return Err(BootError::NotPe {
            what: "the UEFI stub",
            why: format!(
                "its sections end at byte {image_len:#x}, past the end of the file ({:#x})",
                stub.len()
            ),
        });
    }
    if parts.linux.is_empty() {
        return Err(BootError::NoKernel);
    }
    let kernel = KernelImage::inspect(&parts.linux)?;
    if let Some(machine) = kernel.machine {
        if machine != stub_headers.machine {
            return Err(BootError::MachineMismatch {
                stub: stub_headers.machine,
                kernel: machine,
            });
        }
    }

    let sources: Vec<(&'static str, Source, u64)> = SECTION_ORDER
        .iter()
        .map(|&name| match name {
            ".osrel" => (name, Source::Bytes(&parts.osrel), 0),
            ".cmdline" => (name, Source::Bytes(&parts.cmdline), 0),
            ".uname" => (name, Source::Bytes(&parts.uname), 0),
            ".initrd" => (name, Source::Content(&parts.initrd), 0),
            _ => (name, Source::Content(&parts.linux), kernel.virtual_size),
        })
        .filter(|(_, source, _)| source.len() > 0)
        .collect();
    let new: Vec<NewSection> = sources
        .iter()
        .map(|(name, source, virtual_size)| NewSection {
            name,
            data_len: source.len(),
            virtual_size: *virtual_size,
        })
        .collect();
    let plan = pe::plan_append(&stub_headers, &new)?;

    let mut out = Counting { inner: out, n: 0 };
    let write_err = |source| BootError::Io {
        action: "writing the UKI".into(),
        source,
    };
    // The stub: its rewritten headers, then the rest of its image without whatever
    // followed its last section.
    out.write_all(&plan.headers).map_err(write_err)?;
    out.write_all(&stub[plan.headers.len()..plan.image_len as usize])
        .map_err(write_err)?;
    for ((name, source, _), header) in sources.iter().zip(&plan.sections) {
        out.pad_to(header.pointer_to_raw_data.into())
            .map_err(write_err)?;
        let written = match source {
            Source::Bytes(b) => {
                out.write_all(b).map_err(write_err)?;
                b.len() as u64
            }
            Source::Content(c) => {
                let mut r = c.open().map_err(|source| BootError::Io {
                    action: format!("opening the {name} input"),
                    source,
                })?;
                copy(&mut r, &mut out, name)?
            }
        };
        if written != source.len() {
            return Err(BootError::ContentChanged {
                section: name,
                expected: source.len(),
                actual: written,
            });
        }
        out.pad_to(u64::from(header.pointer_to_raw_data) + u64::from(header.size_of_raw_data))
            .map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    Ok(out.n)
}

/// Reads a UKI's section table and its text sections (`.cmdline`, `.uname`,
/// `.osrel`). Reads the headers and those sections only, never the whole file.
pub fn read_uki<R: Read + Seek>(r: &mut R) -> Result<UkiInfo, BootError> {
    r.seek(SeekFrom::Start(0)).map_err(|source| BootError::Io {
        action: "seeking to the start of the UKI".into(),
        source,
    })?;
    let h = PeHeaders::read(r, "the UKI")?;
    let file_len = r.seek(SeekFrom::End(0)).map_err(|source| BootError::Io {
        action: "seeking to the end of the UKI".into(),
        source,
    })?;
    // Every section's file bytes must be in the file: a header that says otherwise
    // is damaged, or the file was cut short.
    for s in h.sections.iter().filter(|s| s.size_of_raw_data > 0) {
        let end = u64::from(s.pointer_to_raw_data) + u64::from(s.size_of_raw_data);
        if end > file_len {
            return Err(BootError::BadSection {
                section: crate::untrusted::shown(&s.name_str()),
                why: format!(
                    "its {} bytes at {:#x} end at byte {end:#x}, past the end of the UKI \
                     ({file_len:#x} bytes): the UKI is truncated or its section table damaged",
                    s.size_of_raw_data, s.pointer_to_raw_data
                ),
            });
        }
    }
    let mut text = |name: &str| -> Result<String, BootError> {
        match h.sections.iter().find(|s| s.name_str() == name) {
            Some(s) => read_text_section(r, s),
            None => Ok(String::new()),
        }
    };
    Ok(UkiInfo {
        machine: h.machine,
        cmdline: text(".cmdline")?,
        uname: text(".uname")?,
        osrel: text(".osrel")?,
        sections: h.sections.iter().map(SectionInfo::from).collect(),
    })
}

fn read_text_section<R: Read + Seek>(r: &mut R, s: &SectionHeader) -> Result<String, BootError> {
    // The name comes from the image: escaped before it reaches a message.
    let name = crate::untrusted::shown(&s.name_str());
    let bad = |why: String| BootError::BadSection {
        section: name.clone(),
        why,
    };
    let len = u64::from(s.data_len());
    if len > MAX_TEXT_SECTION {
        return Err(bad(format!(
            "it is {len} bytes, more than the {MAX_TEXT_SECTION} a text section may have"
        )));
    }
    let io_err = |source| BootError::Io {
        action: format!("reading the UKI's {name} section"),
        source,
    };
    r.seek(SeekFrom::Start(s.pointer_to_raw_data.into()))
        .map_err(io_err)?;
    let mut bytes = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut bytes).map_err(io_err)?;
    if (bytes.len() as u64) < len {
        return Err(bad(format!(
            "its {len} bytes at {:#x} go past the end of the file",
            s.pointer_to_raw_data
        )));
    }
    // ukify and objcopy-made UKIs may NUL-terminate or NUL-pad their text sections.
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|e| bad(format!("it is not UTF-8 text ({e})")))
}

/// What the UKI needs to know about the kernel image.
struct KernelImage {
    /// The address space `.linux` needs once loaded.
    virtual_size: u64,
    /// The kernel's COFF machine, when it is a PE image.
    machine: Option<u16>,
}

impl KernelImage {
    /// Reads the kernel's PE headers (only them). An EFI-stub kernel is a PE image
    /// whose `SizeOfImage` covers the space it decompresses into; a kernel without PE
    /// headers gets its file length.
    fn inspect(linux: &Content) -> Result<KernelImage, BootError> {
        let mut r = linux.open().map_err(|source| BootError::Io {
            action: "opening the kernel (.linux) input".into(),
            source,
        })?;
        match PeHeaders::read(&mut r, "the kernel") {
            Ok(h) => Ok(KernelImage {
                virtual_size: u64::from(h.size_of_image).max(linux.len()),
                machine: Some(h.machine),
            }),
            Err(BootError::NotPe { .. }) => Ok(KernelImage {
                virtual_size: linux.len(),
                machine: None,
            }),
            Err(e) => Err(e),
        }
    }
}

enum Source<'a> {
    Bytes(&'a [u8]),
    Content(&'a Content),
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(b) => b.len() as u64,
            Source::Content(c) => c.len(),
        }
    }
}

/// Copies `r` to `w`, telling a read error (the input) from a write error (the UKI).
fn copy<R: Read + ?Sized, W: Write>(
    r: &mut R,
    w: &mut W,
    name: &'static str,
) -> Result<u64, BootError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(BootError::Io {
                    action: format!("reading the {name} input"),
                    source,
                })
            }
        };
        w.write_all(&buf[..n]).map_err(|source| BootError::Io {
            action: "writing the UKI".into(),
            source,
        })?;
        total += n as u64;
    }
}

/// A writer that counts what it writes, so that padding can be computed from file
/// offsets without `Seek`.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Counting<'_, W> {
    /// Writes zero bytes up to file offset `offset`.
    fn pad_to(&mut self, offset: u64) -> io::Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        debug_assert!(offset >= self.n, "padding backwards");
        while self.n < offset {
            let n = (offset - self.n).min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..n])?;
        }
        Ok(())
    }
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::synth::Synth;
    use super::*;
    use std::io::Cursor;

    fn parts(linux: Content) -> UkiParts {
        UkiParts {
            osrel: b"ID=kios\n".to_vec(),
            cmdline: b"console=ttyS0".to_vec(),
            uname: b"6.1.0-test".to_vec(),
            linux,
            initrd: Content::inline(vec![0x1f; 1000]),
        }
    }

    /// A stand-in kernel: a PE image whose SizeOfImage exceeds its file length.
    fn pe_kernel() -> Vec<u8> {
        Synth {
            sections: vec![(".text", 0x8000, vec![0x90; 0x300])],
            ..Synth::default()
        }
        .build()
    }

    fn build(stub: &[u8], parts: &UkiParts) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_uki(stub, parts, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    #[test]
    fn uki_has_the_stub_sections_then_ours_in_order_and_reads_back() {
        let stub = Synth {
            trailing: b"a symbol table that must go".to_vec(),
            ..Synth::default()
        }
        .build();
        let kernel = pe_kernel();
        let uki = build(&stub, &parts(Content::inline(kernel.clone())));
        let info = read_uki(&mut Cursor::new(&uki)).unwrap();
        let names: Vec<_> = info.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [".text", ".osrel", ".cmdline", ".uname", ".initrd", ".linux"]
        );
        assert_eq!(info.machine, 0x8664);
        assert_eq!(info.cmdline, "console=ttyS0");
        assert_eq!(info.uname, "6.1.0-test");
        assert_eq!(info.osrel, "ID=kios\n");

        // The stub's bytes up to its last section are kept (headers aside), its
        // trailing data is not.
        assert_eq!(&uki[0x400..0x1800], &stub[0x400..0x1800]);
        assert!(!uki.windows(12).any(|w| w == b"symbol table"));

        let linux = info.sections.last().unwrap();
        // The kernel's SizeOfImage: headers page + 0x8000 of .text.
        assert_eq!(linux.virtual_size, 0x9000);
        let at = linux.file_offset as usize;
        assert_eq!(&uki[at..at + kernel.len()], &kernel[..]);
        assert_eq!(uki.len() as u64, linux.file_offset + linux.file_size);
        for (prev, s) in info.sections.iter().zip(&info.sections[1..]) {
            assert!(s.virtual_address >= prev.virtual_address + prev.virtual_size);
            assert_eq!(s.virtual_address % 0x1000, 0, "{}", s.name);
            assert_eq!(
                s.file_offset,
                prev.file_offset + prev.file_size,
                "{}",
                s.name
            );
            assert_eq!(s.file_size % 0x200, 0, "{}", s.name);
        }
        let h = PeHeaders::read(&mut Cursor::new(&uki), "uki").unwrap();
        assert_eq!(
            u64::from(h.size_of_image),
            pe::align_up(linux.virtual_address + linux.virtual_size, 0x1000)
        );
    }

    #[test]
    fn output_is_deterministic() {
        let stub = Synth::default().build();
        let p = parts(Content::inline(pe_kernel()));
        assert_eq!(build(&stub, &p), build(&stub, &p));
    }

    #[test]
    fn empty_parts_are_left_out_and_a_non_pe_kernel_gets_its_length() {
        let stub = Synth::default().build();
        let p = UkiParts {
            osrel: Vec::new(),
            uname: Vec::new(),
            initrd: Content::inline(Vec::new()),
            ..parts(Content::inline(vec![7u8; 0x1234]))
        };
        let uki = build(&stub, &p);
        let info = read_uki(&mut Cursor::new(&uki)).unwrap();
        let names: Vec<_> = info.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".cmdline", ".linux"]);
        assert_eq!(info.sections[2].virtual_size, 0x1234);
        assert_eq!(info.uname, "");
    }

    #[test]
    fn a_kernel_for_another_machine_is_refused() {
        let stub = Synth::default().build();
        let mut kernel = pe_kernel();
        kernel[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        let err = write_uki(&stub, &parts(Content::inline(kernel)), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::MachineMismatch {
                    stub: 0x8664,
                    kernel: 0xaa64
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_stub_for_another_arch_is_refused_and_esp_paths_follow_the_arch() {
        let stub = Synth::default().build();
        check_stub(&stub, Arch::Amd64).unwrap();
        let err = check_stub(&stub, Arch::Arm64).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::StubArch {
                    machine: 0x8664,
                    expected: 0xaa64,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("linuxaa64.efi.stub"), "{err}");
        assert_eq!(esp_path(Arch::Amd64), "EFI/BOOT/BOOTX64.EFI");
        assert_eq!(esp_path(Arch::Arm64), "EFI/BOOT/BOOTAA64.EFI");
        assert_eq!(arch_of_machine(0xaa64), Some(Arch::Arm64));
        assert_eq!(arch_of_machine(0x14c), None);
    }

    #[test]
    fn an_arm64_stub_and_kernel_make_an_arm64_uki() {
        let mut stub = Synth::default().build();
        stub[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        check_stub(&stub, Arch::Arm64).unwrap();
        let mut kernel = pe_kernel();
        kernel[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        let uki = build(&stub, &parts(Content::inline(kernel)));
        let info = read_uki(&mut Cursor::new(&uki)).unwrap();
        assert_eq!(info.machine, 0xaa64);
        assert_eq!(info.sections.last().unwrap().name, ".linux");
    }

    #[test]
    fn a_signed_stub_writes_nothing() {
        let stub = Synth {
            certificate: (0x1800, 0x100),
            ..Synth::default()
        }
        .build();
        let mut out = Vec::new();
        let err = write_uki(&stub, &parts(Content::inline(pe_kernel())), &mut out).unwrap_err();
        assert!(matches!(err, BootError::SignedStub { .. }), "{err:?}");
        assert!(err.to_string().contains("unsigned stub"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn a_kernel_that_shrank_since_planning_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinuz");
        std::fs::write(&path, vec![1u8; 100]).unwrap();
        let linux = Content::Host {
            path: std::sync::Arc::new(path),
            offset: 0,
            len: 200,
        };
        let stub = Synth::default().build();
        let err = write_uki(&stub, &parts(linux), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::ContentChanged {
                    section: ".linux",
                    expected: 200,
                    actual: 100
                }
            ),
            "{err:?}"
        );
    }
}
