//! The keys a UKI is signed with: reading a private key file, matching it with the
//! certificate, signing, and checking a signature against a certificate's public key.
//!
//! Supported: RSA (2048 to 4096 bits, PKCS#1 v1.5 with SHA-256) and ECDSA on P-256
//! (with SHA-256; signatures DER-encoded, deterministic by RFC 6979 so that a build is
//! reproducible). The cryptography is RustCrypto's (`rsa`, `p256`); this module only
//! picks the scheme and says what went wrong. A private key is held only here, is
//! wiped from memory when dropped (the crates zeroize their keys; the file's bytes are
//! wiped here), and never appears in a message: errors name the file, never its text.

use der::zeroize::Zeroizing;
use der::Encode;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use rsa::signature::SignatureEncoding as _;
use sha2::Sha256;
use spki::SubjectPublicKeyInfoOwned;

/// RSA key sizes accepted: what UEFI firmware verifies (EDK2 accepts 2048 to 4096).
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// The OIDs of the public key algorithms (RFC 3279, RFC 5480).
const RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// The signature scheme a certificate's key implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA PKCS#1 v1.5 with SHA-256; the modulus size in bits.
    Rsa { bits: usize },
    /// ECDSA on P-256 with SHA-256.
    P256,
}

impl Algorithm {
    /// The scheme of the public key `spki` (a certificate's), or why it is not one we
    /// sign with.
    pub fn of(spki: &SubjectPublicKeyInfoOwned) -> Result<Algorithm, String> {
        let der = spki
            .to_der()
            .map_err(|e| format!("its public key cannot be encoded ({e})"))?;
        if spki.algorithm.oid == RSA_ENCRYPTION {
            let key = rsa::RsaPublicKey::from_public_key_der(&der)
                .map_err(|e| format!("its RSA public key cannot be read ({e})"))?;
            let bits = rsa::traits::PublicKeyParts::size(&key) * 8;
            if !RSA_BITS.contains(&bits) {
                return Err(format!(
                    "its RSA key has {bits} bits; use 2048 to 4096 (firmware refuses others)"
                ));
            }
            return Ok(Algorithm::Rsa { bits });
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
        if spki.algorithm.oid == EC_PUBLIC_KEY && curve == Some(PRIME256V1) {
            return Ok(Algorithm::P256);
        }
        Err(format!(
            "its key is of type {} (curve {}): use RSA 2048-4096 or ECDSA P-256",
            spki.algorithm.oid,
            curve.map_or("-".to_string(), |c| c.to_string())
        ))
    }

    /// How [`crate::sign`] names it to an external signer (`KIOS_SIGN_ALGORITHM`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rsa { .. } => "rsa-pkcs1v15-sha256",
            Algorithm::P256 => "ecdsa-p256-sha256",
        }
    }
}

/// A private key read from a file.
pub enum PrivateKey {
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>, rsa::RsaPublicKey),
    P256(p256::ecdsa::SigningKey),
}

impl PrivateKey {
    /// Reads a private key: PEM `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1)
    /// or `EC PRIVATE KEY` (SEC1, with or without openssl's `EC PARAMETERS` block
    /// before it), or the same as DER. `bytes` is wiped by the caller.
    pub fn parse(bytes: &[u8]) -> Result<PrivateKey, String> {
        if bytes.starts_with(b"-----BEGIN ") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            return Self::parse_pem(bytes);
        }
        Self::parse_der(bytes, None)
    }

    fn parse_pem(bytes: &[u8]) -> Result<PrivateKey, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "it is not PEM text".to_string())?;
        let mut labels = Vec::new();
        // Each PEM block alone: openssl puts `EC PARAMETERS` before an EC key.
        for block in text.split("-----BEGIN ").skip(1) {
            // The block up to the dashes that close its END line.
            let Some(end) = block.find("-----END ").map(|e| e + "-----END ".len()) else {
                continue;
            };
            let Some(close) = block[end..].find("-----").map(|c| end + c + "-----".len()) else {
                continue;
            };
            let pem = format!("-----BEGIN {}\n", &block[..close]);
            let (label, der) = match der::pem::decode_vec(pem.as_bytes()) {
                Ok((label, der)) => (label.to_string(), Zeroizing::new(der)),
                Err(_) => continue,
            };
            match label.as_str() {
                "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                    return Self::parse_der(&der, Some(&label))
                }
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(
                        "it is an encrypted PKCS#8 key; kios-build does not ask for \
                                passwords: decrypt it (openssl pkey -in KEY -out PLAIN), or \
                                keep it encrypted and sign through --signer"
                            .into(),
                    )
                }
                _ => labels.push(label),
            }
        }
        if text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(
                "it is an encrypted PEM key; decrypt it (openssl pkey) or use --signer".into(),
            );
        }
        Err(format!(
            "it holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY){}",
            if labels.is_empty() {
                String::new()
            } else {
                format!("; found only {}", labels.join(", "))
            }
        ))
    }

    fn parse_der(der: &[u8], label: Option<&str>) -> Result<PrivateKey, String> {
        let rsa = |k: rsa::RsaPrivateKey| -> Result<PrivateKey, String> {
            let bits = rsa::traits::PublicKeyParts::size(&k) * 8;
            if !RSA_BITS.contains(&bits) {
                return Err(format!("it is an RSA key of {bits} bits; use 2048 to 4096"));
            }
            let public = k.to_public_key();
            Ok(PrivateKey::Rsa(
                Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(k)),
                public,
            ))
        };
        let p256 = |k: p256::SecretKey| Ok(PrivateKey::P256(p256::ecdsa::SigningKey::from(k)));
        if matches!(label, None | Some("PRIVATE KEY")) {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
                return rsa(k);
            }
            if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
                return p256(k);
            }
        }
        if matches!(label, None | Some("RSA PRIVATE KEY")) {
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_der(der) {
                return rsa(k);
            }
        }
        if matches!(label, None | Some("EC PRIVATE KEY")) {
            if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
                return p256(k);
            }
        }
        Err(match label {
            Some(l) => {
                format!("its {l} block is not an RSA (2048-4096) or ECDSA P-256 private key")
            }
            None => "it is neither PEM nor a DER PKCS#8, PKCS#1 or SEC1 private key".into(),
        })
    }

    /// True when `spki` (a certificate's public key) is this key's public half.
    pub fn matches(&self, spki: &SubjectPublicKeyInfoOwned) -> bool {
        let Ok(der) = spki.to_der() else {
            return false;
        };
        match self {
            PrivateKey::Rsa(_, public) => {
                rsa::RsaPublicKey::from_public_key_der(&der).is_ok_and(|p| &p == public)
            }
            PrivateKey::P256(k) => p256::PublicKey::from_public_key_der(&der)
                .is_ok_and(|p| p == p256::PublicKey::from(k.verifying_key())),
        }
    }

    /// Signs `message` (SHA-256, then the key's scheme): the signature as it goes into
    /// a PKCS#7 `SignerInfo` (RSA: the raw PKCS#1 v1.5 block; ECDSA: DER).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::Rsa(k, _) => k.sign(message).to_vec(),
            PrivateKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

