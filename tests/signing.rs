//! Secure Boot signing of the UKI (`build --signing-key/--signing-cert/--signer`,
//! `secureBoot.certificate`): real keys and certificates made by `openssl`, the
//! signed UKI taken off the ESP with `mcopy` and checked by `sbverify` (sbsigntool)
//! and `osslsigncode verify`; `inspect` reads the signature back.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::keys::{certificate, expired_certificate, p256_key, rsa_key};
use common::{kios_build, partition, profile_text, require_tool, run, run_tool, text};

/// `kios-build build` of `profile` to `out` with `args`; SOURCE_DATE_EPOCH fixed.
fn build(profile: &Path, out: &Path, args: &[&str]) -> Output {
    run(common::build_command(profile, out)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000"))
}

fn build_ok(profile: &Path, out: &Path, args: &[&str]) -> Output {
    let o = build(profile, out, args);
    assert!(o.status.success(), "build failed:\n{}", text(&o));
    o
}

fn profile(dir: &Path, extra: &str) -> PathBuf {
    common::write_profile(dir, "node.yaml", &profile_text(extra))
}

/// Copies the amd64 UKI off the image's ESP with mtools.
fn uki_of(img: &Path, dest: &Path) -> PathBuf {
    uki_at(img, "EFI/BOOT/BOOTX64.EFI", dest)
}

/// Copies `esp_path` off the image's ESP with mtools.
fn uki_at(img: &Path, esp_path: &str, dest: &Path) -> PathBuf {
    require_tool("mcopy", "mtools");
    let (offset, _) = partition(img, "KIOS_ESP");
    let o = run(Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{offset}", img.display()))
        .arg(format!("::/{esp_path}"))
        .arg(dest));
    assert!(o.status.success(), "mcopy:\n{}", text(&o));
    dest.to_path_buf()
}

fn sbverify(cert: &Path, efi: &Path) -> (bool, String) {
    require_tool("sbverify", "sbsigntool");
    let o = run(Command::new("sbverify").arg("--cert").arg(cert).arg(efi));
    (o.status.success(), text(&o))
}

fn osslsigncode(cert: &Path, efi: &Path) -> (bool, String) {
    require_tool("osslsigncode", "osslsigncode");
    let o = run(Command::new("osslsigncode")
        .arg("verify")
        .arg("-in")
        .arg(efi)
        .arg("-CAfile")
        .arg(cert));
    let t = text(&o);
    (
        o.status.success() && t.contains("Signature verification: ok"),
        t,
    )
}

fn assert_both_accept(cert: &Path, efi: &Path) {
    let (ok, t) = sbverify(cert, efi);
    assert!(ok, "sbverify refused {}:\n{t}", efi.display());
    let (ok, t) = osslsigncode(cert, efi);
    assert!(ok, "osslsigncode refused {}:\n{t}", efi.display());
    // osslsigncode recomputes the PE checksum and warns when it differs.
    assert!(
        t.contains("PE checksum") && !t.contains("invalid PE checksum"),
        "{t}"
    );
}

fn assert_both_reject(cert: &Path, efi: &Path) {
    let (ok, t) = sbverify(cert, efi);
    assert!(!ok, "sbverify accepted {}:\n{t}", efi.display());
    let (ok, t) = osslsigncode(cert, efi);
    assert!(!ok, "osslsigncode accepted {}:\n{t}", efi.display());
}

/// A copy of `efi` with one byte of section `name` flipped.
fn with_byte_changed(efi: &Path, name: &str, dest: &Path) -> PathBuf {
    let mut b = fs::read(efi).unwrap();
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let pe = le32(&b, 0x3c);
    let sections = u16::from_le_bytes([b[pe + 6], b[pe + 7]]) as usize;
    let table = pe + 24 + u16::from_le_bytes([b[pe + 20], b[pe + 21]]) as usize;
    let header = (0..sections)
        .map(|i| table + 40 * i)
        .find(|&h| {
            b[h..h + 8].starts_with(name.as_bytes()) && (name.len() == 8 || b[h + name.len()] == 0)
        })
        .unwrap_or_else(|| panic!("no {name} section in {}", efi.display()));
    let at = le32(&b, header + 20) + 100;
    b[at] ^= 0x01;
    fs::write(dest, b).unwrap();
    dest.to_path_buf()
}

/// The signature `inspect --json` reports.
fn inspected_signature(img: &Path) -> serde_json::Value {
    common::inspect(img)["boot"]["signature"].clone()
}

fn serial_of(cert: &Path) -> String {
    let out = run_tool(
        "openssl",
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"],
    );
    let s = String::from_utf8(out).unwrap();
    s.trim()
        .trim_start_matches("serial=")
        .trim_start_matches('0')
        .to_ascii_lowercase()
}

#[test]
fn rsa_2048_signed_uki_passes_sbverify_and_osslsigncode_and_fails_both_after_one_byte_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    // The certificate from the profile, the key from the command line.
    let p = profile(
        d,
        &format!("secureBoot: {{certificate: {}}}\n", k.cert.display()),
    );
    let img = d.join("signed.img");
    let o = build_ok(&p, &img, &["--signing-key", k.key.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("signed the UKI for Secure Boot"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "the key was printed:\n{log}");

    let efi = uki_of(&img, &d.join("uki.efi"));
    assert_both_accept(&k.cert, &efi);
    // The private half of the key (the end of its DER: primes, exponents) is not in
    // the UKI; only the certificate's public key is.
    let der = run_tool(
        "openssl",
        "openssl",
        &["pkey", "-in", k.key.to_str().unwrap(), "-outform", "DER"],
    );
    let secret = &der[der.len() - 64..];
    let uki = fs::read(&efi).unwrap();
    assert!(
        !uki.windows(secret.len()).any(|w| w == secret),
        "private key bytes found in the UKI"
    );

    let sig = inspected_signature(&img);
    assert_eq!(sig["signed"], true, "{sig}");
    assert_eq!(sig["verified"], true, "{sig}");
    assert_eq!(sig["problem"], serde_json::Value::Null, "{sig}");
    assert!(
        sig["subject"].as_str().unwrap().contains("CN=kiOS test db"),
        "{sig}"
    );
    let serial = sig["serial"].as_str().unwrap().trim_start_matches('0');
    assert_eq!(serial, serial_of(&k.cert), "{sig}");
    let shown = run(kios_build().arg("inspect").arg(&img));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("verifies with its certificate"),
        "{}",
        text(&shown)
    );

    // One byte of the kernel, or of the command line (where the lead's dm-verity
    // root hash goes): both tools and our own check refuse the image.
    for section in [".linux", ".cmdline"] {
        let bad = with_byte_changed(&efi, section, &d.join(format!("bad{section}.efi")));
        assert_both_reject(&k.cert, &bad);
        let mut f = fs::File::open(&bad).unwrap();
        let ours = kios_build::sign::check(&mut f).unwrap();
        assert!(ours.signed && !ours.verified, "{ours:?}");
        assert!(
            ours.problem
                .as_deref()
                .unwrap_or("")
                .contains("changed after it was signed"),
            "{ours:?}"
        );
    }
    // And the signature checks against the right certificate only.
    let other = rsa_key(d, "other", 2048, false);
    assert!(
        !sbverify(&other.cert, &efi).0,
        "sbverify accepted another certificate"
    );
}

#[test]
fn rsa_4096_pkcs1_and_p256_sec1_keys_sign_ukis_both_tools_accept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = profile(d, "");
    for (name, k) in [
        ("rsa4096", rsa_key(d, "rsa4096", 4096, true)),
        ("p256", p256_key(d, "p256")),
    ] {
        let img = d.join(format!("{name}.img"));
        let o = build_ok(
            &p,
            &img,
            &[
                "--signing-key",
                k.key.to_str().unwrap(),
                "--signing-cert",
                k.cert.to_str().unwrap(),
            ],
        );
        let log = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            log.contains("verifies only RSA signatures"),
            name == "p256",
            "{name}: the firmware warning is for ECDSA only:\n{log}"
        );
        let efi = uki_of(&img, &d.join(format!("{name}.efi")));
        assert_both_accept(&k.cert, &efi);
        let bad = with_byte_changed(&efi, ".linux", &d.join(format!("{name}-bad.efi")));
        assert_both_reject(&k.cert, &bad);
        let sig = inspected_signature(&img);
        assert_eq!(sig["verified"], true, "{name}: {sig}");
    }
}

