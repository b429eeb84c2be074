//! The options a kiOS kernel must have (`kernel-config/required.txt`, compiled in),
//! and the check of a configuration against them.
//!
//! Input: a [`KernelConfig`] and the node's [`Arch`]. Output: a [`CheckReport`] that
//! lists each required option the configuration lacks or has with a value kiOS
//! cannot use (`m` where it must be built in), each with the reason it is required.
//! It does not judge anything outside the list: optional features are the
//! fragments' business.

use std::fmt;

use super::config::{is_option_name, KernelConfig, Value};
use super::KernelError;
use crate::profile::Arch;

/// `kernel-config/required.txt`, as built into this binary.
pub const REQUIRED_TXT: &str = include_str!("../../kernel-config/required.txt");

/// One line of `required.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The option, with its `CONFIG_` prefix.
    pub option: String,
    /// The values that satisfy it: `[Yes]`, or `[Yes, Module]` for `y|m`.
    pub accept: Vec<Value>,
    /// Why kiOS needs it (the line's `#` comment).
    pub why: String,
    /// `Some` when the line applies to one architecture only.
    pub arch: Option<Arch>,
    /// 1-based line in `required.txt`.
    pub line: usize,
}

impl Requirement {
    /// Whether `value` (`None`: the option is absent) satisfies the requirement. An
    /// absent option counts as "is not set".
    pub fn accepts(&self, value: Option<&Value>) -> bool {
        self.accept.contains(value.unwrap_or(&Value::No))
    }

    fn applies_to(&self, arch: Arch) -> bool {
        match self.arch {
            None => true,
            Some(only) => only == arch,
        }
    }
}

/// The requirements of `required.txt` that apply to `arch`.
pub fn required(arch: Arch) -> Vec<Requirement> {
    parse_requirements(REQUIRED_TXT)
        // The text is compiled in and parsed by the unit tests, so this cannot fail
        // at run time.
        .expect("kernel-config/required.txt is valid (unit-tested)")
        .into_iter()
        .filter(|r| r.applies_to(arch))
        .collect()
}

/// Parses requirement lines (the `required.txt` format, docs/kernel.md):
/// `[arch] CONFIG_NAME=V1|V2  # why`. Blank lines and lines starting with `#` are
/// skipped; the reason is mandatory, because a finding without one does not tell the
/// user what breaks.
pub fn parse_requirements(text: &str) -> Result<Vec<Requirement>, KernelError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let syntax = |message: String| KernelError::Requirement { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (rule, why) = trimmed
            .split_once('#')
            .map(|(rule, why)| (rule.trim(), why.trim()))
            .ok_or_else(|| syntax("no `# why` after the option".into()))?;
        if why.is_empty() {
            return Err(syntax("the `# why` is empty".into()));
        }
        let (arch, rule) = match rule.strip_prefix('[') {
            Some(rest) => {
                let (tag, rule) = rest
                    .split_once(']')
                    .ok_or_else(|| syntax("`[` without `]`".into()))?;
                let arch = match tag {
                    "x86_64" | "amd64" => Arch::Amd64,
                    "arm64" | "aarch64" => Arch::Arm64,
                    other => {
                        return Err(syntax(format!(
                            "unknown architecture `[{other}]` (use [x86_64] or [arm64])"
                        )))
                    }
                };
                (Some(arch), rule.trim())
            }
            None => (None, rule),
        };
        let (option, values) = rule
            .split_once('=')
            .ok_or_else(|| syntax(format!("`{rule}` is not CONFIG_NAME=VALUE")))?;
        if !is_option_name(option) {
            return Err(syntax(format!("`{option}` is not an option name")));
        }
        let accept = values
            .split('|')
            .map(|v| Value::parse(v.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| syntax(format!("{option}: {m}")))?;
        if out.iter().any(|r: &Requirement| {
            r.option == option && (r.arch.is_none() || arch.is_none() || r.arch == arch)
        }) {
            return Err(syntax(format!("{option} is listed twice")));
        }
        out.push(Requirement {
            option: option.to_string(),
            accept,
            why: why.to_string(),
            arch,
            line,
        });
    }
    Ok(out)
}

