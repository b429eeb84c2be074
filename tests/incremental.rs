//! Incremental builds (src/reuse.rs): the store partition, initramfs and UKI kept in
//! the cache's `artifacts/` folder are reused when their inputs are the same, and
//! the image is then the same bytes as a clean (`--no-reuse`) or serial
//! (`KIOS_BUILD_JOBS=1`) build; a tampered kept file is rebuilt, never used;
//! `cache prune` removes them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{
    build_command, kios_build, pause_yaml, profile_text, run, sha256_file, text, write_profile,
};

/// A node pre-seeding busybox (the dhcp daemon) and the pause image; `extra` is
/// appended to the profile.
fn node(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let busybox = common::inputs().join("busybox");
    write_profile(
        dir,
        name,
        &profile_text(&format!(
            "daemons:\n  - name: dhcp\n    image: oci:{}:1\n{}{extra}",
            busybox.display(),
            pause_yaml()
        )),
    )
}

/// Builds `profile` to `out` with the cache at `cache`, `args` added and the
/// environment `env`; returns the build's progress lines (stderr).
fn build(profile: &Path, out: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = build_command(profile, out);
    cmd.arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let o = run(&mut cmd);
    assert!(o.status.success(), "build failed:\n{}", text(&o));
    eprintln!(
        "built {} {args:?} {env:?} in {:.2}s",
        profile.display(),
        start.elapsed().as_secs_f64()
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The kept files of one kind (`store`, `initramfs`, `uki`).
fn kept(cache: &Path, kind: &str) -> Vec<PathBuf> {
    match fs::read_dir(cache.join("artifacts").join(kind)) {
        Ok(list) => list.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn serial_parallel_clean_and_reused_builds_are_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let profile = node(d, "node.yaml", "");
    let cache = d.join("cache");
    let serial = d.join("serial.img");
    let lines = build(
        &profile,
        &serial,
        &cache,
        &["--no-reuse"],
        &[("KIOS_BUILD_JOBS", "1")],
    );
    assert!(!lines.contains("reused"), "{lines}");
    assert!(kept(&cache, "store").is_empty(), "--no-reuse keeps nothing");
    let parallel = d.join("parallel.img");
    build(
        &profile,
        &parallel,
        &cache,
        &["--no-reuse"],
        &[("KIOS_BUILD_JOBS", "8")],
    );
    let first = d.join("first.img");
    let lines = build(&profile, &first, &cache, &[], &[]);
    assert!(!lines.contains("reused"), "an empty cache: {lines}");
    assert_eq!(kept(&cache, "store").len(), 1);
    assert_eq!(kept(&cache, "initramfs").len(), 1);
    assert_eq!(kept(&cache, "uki").len(), 1);
    let again = d.join("again.img");
    let lines = build(&profile, &again, &cache, &[], &[]);
    for what in [
        "image store: reused (key ",
        "initramfs: reused (key ",
        "unified kernel image: reused (key ",
    ] {
        assert!(lines.contains(what), "{what} missing:\n{lines}");
    }
    let want = sha256_file(&serial);
    for img in [&parallel, &first, &again] {
        assert_eq!(
            sha256_file(img),
            want,
            "{} differs from the serial build",
            img.display()
        );
    }
}

#[test]
fn a_profile_only_change_reuses_the_store_and_equals_a_clean_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let before = node(d, "before.yaml", "");
    build(&before, &d.join("before.img"), &cache, &[], &[]);
    let after = node(
        d,
        "after.yaml",
        "kubelet:\n  labels: {node.kubernetes.io/pool: edge}\n",
    );
    let rebuilt = d.join("rebuilt.img");
    let lines = build(&after, &rebuilt, &cache, &[], &[]);
    assert!(lines.contains("image store: reused (key "), "{lines}");
    // The node labels are in the initramfs: it and the UKI are written again.
    assert!(!lines.contains("initramfs: reused"), "{lines}");
    assert!(!lines.contains("unified kernel image: reused"), "{lines}");
    let clean = d.join("clean.img");
    build(&after, &clean, &d.join("empty-cache"), &["--no-reuse"], &[]);
    assert_eq!(sha256_file(&rebuilt), sha256_file(&clean));
    assert_ne!(sha256_file(&rebuilt), sha256_file(&d.join("before.img")));
    // One store, reused; two initramfs (and UKIs), one per profile.
    assert_eq!(kept(&cache, "store").len(), 1);
    assert_eq!(kept(&cache, "initramfs").len(), 2);
}

#[test]
fn another_image_writes_a_new_store_equal_to_a_clean_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    build(
        &node(d, "one.yaml", ""),
        &d.join("one.img"),
        &cache,
        &[],
        &[],
    );
    // A second daemon running one more image, a layout made here.
    let root = d.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/ntp.conf"), "server 127.0.0.1\n").unwrap();
    common::oci_layout(&d.join("ntp"), "1", &[&root]);
    let two = node(
        d,
        "two.yaml",
        &format!(
            "  - name: ntp\n    image: oci:{}:1\n",
            d.join("ntp").display()
        ),
    );
    let text = fs::read_to_string(&two).unwrap();
    // The extra daemon belongs under `daemons:`, before the pause image's lines.
    let ntp = format!(
        "  - name: ntp\n    image: oci:{}:1\n",
        d.join("ntp").display()
    );
    let text = text
        .replace(&ntp, "")
        .replace(&pause_yaml(), &format!("{ntp}{}", pause_yaml()));
    fs::write(&two, text).unwrap();
    let rebuilt = d.join("two.img");
    let lines = build(&two, &rebuilt, &cache, &[], &[]);
    assert!(!lines.contains("image store: reused"), "{lines}");
    assert!(lines.contains("image store: 3 images"), "{lines}");
    let clean = d.join("clean.img");
    build(&two, &clean, &d.join("empty-cache"), &["--no-reuse"], &[]);
    assert_eq!(sha256_file(&rebuilt), sha256_file(&clean));
    assert_eq!(kept(&cache, "store").len(), 2);
}

#[test]
fn a_tampered_kept_store_is_detected_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let profile = node(d, "node.yaml", "");
    let first = d.join("first.img");
    build(&profile, &first, &cache, &[], &[]);
    let stores = kept(&cache, "store");
    assert_eq!(stores.len(), 1);
    // One byte changed in the middle of the kept store, written as a new file (the
    // kept one may be a hard link to nothing else now, but do not rely on it).
    let mut bytes = fs::read(&stores[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::remove_file(&stores[0]).unwrap();
    fs::write(&stores[0], &bytes).unwrap();
    let second = d.join("second.img");
    let lines = build(&profile, &second, &cache, &[], &[]);
    assert!(lines.contains("does not match its sha256"), "{lines}");
    assert!(!lines.contains("image store: reused"), "{lines}");
    assert_eq!(sha256_file(&second), sha256_file(&first));
    // The rebuilt store is kept again, sound: the next build reuses it.
    let third = d.join("third.img");
    let lines = build(&profile, &third, &cache, &[], &[]);
    assert!(lines.contains("image store: reused"), "{lines}");
    assert_eq!(sha256_file(&third), sha256_file(&first));
}

#[test]
fn a_tampered_kept_initramfs_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let profile = node(d, "node.yaml", "");
    let first = d.join("first.img");
    build(&profile, &first, &cache, &[], &[]);
    let kept_initramfs = kept(&cache, "initramfs");
    assert_eq!(kept_initramfs.len(), 1);
    fs::remove_file(&kept_initramfs[0]).unwrap();
    fs::write(&kept_initramfs[0], b"not an initramfs").unwrap();
    let second = d.join("second.img");
    let lines = build(&profile, &second, &cache, &[], &[]);
    assert!(lines.contains("does not match its sha256"), "{lines}");
    assert!(!lines.contains("initramfs: reused"), "{lines}");
    assert_eq!(sha256_file(&second), sha256_file(&first));
}

#[test]
fn cache_prune_removes_kept_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let profile = node(d, "node.yaml", "");
    build(&profile, &d.join("node.img"), &cache, &[], &[]);
    let prune = |args: &[&str]| {
        let o = run(kios_build()
            .args(["cache", "prune", "--cache-dir"])
            .arg(&cache)
            .args(args));
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Used today: the default (30 days) keeps them.
    let out = prune(&[]);
    assert!(out.contains("0 build artifacts"), "{out}");
    assert_eq!(kept(&cache, "store").len(), 1);
    let out = prune(&["--all"]);
    assert!(out.contains("3 build artifacts"), "{out}");
    for kind in ["store", "initramfs", "uki"] {
        assert!(
            kept(&cache, kind).is_empty(),
            "{kind} left after prune --all"
        );
    }
}