#[test]
fn the_openssl_signer_gives_the_same_bytes_as_the_key_and_signed_builds_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let p = profile(d, "");
    let key = k.key.to_str().unwrap();
    let cert = k.cert.to_str().unwrap();
    let with_key = ["--signing-key", key, "--signing-cert", cert];
    // The message on stdin, hashed by openssl (-rawin); and the SHA-256 from
    // KIOS_SIGN_SHA256, signed as a digest (how a KMS "sign digest" call works).
    let rawin = format!("openssl pkeyutl -sign -rawin -digest sha256 -inkey '{key}'");
    require_tool("xxd", "xxd");
    let digest = format!(
        "printf %s \"$KIOS_SIGN_SHA256\" | xxd -r -p \
         | openssl pkeyutl -sign -inkey '{key}' -pkeyopt digest:sha256"
    );
    let dgst = format!("openssl dgst -sha256 -sign '{key}'");
    let runs: [(&str, Vec<&str>); 5] = [
        ("key-1", with_key.to_vec()),
        ("key-2", with_key.to_vec()),
        (
            "signer-rawin",
            vec!["--signer", &rawin, "--signing-cert", cert],
        ),
        (
            "signer-digest",
            vec!["--signer", &digest, "--signing-cert", cert],
        ),
        (
            "signer-dgst",
            vec!["--signer", &dgst, "--signing-cert", cert],
        ),
    ];
    let mut sums = Vec::new();
    for (name, args) in &runs {
        let img = d.join(format!("{name}.img"));
        build_ok(&p, &img, args);
        sums.push((name, common::sha256_file(&img)));
    }
    for (name, sum) in &sums[1..] {
        assert_eq!(sum, &sums[0].1, "{name} differs from {}", sums[0].0);
    }
    let efi = uki_of(&d.join("signer-rawin.img"), &d.join("uki.efi"));
    assert_both_accept(&k.cert, &efi);

    // ECDSA by openssl is randomized: not the same bytes, but a valid signature.
    let ec = p256_key(d, "ec");
    let img = d.join("ec-signer.img");
    let signer = format!(
        "openssl pkeyutl -sign -rawin -digest sha256 -inkey '{}'",
        ec.key.display()
    );
    build_ok(
        &p,
        &img,
        &[
            "--signer",
            &signer,
            "--signing-cert",
            ec.cert.to_str().unwrap(),
        ],
    );
    assert_both_accept(&ec.cert, &uki_of(&img, &d.join("ec.efi")));
}

