//! `secureBoot:` in a profile: the certificate the UKI is signed for. Only the public
//! certificate is named here; the private key is never part of a profile (it comes
//! from `build --signing-key` or `--signer`, see `crate::sign`).

use std::path::PathBuf;

use serde::Deserialize;

use super::{shown, shown_path, Layer, ProfileError, Sourced, S};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecureBoot {
    certificate: Option<S<String>>,
}

/// The profile's Secure Boot settings, after its bases are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecureBoot {
    /// The signer's X.509 certificate (PEM or DER), absolute.
    pub certificate: Sourced<PathBuf>,
}

/// Applies one layer's `secureBoot:`: its certificate replaces the base's.
pub(super) fn apply(
    layer: &Layer,
    raw: &RawSecureBoot,
    out: &mut Option<SecureBoot>,
) -> Result<(), ProfileError> {
    let Some(cert) = &raw.certificate else {
        return Ok(());
    };
    let name = cert.value.trim();
    let abs = layer.local_dir(cert)?.join(name);
    if name.is_empty() || !abs.is_file() {
        return Err(ProfileError::at(
            &layer.at(cert),
            format!(
                "`secureBoot.certificate`: {} is not a file",
                if name.is_empty() {
                    shown(name)
                } else {
                    shown_path(&abs)
                }
            ),
            Some(
                "name the signing certificate (PEM or DER, e.g. ./db.crt), relative to the \
                 profile's folder; the private key is given to `build --signing-key`, never \
                 in the profile"
                    .into(),
            ),
        ));
    }
    *out = Some(SecureBoot {
        certificate: Sourced {
            value: abs,
            origin: layer.at(cert),
        },
    });
    Ok(())
}
