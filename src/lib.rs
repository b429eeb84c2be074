//! kios-build: turns a kiOS node profile into a bootable disk image.
//!
//! The pipeline, in the order [`build::build`] runs it (`docs/design.md` has the table
//! with each stage's input and output):
//! [`profile`] (YAML -> `Profile`) -> [`output`] check of `-o` -> [`plan`] (registry
//! images pinned in `kios.lock`, pulled by [`oci`]) -> [`inputs`] (kernel, modules,
//! stub, system tree, kios-init) -> [`seed`] (the pre-seeded set) -> [`pods`] (static
//! pods, kubelet files) -> [`store`] (containers/storage as EROFS) -> [`initramfs`]
//! (what goes in, as cpio) -> [`boot`] (UKI, ESP files) -> [`disk`] (GPT, ESP, data)
//! -> [`format`] -> [`output`] (the partial file renamed over `-o`) -> [`report`] (the
//! build report and the SBOM). [`inspect`] reads an image back; [`kernel`] checks a
//! kernel's configuration.
//!
//! Around the stages: [`progress`] reports them, [`work`] is the private folder they
//! write in, [`interrupt`] removes leftovers on SIGTERM, SIGINT and SIGHUP, and
//! [`untrusted`] bounds and escapes what comes from outside. The binary and the tests
//! use the modules declared `pub` here; the rest is crate-private. `unsafe` is denied
//! everywhere but [`sys`], the one module of system-call wrappers.

#![deny(unsafe_code)]

pub mod boot;
pub mod build;
pub mod disk;
mod elf;
pub mod format;
pub mod initramfs;
pub mod inputs;
pub mod inspect;
pub mod interrupt;
pub mod kernel;
mod le;
pub mod oci;
pub(crate) mod output;
pub mod plan;
pub mod pods;
pub mod profile;
pub mod progress;
pub mod report;
pub mod reuse;
pub mod run;
pub(crate) mod seed;
pub mod sign;
pub mod store;
#[allow(unsafe_code)]
mod sys;
pub mod system;
pub mod tree;
pub(crate) mod units;
pub mod untrusted;
pub mod verify;
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
