//! A builder of minimal, valid PE32+/PE32 images for the tests of this module: a few
//! sections, optional trailing data, an optional certificate table entry.

use super::pe::{
    align_up, put16, put32, section_name, OptionalLayout, SectionHeader, CERTIFICATE_TABLE,
    COFF_HEADER_LEN, MAGIC_PE32_PLUS, OPT_CHECKSUM, OPT_FILE_ALIGNMENT, OPT_SECTION_ALIGNMENT,
    OPT_SIZE_OF_HEADERS, OPT_SIZE_OF_IMAGE, SECTION_HEADER_LEN,
};

pub struct Synth {
    pub magic: u16,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_headers: u32,
    pub certificate: (u32, u32),
    /// (name, virtual size, data)
    pub sections: Vec<(&'static str, u32, Vec<u8>)>,
    pub trailing: Vec<u8>,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            magic: MAGIC_PE32_PLUS,
            section_alignment: 0x1000,
            file_alignment: 0x200,
            size_of_headers: 0x400,
            certificate: (0, 0),
            sections: vec![(".text", 0x1234, vec![0xcc; 0x1234])],
            trailing: Vec::new(),
        }
    }
}

impl Synth {
    pub fn build(&self) -> Vec<u8> {
        let layout = OptionalLayout::for_magic(self.magic).unwrap();
        let opt_len = layout.data_directories + 16 * 8;
        let pe_offset = 0x80;
        let table = pe_offset + 4 + COFF_HEADER_LEN + opt_len;
        let mut b = vec![0u8; self.size_of_headers as usize];
        b[0..2].copy_from_slice(b"MZ");
        put32(&mut b, 0x3c, pe_offset as u32);
        b[pe_offset..pe_offset + 4].copy_from_slice(b"PE\0\0");
        let coff = pe_offset + 4;
        put16(&mut b, coff, 0x8664);
        put16(&mut b, coff + 2, self.sections.len() as u16);
        put32(&mut b, coff + 4, 0x1234_5678); // TimeDateStamp: kept as is
        put32(&mut b, coff + 8, 0); // filled below when there is trailing data
        put16(&mut b, coff + 16, opt_len as u16);
        put16(&mut b, coff + 18, 0x0206);
        let opt = coff + COFF_HEADER_LEN;
        put16(&mut b, opt, self.magic);
        put32(&mut b, opt + OPT_SECTION_ALIGNMENT, self.section_alignment);
        put32(&mut b, opt + OPT_FILE_ALIGNMENT, self.file_alignment);
        put32(&mut b, opt + OPT_SIZE_OF_HEADERS, self.size_of_headers);
        put32(&mut b, opt + OPT_CHECKSUM, 0xdead_beef);
        put16(&mut b, opt + 68, 10); // EFI application
        put32(&mut b, opt + layout.number_of_rva_and_sizes, 16);
        let cert = opt + layout.data_directories + CERTIFICATE_TABLE * 8;
        put32(&mut b, cert, self.certificate.0);
        put32(&mut b, cert + 4, self.certificate.1);

        let sa = u64::from(self.section_alignment);
        let fa = u64::from(self.file_alignment);
        let mut va = align_up(u64::from(self.size_of_headers), sa);
        let mut headers = Vec::new();
        let mut data = Vec::new();
        let mut raw = u64::from(self.size_of_headers);
        for (name, vsize, bytes) in &self.sections {
            let raw_size = align_up(bytes.len() as u64, fa);
            headers.push(SectionHeader {
                name: section_name(name),
                virtual_size: *vsize,
                virtual_address: va as u32,
                size_of_raw_data: raw_size as u32,
                pointer_to_raw_data: raw as u32,
                characteristics: 0x6000_0020,
            });
            let mut d = bytes.clone();
            d.resize(raw_size as usize, 0);
            data.extend_from_slice(&d);
            raw += raw_size;
            va = align_up(va + u64::from(*vsize), sa);
        }
        put32(&mut b, opt + OPT_SIZE_OF_IMAGE, va as u32);
        if !self.trailing.is_empty() {
            put32(&mut b, coff + 8, raw as u32);
            put32(&mut b, coff + 12, 3);
        }
        for (i, h) in headers.iter().enumerate() {
            let at = table + i * SECTION_HEADER_LEN;
            b[at..at + SECTION_HEADER_LEN].copy_from_slice(&h.to_bytes());
        }
        b.extend_from_slice(&data);
        b.extend_from_slice(&self.trailing);
        b
    }
}
