//! Reading and validating the files under `/etc` that drive the boot:
//! `/etc/kios/modules` (which kernel modules to load, in order) and `/etc/hostname`.
//!
//! Input is the raw bytes of a file; output is typed values ([`ModulePath`],
//! [`Hostname`]) plus the problems found, each with enough context to be logged.
//! This module reads nothing itself and never fails the boot: a bad line is
//! reported and skipped. The formats are documented in `docs/init.md`.

use std::fmt;

/// Where the builder writes the module list.
pub const MODULES_FILE: &str = kios_contract::file::MODULES;
/// The node's hostname, one line.
pub const HOSTNAME_FILE: &str = kios_contract::file::HOSTNAME;

/// An absolute path to a kernel module file (`.ko`) inside the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModulePath(String);

impl ModulePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with one line of the module list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleLineError {
    NotUtf8,
    NotAbsolute(String),
}

impl fmt::Display for ModuleLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleLineError::NotUtf8 => f.write_str("not valid UTF-8"),
            ModuleLineError::NotAbsolute(path) => {
                write!(f, "{path:?} is not an absolute path")
            }
        }
    }
}

/// A rejected line, numbered from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineProblem {
    pub line: usize,
    pub error: ModuleLineError,
}

/// The parsed module list, in file order (which is load order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleList {
    pub modules: Vec<ModulePath>,
    pub problems: Vec<LineProblem>,
}

/// Parses `/etc/kios/modules`: one absolute module path per line, already in
/// dependency order. Lines are trimmed (so CRLF and trailing spaces are fine); blank
/// lines and lines starting with `#` are ignored. There are no inline comments.
pub fn parse_modules(contents: &[u8]) -> ModuleList {
    let mut list = ModuleList::default();
    for (index, raw) in contents.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            list.problems.push(LineProblem {
                line,
                error: ModuleLineError::NotUtf8,
            });
            continue;
        };
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        // NUL cannot be part of a path; reject it here rather than at open().
        if !text.starts_with('/') || text.contains('\0') {
            list.problems.push(LineProblem {
                line,
                error: ModuleLineError::NotAbsolute(text.to_owned()),
            });
            continue;
        }
        list.modules.push(ModulePath(text.to_owned()));
    }
    list
}

/// The longest hostname Linux accepts (`HOST_NAME_MAX`).
pub const HOSTNAME_MAX: usize = 64;

/// A valid hostname: 1 to 64 characters, dot-separated RFC 1123 labels (ASCII
/// letters, digits, `-`; a label 1 to 63 characters, not starting or ending with `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostnameError {
    NotUtf8,
    Empty,
    TooLong { len: usize },
    BadCharacter { name: String, character: char },
    BadLabel { name: String },
}

impl fmt::Display for HostnameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostnameError::NotUtf8 => f.write_str("not valid UTF-8"),
            HostnameError::Empty => f.write_str("empty"),
            HostnameError::TooLong { len } => {
                write!(f, "{len} characters, more than {HOSTNAME_MAX}")
            }
            HostnameError::BadCharacter { name, character } => write!(
                f,
                "{name:?} has {character:?}; only letters, digits, '-' and '.' are allowed"
            ),
            HostnameError::BadLabel { name } => write!(
                f,
                "{name:?} has an empty label, one over 63 characters, or one that starts or ends with '-'"
            ),
        }
    }
}

