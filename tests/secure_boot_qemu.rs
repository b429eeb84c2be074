//! Secure Boot for real: QEMU (TCG, q35 with SMM) with OVMF's Secure Boot firmware
//! (`OVMF_CODE_4M.secboot.fd`), its variables holding our test certificate in `db`
//! (enrolled with `virt-fw-vars` from PyPI's virt-firmware; `--enroll-cert` alone
//! leaves `db` empty, hence `--add-db`). The signed image boots to `kios-init:
//! ready`; the same image unsigned, or signed with another key, is refused by the
//! firmware before the kernel runs.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::keys::{certificate, expired_certificate, rsa_key};
use common::{kios_build, profile_text, require_tool, run, text, write_profile};

const SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Any GUID names the owner of a `db` entry; this one is ours for the tests.
const DB_OWNER: &str = "6b1f5c4e-3f5a-4e0b-9a55-6b696f530001";

/// A copy of OVMF's variables with Secure Boot on and `cert` as PK, KEK and db.
fn enrolled_vars(dir: &Path, cert: &Path) -> PathBuf {
    require_tool("virt-fw-vars", "virt-firmware (pip3 install virt-firmware)");
    let stem = cert.file_stem().unwrap().to_string_lossy();
    let vars = dir.join(format!("vars-{stem}.fd"));
    let c = cert.to_str().unwrap();
    let o = run(Command::new("virt-fw-vars")
        .args(["--input", VARS_TEMPLATE, "--output"])
        .arg(&vars)
        .args(["--enroll-cert", c, "--add-db", DB_OWNER, c])
        .args(["--no-microsoft", "--secure-boot"]));
    assert!(o.status.success(), "virt-fw-vars:\n{}", text(&o));
    vars
}

fn build(profile: &Path, out: &Path, args: &[&str]) {
    let o = run(common::build_command(profile, out)
        .arg("--quiet")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(o.status.success(), "build failed:\n{}", text(&o));
}

/// Boots `img` with `kios-build run --secure-boot VARS` (OVMF's Secure Boot build,
/// q35 with SMM, the flash writable only from SMM) until `until` shows on the serial
/// console (or `timeout`). Returns whether it did, and the log.
fn boot_secure(img: &Path, vars: &Path, until: &str, timeout: Duration) -> (bool, String) {
    assert!(
        Path::new(SECBOOT_CODE).is_file(),
        "{SECBOOT_CODE} missing: apt-get install ovmf"
    );
    let args = [
        "--secure-boot".to_string(),
        vars.display().to_string(),
        "--until".to_string(),
        regex::escape(until),
        "--timeout".to_string(),
        timeout.as_secs().to_string(),
    ];
    let (code, log, _) = common::run_image(img, &args);
    (code == Some(0), log)
}

#[test]
fn a_signed_image_boots_with_secure_boot_and_unsigned_or_foreign_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = rsa_key(d, "db", 2048, false);
    let other = rsa_key(d, "other", 2048, false);
    let (key, cert) = (db.key, db.cert);
    let (other_key, other_cert) = (other.key, other.cert);
    let vars = enrolled_vars(d, &cert);
    let p = write_profile(d, "node.yaml", &profile_text("disk:\n  size: 256MiB\n"));

    let signed = d.join("signed.img");
    build(
        &p,
        &signed,
        &[
            "--signing-key",
            key.to_str().unwrap(),
            "--signing-cert",
            cert.to_str().unwrap(),
        ],
    );
    let (ready, log) = boot_secure(&signed, &vars, "kios-init: ready", Duration::from_secs(400));
    assert!(
        ready,
        "the signed image did not reach `kios-init: ready`:\n{log}"
    );
    assert!(
        log.contains("Secure boot enabled"),
        "the kernel did not see Secure Boot:\n{log}"
    );

    let unsigned = d.join("unsigned.img");
    build(&p, &unsigned, &[]);
    let foreign = d.join("foreign.img");
    build(
        &p,
        &foreign,
        &[
            "--signing-key",
            other_key.to_str().unwrap(),
            "--signing-cert",
            other_cert.to_str().unwrap(),
        ],
    );
    for img in [&unsigned, &foreign] {
        // OVMF reports the refused image on the console; the kernel never starts.
        let (denied, log) = boot_secure(img, &vars, "Access Denied", Duration::from_secs(300));
        assert!(
            denied,
            "{}: no `Access Denied` from the firmware:\n{log}",
            img.display()
        );
        assert!(
            !log.contains("Linux version") && !log.contains("kios-init"),
            "{}: the kernel ran without a valid signature:\n{log}",
            img.display()
        );
    }
}

