//! Secure Boot signing of the UKI: where the key comes from, and the Authenticode
//! signature that goes into the UKI's certificate table.
//!
//! Input: a [`Request`] (the `build` flags `--signing-key`, `--signing-cert`,
//! `--signer`) and the profile's `secureBoot.certificate`; output: a [`Signer`] that
//! signs a written UKI in place ([`Signer::sign_uki`]), and [`check`], which reads a
//! signature back for `inspect`. The PE side (image hash, certificate table,
//! checksum) is `boot::authenticode`; the PKCS#7 structure is [`pkcs7`]; keys and
//! signature schemes are [`keys`].
//!
//! A private key comes only from the file named on the command line or from the
//! external signer, never from the profile. It is read into memory, used once, and
//! wiped; it is never printed, cached or written: only the signature and the
//! certificate land in the image. The external signer contract is in
//! `docs/secure-boot.md`: the command runs under `sh -c`, gets the DER of the
//! authenticated attributes on stdin (to be hashed with SHA-256 and signed), with
//! `KIOS_SIGN_SHA256` (that hash, hex) and `KIOS_SIGN_ALGORITHM` in its environment,
//! and answers the raw signature on stdout.
//!
//! Not done here: dm-verity and the command line (the `.cmdline` section is written
//! before signing, so whatever it carries is covered), PCR predictions, timestamps
//! (a timestamp would make builds differ; UEFI ignores them).

pub mod keys;
pub mod pkcs7;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use der::zeroize::Zeroizing;
use der::{Decode, DecodePem};
use sha2::{Digest as _, Sha256};
use x509_cert::Certificate;

use crate::boot::{self, BootError};
use crate::untrusted::{self, shown};
use keys::{Algorithm, PrivateKey};

/// The largest key or certificate file read; real ones are a few KiB.
const MAX_KEY_FILE: u64 = 1 << 20;
/// The most a signer may answer (an RSA-4096 signature is 512 bytes).
const MAX_SIGNER_OUTPUT: u64 = 64 * 1024;
/// The most of a failing signer's stderr quoted in the error.
const SIGNER_STDERR_CHARS: usize = 2000;
/// Extended key usage `id-kp-codeSigning` (RFC 5280 4.2.1.12).
const CODE_SIGNING: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");

/// Where the signing key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A private key file (`--signing-key`).
    File(PathBuf),
    /// An external signer command (`--signer`), run with `sh -c`.
    Command(String),
}

/// How the user asked for the UKI to be signed (the `build` flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub key: Option<KeySource>,
    /// `--signing-cert`: overrides the profile's `secureBoot.certificate`.
    pub certificate: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "{what} is given but no signing key: add --signing-key KEY.pem or --signer \
         'COMMAND' to sign the UKI"
    )]
    NoKey { what: String },
    #[error(
        "a signing key is given but no certificate: add --signing-cert db.crt or \
         `secureBoot: {{certificate: ./db.crt}}` to the profile"
    )]
    NoCertificate,
    #[error("cannot read the {what} {path}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key {path} cannot be used: {why}")]
    Key { path: String, why: String },
    #[error(
        "the certificate {path} cannot be used: {why}; give a PEM or DER X.509 \
         certificate (openssl x509 -in db.crt -noout -text shows it)"
    )]
    Certificate { path: String, why: String },
    #[error(
        "the signing key {key} does not belong to the certificate {certificate} (their \
         public keys differ); give the certificate made from this key"
    )]
    KeyMismatch { key: String, certificate: String },
    #[error("the --signer command is empty; give the command that signs, e.g. 'openssl pkeyutl -sign -rawin -digest sha256 -inkey db.key'")]
    EmptySigner,
    #[error("the signer `{command}` could not be run")]
    SignerStart {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the signer `{command}` failed ({status}){stderr}")]
    SignerFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "the signer `{command}` answered something that is not a signature by the \
         certificate's key: {why}; it must write the raw signature of its stdin \
         (SHA-256, {algorithm}) to stdout (docs/secure-boot.md)"
    )]
    SignerOutput {
        command: String,
        algorithm: &'static str,
        why: String,
    },
    #[error("cannot encode the signature: {0}")]
    Encode(#[from] der::Error),
    #[error("cannot sign the unified kernel image")]
    Uki(#[source] BootError),
    #[error("cannot open the unified kernel image {path} to sign it")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SignError {
    /// True for what the user fixes in flags, profile or key files (exit 2); a
    /// signer that fails or answers garbage, or a write error, is a failed build.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            SignError::NoKey { .. }
                | SignError::NoCertificate
                | SignError::Read { .. }
                | SignError::Key { .. }
                | SignError::Certificate { .. }
                | SignError::KeyMismatch { .. }
                | SignError::EmptySigner
        )
    }
}

