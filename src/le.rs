//! Little-endian fields at a byte offset of an on-disk structure (GPT, PE, ELF, ...).
//! The caller has checked that `at..at + N` lies inside `b`: these index the slice and
//! would panic otherwise, so every reader bounds its buffer first.

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