/// Parses `/etc/hostname`: the whole file, trimmed, must be one valid hostname.
pub fn parse_hostname(contents: &[u8]) -> Result<Hostname, HostnameError> {
    let text = std::str::from_utf8(contents).map_err(|_| HostnameError::NotUtf8)?;
    let name = text.trim();
    if name.is_empty() {
        return Err(HostnameError::Empty);
    }
    if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(HostnameError::BadCharacter {
            name: name.to_owned(),
            character,
        });
    }
    // All ASCII from here, so bytes are characters.
    if name.len() > HOSTNAME_MAX {
        return Err(HostnameError::TooLong { len: name.len() });
    }
    let bad_label = |label: &str| {
        label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-')
    };
    if name.split('.').any(bad_label) {
        return Err(HostnameError::BadLabel {
            name: name.to_owned(),
        });
    }
    Ok(Hostname(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &ModuleList) -> Vec<&str> {
        list.modules.iter().map(ModulePath::as_str).collect()
    }

    #[test]
    fn module_list_keeps_file_order_and_skips_comments_and_blanks() {
        let list = parse_modules(
            b"# virtio first\n/lib/a.ko\n\n   \n  # indented comment\n/lib/b.ko\n/lib/c.ko",
        );
        assert_eq!(paths(&list), ["/lib/a.ko", "/lib/b.ko", "/lib/c.ko"]);
        assert!(list.problems.is_empty());
    }

    #[test]
    fn module_lines_are_trimmed_of_spaces_tabs_and_crlf() {
        let list = parse_modules(b"  /lib/a.ko  \r\n\t/lib/b.ko\t\r\n\r\n");
        assert_eq!(paths(&list), ["/lib/a.ko", "/lib/b.ko"]);
        assert!(list.problems.is_empty());
    }

    #[test]
    fn relative_and_non_utf8_module_lines_are_reported_with_their_line_number() {
        let list = parse_modules(b"/lib/a.ko\nvirtio_blk.ko\n/lib/\xff.ko\n/lib/d.ko\n");
        assert_eq!(paths(&list), ["/lib/a.ko", "/lib/d.ko"]);
        assert_eq!(
            list.problems,
            [
                LineProblem {
                    line: 2,
                    error: ModuleLineError::NotAbsolute("virtio_blk.ko".into())
                },
                LineProblem {
                    line: 3,
                    error: ModuleLineError::NotUtf8
                },
            ]
        );
    }

    #[test]
    fn empty_module_list_is_not_an_error() {
        assert_eq!(parse_modules(b""), ModuleList::default());
        assert_eq!(parse_modules(b"\n# none\n"), ModuleList::default());
    }

    #[test]
    fn hostname_trailing_newline_and_spaces_are_trimmed() {
        assert_eq!(
            parse_hostname(b"node-1.example\n").map(|h| h.to_string()),
            Ok("node-1.example".to_owned())
        );
        assert_eq!(
            parse_hostname(b"  worker7 \r\n").map(|h| h.to_string()),
            Ok("worker7".to_owned())
        );
    }

    #[test]
    fn invalid_hostnames_are_rejected_with_a_reason() {
        assert_eq!(parse_hostname(b"\n"), Err(HostnameError::Empty));
        assert!(matches!(
            parse_hostname(b"under_score"),
            Err(HostnameError::BadCharacter { character: '_', .. })
        ));
        assert!(matches!(
            parse_hostname(b"two\nlines"),
            Err(HostnameError::BadCharacter {
                character: '\n',
                ..
            })
        ));
        assert!(matches!(
            parse_hostname(b"-lead"),
            Err(HostnameError::BadLabel { .. })
        ));
        assert!(matches!(
            parse_hostname(b"a..b"),
            Err(HostnameError::BadLabel { .. })
        ));
        assert!(matches!(
            parse_hostname(b"trailing.dot."),
            Err(HostnameError::BadLabel { .. })
        ));
        assert_eq!(parse_hostname(b"\xff"), Err(HostnameError::NotUtf8));
    }

    #[test]
    fn hostname_length_limit_is_64() {
        let ok = format!("{}.{}", "a".repeat(32), "b".repeat(31));
        assert!(parse_hostname(ok.as_bytes()).is_ok());
        let long_label = "a".repeat(64);
        assert!(matches!(
            parse_hostname(long_label.as_bytes()),
            Err(HostnameError::BadLabel { .. })
        ));
        let long = format!("{}.{}", "a".repeat(32), "b".repeat(32));
        assert_eq!(
            parse_hostname(long.as_bytes()),
            Err(HostnameError::TooLong { len: 65 })
        );
    }
}