/// What `build` warns about a certificate does not stop firmware: OVMF checks neither
/// dates nor extended key usage (sbverify and osslsigncode do, see tests/signing.rs).
#[test]
fn the_firmware_boots_an_image_signed_with_an_expired_or_non_code_signing_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let p = write_profile(d, "node.yaml", &profile_text("disk:\n  size: 256MiB\n"));
    for cert in [
        expired_certificate(d, &k.key),
        certificate(d, "server", &k.key, "serverAuth"),
    ] {
        let vars = enrolled_vars(d, &cert);
        let img = d.join("warned.img");
        build(
            &p,
            &img,
            &[
                "--signing-key",
                k.key.to_str().unwrap(),
                "--signing-cert",
                cert.to_str().unwrap(),
            ],
        );
        let (ready, log) = boot_secure(&img, &vars, "kios-init: ready", Duration::from_secs(400));
        assert!(
            ready,
            "{}: the firmware refused the image:\n{log}",
            cert.display()
        );
        fs::remove_file(&img).unwrap();
    }
}

/// Signing puts the store in the boot chain: with a key and no `store:` setting the
/// store gets its dm-verity hash tree, the root hash is on the signed command line,
/// and under Secure Boot the node mounts the store through dm-verity. The same
/// signed image with one byte of the store changed after the build still boots (the
/// UKI is intact), but kios-init refuses the store and the CRI-O stand-in never runs.
#[test]
fn a_signed_images_store_is_verified_at_boot_and_a_changed_store_keeps_crio_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = rsa_key(d, "db", 2048, false);
    let vars = enrolled_vars(d, &db.cert);
    let system = d.join("system");
    fs::create_dir_all(system.join("usr/bin")).unwrap();
    fs::copy(
        common::standin("kubelet-standin"),
        system.join("usr/bin/kubelet"),
    )
    .unwrap();
    fs::copy(common::standin("crio-standin"), system.join("usr/bin/crio")).unwrap();
    let i = common::inputs();
    let text = profile_text(&format!(
        "kubernetes:\n  pauseImage: oci:{}:kios\ndaemons:\n  - name: dhcp\n    image: oci:{}:1\ndisk:\n  size: 256MiB\n",
        i.join("pause").display(),
        i.join("busybox").display()
    ))
    .replace(
        &format!("system:\n  path: {}", i.join("system").display()),
        &format!("system:\n  path: {}", system.display()),
    );
    let p = write_profile(d, "node.yaml", &text);
    let img = d.join("signed.img");
    build(
        &p,
        &img,
        &[
            "--signing-key",
            db.key.to_str().unwrap(),
            "--signing-cert",
            db.cert.to_str().unwrap(),
        ],
    );
    let o = run(kios_build().arg("inspect").arg("--json").arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cmdline = v["boot"]["cmdline"].as_str().unwrap().to_owned();
    assert!(
        cmdline.contains("kios.store.verity="),
        "verity is on when signing: {cmdline}"
    );
    assert_eq!(v["boot"]["signature"]["verified"], true, "{v}");

    let (started, log) = boot_secure(&img, &vars, "STANDIN crio ARGS", Duration::from_secs(400));
    assert!(started, "CRI-O's stand-in did not start:\n{log}");
    assert!(log.contains("Secure boot enabled"), "{log}");
    assert!(
        log.contains("kios-init: store verified by dm-verity: root hash "),
        "{log}"
    );

    common::change_store_metadata(&img);
    let (refused, log) = boot_secure(
        &img,
        &vars,
        "kubelet is not started",
        Duration::from_secs(400),
    );
    assert!(refused, "init did not refuse the changed store:\n{log}");
    assert!(
        log.contains("Secure boot enabled"),
        "the signed UKI still boots: {log}"
    );
    assert!(
        log.contains("kios-init: store verification failed: "),
        "{log}"
    );
    assert!(
        !log.contains("STANDIN crio"),
        "CRI-O's stand-in ran on a changed store:\n{log}"
    );
}
