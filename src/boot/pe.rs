//! PE/COFF image headers: reading them, and planning sections appended to an image.
//!
//! Only what a unified kernel image needs: the MS-DOS stub's `e_lfanew`, the COFF file
//! header, the fields of the optional header that describe the image's layout, the
//! certificate table entry, and the section table. Not a general PE library: no
//! imports, relocations, resources or symbols are interpreted.
//!
//! References are to Microsoft's "PE Format" specification (the PE/COFF specification),
//! <https://learn.microsoft.com/windows/win32/debug/pe-format>; section numbers as there.
//!
//! Headers are read forward only (never seeking back), so the same code reads a stub
//! held in memory, a kernel streamed from [`crate::tree::Content`], and a UKI on disk.

pub(crate) use crate::le::{le16, le32};
use std::io::{self, Read};

use super::BootError;

/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ` (spec 3.1, "Section Flags"):
/// what ukify gives every section it adds; none is code, none is writable.
pub const SCN_INITIALIZED_READ_ONLY: u32 = 0x0000_0040 | 0x4000_0000;

/// Spec 3.4, "Optional Header Image Only": the magic of a PE32 and a PE32+ image.
pub const MAGIC_PE32: u16 = 0x10b;
pub const MAGIC_PE32_PLUS: u16 = 0x20b;

/// Spec 3.3: the COFF file header is 20 bytes; spec 3.4 ("Section Table"): each
/// section header is 40 bytes.
pub(super) const COFF_HEADER_LEN: usize = 20;
pub const SECTION_HEADER_LEN: usize = 40;

/// Spec 2 ("Overview"): offset 0x3c of the MS-DOS stub holds the file offset of the
/// PE signature. A sanity bound, not a spec limit: real images keep it small.
const MAX_PE_OFFSET: usize = 1 << 20;

/// The index of the Certificate Table in the data directories (spec 3.4.3).
pub(super) const CERTIFICATE_TABLE: usize = 4;

/// One section header (spec 3.4, "Section Table (Section Headers)"). The relocation
/// and line-number fields are zero in images and are not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    /// Eight bytes, NUL-padded; a name of exactly eight bytes has no NUL.
    pub name: [u8; 8],
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

impl SectionHeader {
    fn parse(b: &[u8]) -> SectionHeader {
        let mut name = [0u8; 8];
        name.copy_from_slice(&b[0..8]);
        SectionHeader {
            name,
            virtual_size: le32(b, 8),
            virtual_address: le32(b, 12),
            size_of_raw_data: le32(b, 16),
            pointer_to_raw_data: le32(b, 20),
            characteristics: le32(b, 36),
        }
    }

    pub fn to_bytes(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut b = [0u8; SECTION_HEADER_LEN];
        b[0..8].copy_from_slice(&self.name);
        b[8..12].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.virtual_address.to_le_bytes());
        b[16..20].copy_from_slice(&self.size_of_raw_data.to_le_bytes());
        b[20..24].copy_from_slice(&self.pointer_to_raw_data.to_le_bytes());
        // 24..36: PointerToRelocations, PointerToLinenumbers, NumberOfRelocations,
        // NumberOfLinenumbers: zero for images.
        b[36..40].copy_from_slice(&self.characteristics.to_le_bytes());
        b
    }

    /// The name without its NUL padding, lossily decoded (`/4`-style long names, which
    /// point into a COFF string table, are shown as they are).
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    /// The file bytes that hold the section's data (spec: when `VirtualSize` is
    /// smaller than `SizeOfRawData`, the rest is file-alignment padding).
    pub fn data_len(&self) -> u32 {
        if self.virtual_size == 0 {
            self.size_of_raw_data
        } else {
            self.virtual_size.min(self.size_of_raw_data)
        }
    }

    fn raw_end(&self) -> u64 {
        u64::from(self.pointer_to_raw_data) + u64::from(self.size_of_raw_data)
    }

    fn virtual_end(&self) -> u64 {
        u64::from(self.virtual_address) + u64::from(self.virtual_size)
    }
}

/// Makes an 8-byte section name; longer names would need a COFF string table, which
/// images do not have (spec 3.4, `Name`).
pub fn section_name(name: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    let b = name.as_bytes();
    debug_assert!(b.len() <= 8, "section name {name:?} is longer than 8 bytes");
    let n = b.len().min(8);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// Byte offsets of the optional-header fields we read or rewrite. They differ
/// between PE32 and PE32+ only after `ImageBase` (spec 3.4.1 and 3.4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OptionalLayout {
    /// Where the data directories start, relative to the optional header.
    pub(super) data_directories: usize,
    /// Where `NumberOfRvaAndSizes` is.
    pub(super) number_of_rva_and_sizes: usize,
}

const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
pub(super) const OPT_SECTION_ALIGNMENT: usize = 32;
pub(super) const OPT_FILE_ALIGNMENT: usize = 36;
pub(super) const OPT_SIZE_OF_IMAGE: usize = 56;
pub(super) const OPT_SIZE_OF_HEADERS: usize = 60;
pub(super) const OPT_CHECKSUM: usize = 64;

impl OptionalLayout {
    pub(super) fn for_magic(magic: u16) -> Option<OptionalLayout> {
        match magic {
            MAGIC_PE32 => Some(OptionalLayout {
                number_of_rva_and_sizes: 92,
                data_directories: 96,
            }),
            MAGIC_PE32_PLUS => Some(OptionalLayout {
                number_of_rva_and_sizes: 108,
                data_directories: 112,
            }),
            _ => None,
        }
    }
}

/// COFF `Machine` values (spec 3.3.1, "Machine Types") of the UEFI binaries kiOS makes.
pub const MACHINE_AMD64: u16 = 0x8664;
pub const MACHINE_ARM64: u16 = 0xaa64;

/// The headers of a PE image, from offset 0 to the end of the section table.
#[derive(Clone, Debug)]
pub struct PeHeaders {
    /// The header bytes as read: offset 0 up to the end of the section table.
    pub bytes: Vec<u8>,
    /// `e_lfanew`: the file offset of the `PE\0\0` signature.
    pub pe_offset: usize,
    /// COFF `Machine` (spec 3.3.1), e.g. 0x8664 for x86-64, 0xaa64 for arm64.
    pub machine: u16,
    pub(super) opt_offset: usize,
    pub section_table_offset: usize,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    pub size_of_headers: u32,
    pub size_of_initialized_data: u32,
    /// The certificate table data directory (file offset, size), if the image has
    /// that many data directories.
    pub certificate_table: Option<(u32, u32)>,
    pub sections: Vec<SectionHeader>,
}

impl PeHeaders {
    /// Reads the headers of a PE image from the start of `r`, reading forward only.
    /// `what` names the input in errors ("the UEFI stub").
    pub fn read<R: Read + ?Sized>(r: &mut R, what: &'static str) -> Result<PeHeaders, BootError> {
        let not_pe = |why: String| BootError::NotPe { what, why };
        let mut bytes = Vec::new();

        // Spec 2 ("MS-DOS Stub (Image Only)") and 3.1 ("Signature (Image Only)").
        fill(r, &mut bytes, 0x40, what)?;
        if &bytes[0..2] != b"MZ" {
            return Err(not_pe("no MZ signature at offset 0".into()));
        }
        let pe_offset = le32(&bytes, 0x3c) as usize;
        if !(0x40..=MAX_PE_OFFSET).contains(&pe_offset) {
            return Err(not_pe(format!(
                "the PE header offset at 0x3c ({pe_offset:#x}) is out of range"
            )));
        }
        fill(r, &mut bytes, pe_offset + 4 + COFF_HEADER_LEN, what)?;
        if &bytes[pe_offset..pe_offset + 4] != b"PE\0\0" {
            return Err(not_pe(format!("no PE signature at offset {pe_offset:#x}")));
        }

        // Spec 3.3, "COFF File Header (Object and Image)".
        let coff = pe_offset + 4;
        let machine = le16(&bytes, coff);
        let number_of_sections = usize::from(le16(&bytes, coff + 2));
        let size_of_optional_header = usize::from(le16(&bytes, coff + 16));
        let opt_offset = coff + COFF_HEADER_LEN;
        let section_table_offset = opt_offset + size_of_optional_header;
        fill(
            r,
            &mut bytes,
            section_table_offset + number_of_sections * SECTION_HEADER_LEN,
            what,
        )?;

        // Spec 3.4, "Optional Header (Image Only)".
        if size_of_optional_header < 2 {
            return Err(not_pe("it has no optional header (an object file?)".into()));
        }
        let magic = le16(&bytes, opt_offset);
        let layout = OptionalLayout::for_magic(magic).ok_or_else(|| {
            not_pe(format!(
                "unknown optional header magic {magic:#x} (expected 0x10b or 0x20b)"
            ))
        })?;
        if size_of_optional_header < layout.data_directories {
            return Err(not_pe(format!(
                "its optional header is {size_of_optional_header} bytes, shorter than the \
                 {} its magic {magic:#x} requires",
                layout.data_directories
            )));
        }
        let opt = &bytes[opt_offset..section_table_offset];
        let section_alignment = le32(opt, OPT_SECTION_ALIGNMENT);
        let file_alignment = le32(opt, OPT_FILE_ALIGNMENT);
        // Spec 3.4.2: both are powers of two, and SectionAlignment >= FileAlignment.
        if !file_alignment.is_power_of_two()
            || !section_alignment.is_power_of_two()
            || section_alignment < file_alignment
        {
            return Err(not_pe(format!(
                "its alignments are invalid (SectionAlignment {section_alignment:#x}, \
                 FileAlignment {file_alignment:#x})"
            )));
        }
        // Spec 3.4.3: only as many data directories as NumberOfRvaAndSizes says, and
        // only as many as fit in the optional header.
        let dirs_declared = le32(opt, layout.number_of_rva_and_sizes) as usize;
        let dirs_present = dirs_declared.min((opt.len() - layout.data_directories) / 8);
        let certificate_table = (dirs_present > CERTIFICATE_TABLE).then(|| {
            let at = layout.data_directories + CERTIFICATE_TABLE * 8;
            (le32(opt, at), le32(opt, at + 4))
        });

        let sections = bytes[section_table_offset..]
            .chunks_exact(SECTION_HEADER_LEN)
            .map(SectionHeader::parse)
            .collect();

        Ok(PeHeaders {
            pe_offset,
            machine,
            opt_offset,
            section_table_offset,
            section_alignment,
            file_alignment,
            size_of_image: le32(opt, OPT_SIZE_OF_IMAGE),
            size_of_headers: le32(opt, OPT_SIZE_OF_HEADERS),
            size_of_initialized_data: le32(opt, OPT_SIZE_OF_INITIALIZED_DATA),
            certificate_table,
            sections,
            bytes,
        })
    }

    /// The end of the last section's raw data: where the image proper ends and
    /// trailing data (a COFF symbol table, a signature, junk) begins.
    pub fn raw_end(&self) -> u64 {
        self.sections
            .iter()
            .filter(|s| s.size_of_raw_data > 0)
            .map(SectionHeader::raw_end)
            .max()
            .unwrap_or(0)
            .max(u64::from(self.size_of_headers))
    }

    /// Where the header area ends: the first section's raw data may not start before
    /// `SizeOfHeaders` (spec 3.4.2), and no section header may overlap raw data.
    fn header_room_end(&self) -> u64 {
        self.sections
            .iter()
            .filter(|s| s.size_of_raw_data > 0 && s.pointer_to_raw_data > 0)
            .map(|s| u64::from(s.pointer_to_raw_data))
            .min()
            .unwrap_or(u64::MAX)
            .min(u64::from(self.size_of_headers))
    }

    /// The end of the stub's address space: sections are laid out in ascending
    /// virtual addresses (spec 3.4), and `SizeOfImage` covers them all; take the larger
    /// so that nothing new overlaps what the stub declares as its own.
    fn virtual_end(&self) -> u64 {
        self.sections
            .iter()
            .map(SectionHeader::virtual_end)
            .max()
            .unwrap_or(0)
            .max(u64::from(self.size_of_image))
    }
}

/// A section to append: its name, how many bytes of data it has, and how much address
/// space it needs (at least the data length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSection {
    pub name: &'static str,
    pub data_len: u64,
    pub virtual_size: u64,
}

/// The result of [`plan_append`]: the rewritten headers and where each new section's
/// data goes.
#[derive(Clone, Debug)]
pub struct AppendPlan {
    /// The new headers: the input header bytes up to the end of the old section table,
    /// patched, followed by the new section headers.
    pub headers: Vec<u8>,
    /// How many bytes of the original image to copy (its sections' raw data, without
    /// any trailing data), headers included; `headers` replaces the first part of them.
    pub image_len: u64,
    /// The new section headers, in order.
    pub sections: Vec<SectionHeader>,
}

/// Plans appending `new` sections to the image whose headers are `h`.
///
/// The rules (spec 3.4 "Section Table", 3.4.2 "Optional Header Windows-Specific
/// Fields"): each section starts at the previous one's end rounded up to
/// `SectionAlignment` in memory and to `FileAlignment` in the file; `SizeOfRawData`
/// is a multiple of `FileAlignment`; `SizeOfImage` is the end of the last section
/// rounded to `SectionAlignment`; the section table must fit before `SizeOfHeaders`.
pub fn plan_append(h: &PeHeaders, new: &[NewSection]) -> Result<AppendPlan, BootError> {
    if let Some((offset, size)) = h.certificate_table {
        if offset != 0 || size != 0 {
            return Err(BootError::SignedStub { offset, size });
        }
    }

    let count = h.sections.len() + new.len();
    let table_end = h.section_table_offset as u64 + (count * SECTION_HEADER_LEN) as u64;
    let room = h.header_room_end();
    if table_end > room {
        return Err(BootError::NoRoomForSectionHeaders {
            sections: new.len(),
            needed: table_end,
            available: room,
        });
    }
    let number_of_sections = u16::try_from(count).map_err(|_| BootError::TooLarge {
        what: "the number of sections",
        size: count as u64,
    })?;

    let sa = u64::from(h.section_alignment);
    let fa = u64::from(h.file_alignment);
    let mut va = align_up(h.virtual_end(), sa);
    let mut raw = align_up(h.raw_end(), fa);
    let mut initialized = u64::from(h.size_of_initialized_data);
    let mut sections = Vec::with_capacity(new.len());
    for s in new {
        let raw_size = align_up(s.data_len, fa);
        let virtual_size = s.virtual_size.max(s.data_len);
        let header = SectionHeader {
            name: section_name(s.name),
            virtual_size: to_u32(virtual_size, s.name)?,
            virtual_address: to_u32(va, s.name)?,
            size_of_raw_data: to_u32(raw_size, s.name)?,
            pointer_to_raw_data: to_u32(raw, s.name)?,
            characteristics: SCN_INITIALIZED_READ_ONLY,
        };
        va = align_up(va + virtual_size, sa);
        raw += raw_size;
        initialized += raw_size;
        sections.push(header);
    }
    let size_of_image = to_u32(va, "SizeOfImage")?;
    // Also the end of the file must stay addressable by a u32 PointerToRawData.
    to_u32(raw, "the image file")?;

    let old_table_end = h.section_table_offset + h.sections.len() * SECTION_HEADER_LEN;
    let mut headers = h.bytes[..old_table_end].to_vec();
    let coff = h.pe_offset + 4;
    put16(&mut headers, coff + 2, number_of_sections);
    // COFF PointerToSymbolTable and NumberOfSymbols: deprecated for images (spec 3.3);
    // a symbol table lives in the trailing data that is not copied, so drop the
    // reference rather than leave it pointing into the new sections.
    put32(&mut headers, coff + 8, 0);
    put32(&mut headers, coff + 12, 0);
    let opt = h.opt_offset;
    put32(&mut headers, opt + OPT_SIZE_OF_IMAGE, size_of_image);
    // SizeOfInitializedData is informational (loaders ignore it); keep it consistent
    // when it fits, else leave the stub's value.
    if let Ok(v) = u32::try_from(initialized) {
        put32(&mut headers, opt + OPT_SIZE_OF_INITIALIZED_DATA, v);
    }
    // Spec 3.4.2 CheckSum: the image changed; UEFI does not check it; zero means
    // "not computed" (as ukify and objcopy leave it).
    put32(&mut headers, opt + OPT_CHECKSUM, 0);
    for s in &sections {
        headers.extend_from_slice(&s.to_bytes());
    }

    Ok(AppendPlan {
        headers,
        image_len: h.raw_end(),
        sections,
    })
}

pub fn align_up(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

fn to_u32(v: u64, what: &'static str) -> Result<u32, BootError> {
    u32::try_from(v).map_err(|_| BootError::TooLarge { what, size: v })
}

/// Reads from `r` until `buf` holds `len` bytes; a short input is "not a PE image".
fn fill<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
    what: &'static str,
) -> Result<(), BootError> {
    if buf.len() >= len {
        return Ok(());
    }
    let start = buf.len();
    buf.resize(len, 0);
    r.read_exact(&mut buf[start..]).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BootError::NotPe {
            what,
            why: format!("it ends inside its headers (before byte {len})"),
        },
        _ => BootError::Io {
            action: format!("reading the headers of {what}"),
            source: e,
        },
    })
}

pub(super) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::synth::Synth;
    use super::*;

    fn headers(img: &[u8]) -> PeHeaders {
        PeHeaders::read(&mut io::Cursor::new(img), "the test image").unwrap()
    }

    fn new(name: &'static str, data_len: u64, virtual_size: u64) -> NewSection {
        NewSection {
            name,
            data_len,
            virtual_size,
        }
    }

    #[test]
    fn synthetic_headers_are_read_back() {
        let img = Synth::default().build();
        let h = headers(&img);
        assert_eq!(h.machine, 0x8664);
        assert_eq!((h.section_alignment, h.file_alignment), (0x1000, 0x200));
        assert_eq!(h.sections.len(), 1);
        assert_eq!(h.sections[0].name_str(), ".text");
        assert_eq!(h.sections[0].virtual_address, 0x1000);
        assert_eq!(h.sections[0].pointer_to_raw_data, 0x400);
        assert_eq!(h.size_of_image, 0x3000);
        assert_eq!(h.raw_end(), 0x400 + 0x1400);
    }

    #[test]
    fn pe32_headers_are_read_too() {
        let img = Synth {
            magic: MAGIC_PE32,
            ..Synth::default()
        }
        .build();
        let h = headers(&img);
        assert_eq!(h.certificate_table, Some((0, 0)));
        let plan = plan_append(&h, &[new(".cmdline", 5, 5)]).unwrap();
        assert_eq!(plan.sections[0].virtual_address, 0x3000);
    }

    #[test]
    fn new_sections_follow_the_stub_aligned_in_memory_and_file() {
        let h = headers(&Synth::default().build());
        let plan = plan_append(
            &h,
            &[new(".osrel", 0x10, 0x10), new(".linux", 0x2345, 0x9000)],
        )
        .unwrap();
        let [osrel, linux] = &plan.sections[..] else {
            panic!("two sections expected")
        };
        // .text ends at 0x1000 + 0x1234 -> next page 0x3000 (also SizeOfImage).
        assert_eq!(osrel.virtual_address, 0x3000);
        assert_eq!(osrel.virtual_size, 0x10);
        assert_eq!(osrel.pointer_to_raw_data, 0x1800);
        assert_eq!(osrel.size_of_raw_data, 0x200);
        assert_eq!(osrel.characteristics, 0x4000_0040);
        assert_eq!(linux.virtual_address, 0x4000);
        assert_eq!(linux.virtual_size, 0x9000);
        assert_eq!(linux.pointer_to_raw_data, 0x1a00);
        assert_eq!(linux.size_of_raw_data, 0x2400);
        assert_eq!(headers(&plan.headers).size_of_image, 0xd000);
        assert_eq!(&linux.name, b".linux\0\0");
    }

    #[test]
    fn virtual_size_is_never_smaller_than_the_data() {
        let h = headers(&Synth::default().build());
        let plan = plan_append(&h, &[new(".linux", 0x5000, 0x100)]).unwrap();
        assert_eq!(plan.sections[0].virtual_size, 0x5000);
    }

    #[test]
    fn rewritten_headers_count_sections_drop_checksum_and_symbols() {
        let img = Synth {
            trailing: b"symbols and strings".to_vec(),
            ..Synth::default()
        }
        .build();
        let h = headers(&img);
        assert_eq!(h.raw_end(), 0x1800);
        let plan = plan_append(&h, &[new(".cmdline", 3, 3)]).unwrap();
        assert_eq!(plan.image_len, 0x1800);
        let again = headers(&plan.headers);
        assert_eq!(again.sections.len(), 2);
        assert_eq!(again.sections[1], plan.sections[0]);
        assert_eq!(again.size_of_image, 0x4000);
        let coff = again.pe_offset + 4;
        assert_eq!(le32(&plan.headers, coff + 4), 0x1234_5678, "timestamp kept");
        assert_eq!(le32(&plan.headers, coff + 8), 0, "PointerToSymbolTable");
        assert_eq!(le32(&plan.headers, coff + 12), 0, "NumberOfSymbols");
        assert_eq!(le32(&plan.headers, again.opt_offset + OPT_CHECKSUM), 0);
        assert_eq!(again.size_of_initialized_data, 0x200);
    }

    #[test]
    fn a_signed_stub_is_refused() {
        let img = Synth {
            certificate: (0x1800, 0x700),
            ..Synth::default()
        }
        .build();
        let err = plan_append(&headers(&img), &[new(".linux", 1, 1)]).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::SignedStub {
                    offset: 0x1800,
                    size: 0x700
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn too_many_sections_for_the_header_area_is_an_error() {
        // The section table starts at 0x80 + 4 + 20 + 240 = 0x188; 0x200 bytes of
        // headers hold three section headers (0x188 + 120 = 0x200) but not four.
        let img = Synth {
            size_of_headers: 0x200,
            ..Synth::default()
        }
        .build();
        let h = headers(&img);
        let two = [new(".cmdline", 1, 1), new(".linux", 1, 1)];
        assert!(plan_append(&h, &two).is_ok());
        let three = [
            new(".cmdline", 1, 1),
            new(".initrd", 1, 1),
            new(".linux", 1, 1),
        ];
        match plan_append(&h, &three).unwrap_err() {
            BootError::NoRoomForSectionHeaders {
                sections,
                needed,
                available,
            } => {
                assert_eq!(sections, 3);
                assert_eq!(needed, 0x188 + 4 * 40);
                assert_eq!(available, 0x200);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn garbage_is_not_a_pe_image() {
        for img in [&b"MZ"[..], &[0u8; 0x100][..], b"\x7fELF and more bytes"] {
            let err = PeHeaders::read(&mut io::Cursor::new(img), "the test image").unwrap_err();
            assert!(matches!(err, BootError::NotPe { .. }), "{err:?}");
        }
        let mut img = Synth::default().build();
        img[0x80] = b'X';
        let err = PeHeaders::read(&mut io::Cursor::new(&img), "x").unwrap_err();
        assert!(err.to_string().contains("no PE signature"), "{err}");
    }
}
