//! A kernel configuration as Kconfig writes it: the `.config` text, parsed into a map
//! from option name to value, and the merging of fragments.
//!
//! The grammar is the one `scripts/kconfig/confdata.c` reads: `CONFIG_NAME=VALUE`
//! where VALUE is `y`, `m`, `n`, a decimal or `0x` hex number, or a double-quoted
//! string with `\"` and `\\` escapes; `# CONFIG_NAME is not set` for an option that is
//! off; every other `#` line is a comment. This module does not know Kconfig's
//! dependencies: merging fragments is "later lines win", as
//! `scripts/kconfig/merge_config.sh` does before `make olddefconfig` resolves them.

use std::collections::BTreeMap;
use std::fmt;

use super::KernelError;

/// The value of one option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `=y`: built in.
    Yes,
    /// `=m`: built as a module.
    Module,
    /// `=n` or `# CONFIG_X is not set`.
    No,
    /// `="text"` (held unescaped).
    Str(String),
    /// `=123` or `=-1`.
    Int(i64),
    /// `=0x1000000`.
    Hex(u64),
}

impl Value {
    /// Parses the text after `=`.
    pub fn parse(text: &str) -> Result<Value, String> {
        match text {
            "y" => return Ok(Value::Yes),
            "m" => return Ok(Value::Module),
            "n" => return Ok(Value::No),
            _ => {}
        }
        if let Some(quoted) = text.strip_prefix('"') {
            return unquote(quoted).map(Value::Str);
        }
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            return u64::from_str_radix(hex, 16)
                .map(Value::Hex)
                .map_err(|_| format!("`{text}` is not a hex number"));
        }
        text.parse::<i64>().map(Value::Int).map_err(|_| {
            format!("value `{text}` is none of y, m, n, a number or a double-quoted string")
        })
    }

    /// Whether the option is on (`y` or `m`) or has a value.
    pub fn is_set(&self) -> bool {
        *self != Value::No
    }
}

/// `body` is the text after the opening quote; it must end with the closing one.
fn unquote(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => break,
            },
            '"' => {
                let rest = chars.as_str();
                return if rest.is_empty() {
                    Ok(out)
                } else {
                    Err(format!("unexpected `{rest}` after the closing quote"))
                };
            }
            c => out.push(c),
        }
    }
    Err("string value has no closing quote".to_string())
}

/// Writes the value as it appears after `=` in a `.config` (`No` as `n`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::No => f.write_str("n"),
            Value::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
            Value::Int(n) => write!(f, "{n}"),
            Value::Hex(n) => write!(f, "{n:#x}"),
        }
    }
}

/// A parsed kernel configuration: option name (with its `CONFIG_` prefix) -> value.
/// An option that the text does not mention is absent, which Kconfig treats like
/// "is not set".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    options: BTreeMap<String, Value>,
}

impl KernelConfig {
    /// Parses `.config` text. Errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<KernelConfig, KernelError> {
        let mut options = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let syntax = |message: String| KernelError::Syntax {
                line: index + 1,
                message,
            };
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(name) = comment
                    .trim_start()
                    .strip_suffix(" is not set")
                    .filter(|name| is_option_name(name))
                {
                    options.insert(name.to_string(), Value::No);
                }
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| syntax(format!("`{line}` is not CONFIG_NAME=VALUE")))?;
            if !is_option_name(name) {
                return Err(syntax(format!(
                    "`{name}` is not an option name (CONFIG_ followed by letters, digits, _)"
                )));
            }
            let value = Value::parse(value).map_err(|m| syntax(format!("{name}: {m}")))?;
            options.insert(name.to_string(), value);
        }
        Ok(KernelConfig { options })
    }

    /// Parses fragments in order and merges them: an option set by a later fragment
    /// overrides the earlier value. Errors name the fragment (1-based).
    pub fn from_fragments<'a>(
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Result<KernelConfig, KernelError> {
        let mut merged = KernelConfig::default();
        for (index, text) in texts.into_iter().enumerate() {
            let fragment = KernelConfig::parse(text).map_err(|e| KernelError::Fragment {
                index: index + 1,
                source: Box::new(e),
            })?;
            merged.merge(fragment);
        }
        Ok(merged)
    }

    /// Takes every option of `later`, overriding this configuration's values.
    pub fn merge(&mut self, later: KernelConfig) {
        self.options.extend(later.options);
    }

    /// The value of `name` (`CONFIG_` prefix included); `None` when not mentioned.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.options.get(name)
    }

    /// Sets `name` to `value` (for tests and tools that edit a configuration).
    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        self.options.insert(name.into(), value);
    }

    /// All options, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.options.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many options the text mentioned (including "is not set" ones).
    pub fn len(&self) -> usize {
        self.options.len()
    }

    pub fn is_empty(&self) -> bool {
        self.options.is_empty()
    }
}