/// How signatures are made.
enum Backend {
    Key(PrivateKey),
    Command(String),
}

/// A key (or signer) and its certificate, checked against each other, ready to sign.
pub struct Signer {
    certificate: Certificate,
    algorithm: Algorithm,
    backend: Backend,
    /// What is worth a warning about the certificate (expired, not for code signing).
    pub warnings: Vec<String>,
}

/// Shows the certificate, never the key.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("subject", &self.subject())
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// What [`Signer::sign_uki`] did.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The UKI's size with its signature.
    pub len: u64,
    pub subject: String,
    pub serial: String,
}

impl Signer {
    /// The signer `request` and the profile's certificate (`profile_cert`) ask for,
    /// or `None` when neither asks for signing. Reads and checks the key and the
    /// certificate now, before the build spends minutes.
    pub fn from_request(
        request: &Request,
        profile_cert: Option<&Path>,
    ) -> Result<Option<Signer>, SignError> {
        let cert_path = request.certificate.as_deref().or(profile_cert);
        let Some(key) = &request.key else {
            return match (&request.certificate, profile_cert) {
                (Some(_), _) => Err(SignError::NoKey {
                    what: "--signing-cert".into(),
                }),
                (None, Some(_)) => Err(SignError::NoKey {
                    what: "the profile's secureBoot.certificate".into(),
                }),
                (None, None) => Ok(None),
            };
        };
        let cert_path = cert_path.ok_or(SignError::NoCertificate)?;
        let certificate = read_certificate(cert_path)?;
        let cert_err = |why: String| SignError::Certificate {
            path: crate::profile::shown_path(cert_path),
            why,
        };
        let algorithm = Algorithm::of(&certificate.tbs_certificate.subject_public_key_info)
            .map_err(cert_err)?;
        let backend = match key {
            KeySource::File(path) => Backend::Key(read_key(path, cert_path, &certificate)?),
            KeySource::Command(c) if c.trim().is_empty() => return Err(SignError::EmptySigner),
            KeySource::Command(c) => Backend::Command(c.clone()),
        };
        let mut warnings = certificate_warnings(&certificate, cert_path);
        if algorithm == Algorithm::P256 {
            // Seen in tests/secure_boot_qemu.rs's setup: with the P-256 certificate
            // in db, OVMF answered "Access Denied".
            warnings.push(
                "the UKI is signed with ECDSA P-256: sbverify and osslsigncode accept it, \
                 but some UEFI firmware verifies only RSA signatures (Debian 12's OVMF, \
                 edk2 2022.11, refuses it); use RSA-2048 unless the target firmware is \
                 known to take ECDSA"
                    .into(),
            );
        }
        Ok(Some(Signer {
            warnings,
            certificate,
            algorithm,
            backend,
        }))
    }

    /// The certificate's subject, as `inspect` shows it.
    pub fn subject(&self) -> String {
        self.certificate.tbs_certificate.subject.to_string()
    }

