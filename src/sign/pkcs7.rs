//! The PKCS#7 `SignedData` of an Authenticode signature: made from an image hash, a
//! certificate and a signature, and read back and checked.
//!
//! The structure ("Windows Authenticode Portable Executable Signature Format",
//! sections "Authenticode Signature Format" and "SignedData"; PKCS#7 is RFC 2315):
//!
//! ```text
//! ContentInfo { signedData,
//!   SignedData { version 1, digestAlgorithms {sha256},
//!     contentInfo { SPC_INDIRECT_DATA_OBJID,
//!       SpcIndirectDataContent { { SPC_PE_IMAGE_DATAOBJ, SpcPeImageData },
//!                                DigestInfo { sha256, <the image hash> } } },
//!     certificates [0] { <the signer's certificate> },
//!     signerInfos { SignerInfo { version 1, issuerAndSerialNumber, sha256,
//!       authenticatedAttributes [0] { contentType = SPC_INDIRECT_DATA_OBJID,
//!                                     SpcSpOpusInfo = {}, messageDigest },
//!       rsaEncryption | ecdsa-with-SHA256, <signature> } } } }
//! ```
//!
//! Two Authenticode rules that differ from plain CMS: `messageDigest` is the SHA-256
//! of the `SpcIndirectDataContent`'s *value* (its DER without the outer tag and
//! length), and the signature is over the DER of the authenticated attributes with
//! the universal SET tag (0x31) in place of the `[0]` of the encoding. There is no
//! signing time and no counter-signature, so the same image and key give the same
//! bytes (RSA PKCS#1 v1.5 is deterministic, ECDSA is made so by RFC 6979).
//! The DER types are RustCrypto's (`cms`, `x509-cert`, `der`); the three Authenticode
//! structures are declared here.

use der::asn1::{Any, ObjectIdentifier as Oid, OctetString, SetOfVec};
use der::{Decode, Encode, Sequence, Tag};
use sha2::{Digest as _, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::Certificate;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};

use super::keys::{self, Algorithm};

const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const SPC_INDIRECT_DATA: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.4");
const SPC_PE_IMAGE_DATA: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.15");
const SPC_SP_OPUS_INFO: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.12");
const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");

/// `SpcPeImageData ::= SEQUENCE { flags BIT STRING (empty), file [0] EXPLICIT
/// SpcLink }` with `SpcLink.file [2] EXPLICIT SpcString.unicode [0] IMPLICIT
/// BMPString "<<<Obsolete>>>"`: the fixed value signtool, sbsign and osslsigncode
/// all write (the fields are obsolete; some verifiers want them present).
const SPC_PE_IMAGE_DATA_VALUE: [u8; 39] = [
    0x30, 0x25, 0x03, 0x01, 0x00, 0xa0, 0x20, 0xa2, 0x1e, 0x80, 0x1c, 0, b'<', 0, b'<', 0, b'<', 0,
    b'O', 0, b'b', 0, b's', 0, b'o', 0, b'l', 0, b'e', 0, b't', 0, b'e', 0, b'>', 0, b'>', 0, b'>',
];

/// `SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue,
/// messageDigest DigestInfo }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SpcIndirectDataContent {
    data: SpcAttributeTypeAndOptionalValue,
    message_digest: DigestInfo,
}

/// `SpcAttributeTypeAndOptionalValue ::= SEQUENCE { type OID, value ANY OPTIONAL }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SpcAttributeTypeAndOptionalValue {
    value_type: Oid,
    value: Option<Any>,
}

/// `DigestInfo ::= SEQUENCE { digestAlgorithm AlgorithmIdentifier, digest OCTET STRING }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// SHA-256 with NULL parameters, as OpenSSL and signtool write it.
fn sha256_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: SHA256,
        parameters: Some(Any::null()),
    }
}

/// What gets signed for an image: the `SpcIndirectDataContent` and the
/// authenticated attributes over it.
pub struct ToBeSigned {
    content: Any,
    attributes: SetOfVec<Attribute>,
}

impl ToBeSigned {
    /// The content and attributes for an image whose Authenticode hash is `image_hash`.
    pub fn new(image_hash: &[u8; 32]) -> Result<ToBeSigned, der::Error> {
        let indirect = SpcIndirectDataContent {
            data: SpcAttributeTypeAndOptionalValue {
                value_type: SPC_PE_IMAGE_DATA,
                value: Some(Any::from_der(&SPC_PE_IMAGE_DATA_VALUE)?),
            },
            message_digest: DigestInfo {
                algorithm: sha256_algorithm(),
                digest: OctetString::new(image_hash.to_vec())?,
            },
        };
        let content = Any::encode_from(&indirect)?;
        let digest: [u8; 32] = Sha256::digest(content.value()).into();
        let attribute = |oid: Oid, value: Any| -> Result<Attribute, der::Error> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value])?,
            })
        };
        let attributes = SetOfVec::try_from(vec![
            attribute(CONTENT_TYPE, Any::encode_from(&SPC_INDIRECT_DATA)?)?,
            attribute(SPC_SP_OPUS_INFO, Any::new(Tag::Sequence, Vec::new())?)?,
            attribute(
                MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.to_vec())?)?,
            )?,
        ])?;
        Ok(ToBeSigned {
            content,
            attributes,
        })
    }

    /// The bytes the signer signs: the DER of the authenticated attributes as a SET.
    pub fn message(&self) -> Result<Vec<u8>, der::Error> {
        self.attributes.to_der()
    }

    /// The DER `ContentInfo` with `signature` (made over [`Self::message`] with the
    /// key of `certificate`) and the certificate.
    pub fn assemble(
        self,
        certificate: &Certificate,
        algorithm: Algorithm,
        signature: Vec<u8>,
    ) -> Result<Vec<u8>, der::Error> {
        let tbs = &certificate.tbs_certificate;
        let signature_algorithm = match algorithm {
            Algorithm::Rsa { .. } => AlgorithmIdentifierOwned {
                oid: RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            Algorithm::P256 => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA256,
                parameters: None,
            },
        };
        let signer = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer.clone(),
                serial_number: tbs.serial_number.clone(),
            }),
            digest_alg: sha256_algorithm(),
            signed_attrs: Some(self.attributes),
            signature_algorithm,
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256_algorithm()])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: SPC_INDIRECT_DATA,
                econtent: Some(self.content),
            },
            certificates: Some(CertificateSet(SetOfVec::try_from(vec![
                CertificateChoices::Certificate(certificate.clone()),
            ])?)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer])?),
        };
        ContentInfo {
            content_type: SIGNED_DATA,
            content: Any::encode_from(&signed)?,
        }
        .to_der()
    }
}

