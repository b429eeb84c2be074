//! The EFI system partition: FAT32. (placeholder until the writer lands)
use crate::tree::Tree;
pub struct EspOptions { pub volume_id: u32, pub label: [u8; 11], pub mtime: u64 }
#[derive(Debug, thiserror::Error)]
pub enum EspError { #[error("not yet")] NotYet }
pub fn min_size(_tree: &Tree) -> u64 { 64 << 20 }
pub fn write_fat32<W: std::io::Write + std::io::Seek>(_t: &Tree, _o: &mut W, _off: u64, _s: u64, _opts: &EspOptions) -> Result<(), EspError> { Err(EspError::NotYet) }
