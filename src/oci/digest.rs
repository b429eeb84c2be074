//! Content digests as the OCI image spec defines them ("Digests", descriptor.md),
//! restricted to `sha256`: the only algorithm registries, skopeo and the image spec's
//! own examples use, and the one every blob of a local layout is stored under
//! (`blobs/sha256/<hex>`, image-layout.md "Blobs"). Parsing checks the exact form
//! (`sha256:` + 64 lowercase hex digits), so a parsed digest is always safe to use as
//! a file name. This module does not read blobs: its hashing reader and writer only
//! see the bytes passed through them.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A `sha256:<hex>` content digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest kios-build accepts.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form `sha256:<64 lowercase hex digits>`")]
    Malformed(String),
    #[error(
        "digest {value:?} uses algorithm {algorithm:?}; only sha256 digests are supported \
         (copy the image with `skopeo copy`, which writes sha256 blobs)"
    )]
    Algorithm { value: String, algorithm: String },
}

impl Digest {
    /// Always `"sha256"`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Where an OCI image layout keeps this blob: `DIR/blobs/sha256/<hex>`
    /// (image-layout.md "Blobs").
    pub fn blob_path(&self, layout_dir: &Path) -> PathBuf {
        layout_dir.join("blobs").join("sha256").join(&self.hex)
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(h: Sha256) -> Digest {
        Digest {
            hex: hex::encode(h.finalize()),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_string()));
        };
        if algorithm != "sha256" {
            return Err(DigestError::Algorithm {
                value: s.to_string(),
                algorithm: algorithm.to_string(),
            });
        }
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if hex.len() != 64 || !hex.bytes().all(|b| lower_hex(&b)) {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// As its text, `sha256:<hex>`: how reports and the lock write a digest.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

/// Hashes and counts the bytes read through it.
pub(crate) struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Sha256Reader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Sha256Reader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left, so that the digest covers the whole stream.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes and counts the bytes written through it.
pub(crate) struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Sha256Writer<W> {
    pub(crate) fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn finish(self) -> (Digest, u64, W) {
        (Digest::from_hasher(self.hasher), self.count, self.inner)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_digests_parse_and_print() {
        let d: Digest = format!("sha256:{EMPTY}").parse().unwrap();
        assert_eq!(d.hex(), EMPTY);
        assert_eq!(d.to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(d, Digest::of_bytes(b""));
        assert_eq!(
            d.blob_path(Path::new("/l")),
            PathBuf::from(format!("/l/blobs/sha256/{EMPTY}"))
        );
    }

    #[test]
    fn other_algorithms_and_malformed_digests_are_rejected() {
        let e = "sha512:abcd".parse::<Digest>().unwrap_err();
        assert!(e.to_string().contains("only sha256"), "{e}");
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(format!("sha256:{}", EMPTY.to_uppercase())
            .parse::<Digest>()
            .is_err());
        assert!(format!("sha256:../{}", &EMPTY[3..])
            .parse::<Digest>()
            .is_err());
        assert!(EMPTY.parse::<Digest>().is_err());
    }
}
