//! kios-build: turns a kiOS node profile into a bootable disk image.
//!
//! The pipeline, one module per stage (see `docs/design.md`):
//! `profile` (YAML -> Profile) -> `inputs` (local paths and OCI layouts -> trees)
//! -> `initramfs` (tree -> cpio) -> `boot` (UKI) -> `disk` (GPT, ESP, data)
//! -> output file. `inspect` reads an image back.

pub mod boot;
pub mod disk;
pub mod initramfs;
pub mod oci;
pub mod profile;
pub mod tree;
pub mod units;
