//! Reading what depmod leaves in `lib/modules/<version>/`: the text files
//! `modules.dep`, `modules.builtin`, `modules.builtin.modinfo`, `modules.alias` and
//! `modules.softdep` (formats in depmod(8) and modules.dep(5)), and matching names
//! the way kmod does (`-` is `_`, alias patterns are fnmatch(3) globs).
//!
//! Pure functions over text; [`super::modules`] reads the files and walks the
//! dependencies. The binary `.bin` indexes are not read: the text files say the
//! same and are simpler to check.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::tree::TreePath;

/// One line of modules.dep.
#[derive(Debug, Clone)]
pub(super) struct Module {
    /// As written in modules.dep, relative to the version directory.
    pub(super) path: String,
    pub(super) deps: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub(super) struct SoftDeps {
    pub(super) pre: Vec<String>,
    pub(super) post: Vec<String>,
}

/// A module's name from its file: `kernel/fs/fat/vfat.ko.zst` -> `vfat`, with `-`
/// as `_` (the kernel's KBUILD_MODNAME does the same).
pub(super) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// kmod's `alias_normalize`: `-` is `_`, except inside `[...]` of a pattern.
pub(super) fn normalize(name: &str) -> String {
    let mut in_class = false;
    name.chars()
        .map(|c| match c {
            '[' => {
                in_class = true;
                c
            }
            ']' => {
                in_class = false;
                c
            }
            '-' if !in_class => '_',
            c => c,
        })
        .collect()
}

/// A line of modules.dep that cannot be read (1-based); the caller names the file.
#[derive(Debug)]
pub(super) struct BadLine {
    pub(super) line: usize,
    pub(super) why: String,
}

pub(super) fn parse_modules_dep(
    text: &str,
    version: &str,
) -> Result<BTreeMap<String, Module>, BadLine> {
    let mut modules: BTreeMap<String, Module> = BTreeMap::new();
    let absolute_prefix = format!("/lib/modules/{version}/");
    for (i, line) in text.lines().enumerate() {
        let bad = |why: String| BadLine { line: i + 1, why };
        // depmod writes paths relative to the version directory; old ones wrote
        // absolute paths, which only make sense inside the kernel input.
        let rel = |p: &str| -> Result<String, BadLine> {
            let p = match p.strip_prefix('/') {
                Some(_) => p
                    .strip_prefix(&absolute_prefix)
                    .ok_or_else(|| bad(format!("{p:?} is outside {absolute_prefix}")))?,
                None => p,
            };
            let checked = TreePath::parse(p).map_err(|e| bad(e.to_string()))?;
            if !checked.file_name().contains(".ko") {
                return Err(bad(format!("{p:?} is not a module file (.ko)")));
            }
            Ok(checked.as_str().to_string())
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, deps) = line
            .split_once(':')
            .ok_or_else(|| bad("expected `path: dependencies`".into()))?;
        let path = rel(path.trim())?;
        let mut dep_names = Vec::new();
        for dep in deps.split_whitespace() {
            let dep = rel(dep)?;
            let name = module_name(&dep);
            // A dependency that has no line of its own is still a module file.
            modules.entry(name.clone()).or_insert(Module {
                path: dep,
                deps: Vec::new(),
            });
            dep_names.push(name);
        }
        // modprobe uses the first line for a name; a later duplicate is ignored.
        let entry = modules.entry(module_name(&path)).or_insert(Module {
            path: path.clone(),
            deps: Vec::new(),
        });
        if entry.path == path && entry.deps.is_empty() {
            entry.deps = dep_names;
        }
    }
    Ok(modules)
}

pub(super) fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(module_name)
        .collect()
}

pub(super) fn parse_aliases(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("alias"), Some(pattern), Some(module)) => {
                    Some((normalize(pattern), normalize(module)))
                }
                _ => None,
            }
        })
        .collect()
}

/// modules.builtin.modinfo: NUL-separated `module.key=value` records.
pub(super) fn parse_builtin_aliases(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|rec| {
            let rec = std::str::from_utf8(rec).ok()?;
            let (module, rest) = rec.split_once('.')?;
            let alias = rest.strip_prefix("alias=")?;
            Some((normalize(alias), normalize(module)))
        })
        .collect()
}

pub(super) fn parse_softdeps(text: &str) -> HashMap<String, SoftDeps> {
    let mut out: HashMap<String, SoftDeps> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        let deps = out.entry(normalize(module)).or_default();
        // Like kmod: names before any `pre:`/`post:` are ignored.
        let mut list: Option<&mut Vec<String>> = None;
        for w in words {
            match w {
                "pre:" => list = Some(&mut deps.pre),
                "post:" => list = Some(&mut deps.post),
                name => {
                    if let Some(l) = list.as_deref_mut() {
                        l.push(name.to_string());
                    }
                }
            }
        }
    }
    out
}

/// fnmatch(3) without flags, as kmod matches alias patterns: `*`, `?`, `[...]`.
pub(super) fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            let step = match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => Some(p + 1),
                b'[' => match class_match(pattern, p, s[i]) {
                    Some((true, next)) => Some(next),
                    Some((false, _)) => None,
                    None => (s[i] == b'[').then_some(p + 1),
                },
                c => (c == s[i]).then_some(p + 1),
            };
            if let Some(next) = step {
                p = next;
                i += 1;
                continue;
            }
        }
        match star {
            Some((sp, si)) => {
                star = Some((sp, si + 1));
                p = sp + 1;
                i = si + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`; returns
/// whether it matched and the index after `]`, or `None` if the class is unclosed.
fn class_match(pattern: &[u8], open: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = open + 1;
    let negate = matches!(pattern.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(j)?;
        if lo == b']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if pattern.get(j + 1) == Some(&b'-') && pattern.get(j + 2).is_some_and(|h| *h != b']') {
            let hi = pattern[j + 2];
            matched |= lo <= c && c <= hi;
            j += 3;
        } else {
            matched |= lo == c;
            j += 1;
        }
    }
}

/// Levenshtein distance, for "did you mean".
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_patterns_match_like_fnmatch() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m(
            "pci:v00001AF4d*sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001001sv1sd2bc01sc00i00"
        ));
        assert!(!m("pci:v00001AF4d*", "pci:v00001AF5d1"));
        assert!(m("a?c", "abc") && !m("a?c", "ac"));
        assert!(m("x[0-9]y", "x5y") && !m("x[!0-9]y", "x5y") && m("x[]]", "x]"));
        assert!(m("*", "") && m("a*", "a") && !m("a*b", "ba"));
        assert_eq!(normalize("crc32c-intel"), "crc32c_intel");
        assert_eq!(normalize("usb:v[A-F]-x"), "usb:v[A-F]_x");
    }
}
