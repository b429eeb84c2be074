//! The EFI system partition: FAT32. (being written)
