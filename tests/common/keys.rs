//! Signing keys and certificates for the Secure Boot tests, made with `openssl` in a
//! test's temporary folder.

use std::fs;
use std::path::{Path, PathBuf};

use super::run_tool;

/// A key and its self-signed certificate, made in `dir`.
pub struct Key {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// `openssl req -x509` over an existing key: a certificate for ten years whose
/// extended key usage is `eku` (`codeSigning`, `serverAuth`...).
pub fn certificate(dir: &Path, name: &str, key: &Path, eku: &str) -> PathBuf {
    let cert = dir.join(format!("{name}.crt"));
    run_tool(
        "openssl",
        "openssl",
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
            "-subj",
            &format!("/CN=kiOS test {name}/O=kiOS tests"),
            "-days",
            "3650",
            "-addext",
            &format!("extendedKeyUsage={eku}"),
        ],
    );
    cert
}

/// An RSA key of `bits` (PKCS#8 PEM, or PKCS#1 with `traditional`) and its certificate.
pub fn rsa_key(dir: &Path, name: &str, bits: u32, traditional: bool) -> Key {
    let key = dir.join(format!("{name}.key"));
    let bits = bits.to_string();
    let mut args = vec!["genrsa", "-out", key.to_str().unwrap()];
    if traditional {
        args.push("-traditional");
    }
    args.push(&bits);
    run_tool("openssl", "openssl", &args);
    let cert = certificate(dir, name, &key, "codeSigning");
    Key { key, cert }
}

/// A P-256 key as `openssl ecparam -genkey` writes it (SEC1, after an `EC
/// PARAMETERS` block) and its certificate.
pub fn p256_key(dir: &Path, name: &str) -> Key {
    let key = dir.join(format!("{name}.key"));
    run_tool(
        "openssl",
        "openssl",
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            key.to_str().unwrap(),
        ],
    );
    let cert = certificate(dir, name, &key, "codeSigning");
    Key { key, cert }
}

/// A certificate for `key` valid only in 2020, made with `openssl ca` (`req -x509`
/// cannot back-date).
pub fn expired_certificate(dir: &Path, key: &Path) -> PathBuf {
    let ca = dir.join("ca");
    fs::create_dir_all(&ca).unwrap();
    fs::write(ca.join("index.txt"), "").unwrap();
    fs::write(ca.join("serial"), "01\n").unwrap();
    fs::write(
        ca.join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca=d\n[d]\ndatabase={0}/index.txt\nnew_certs_dir={0}\nserial={0}/serial\npolicy=p\ndefault_md=sha256\n[p]\ncommonName=supplied\n",
            ca.display()
        ),
    )
    .unwrap();
    let csr = ca.join("old.csr");
    let cert = dir.join("expired.crt");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run_tool(
        "openssl",
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            &s(key),
            "-subj",
            "/CN=expired",
            "-out",
            &s(&csr),
        ],
    );
    run_tool(
        "openssl",
        "openssl",
        &[
            "ca",
            "-batch",
            "-config",
            &s(&ca.join("ca.cnf")),
            "-selfsign",
            "-keyfile",
            &s(key),
            "-in",
            &s(&csr),
            "-out",
            &s(&cert),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
            "-notext",
        ],
    );
    cert
}
