//! Typed quantities shared by the pipeline: [`ByteSize`].

use std::fmt;
use std::str::FromStr;

/// A size in bytes, parsed from `512MiB`, `2GiB`, `1G` (powers of 1024), or a bare
/// number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

pub const MIB: u64 = 1 << 20;

impl ByteSize {
    pub const fn new(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a size"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "MB" | "GB" | "TB" => {
                return Err(format!(
                    "`{s}`: decimal units are ambiguous for disks; use KiB, MiB, GiB or TiB"
                ))
            }
            other => return Err(format!("`{s}`: unknown unit `{other}`")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if b >= m && b % m == 0 {
                return write!(f, "{}{}", b / m, unit);
            }
        }
        write!(f, "{b}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("2GiB".parse::<ByteSize>().unwrap().bytes(), 2 << 30);
        assert_eq!("512M".parse::<ByteSize>().unwrap().bytes(), 512 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().bytes(), 4096);
        assert!("2GB".parse::<ByteSize>().is_err());
        assert!("lots".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize::new(3 << 30).to_string(), "3GiB");
    }
}