/// What a signature says and whether it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The signer certificate's subject (RFC 4514 form) and serial (hex).
    pub subject: String,
    pub serial: String,
    /// `Ok` when the signature covers this image and verifies with the embedded
    /// certificate; else why not.
    pub verdict: Result<(), String>,
}

/// Reads the DER `ContentInfo` of an Authenticode signature and checks it against
/// `image_hash` (the image's hash, computed by the caller). `Err` when it cannot be
/// read as one at all.
pub fn check(pkcs7: &[u8], image_hash: &[u8; 32]) -> Result<Checked, String> {
    let pkcs7 = without_padding(pkcs7).map_err(|e| format!("not DER PKCS#7 ({e})"))?;
    let info = ContentInfo::from_der(pkcs7).map_err(|e| format!("not DER PKCS#7 ({e})"))?;
    if info.content_type != SIGNED_DATA {
        return Err(format!(
            "content type {} is not signedData",
            info.content_type
        ));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| format!("the SignedData cannot be read ({e})"))?;
    let [signer] = signed.signer_infos.0.as_slice() else {
        return Err(format!(
            "it has {} signers; one is expected",
            signed.signer_infos.0.len()
        ));
    };
    let SignerIdentifier::IssuerAndSerialNumber(id) = &signer.sid else {
        return Err("its signer is named by key identifier, not issuer and serial".into());
    };
    let certificate = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .find_map(|c| match c {
            CertificateChoices::Certificate(c)
                if c.tbs_certificate.issuer == id.issuer
                    && c.tbs_certificate.serial_number == id.serial_number =>
            {
                Some(c)
            }
            _ => None,
        })
        .ok_or("the signer's certificate is not embedded")?;
    let tbs = &certificate.tbs_certificate;
    Ok(Checked {
        subject: tbs.subject.to_string(),
        serial: hex::encode(tbs.serial_number.as_bytes()),
        verdict: verdict(&signed, signer, certificate, image_hash),
    })
}

/// The DER of a certificate-table entry without the zeros that pad it to 8 bytes:
/// its outer header says where it ends.
fn without_padding(entry: &[u8]) -> Result<&[u8], der::Error> {
    let mut reader = der::SliceReader::new(entry)?;
    let header = der::Header::decode(&mut reader)?;
    let len = usize::try_from((header.encoded_len()? + header.length)?)?;
    match (entry.get(..len), entry.get(len..)) {
        (Some(der), Some(padding)) if padding.len() < 8 && padding.iter().all(|&b| b == 0) => {
            Ok(der)
        }
        _ => Err(der::ErrorKind::TrailingData {
            decoded: header.length,
            remaining: der::Length::try_from(entry.len().saturating_sub(len))?,
        }
        .into()),
    }
}

/// The checks of [`check`] after the signer is found: the content is an image hash
/// equal to `image_hash`, the attributes carry that content's digest, and the
/// signature over the attributes verifies with the certificate's key.
fn verdict(
    signed: &SignedData,
    signer: &SignerInfo,
    certificate: &Certificate,
    image_hash: &[u8; 32],
) -> Result<(), String> {
    let content = &signed.encap_content_info;
    let econtent = match (
        &content.econtent,
        content.econtent_type == SPC_INDIRECT_DATA,
    ) {
        (Some(e), true) => e,
        _ => return Err("its content is not an Authenticode SpcIndirectDataContent".into()),
    };
    let indirect: SpcIndirectDataContent = econtent
        .decode_as()
        .map_err(|e| format!("its SpcIndirectDataContent cannot be read ({e})"))?;
    if indirect.message_digest.algorithm.oid != SHA256 || signer.digest_alg.oid != SHA256 {
        return Err("it uses a digest other than SHA-256, which kios-build does not check".into());
    }
    if indirect.message_digest.digest.as_bytes() != image_hash {
        return Err(format!(
            "the image was changed after it was signed: its hash is {}, the signature \
             covers {}",
            hex::encode(image_hash),
            hex::encode(indirect.message_digest.digest.as_bytes())
        ));
    }
    let attributes = signer
        .signed_attrs
        .as_ref()
        .ok_or("it has no authenticated attributes")?;
    let digest = attributes
        .iter()
        .find(|a| a.oid == MESSAGE_DIGEST)
        .and_then(|a| a.values.get(0))
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or("its authenticated attributes have no messageDigest")?;
    if digest.as_bytes() != Sha256::digest(econtent.value()).as_slice() {
        return Err("its messageDigest does not match its SpcIndirectDataContent".into());
    }
    let message = attributes
        .to_der()
        .map_err(|e| format!("its attributes cannot be encoded ({e})"))?;
    keys::verify(
        &certificate.tbs_certificate.subject_public_key_info,
        &message,
        signer.signature.as_bytes(),
    )
}