/// One required option the configuration does not satisfy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub option: String,
    /// What the configuration has: `None` when it does not mention the option.
    pub found: Option<Value>,
    /// What would satisfy the requirement.
    pub accept: Vec<Value>,
    pub why: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let want = self
            .accept
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        match &self.found {
            None | Some(Value::No) => write!(f, "{} is not set", self.option)?,
            Some(v) => write!(f, "{}={v}", self.option)?,
        }
        write!(f, ", needs {want}: {}", self.why)
    }
}

/// The result of [`check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Required options that are absent or not set.
    pub missing: Vec<Finding>,
    /// Required options set to a value that does not satisfy them (for example `m`
    /// where it must be built in).
    pub wrong: Vec<Finding>,
    /// How many requirements were checked.
    pub checked: usize,
}

impl CheckReport {
    /// Whether every requirement is satisfied.
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.wrong.is_empty()
    }

    /// The finding for `option`, missing or wrong.
    pub fn finding(&self, option: &str) -> Option<&Finding> {
        self.missing
            .iter()
            .chain(&self.wrong)
            .find(|f| f.option == option)
    }
}

/// One line per problem, `missing:` or `wrong:` first, then a summary line.
impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.missing {
            writeln!(f, "missing: {finding}")?;
        }
        for finding in &self.wrong {
            writeln!(f, "wrong: {finding}")?;
        }
        if self.is_ok() {
            write!(f, "all {} required options are set", self.checked)
        } else {
            write!(
                f,
                "{} of {} required options missing, {} wrong (kernel-config/required.txt says why each is needed)",
                self.missing.len(),
                self.checked,
                self.wrong.len()
            )
        }
    }
}

/// Checks `config` against the requirements of `arch`.
pub fn check(config: &KernelConfig, arch: Arch) -> CheckReport {
    check_against(config, &required(arch))
}

