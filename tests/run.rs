//! `kios-build run`: images booted in QEMU by the product itself, in every output
//! format it writes, with `--until`, `--timeout`, `--timeline`; a kernel panic, a
//! missing QEMU and a file that is not an image, each a clear failure.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// An image whose system tree is the CRI-O and kubelet test doubles (they stay up),
/// with `cmdline` added, in `format`.
fn image(dir: &Path, name: &str, cmdline: &[&str], format: &str) -> PathBuf {
    let system = dir.join(format!("{name}-system"));
    fs::create_dir_all(system.join("usr/bin")).unwrap();
    fs::copy(standin("kubelet-standin"), system.join("usr/bin/kubelet")).unwrap();
    fs::copy(standin("crio-standin"), system.join("usr/bin/crio")).unwrap();
    let i = inputs();
    let profile = write_profile(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nkernel:\n  path: {k}\n  cmdline: [{c}]\nboot:\n  stub: {{path: {s}}}\nsystem:\n  path: {y}\ndisk:\n  size: 256MiB\n",
            k = i.join("kernel").display(),
            c = cmdline.join(", "),
            s = i.join("stub/linuxx64.efi.stub").display(),
            y = system.display(),
        ),
    );
    let ext = if format == "gce" { "tar.gz" } else { format };
    let img = dir.join(format!("{name}.{ext}"));
    let o = run(common::build_command(&profile, &img).args(["--format", format, "--quiet"]));
    assert!(o.status.success(), "{}", text(&o));
    img
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn run_stops_at_until_and_writes_a_timeline_in_boot_order() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "node", &[], "raw");
    let timeline = dir.path().join("t.json");
    let (code, console, stderr) = run_image(
        &img,
        &args(&[
            "--until",
            "kios-init: kubelet started",
            "--timeout",
            "400",
            "--timeline",
            timeline.to_str().unwrap(),
        ]),
    );
    assert_eq!(code, Some(0), "{stderr}\n{console}");
    assert!(console.contains("] kios-init: ready"), "{console}");
    assert!(stderr.contains("(amd64, "), "{stderr}");
    let t: serde_json::Value = serde_json::from_slice(&fs::read(&timeline).unwrap()).unwrap();
    assert_eq!(t["schema"], "kios.dev/timeline/v1");
    assert!(
        ["tcg", "kvm"].contains(&t["accelerator"].as_str().unwrap()),
        "{t}"
    );
    assert!(t["firmware_ms"].as_f64().unwrap() > 0.0, "{t}");
    let steps = t["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "kernel",
            "init",
            "modules",
            "data",
            "ready",
            "crio",
            "crio-socket",
            "kubelet"
        ],
        "{t}"
    );
    let ms: Vec<f64> = steps.iter().map(|s| s["ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] <= w[1]), "times grow: {ms:?}");
    assert!(ms[1] > 0.0, "{t}");
}

#[test]
fn an_until_that_never_comes_exits_1_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "node", &[], "raw");
    let start = Instant::now();
    let (code, _, stderr) = run_image(
        &img,
        &args(&["--until", "no such line, ever", "--timeout", "20"]),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert!(
        stderr.contains("no line matching `no such line, ever` within 20 s"),
        "{stderr}"
    );
}

#[test]
fn a_kernel_panic_fails_the_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // No init the kernel can run, and no root= to fall back on: the kernel panics.
    let img = image(dir.path(), "panic", &["rdinit=/no/such/init"], "raw");
    let (code, console, stderr) = run_image(
        &img,
        &args(&["--until", "kios-init: ready", "--timeout", "400"]),
    );
    assert_eq!(code, Some(1), "{stderr}\n{console}");
    assert!(stderr.contains("the kernel panicked: "), "{stderr}");
}

/// Boots the image in `format` to `ready`.
fn boots(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "node", &[], format);
    let (code, console, stderr) = run_image(
        &img,
        &args(&["--until", "kios-init: ready", "--timeout", "400"]),
    );
    assert_eq!(code, Some(0), "{format}: {stderr}\n{console}");
    assert!(stderr.contains("(amd64, "), "{stderr}");
}

#[test]
fn a_qcow2_image_runs() {
    boots("qcow2");
}

#[test]
fn a_vhd_image_runs() {
    boots("vhd");
}

#[test]
fn a_vmdk_image_runs() {
    boots("vmdk");
}

#[test]
fn a_gce_image_runs() {
    boots("gce");
}

#[test]
fn a_zstd_compressed_image_runs() {
    boots("raw.zst");
}

#[test]
fn an_xz_compressed_image_runs() {
    boots("raw.xz");
}

#[test]
fn a_missing_qemu_a_file_that_is_no_image_and_writable_non_raw_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "node", &[], "raw");
    // A PATH without QEMU: the error names the Debian package.
    let empty = dir.path().join("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let o = run(kios_build()
        .env("PATH", &empty)
        .arg("run")
        .arg(&img)
        .args(["--timeout", "30"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("qemu-system-x86_64 is not installed")
            && text(&o).contains("apt-get install qemu-system-x86"),
        "{}",
        text(&o)
    );

    let junk = dir.path().join("junk.img");
    fs::write(&junk, vec![7u8; 4096]).unwrap();
    let o = run(kios_build().arg("run").arg(&junk));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not an image kios-build writes"),
        "{}",
        text(&o)
    );

    let qcow2 = dir.path().join("node.qcow2");
    let o = run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&img)
        .arg(&qcow2));
    assert!(o.status.success(), "{}", text(&o));
    let o = run(kios_build().arg("run").arg(&qcow2).arg("--writable"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("only a raw image allows (qcow2 given)"),
        "{}",
        text(&o)
    );
}