#[test]
fn an_arm64_uki_is_signed_at_bootaa64_efi() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let p = common::write_profile(d, "arm64.yaml", &common::profile_text_arm64(""));
    let img = d.join("arm64.img");
    build_ok(
        &p,
        &img,
        &[
            "--signing-key",
            k.key.to_str().unwrap(),
            "--signing-cert",
            k.cert.to_str().unwrap(),
        ],
    );
    let efi = uki_at(&img, "EFI/BOOT/BOOTAA64.EFI", &d.join("aa64.efi"));
    assert_both_accept(&k.cert, &efi);
    assert_both_reject(
        &k.cert,
        &with_byte_changed(&efi, ".linux", &d.join("bad.efi")),
    );
    assert_eq!(inspected_signature(&img)["verified"], true);
}

#[test]
fn an_unsigned_build_is_reported_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let p = profile(dir.path(), "");
    let img = dir.path().join("plain.img");
    build_ok(&p, &img, &[]);
    let sig = inspected_signature(&img);
    assert_eq!(sig["signed"], false, "{sig}");
    assert_eq!(sig["verified"], false, "{sig}");
    let efi = uki_of(&img, &dir.path().join("plain.efi"));
    let other = rsa_key(dir.path(), "db", 2048, false);
    assert!(
        !sbverify(&other.cert, &efi).0,
        "sbverify accepted an unsigned UKI"
    );
}

