//! The store's layers read on several threads (src/store/cstorage/read.rs): the
//! image is the same bytes whatever `KIOS_BUILD_JOBS` says, and a broken layer is
//! reported as a serial build reports it (the first one in the images' order).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{build_command, pause_yaml, profile_text, run, sha256_file, text, write_profile};

/// `n` images of `layers` layers each, as OCI layouts under `dir`: every layer a
/// folder of a few files (one shared by name across images, so that layers differ
/// but paths repeat); returns the layouts.
fn layouts(dir: &Path, n: usize, layers: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut roots = Vec::new();
        for l in 0..layers {
            let root = dir.join(format!("root-{i}-{l}"));
            fs::create_dir_all(root.join("usr/share/data")).unwrap();
            // Compressible and distinct: a few hundred KiB per layer.
            let line = format!("image {i} layer {l} ");
            fs::write(
                root.join(format!("usr/share/data/file-{l}")),
                line.repeat(20_000),
            )
            .unwrap();
            fs::write(root.join("usr/share/data/common"), format!("{i}-{l}\n")).unwrap();
            roots.push(root);
        }
        let layout = dir.join(format!("image{i}"));
        let refs: Vec<&Path> = roots.iter().map(|p| p.as_path()).collect();
        common::oci_layout(&layout, "1", &refs);
        out.push(layout);
    }
    out
}

fn profile(dir: &Path, images: &[PathBuf]) -> PathBuf {
    let mut daemons = String::from("daemons:\n");
    for (i, l) in images.iter().enumerate() {
        daemons.push_str(&format!(
            "  - name: d{i}\n    image: oci:{}:1\n",
            l.display()
        ));
    }
    write_profile(
        dir,
        "node.yaml",
        &profile_text(&format!("{daemons}{}disk:\n  size: 1GiB\n", pause_yaml())),
    )
}

/// Builds with `KIOS_BUILD_JOBS=jobs`, nothing reused; returns the output.
fn build(profile: &Path, out: &Path, jobs: usize) -> std::process::Output {
    let start = Instant::now();
    let o = run(build_command(profile, out)
        .arg("--no-reuse")
        .env("KIOS_BUILD_JOBS", jobs.to_string())
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    eprintln!(
        "jobs={jobs}: {:.2}s, {:?}",
        start.elapsed().as_secs_f64(),
        o.status
    );
    o
}

#[test]
fn the_store_is_the_same_bytes_with_one_two_and_eight_workers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = layouts(d, 4, 5);
    let profile = profile(d, &images);
    let mut digests = Vec::new();
    for jobs in [1, 2, 8] {
        let img = d.join(format!("jobs{jobs}.img"));
        let o = build(&profile, &img, jobs);
        assert!(o.status.success(), "{}", text(&o));
        let lines = String::from_utf8_lossy(&o.stderr);
        assert!(lines.contains("image store: 5 images"), "{lines}");
        digests.push(sha256_file(&img));
        fs::remove_file(&img).unwrap();
    }
    assert_eq!(digests[0], digests[1], "1 and 2 workers differ");
    assert_eq!(digests[0], digests[2], "1 and 8 workers differ");
}

#[test]
fn a_broken_layer_is_reported_as_a_serial_build_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = layouts(d, 3, 4);
    // Image 1's layer 2 and image 2's layer 0 no longer match their digests: the
    // first in the images' order is the one reported, whoever reads it.
    for (image, layer) in [(1, 2), (2, 0)] {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(images[image].join("index.json")).unwrap()).unwrap();
        let manifest = blob(
            &images[image],
            index["manifests"][0]["digest"].as_str().unwrap(),
        );
        let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
        let path = blob(
            &images[image],
            m["layers"][layer]["digest"].as_str().unwrap(),
        );
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - 12;
        bytes[at] ^= 0x55;
        fs::write(&path, bytes).unwrap();
    }
    let profile = profile(d, &images);
    let mut errors = Vec::new();
    for jobs in [1, 4] {
        let o = build(&profile, &d.join("node.img"), jobs);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        // The last lines: the error and its causes (the progress lines above them
        // carry times).
        let tail: Vec<&str> = err.lines().filter(|l| !l.starts_with('[')).collect();
        errors.push(tail.join("\n"));
    }
    assert!(errors[0].contains("layer 2"), "{}", errors[0]);
    assert!(errors[0].contains("image1"), "{}", errors[0]);
    assert_eq!(errors[0], errors[1]);
    assert!(!d.join("node.img").exists());
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}
