#![no_main]
//! The layer reader (tar members, pax and GNU extensions, whiteouts, links) on an
//! arbitrary uncompressed layer whose digest is made to match.
use libfuzzer_sys::fuzz_target;
use sha2::{Digest as _, Sha256};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let blob_path = dir.path().join("blob");
    std::fs::write(&blob_path, data).unwrap();
    let digest: kios_build::oci::Digest = format!("sha256:{}", hex::encode(Sha256::digest(data)))
        .parse()
        .unwrap();
    let blob = kios_build::oci::LayerBlob {
        digest: digest.clone(),
        diff_id: digest,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        compression: kios_build::oci::Compression::None,
        size: data.len() as u64,
        path: blob_path,
    };
    let limits = kios_build::oci::Limits::default();
    if let Err(e) = kios_build::oci::read_layer_tree("fuzz", 0, &blob, dir.path(), &limits) {
        let _ = e.to_string();
    }
});
