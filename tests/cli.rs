//! The command line: help, version, exit codes, and bad profiles that must be
//! refused with a located message and no image.

mod common;
use common::*;
use std::fs;
use std::path::Path;

fn no_image_in(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".yaml"))
        .collect();
    assert!(left.is_empty(), "files left after a failed build: {left:?}");
}

/// Builds a broken profile and checks exit code 2, the message, and no output.
fn refused(profile: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(dir.path(), "node.yaml", profile);
    let o = run(kios_build()
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(dir.path().join("out.img")));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for e in expect {
        assert!(t.contains(e), "expected `{e}` in:\n{t}");
    }
    no_image_in(dir.path());
    // validate says the same.
    let o = run(kios_build().arg("validate").arg(&p));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn help_and_version_are_there_for_every_command() {
    let o = run(kios_build().arg("--version"));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("kios-build "));
    for cmd in ["build", "validate", "inspect"] {
        let o = run(kios_build().arg(cmd).arg("--help"));
        assert!(o.status.success(), "{cmd} --help: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: kios-build"));
    }
}

#[test]
fn bad_usage_exits_2() {
    let o = run(kios_build().arg("build"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = run(kios_build().arg("frobnicate"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn validate_prints_one_ok_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_profile(dir.path(), "node.yaml", &profile_text(""));
    let o = run(kios_build().arg("validate").arg(&p));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("OK"), "{out}");
    assert!(o.stderr.is_empty(), "{}", text(&o));
}

#[test]
fn unknown_field_is_refused_with_its_line() {
    refused(
        &profile_text("disk:\n  sise: 1GiB\n"),
        &["node.yaml:12:3", "unknown field `sise`"],
    );
}

#[test]
fn wrong_type_is_refused_with_its_line() {
    refused(&profile_text("disk:\n  size: [1, 2]\n"), &["node.yaml:12:"]);
}

#[test]
fn missing_file_is_refused_with_its_line() {
    let t = profile_text("").replace("linuxx64.efi.stub", "no-such-stub.efi");
    refused(&t, &["node.yaml:8:", "no-such-stub.efi does not exist"]);
}

#[test]
fn unknown_base_is_refused_with_its_line() {
    let t = profile_text("").replace("base: qemu", "base: qemuu");
    refused(
        &t,
        &[
            "node.yaml:3:7",
            "unknown base profile `qemuu`",
            "aws, azure, gcp, metal, qemu",
        ],
    );
}

#[test]
fn module_the_kernel_lacks_is_refused_with_its_line() {
    refused(
        &profile_text("initramfs:\n  compression: gzip\n")
            .replace("kernel:\n", "kernel:\n  modules: [virtio_blkk]\n"),
        &["node.yaml:6:", "virtio_blkk", "virtio_blk"],
    );
}

#[test]
fn unsupported_format_is_refused_with_its_line() {
    refused(
        &profile_text("disk:\n  format: floppy\n"),
        &[
            "node.yaml:12:",
            "unknown output format `floppy`",
            "raw, raw.zst, raw.xz, qcow2, vhd, gce, vmdk",
        ],
    );
}

#[test]
fn a_missing_profile_file_exits_2() {
    let o = run(kios_build().arg("validate").arg("/nonexistent/node.yaml"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/node.yaml"));
}

#[test]
fn every_example_profile_validates() {
    inputs();
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().map(|x| x != "yaml").unwrap_or(true) {
            continue;
        }
        let o = run(kios_build().arg("validate").arg(&p));
        assert!(o.status.success(), "{}: {}", p.display(), text(&o));
        n += 1;
    }
    assert!(n >= 5, "examples for qemu, aws, gcp, azure and arm64: {n}");
}

/// On a terminal, the long stages show a spinner naming what they do (the store
/// names each image and layer), cleared when the stage's line is printed; in a pipe,
/// only the stage lines. The terminal is a pseudo-terminal made by `script`.
#[test]
fn long_stages_show_what_they_do_on_a_terminal_and_not_in_a_pipe() {
    inputs();
    require_tool("script", "bsdutils");
    let dir = tempfile::tempdir().unwrap();
    let profile = repo().join("examples/qemu.yaml");
    let out = dir.path().join("node.vmdk");
    let bin = env!("CARGO_BIN_EXE_kios-build");
    // --no-reuse: a store and initramfs kept by an earlier build show no spinner.
    let line = format!(
        "{bin} build {} -o {} --format vmdk --no-reuse",
        profile.display(),
        out.display()
    );
    let o = run(std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("KIOS_INIT", init_binary()));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for shown in [
        "image store: oci:",
        "layer 1 of 1",
        "initramfs: Zstd",
        "converting to vmdk",
        "\u{1b}[2K",
    ] {
        assert!(
            t.contains(shown),
            "expected `{shown}` on the terminal:\n{t}"
        );
    }
    fs::remove_file(&out).unwrap();
    let o = run(common::build_command(&profile, &out).args(["--format", "vmdk"]));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("converted to vmdk"), "{t}");
    assert!(
        !t.contains("layer 1 of 1") && !t.contains('\u{1b}'),
        "no spinner in a pipe:\n{t}"
    );
}