/// Puts a signature from an external signer in the form a `SignerInfo` holds: RSA
/// signatures as they are; ECDSA as DER, also accepting the 64-byte `r || s` form
/// that PKCS#11 and some KMS APIs answer.
pub fn normalize(algorithm: Algorithm, signature: &[u8]) -> Result<Vec<u8>, String> {
    match algorithm {
        Algorithm::Rsa { bits } => {
            if signature.len() * 8 != bits {
                return Err(format!(
                    "it is {} bytes; an RSA-{bits} PKCS#1 v1.5 signature is {} bytes",
                    signature.len(),
                    bits / 8
                ));
            }
            Ok(signature.to_vec())
        }
        Algorithm::P256 => {
            if let Ok(sig) = p256::ecdsa::Signature::from_der(signature) {
                return Ok(sig.to_der().as_bytes().to_vec());
            }
            if signature.len() == 64 {
                if let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) {
                    return Ok(sig.to_der().as_bytes().to_vec());
                }
            }
            Err(format!(
                "its {} bytes are neither a DER ECDSA signature nor 64 bytes of r || s",
                signature.len()
            ))
        }
    }
}

/// Checks `signature` over `message` (SHA-256) against the public key `spki`.
pub fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let der = spki
        .to_der()
        .map_err(|e| format!("the public key cannot be encoded ({e})"))?;
    match Algorithm::of(spki)? {
        Algorithm::Rsa { .. } => {
            let key = rsa::RsaPublicKey::from_public_key_der(&der)
                .map_err(|e| format!("the RSA public key cannot be read ({e})"))?;
            let sig = rsa::pkcs1v15::Signature::try_from(signature)
                .map_err(|e| format!("the signature cannot be read ({e})"))?;
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)
                .verify(message, &sig)
                .map_err(|_| "the RSA signature does not verify with the certificate's key".into())
        }
        Algorithm::P256 => {
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&der)
                .map_err(|e| format!("the P-256 public key cannot be read ({e})"))?;
            let sig = p256::ecdsa::Signature::from_der(signature)
                .map_err(|e| format!("the ECDSA signature is not DER ({e})"))?;
            key.verify(message, &sig).map_err(|_| {
                "the ECDSA signature does not verify with the certificate's key".into()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_p256_signature_is_turned_into_der() {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sig: p256::ecdsa::Signature = key.sign(b"m");
        let der = normalize(Algorithm::P256, &sig.to_bytes()).unwrap();
        assert_eq!(der, sig.to_der().as_bytes());
        assert!(normalize(Algorithm::P256, b"garbage").is_err());
        assert!(normalize(Algorithm::Rsa { bits: 2048 }, &[0u8; 255]).is_err());
    }

    #[test]
    fn sec1_after_ec_parameters_and_pkcs8_pem_are_read_with_or_without_a_final_newline() {
        use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let spki_der = secret.public_key().to_public_key_der().unwrap();
        let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes()).unwrap();
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap();
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
            sec1.as_str()
        );
        let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        for text in [
            with_params.as_str(),
            with_params.trim_end(),
            pkcs8.as_str(),
            pkcs8.trim_end(),
        ] {
            let key = PrivateKey::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"));
            assert!(key.matches(&spki));
            let sig = key.sign(b"message");
            verify(&spki, b"message", &sig).unwrap();
            assert!(verify(&spki, b"other message", &sig).is_err());
            assert_eq!(sig, key.sign(b"message"), "RFC 6979: deterministic");
        }
    }

    #[test]
    fn text_that_is_not_a_key_is_refused_without_echoing_it() {
        let e =
            PrivateKey::parse(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .err()
                .unwrap();
        assert!(e.contains("found only CERTIFICATE"), "{e}");
        let e = PrivateKey::parse(b"secret-looking text").err().unwrap();
        assert!(!e.contains("secret"), "{e}");
    }
}
