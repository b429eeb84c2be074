//! What systemd's UEFI stub will extend into TPM PCR 11 (sha256 bank) when it boots
//! a UKI, computed from the UKI's bytes, as `systemd-measure calculate` does for the
//! stub's part: a value a TPM policy or a remote attestation can be written against
//! before the node first boots.
//!
//! The stub (systemd 252, `src/boot/efi/stub.c`) measures, for each of its known
//! sections present in the image, in its fixed order (not the section table's):
//! first the section's name with its NUL byte, then the section's bytes as loaded
//! (`VirtualSize` of them: the file's bytes, zero-filled past `SizeOfRawData`). Each
//! measurement extends the PCR: `pcr = sha256(pcr || sha256(data))`, from 32 zero
//! bytes. `.pcrsig` is never measured. Confirmed against the real Debian stub with a
//! software TPM under QEMU (`tests/init_qemu.rs`); later systemd versions measure more
//! sections (`.uname`, `.sbat`, ...), so another stub version gets no prediction.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::UkiInfo;

/// The sections systemd-stub 252 measures, in the order it measures them.
const STUB_252_SECTIONS: [&str; 7] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// The prediction, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Pcr11 {
    /// The stub's own version string (`.sdmagic`), e.g. `systemd-stub 252.39-1~deb12u2`.
    pub stub: String,
    /// The PCR's value after the stub's measurements, hex; `None` for a stub whose
    /// list of measured sections is not known here.
    pub sha256: Option<String>,
    /// Each measurement, in order.
    pub events: Vec<Event>,
}

/// One measurement the stub makes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// `.linux (name)` for a section's name, `.linux` for its bytes.
    pub measured: String,
    /// sha256 of the bytes measured, hex.
    pub sha256: String,
}

/// Predicts PCR 11 for the UKI `r` whose sections `info` describes.
pub fn pcr11<R: Read + Seek>(r: &mut R, info: &UkiInfo) -> io::Result<Pcr11> {
    let stub = stub_version(r, info)?;
    let mut out = Pcr11 {
        stub: stub.clone(),
        sha256: None,
        events: Vec::new(),
    };
    if !stub.starts_with("systemd-stub 252.") {
        return Ok(out);
    }
    let mut pcr = [0u8; 32];
    for name in STUB_252_SECTIONS {
        let Some(s) = info.sections.iter().find(|s| s.name == name) else {
            continue;
        };
        let mut with_nul = name.as_bytes().to_vec();
        with_nul.push(0);
        let name_digest: [u8; 32] = Sha256::digest(&with_nul).into();
        extend(&mut pcr, &name_digest);
        out.events.push(Event {
            measured: format!("{name} (name)"),
            sha256: hex::encode(name_digest),
        });

        // The loaded bytes: the file's, then zeros up to VirtualSize.
        let mut h = Sha256::new();
        r.seek(SeekFrom::Start(s.file_offset))?;
        let from_file = s.virtual_size.min(s.file_size);
        let copied = io::copy(&mut (&mut *r).take(from_file), &mut h)?;
        if copied != from_file {
            return Err(io::Error::other(format!(
                "{name}: the UKI ends inside the section"
            )));
        }
        io::copy(&mut io::repeat(0).take(s.virtual_size - from_file), &mut h)?;
        let data_digest: [u8; 32] = h.finalize().into();
        extend(&mut pcr, &data_digest);
        out.events.push(Event {
            measured: name.to_string(),
            sha256: hex::encode(data_digest),
        });
    }
    out.sha256 = Some(hex::encode(pcr));
    Ok(out)
}

fn extend(pcr: &mut [u8; 32], digest: &[u8; 32]) {
    let mut h = Sha256::new();
    h.update(&pcr[..]);
    h.update(digest);
    *pcr = h.finalize().into();
}

/// `systemd-stub 252.39-1~deb12u2` from the `.sdmagic` section
/// (`#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####`); empty when absent.
fn stub_version<R: Read + Seek>(r: &mut R, info: &UkiInfo) -> io::Result<String> {
    let Some(s) = info.sections.iter().find(|s| s.name == ".sdmagic") else {
        return Ok(String::new());
    };
    let len = s.virtual_size.min(s.file_size).min(256);
    let mut b = Vec::new();
    r.seek(SeekFrom::Start(s.file_offset))?;
    (&mut *r).take(len).read_to_end(&mut b)?;
    let text = String::from_utf8_lossy(&b);
    Ok(text
        .trim_end_matches('\0')
        .trim()
        .trim_start_matches("#### LoaderInfo:")
        .trim_end_matches("####")
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extending_from_zeros_is_sha256_of_zeros_and_the_digest() {
        let mut pcr = [0u8; 32];
        let d: [u8; 32] = Sha256::digest(b".linux\0").into();
        extend(&mut pcr, &d);
        let mut want = Sha256::new();
        want.update([0u8; 32]);
        want.update(d);
        assert_eq!(pcr, <[u8; 32]>::from(want.finalize()));
    }
}
