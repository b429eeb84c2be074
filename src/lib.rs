//! kios-build: turns a kiOS node profile into a bootable disk image.
//!
//! The pipeline, one module per stage (see `docs/design.md`):
//! [`profile`] (YAML -> Profile) -> [`plan`] (registry images pinned, pulled,
//! `kios.lock`) -> [`inputs`] and [`oci`] (local paths, OCI layouts and pulled
//! images -> files and trees) -> [`initramfs`] (tree -> cpio) -> [`boot`] (UKI) ->
//! [`disk`] (GPT, ESP, data) -> the image file. [`build`] runs the stages in order;
//! [`inspect`] reads an image back. [`output`] is how every file the user names is
//! written, [`work`] the private folder a build writes in, and [`interrupt`] removes
//! both's leftovers on SIGTERM, SIGINT and SIGHUP.

pub mod boot;
pub mod build;
pub mod disk;
pub mod format;
pub mod initramfs;
pub mod inputs;
pub mod inspect;
pub mod interrupt;
pub mod kernel;
pub mod oci;
pub(crate) mod output;
pub mod plan;
pub mod pods;
pub mod profile;
pub mod progress;
pub(crate) mod seed;
pub mod store;
pub mod tree;
pub(crate) mod units;
pub mod untrusted;
pub(crate) mod work;

/// `error` and the causes below it, each after `separator` (a cause whose text its
/// parent already shows is left out): how the binary prints an error and how the
/// registry client folds one into a single line.
pub fn error_chain(error: &dyn std::error::Error, separator: &str) -> String {
    let mut s = error.to_string();
    let mut cur = error.source();
    while let Some(c) = cur {
        let line = c.to_string();
        if !s.contains(&line) {
            s.push_str(separator);
            s.push_str(&line);
        }
        cur = c.source();
    }
    s
}