/// Runs a build that must fail with `code` and a message containing every `needles`,
/// and leave nothing at `-o`.
fn assert_refused(p: &Path, d: &Path, args: &[&str], code: i32, needles: &[&str]) {
    let out = d.join("refused.img");
    let o = build(p, &out, args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "{t}");
    for n in needles {
        assert!(t.contains(n), "`{n}` not in:\n{t}");
    }
    assert!(!out.exists(), "something was written at -o:\n{t}");
    let leftovers: Vec<_> = fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("refused"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
}

#[test]
fn bad_keys_certificates_and_usage_are_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let other = rsa_key(d, "other", 2048, false);
    let p = profile(d, "");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (key, cert) = (s(&k.key), s(&k.cert));

    assert_refused(
        &p,
        d,
        &["--signing-key", &key, "--signing-cert", &s(&other.cert)],
        2,
        &["does not belong to the certificate"],
    );
    assert_refused(
        &p,
        d,
        &[
            "--signing-key",
            &s(&d.join("missing.key")),
            "--signing-cert",
            &cert,
        ],
        2,
        &["cannot read the signing key", "missing.key"],
    );
    let garbage = d.join("garbage.key");
    fs::write(&garbage, "secret-ish text that is no key\n").unwrap();
    assert_refused(
        &p,
        d,
        &["--signing-key", &s(&garbage), "--signing-cert", &cert],
        2,
        &["signing key", "cannot be used"],
    );
    let o = build(
        &p,
        &d.join("refused.img"),
        &["--signing-key", &s(&garbage), "--signing-cert", &cert],
    );
    assert!(
        !text(&o).contains("secret-ish"),
        "the key file's text was printed:\n{}",
        text(&o)
    );
    let encrypted = d.join("encrypted.key");
    run_tool(
        "openssl",
        "openssl",
        &[
            "pkey",
            "-in",
            &key,
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            &s(&encrypted),
        ],
    );
    assert_refused(
        &p,
        d,
        &["--signing-key", &s(&encrypted), "--signing-cert", &cert],
        2,
        &["encrypted"],
    );
    let small = d.join("small.key");
    run_tool(
        "openssl",
        "openssl",
        &["genrsa", "-out", &s(&small), "1024"],
    );
    let small_cert = certificate(d, "small", &small, "codeSigning");
    assert_refused(
        &p,
        d,
        &[
            "--signing-key",
            &s(&small),
            "--signing-cert",
            &s(&small_cert),
        ],
        2,
        &["1024 bits"],
    );
    assert_refused(
        &p,
        d,
        &["--signing-key", &key, "--signing-cert", &s(&garbage)],
        2,
        &["not an X.509 certificate"],
    );
}

#[test]
fn a_missing_key_or_certificate_is_exit_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let p = profile(d, "");
    let (key, cert) = (
        k.key.to_str().unwrap().to_string(),
        k.cert.to_str().unwrap().to_string(),
    );
    assert_refused(&p, d, &["--signing-key", &key], 2, &["no certificate"]);
    assert_refused(&p, d, &["--signing-cert", &cert], 2, &["no signing key"]);
    let with_cert = common::write_profile(
        d,
        "with-cert.yaml",
        &profile_text(&format!("secureBoot: {{certificate: {cert}}}\n")),
    );
    assert_refused(
        &with_cert,
        d,
        &[],
        2,
        &["secureBoot.certificate", "no signing key"],
    );
    let missing_cert = common::write_profile(
        d,
        "missing-cert.yaml",
        &profile_text("secureBoot: {certificate: ./nope.crt}\n"),
    );
    assert_refused(
        &missing_cert,
        d,
        &["--signing-key", &key],
        2,
        &["secureBoot.certificate", "nope.crt"],
    );
}