    /// Signs the UKI at `path` in place (Authenticode, SHA-256) and returns its new
    /// size. The signature is checked against the certificate before it is written.
    pub fn sign_uki(&self, path: &Path) -> Result<Signed, SignError> {
        let open_err = |source| SignError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let (layout, hash) = boot::authenticode::prepare(&mut file).map_err(SignError::Uki)?;
        let tbs = pkcs7::ToBeSigned::new(&hash)?;
        let message = tbs.message()?;
        let signature = self.signature(&message)?;
        let der = tbs.assemble(&self.certificate, self.algorithm, signature)?;
        let len = boot::authenticode::embed(&mut file, &layout, &der).map_err(SignError::Uki)?;
        let tbs = &self.certificate.tbs_certificate;
        Ok(Signed {
            len,
            subject: self.subject(),
            serial: hex::encode(tbs.serial_number.as_bytes()),
        })
    }

    /// The signature over `message`, from the key or the signer, checked.
    fn signature(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let spki = &self.certificate.tbs_certificate.subject_public_key_info;
        match &self.backend {
            // Checked against the certificate when the key was read.
            Backend::Key(k) => Ok(k.sign(message)),
            Backend::Command(command) => {
                let bad = |why: String| SignError::SignerOutput {
                    command: shown(command),
                    algorithm: self.algorithm.name(),
                    why,
                };
                let raw = run_signer(command, message, self.algorithm)?;
                let signature = keys::normalize(self.algorithm, &raw).map_err(bad)?;
                keys::verify(spki, message, &signature).map_err(bad)?;
                Ok(signature)
            }
        }
    }
}

/// Runs the external signer `command` with `message` on stdin; its stdout.
fn run_signer(command: &str, message: &[u8], algorithm: Algorithm) -> Result<Vec<u8>, SignError> {
    let start_err = |source| SignError::SignerStart {
        command: shown(command),
        source,
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("KIOS_SIGN_SHA256", hex::encode(Sha256::digest(message)))
        .env("KIOS_SIGN_ALGORITHM", algorithm.name())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(start_err)?;
    // The message is a few hundred bytes: it fits the pipe, so writing it all before
    // reading cannot deadlock. A signer that exits without reading is not an error
    // here (EPIPE); its exit status or answer says what went wrong.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(message);
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let out = child.stdout.take();
    let err = child.stderr.take();
    // stderr is read on its own thread, so that a chatty signer cannot block on it.
    let err_thread = std::thread::spawn(move || {
        if let Some(e) = err {
            let _ = e.take(MAX_SIGNER_OUTPUT).read_to_end(&mut stderr);
        }
        stderr
    });
    if let Some(o) = out {
        o.take(MAX_SIGNER_OUTPUT + 1)
            .read_to_end(&mut stdout)
            .map_err(start_err)?;
    }
    let status = child.wait().map_err(start_err)?;
    let stderr = err_thread.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&stderr);
        let text = text.trim();
        return Err(SignError::SignerFailed {
            command: shown(command),
            status: status.to_string(),
            stderr: if text.is_empty() {
                String::new()
            } else {
                format!(
                    "; it said: {}",
                    untrusted::shown_max(text, SIGNER_STDERR_CHARS)
                )
            },
        });
    }
    if stdout.len() as u64 > MAX_SIGNER_OUTPUT {
        return Err(SignError::SignerOutput {
            command: shown(command),
            algorithm: algorithm.name(),
            why: format!("it wrote more than {MAX_SIGNER_OUTPUT} bytes"),
        });
    }
    Ok(stdout)
}

/// Reads a PEM or DER certificate.
fn read_certificate(path: &Path) -> Result<Certificate, SignError> {
    let bytes = untrusted::read_regular(path, MAX_KEY_FILE).map_err(|source| SignError::Read {
        what: "certificate",
        path: crate::profile::shown_path(path),
        source,
    })?;
    let parsed = if bytes
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        // Only the first certificate of a PEM bundle: the signer's own comes first.
        let text = String::from_utf8_lossy(&bytes);
        let start = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
        let end = text[start..]
            .find("-----END CERTIFICATE-----")
            .map_or(text.len(), |e| start + e + 25);
        Certificate::from_pem(text[start..end].as_bytes())
    } else {
        Certificate::from_der(&bytes)
    };
    parsed.map_err(|e| SignError::Certificate {
        path: crate::profile::shown_path(path),
        why: format!("it is not an X.509 certificate ({e})"),
    })
}

