//! Secure Boot for real: QEMU (TCG, q35 with SMM) with OVMF's Secure Boot firmware
//! (`OVMF_CODE_4M.secboot.fd`), its variables holding our test certificate in `db`
//! (enrolled with `virt-fw-vars` from PyPI's virt-firmware; `--enroll-cert` alone
//! leaves `db` empty, hence `--add-db`). The signed image boots to `kios-init:
//! ready`; the same image unsigned, or signed with another key, is refused by the
//! firmware before the kernel runs.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::keys::{certificate, expired_certificate, rsa_key};
use common::{kios_build, profile_text, require_tool, run, text, write_profile};

const SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const PLAIN_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
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
    let o = run(kios_build()
        .arg("build")
        .arg(profile)
        .arg("-o")
        .arg(out)
        .arg("--quiet")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(o.status.success(), "build failed:\n{}", text(&o));
}

/// Boots `img` with Secure Boot on and `vars`, until `until` shows on the serial
/// console (or `timeout`). Returns whether it did, and the log.
fn boot_secure(img: &Path, vars: &Path, until: &str, timeout: Duration) -> (bool, String) {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    assert!(
        Path::new(SECBOOT_CODE).is_file(),
        "{SECBOOT_CODE} missing: apt-get install ovmf"
    );
    let dir = tempfile::tempdir().unwrap();
    let own_vars = dir.path().join("vars.fd");
    fs::copy(vars, &own_vars).unwrap();
    let log = dir.path().join("serial.log");
    let plain_code = format!("file={PLAIN_CODE}");
    // The common machine with the Secure Boot firmware: SMM on, and the flash
    // writable only from SMM (as OVMF's secboot build requires).
    let args: Vec<String> = common::qemu_x86_args(img, &own_vars, &log, false, None)
        .into_iter()
        .map(|a| match a.as_str() {
            "q35" => "q35,smm=on".to_string(),
            _ => a.replace(&plain_code, &format!("file={SECBOOT_CODE}")),
        })
        .collect();
    assert!(args.iter().any(|a| a.contains(SECBOOT_CODE)), "{args:?}");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(&args)
        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let (seen, log, _) = common::wait_for_console(cmd, &log, until, timeout);
    (seen, log)
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