#[test]
fn a_failing_or_lying_signer_is_exit_1_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let other = rsa_key(d, "other", 2048, false);
    let p = profile(d, "");
    let cert = k.cert.to_str().unwrap();
    assert_refused(
        &p,
        d,
        &[
            "--signer",
            "echo 'token not present' >&2; exit 3",
            "--signing-cert",
            cert,
        ],
        1,
        &["failed", "token not present"],
    );
    assert_refused(
        &p,
        d,
        &[
            "--signer",
            "cat >/dev/null; echo garbage",
            "--signing-cert",
            cert,
        ],
        1,
        &["not a signature by the certificate's key"],
    );
    let wrong = format!(
        "openssl pkeyutl -sign -rawin -digest sha256 -inkey '{}'",
        other.key.display()
    );
    assert_refused(
        &p,
        d,
        &["--signer", &wrong, "--signing-cert", cert],
        1,
        &["does not verify"],
    );
    assert_refused(
        &p,
        d,
        &["--signer", " ", "--signing-cert", cert],
        2,
        &["--signer command is empty"],
    );
}

#[test]
fn an_expired_or_non_code_signing_certificate_is_a_warning_and_the_image_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let p = profile(d, "");
    let expired = expired_certificate(d, &k.key);
    let server = certificate(d, "server", &k.key, "serverAuth");
    // What each warning says of other verifiers holds: sbverify ignores dates but
    // checks key usage, osslsigncode checks both.
    for (cert, warning, sbverify_accepts) in [
        (&expired, "expired on", true),
        (&server, "not for code signing", false),
    ] {
        let img = d.join("warned.img");
        let o = build_ok(
            &p,
            &img,
            &[
                "--signing-key",
                k.key.to_str().unwrap(),
                "--signing-cert",
                cert.to_str().unwrap(),
            ],
        );
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(log.contains("warning:") && log.contains(warning), "{log}");
        assert_eq!(inspected_signature(&img)["verified"], true);
        let efi = uki_of(&img, &d.join(format!("warned-{}.efi", warning.len())));
        let (ok, t) = sbverify(cert, &efi);
        assert_eq!(ok, sbverify_accepts, "sbverify ({warning}):\n{t}");
        let (ok, t) = osslsigncode(cert, &efi);
        assert!(!ok, "osslsigncode accepted ({warning}):\n{t}");
        fs::remove_file(&img).unwrap();
    }
}

/// The kept UKI is the unsigned one; a build that reuses it signs a copy of its own.
/// So a signed rebuild from the cache gives the same bytes as a clean signed build,
/// and the kept artifact stays intact for the next build (it is reused again, not
/// found corrupt).
#[test]
fn a_reused_uki_is_signed_in_a_copy_and_the_kept_one_stays_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let k = rsa_key(d, "db", 2048, false);
    let p = profile(d, "");
    let cache = d.join("cache");
    let args = [
        "--signing-key",
        k.key.to_str().unwrap(),
        "--signing-cert",
        k.cert.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let clean = d.join("clean.img");
    let mut no_reuse = args.to_vec();
    no_reuse.push("--no-reuse");
    build_ok(&p, &clean, &no_reuse);
    let mut runs = Vec::new();
    for i in 0..3 {
        let img = d.join(format!("reuse-{i}.img"));
        let o = build_ok(&p, &img, &args);
        runs.push((common::sha256_file(&img), text(&o)));
    }
    for (i, (sum, log)) in runs.iter().enumerate() {
        assert_eq!(sum, &common::sha256_file(&clean), "build {i}:\n{log}");
        assert!(!log.contains("corrupt"), "build {i}:\n{log}");
    }
    assert!(
        runs[1].1.contains("unified kernel image: reused"),
        "{}",
        runs[1].1
    );
    assert!(
        runs[2].1.contains("unified kernel image: reused"),
        "{}",
        runs[2].1
    );
}