/// Reads the private key at `path` and checks that `certificate` is its own.
fn read_key(
    path: &Path,
    cert_path: &Path,
    certificate: &Certificate,
) -> Result<PrivateKey, SignError> {
    let bytes = Zeroizing::new(
        untrusted::read_regular(path, MAX_KEY_FILE).map_err(|source| SignError::Read {
            what: "signing key",
            path: crate::profile::shown_path(path),
            source,
        })?,
    );
    let key = PrivateKey::parse(&bytes).map_err(|why| SignError::Key {
        path: crate::profile::shown_path(path),
        why,
    })?;
    if !key.matches(&certificate.tbs_certificate.subject_public_key_info) {
        return Err(SignError::KeyMismatch {
            key: crate::profile::shown_path(path),
            certificate: crate::profile::shown_path(cert_path),
        });
    }
    Ok(key)
}

/// What is odd about a signing certificate but does not stop a build: firmware
/// checks neither dates (it has no trusted clock) nor key usage, but a certificate
/// that is expired or not meant for code signing is likely the wrong one.
fn certificate_warnings(certificate: &Certificate, path: &Path) -> Vec<String> {
    let tbs = &certificate.tbs_certificate;
    let name = crate::profile::shown_path(path);
    let mut out = Vec::new();
    let now = std::time::SystemTime::now();
    let not_after = tbs.validity.not_after.to_system_time();
    let not_before = tbs.validity.not_before.to_system_time();
    if not_after < now {
        out.push(format!(
            "the signing certificate {name} expired on {} (EDK2 firmware such as \
             OVMF and sbverify do not check dates; osslsigncode and Windows refuse it)",
            tbs.validity.not_after
        ));
    }
    if not_before > now {
        out.push(format!(
            "the signing certificate {name} is not valid before {}",
            tbs.validity.not_before
        ));
    }
    for ext in tbs.extensions.iter().flatten() {
        let value = ext.extn_value.as_bytes();
        if ext.extn_id == <x509_cert::ext::pkix::ExtendedKeyUsage as der::oid::AssociatedOid>::OID {
            match x509_cert::ext::pkix::ExtendedKeyUsage::from_der(value) {
                Ok(eku) if !eku.0.contains(&CODE_SIGNING) => out.push(format!(
                    "the signing certificate {name} is not for code signing (its extended \
                     key usage lacks codeSigning); EDK2 firmware such as OVMF does not \
                     check it, but sbverify and osslsigncode refuse such a signature"
                )),
                _ => {}
            }
        }
    }
    out
}

/// What `inspect` says about a UKI's signature.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SignatureInfo {
    pub signed: bool,
    /// The signer certificate's subject and serial (hex), when it can be read.
    pub subject: Option<String>,
    pub serial: Option<String>,
    /// True when the signature covers the image as it is and verifies with the
    /// embedded certificate (not whether that certificate is trusted: firmware
    /// decides that with its `db`).
    pub verified: bool,
    /// Why it does not verify, when it does not.
    pub problem: Option<String>,
}

/// Reads the signature of the UKI in `r` back and checks it.
pub fn check<R: Read + std::io::Seek>(r: &mut R) -> Result<SignatureInfo, BootError> {
    let Some(embedded) = boot::authenticode::read_signature(r)? else {
        return Ok(SignatureInfo {
            signed: false,
            subject: None,
            serial: None,
            verified: false,
            problem: None,
        });
    };
    let (stored, computed) = embedded.checksum;
    Ok(match pkcs7::check(&embedded.pkcs7, &embedded.image_hash) {
        Ok(c) => SignatureInfo {
            signed: true,
            subject: Some(c.subject),
            serial: Some(c.serial),
            verified: c.verdict.is_ok(),
            problem: c.verdict.err().or_else(|| {
                (stored != computed).then(|| {
                    format!("the PE checksum is {stored:#010x}, the image's is {computed:#010x}")
                })
            }),
        },
        Err(why) => SignatureInfo {
            signed: true,
            subject: None,
            serial: None,
            verified: false,
            problem: Some(format!("the signature cannot be read: {why}")),
        },
    })
}
