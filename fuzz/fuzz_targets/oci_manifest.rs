#![no_main]
//! Image indexes and manifests as the registry and layout code parse them, and the
//! platform choice made on an index.
use libfuzzer_sys::fuzz_target;
use oci_spec::image::{ImageIndex, ImageManifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        for arch in ["amd64", "arm64", "arm/v7"] {
            let _ = kios_build::oci::layout::select_platform("fuzz", &index, arch);
        }
    }
    let _ = serde_json::from_slice::<ImageManifest>(data);
});
