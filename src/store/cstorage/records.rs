//! The JSON records of a containers/storage store, as containers/storage 1.43
//! (podman 4.3) writes them: `overlay-images/images.json` (`images.go`, type
//! `Image`) and `overlay-layers/layers.json` (`layers.go`, type `Layer`). Field
//! order and `omitempty` follow the Go structs, so that the files read like the
//! ones podman writes; readers only need the field names.
//!
//! Also the small encodings the store uses: big-data file names
//! (`store.go` `makeBigDataBaseName`) and Go's `time.Time` JSON form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One entry of `images.json`: written by the store, read back by `inspect` (the
/// fields a pull may leave out default to empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ImageRecord {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(rename = "names-history", skip_serializing_if = "Vec::is_empty")]
    pub names_history: Vec<String>,
    /// The top layer's id.
    pub layer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(rename = "big-data-names")]
    pub big_data_names: Vec<String>,
    #[serde(rename = "big-data-sizes")]
    pub big_data_sizes: BTreeMap<String, u64>,
    #[serde(rename = "big-data-digests")]
    pub big_data_digests: BTreeMap<String, String>,
    pub created: String,
}

/// One entry of `layers.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct LayerRecord {
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub parent: String,
    pub created: String,
    #[serde(rename = "compressed-diff-digest")]
    pub compressed_diff_digest: String,
    #[serde(rename = "compressed-size")]
    pub compressed_size: u64,
    #[serde(rename = "diff-digest")]
    pub diff_digest: String,
    #[serde(rename = "diff-size")]
    pub diff_size: u64,
    /// pkg/archive `Compression`: 0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd.
    #[serde(skip_serializing_if = "is_zero")]
    pub compression: u8,
    #[serde(rename = "uidset", skip_serializing_if = "Vec::is_empty")]
    pub uids: Vec<u32>,
    #[serde(rename = "gidset", skip_serializing_if = "Vec::is_empty")]
    pub gids: Vec<u32>,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// pkg/archive's `Compression` values, as `layers.json` records them.
pub(super) fn compression_code(c: crate::oci::Compression) -> u8 {
    match c {
        crate::oci::Compression::None => 0,
        crate::oci::Compression::Gzip => 2,
        crate::oci::Compression::Zstd => 4,
    }
}

/// `store.go` `makeBigDataBaseName`: a key made only of `[a-z0-9.]` is its own
/// file name; any other is `=` + base64 of the key (so `sha256:…` and
/// `manifest-sha256:…` are base64, `manifest` is not).
pub(super) fn big_data_file_name(key: &str) -> String {
    let plain = key
        .bytes()
        .all(|c| c == b'.' || c.is_ascii_digit() || c.is_ascii_lowercase());
    if plain {
        key.to_string()
    } else {
        format!("={}", super::tarsplit::base64(key.as_bytes()))
    }
}

/// Seconds since the epoch as Go marshals a UTC `time.Time`:
/// `2006-01-02T15:04:05Z`.
pub(crate) fn go_time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// An RFC 3339 timestamp (an image config's `created`) in the form Go's
/// `time.Time.MarshalJSON` gives after parsing it: fraction without trailing
/// zeros, `Z` for a zero offset, the offset kept otherwise. `None` when it is not
/// RFC 3339 (containers/image then records the time of the pull; we record the
/// build's time instead).
pub(super) fn go_time_of_rfc3339(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|_| &s[r])
    };
    let ok_sep = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':';
    if !ok_sep {
        return None;
    }
    let date_time = format!(
        "{}-{}-{}T{}:{}:{}",
        digits(0..4)?,
        digits(5..7)?,
        digits(8..10)?,
        digits(11..13)?,
        digits(14..16)?,
        digits(17..19)?
    );
    let mut rest = &s[19..];
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        // Go keeps nanoseconds: more digits are dropped.
        frac = r[..n.min(9)].trim_end_matches('0');
        rest = &r[n..];
    }
    let zone = match rest {
        "Z" | "z" | "+00:00" | "-00:00" => "Z".to_string(),
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.as_bytes()[3] == b':'
            && z[1..3]
                .bytes()
                .chain(z[4..6].bytes())
                .all(|c| c.is_ascii_digit()) =>
        {
            z.to_string()
        }
        _ => return None,
    };
    Some(if frac.is_empty() {
        format!("{date_time}{zone}")
    } else {
        format!("{date_time}.{frac}{zone}")
    })
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 -> (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_names_are_encoded_like_containers_storage() {
        assert_eq!(big_data_file_name("manifest"), "manifest");
        // Names podman 4.3.1 wrote for these keys.
        assert_eq!(
            big_data_file_name(
                "sha256:6c7de9cf0746f03ab67fe8cdca0b2af61ee493bbeff512d346120e67347bd8ae"
            ),
            "=c2hhMjU2OjZjN2RlOWNmMDc0NmYwM2FiNjdmZThjZGNhMGIyYWY2MWVlNDkzYmJlZmY1MTJkMzQ2MTIwZTY3MzQ3YmQ4YWU="
        );
        assert_eq!(
            big_data_file_name(
                "signature-216a156fdad5af7d5283db2365b0da11c7794162d911a4060cec7b5c80c70276"
            ),
            "=c2lnbmF0dXJlLTIxNmExNTZmZGFkNWFmN2Q1MjgzZGIyMzY1YjBkYTExYzc3OTQxNjJkOTExYTQwNjBjZWM3YjVjODBjNzAyNzY="
        );
    }

    #[test]
    fn times_are_written_like_go() {
        assert_eq!(go_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(go_time(1_704_164_645), "2024-01-02T03:04:05Z");
        assert_eq!(go_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            go_time_of_rfc3339("2024-01-02T03:04:05.120000Z").as_deref(),
            Some("2024-01-02T03:04:05.12Z")
        );
        assert_eq!(
            go_time_of_rfc3339("2024-01-02T03:04:05+02:00").as_deref(),
            Some("2024-01-02T03:04:05+02:00")
        );
        assert_eq!(
            go_time_of_rfc3339("2024-01-02T03:04:05.000Z").as_deref(),
            Some("2024-01-02T03:04:05Z")
        );
        assert_eq!(go_time_of_rfc3339("yesterday"), None);
    }
}