/// Checks `config` against `requirements` (all of them, whatever their arch).
pub fn check_against(config: &KernelConfig, requirements: &[Requirement]) -> CheckReport {
    let mut report = CheckReport {
        checked: requirements.len(),
        ..CheckReport::default()
    };
    for r in requirements {
        let found = config.get(&r.option);
        if r.accepts(found) {
            continue;
        }
        let finding = Finding {
            option: r.option.clone(),
            found: found.cloned(),
            accept: r.accept.clone(),
            why: r.why.clone(),
        };
        if found.is_some_and(Value::is_set) {
            report.wrong.push(finding);
        } else {
            report.missing.push(finding);
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_list_parses_and_every_line_has_a_reason() {
        let all = parse_requirements(REQUIRED_TXT).unwrap();
        assert!((50..=90).contains(&all.len()), "{} requirements", all.len());
        for r in &all {
            assert!(r.why.len() > 10, "line {}: reason too short", r.line);
            assert!(!r.accept.is_empty());
        }
        let x86 = required(Arch::Amd64);
        let arm = required(Arch::Arm64);
        assert!(x86.iter().any(|r| r.option == "CONFIG_HYPERV"));
        assert!(!arm.iter().any(|r| r.option == "CONFIG_HYPERV"));
        assert!(arm.iter().any(|r| r.option == "CONFIG_SERIAL_AMBA_PL011"));
        assert!(!x86.iter().any(|r| r.option == "CONFIG_SERIAL_AMBA_PL011"));
        assert!(x86.iter().any(|r| r.option == "CONFIG_EFI_STUB"));
        assert!(arm.iter().any(|r| r.option == "CONFIG_EFI_STUB"));
    }

    #[test]
    fn requirement_lines_parse() {
        let text = "# header\n\nCONFIG_A=y  # why a\n[arm64] CONFIG_B=y|m # why b\n[x86_64] CONFIG_C=n  # must be off\n";
        let r = parse_requirements(text).unwrap();
        assert_eq!(
            r,
            vec![
                Requirement {
                    option: "CONFIG_A".into(),
                    accept: vec![Value::Yes],
                    why: "why a".into(),
                    arch: None,
                    line: 3
                },
                Requirement {
                    option: "CONFIG_B".into(),
                    accept: vec![Value::Yes, Value::Module],
                    why: "why b".into(),
                    arch: Some(Arch::Arm64),
                    line: 4
                },
                Requirement {
                    option: "CONFIG_C".into(),
                    accept: vec![Value::No],
                    why: "must be off".into(),
                    arch: Some(Arch::Amd64),
                    line: 5
                },
            ]
        );
    }

    #[test]
    fn bad_requirement_lines_are_rejected_with_their_line_number() {
        let cases = [
            ("CONFIG_A=y\n", "no `# why`"),
            ("CONFIG_A=y #   \n", "empty"),
            ("[riscv] CONFIG_A=y # x\n", "unknown architecture"),
            ("[arm64 CONFIG_A=y # x\n", "without `]`"),
            ("A=y # x\n", "not an option name"),
            ("CONFIG_A # x\n", "not CONFIG_NAME=VALUE"),
            ("CONFIG_A=y|maybe # x\n", "none of y, m, n"),
            ("CONFIG_A=y # x\n[arm64] CONFIG_A=m # y\n", "listed twice"),
        ];
        for (text, message) in cases {
            match parse_requirements(text) {
                Err(KernelError::Requirement { message: m, .. }) => {
                    assert!(m.contains(message), "{text:?}: {m}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // One option may have a different rule on each architecture.
        parse_requirements("[x86_64] CONFIG_A=y # x\n[arm64] CONFIG_A=m # y\n").unwrap();
    }

    fn reqs() -> Vec<Requirement> {
        parse_requirements(
            "CONFIG_BUILTIN=y  # needed before modules\n\
             CONFIG_EITHER=y|m  # module is fine\n\
             CONFIG_ABSENT=y|m  # not in the config\n\
             CONFIG_OFF=y  # explicitly off\n\
             CONFIG_DISABLED=n  # must be off\n",
        )
        .unwrap()
    }

    #[test]
    fn check_reports_missing_and_wrong_options_with_the_reason() {
        let config = KernelConfig::parse(
            "CONFIG_BUILTIN=m\nCONFIG_EITHER=m\n# CONFIG_OFF is not set\nCONFIG_DISABLED=y\n",
        )
        .unwrap();
        let report = check_against(&config, &reqs());
        assert_eq!(report.checked, 5);
        let missing: Vec<_> = report.missing.iter().map(|f| f.option.as_str()).collect();
        let wrong: Vec<_> = report.wrong.iter().map(|f| f.option.as_str()).collect();
        assert_eq!(missing, ["CONFIG_ABSENT", "CONFIG_OFF"]);
        assert_eq!(wrong, ["CONFIG_BUILTIN", "CONFIG_DISABLED"]);
        assert_eq!(
            report.finding("CONFIG_BUILTIN").unwrap().found,
            Some(Value::Module)
        );
        assert_eq!(report.finding("CONFIG_ABSENT").unwrap().found, None);
        assert!(!report.is_ok());

        let text = report.to_string();
        assert!(
            text.contains("wrong: CONFIG_BUILTIN=m, needs y: needed before modules\n"),
            "{text}"
        );
        assert!(
            text.contains("missing: CONFIG_ABSENT is not set, needs y or m: not in the config\n"),
            "{text}"
        );
        assert!(text.ends_with("2 of 5 required options missing, 2 wrong (kernel-config/required.txt says why each is needed)"), "{text}");
    }

    #[test]
    fn a_config_that_satisfies_everything_reports_ok() {
        let config = KernelConfig::parse(
            "CONFIG_BUILTIN=y\nCONFIG_EITHER=m\nCONFIG_ABSENT=y\nCONFIG_OFF=y\n",
        )
        .unwrap();
        let report = check_against(&config, &reqs());
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.to_string(), "all 5 required options are set");
    }
}