/// Writes the configuration back as `.config` text, sorted by option name.
impl fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.options {
            match value {
                Value::No => writeln!(f, "# {name} is not set")?,
                v => writeln!(f, "{name}={v}")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn is_option_name(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.0 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14) 12.2.0"
CONFIG_EXT4_FS=m
CONFIG_EFI_STUB=y
# CONFIG_IKCONFIG is not set
CONFIG_NR_CPUS=8192
CONFIG_PHYSICAL_START=0x1000000
CONFIG_LOG_BUF_SHIFT=-1
CONFIG_OLD=n
CONFIG_CMDLINE="a \"quoted\" back\\slash"

# a comment that is not an option
"#;

    #[test]
    fn parses_every_kind_of_value() {
        let c = KernelConfig::parse(SAMPLE).unwrap();
        assert_eq!(c.get("CONFIG_EXT4_FS"), Some(&Value::Module));
        assert_eq!(c.get("CONFIG_EFI_STUB"), Some(&Value::Yes));
        assert_eq!(c.get("CONFIG_IKCONFIG"), Some(&Value::No));
        assert_eq!(c.get("CONFIG_OLD"), Some(&Value::No));
        assert_eq!(c.get("CONFIG_NR_CPUS"), Some(&Value::Int(8192)));
        assert_eq!(c.get("CONFIG_LOG_BUF_SHIFT"), Some(&Value::Int(-1)));
        assert_eq!(
            c.get("CONFIG_PHYSICAL_START"),
            Some(&Value::Hex(0x100_0000))
        );
        assert_eq!(
            c.get("CONFIG_CC_VERSION_TEXT"),
            Some(&Value::Str("gcc-12 (Debian 12.2.0-14) 12.2.0".into()))
        );
        assert_eq!(
            c.get("CONFIG_CMDLINE"),
            Some(&Value::Str(r#"a "quoted" back\slash"#.into()))
        );
        assert_eq!(c.get("CONFIG_ABSENT"), None);
        assert_eq!(c.len(), 9);
    }

    #[test]
    fn display_writes_text_that_parses_to_the_same_config() {
        let c = KernelConfig::parse(SAMPLE).unwrap();
        let text = c.to_string();
        assert!(text.contains("# CONFIG_IKCONFIG is not set\n"));
        assert!(text.contains("CONFIG_PHYSICAL_START=0x1000000\n"));
        assert!(text.contains(r#"CONFIG_CMDLINE="a \"quoted\" back\\slash""#));
        assert_eq!(KernelConfig::parse(&text).unwrap(), c);
    }

    #[test]
    fn bad_lines_are_rejected_with_their_line_number() {
        let cases = [
            ("CONFIG_A=y\nFOO=y\n", 2, "not an option name"),
            ("CONFIG_A=y\n\nCONFIG_B\n", 3, "not CONFIG_NAME=VALUE"),
            ("CONFIG_A=yes\n", 1, "none of y, m, n"),
            ("CONFIG_A=\"open\n", 1, "no closing quote"),
            ("CONFIG_A=\"a\"b\n", 1, "after the closing quote"),
            ("CONFIG_A=0xZZ\n", 1, "not a hex number"),
            ("CONFIG_=y\n", 1, "not an option name"),
        ];
        for (text, line, message) in cases {
            match KernelConfig::parse(text) {
                Err(KernelError::Syntax {
                    line: l,
                    message: m,
                }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(m.contains(message), "{text:?}: {m}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn later_fragments_override_earlier_ones() {
        let c = KernelConfig::from_fragments([
            "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n",
            "CONFIG_B=y\nCONFIG_C=m\n",
            "# CONFIG_A is not set\nCONFIG_D=\"x\"\n",
        ])
        .unwrap();
        assert_eq!(c.get("CONFIG_A"), Some(&Value::No));
        assert_eq!(c.get("CONFIG_B"), Some(&Value::Yes));
        assert_eq!(c.get("CONFIG_C"), Some(&Value::Module));
        assert_eq!(c.get("CONFIG_D"), Some(&Value::Str("x".into())));
    }

    #[test]
    fn a_bad_fragment_is_named() {
        let err = KernelConfig::from_fragments(["CONFIG_A=y\n", "CONFIG_B=maybe\n"]).unwrap_err();
        assert!(
            matches!(err, KernelError::Fragment { index: 2, .. }),
            "{err:?}"
        );
    }
}
