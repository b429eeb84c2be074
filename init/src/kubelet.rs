//! The command lines of the two services: CRI-O's are fixed (plus the store), the
//! kubelet's are derived from which files exist under `/etc/kubernetes`.
//!
//! Input: the files below, read through [`System`]. Output: argument vectors and
//! the problems found in the files (to be logged; a bad value is left out, never
//! passed on). Whether and when a service starts is `supervise.rs`'s business.
//!
//! Kubelet flags (DESIGN.md, "At boot", step 6):
//!
//! | flag | when |
//! |---|---|
//! | `--config /etc/kubernetes/config.yaml` | a kubeconfig is expected, or there is no standalone configuration |
//! | `--config /etc/kubernetes/config-standalone.yaml` | standalone (no kubeconfig) and the file exists |
//! | `--kubeconfig /etc/kubernetes/kubelet.conf` | `kubelet.conf` or `bootstrap-kubelet.conf` exists |
//! | `--bootstrap-kubeconfig /etc/kubernetes/bootstrap-kubelet.conf` | it exists |
//! | `--image-credential-provider-config ... --image-credential-provider-bin-dir ...` | `credential-provider.yaml` exists |
//! | `--node-labels k=v,...` | valid lines of `node-labels` |
//! | `--node-ip IP[,IP]` | `node-ip` holds valid addresses |
//! | `--hostname-override NAME` | `/etc/hostname` holds a valid name |

use std::net::IpAddr;

use crate::config::{self, HOSTNAME_FILE};
use crate::system::System;

pub const KUBELET: &str = kios_contract::program::KUBELET;
pub const CRIO: &str = kios_contract::program::CRIO;
pub const CONFIG: &str = kios_contract::file::KUBELET_CONFIG;
/// The kubelet configuration for standalone mode (webhook authentication off), which
/// kios-build writes beside `config.yaml` (docs/boot-flow.md).
pub const CONFIG_STANDALONE: &str = kios_contract::file::KUBELET_CONFIG_STANDALONE;
pub const KUBECONFIG: &str = kios_contract::file::KUBECONFIG;
pub const BOOTSTRAP_KUBECONFIG: &str = kios_contract::file::BOOTSTRAP_KUBECONFIG;
pub const CREDENTIAL_CONFIG: &str = kios_contract::file::CREDENTIAL_CONFIG;
pub const CREDENTIAL_BIN_DIR: &str = kios_contract::file::CREDENTIAL_BIN_DIR;
pub const NODE_LABELS: &str = kios_contract::file::NODE_LABELS;
pub const NODE_IP: &str = kios_contract::file::NODE_IP;
pub const CRIO_SOCKET: &str = kios_contract::program::CRIO_SOCKET;

/// CRI-O's flags. The store, when mounted, is an additional read-only image store:
/// containers/storage's overlay driver option `imagestore` (the flag form of
/// storage.conf's `additionalimagestores`).
pub fn crio_args(store: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = [
        "--listen",
        CRIO_SOCKET,
        "--root",
        "/var/lib/containers/storage",
        "--runroot",
        "/run/containers/storage",
        "--storage-driver",
        "overlay",
        "--cgroup-manager",
        "cgroupfs",
        "--conmon-cgroup",
        "pod",
        "--default-runtime",
        "crun",
    ]
    .map(String::from)
    .to_vec();
    if let Some(store) = store {
        a.push("--storage-opt".into());
        a.push(format!("overlay.imagestore={store}"));
    }
    a
}

/// The kubelet's inputs: which files exist and the contents of the value files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    pub kubeconfig: bool,
    pub bootstrap: bool,
    pub credential_provider: bool,
    pub standalone_config: bool,
    pub node_labels: Option<Vec<u8>>,
    pub node_ip: Option<Vec<u8>>,
    pub hostname: Option<Vec<u8>>,
}

impl Inputs {
    pub fn read(sys: &mut dyn System) -> Self {
        Self {
            kubeconfig: sys.exists(KUBECONFIG),
            bootstrap: sys.exists(BOOTSTRAP_KUBECONFIG),
            credential_provider: sys.exists(CREDENTIAL_CONFIG),
            standalone_config: sys.exists(CONFIG_STANDALONE),
            node_labels: sys.read_file(NODE_LABELS).ok(),
            node_ip: sys.read_file(NODE_IP).ok(),
            hostname: sys.read_file(HOSTNAME_FILE).ok(),
        }
    }
}

/// The kubelet's flags and the problems met on the way.
pub fn kubelet_args(inputs: &Inputs) -> (Vec<String>, Vec<String>) {
    let standalone = !(inputs.kubeconfig || inputs.bootstrap);
    let config = if standalone && inputs.standalone_config {
        CONFIG_STANDALONE
    } else {
        CONFIG
    };
    let mut a: Vec<String> = vec!["--config".into(), config.into()];
    let mut problems = Vec::new();
    if inputs.kubeconfig || inputs.bootstrap {
        // The kubelet requires --kubeconfig with --bootstrap-kubeconfig: it is where
        // the bootstrap writes the client configuration.
        a.extend(["--kubeconfig".into(), KUBECONFIG.into()]);
    }
    if inputs.bootstrap {
        a.extend(["--bootstrap-kubeconfig".into(), BOOTSTRAP_KUBECONFIG.into()]);
    }
    if inputs.credential_provider {
        a.extend([
            "--image-credential-provider-config".into(),
            CREDENTIAL_CONFIG.into(),
            "--image-credential-provider-bin-dir".into(),
            CREDENTIAL_BIN_DIR.into(),
        ]);
    }
    if let Some(raw) = &inputs.node_labels {
        let (labels, bad) = parse_labels(raw);
        problems.extend(bad);
        if !labels.is_empty() {
            a.extend(["--node-labels".into(), labels.join(",")]);
        }
    }
    if let Some(raw) = &inputs.node_ip {
        match parse_node_ip(raw) {
            Ok(Some(ip)) => a.extend(["--node-ip".into(), ip]),
            Ok(None) => {}
            Err(e) => problems.push(format!("{NODE_IP}: {e}; --node-ip not set")),
        }
    }
    if let Some(raw) = &inputs.hostname {
        match config::parse_hostname(raw) {
            Ok(h) => a.extend(["--hostname-override".into(), h.to_string()]),
            Err(e) => problems.push(format!("{HOSTNAME_FILE}: {e}; --hostname-override not set")),
        }
    }
    (a, problems)
}

/// A line longer than this cannot be a valid label (253 + 1 + 63 + 1 + 63).
const LABEL_LINE_MAX: usize = 381;

/// `node-labels`: one `key=value` per line; blank lines and `#` comments skipped.
/// Returns the valid labels and one problem per bad line.
pub fn parse_labels(raw: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        let Ok(line) = std::str::from_utf8(line) else {
            bad.push(format!("{NODE_LABELS} line {n}: not valid UTF-8; skipped"));
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > LABEL_LINE_MAX {
            bad.push(format!(
                "{NODE_LABELS} line {n}: {} characters, longer than any valid label; skipped",
                line.len()
            ));
            continue;
        }
        match check_label(line) {
            Ok(()) => ok.push(line.to_owned()),
            Err(e) => bad.push(format!("{NODE_LABELS} line {n}: {line:?}: {e}; skipped")),
        }
    }
    (ok, bad)
}

/// Kubernetes label rules: key `[prefix/]name`, prefix a DNS subdomain (at most 253),
/// name at most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric;
/// value empty or like a name.
fn check_label(line: &str) -> Result<(), String> {
    let (key, value) = line
        .split_once('=')
        .ok_or_else(|| "not key=value".to_owned())?;
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err(format!("key prefix {p:?} is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !name_ok(name) {
        return Err(format!("key name {name:?} is not a valid label name (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"));
    }
    if !value.is_empty() && !name_ok(value) {
        return Err(format!("value {value:?} is not a valid label value"));
    }
    Ok(())
}

fn name_ok(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && edge(s.chars().next())
        && edge(s.chars().last())
}

/// `node-ip`: trimmed; empty means none; one address or two (dual stack), comma
/// separated.
pub fn parse_node_ip(raw: &[u8]) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "not valid UTF-8".to_owned())?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() > 2 {
        return Err(format!("{text:?} has more than two addresses"));
    }
    for p in &parts {
        p.parse::<IpAddr>()
            .map_err(|_| format!("{p:?} is not an IP address"))?;
    }
    Ok(Some(parts.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(i: &Inputs) -> Vec<String> {
        kubelet_args(i).0
    }

    #[test]
    fn standalone_has_only_the_config() {
        assert_eq!(args(&Inputs::default()), ["--config", CONFIG]);
    }

    #[test]
    fn standalone_takes_the_standalone_config_when_there_is_one() {
        let i = Inputs {
            standalone_config: true,
            ..Default::default()
        };
        assert_eq!(args(&i), ["--config", CONFIG_STANDALONE]);
        let joined = Inputs {
            standalone_config: true,
            kubeconfig: true,
            ..Default::default()
        };
        assert_eq!(args(&joined)[..2], ["--config", CONFIG]);
    }

    #[test]
    fn kubeconfig_alone() {
        let i = Inputs {
            kubeconfig: true,
            ..Default::default()
        };
        assert_eq!(args(&i), ["--config", CONFIG, "--kubeconfig", KUBECONFIG]);
    }

    #[test]
    fn bootstrap_brings_the_kubeconfig_path_too() {
        let i = Inputs {
            bootstrap: true,
            ..Default::default()
        };
        assert_eq!(
            args(&i),
            [
                "--config",
                CONFIG,
                "--kubeconfig",
                KUBECONFIG,
                "--bootstrap-kubeconfig",
                BOOTSTRAP_KUBECONFIG
            ]
        );
        let both = Inputs {
            bootstrap: true,
            kubeconfig: true,
            ..Default::default()
        };
        assert_eq!(args(&both), args(&i));
    }

    #[test]
    fn credential_provider_flags_come_as_a_pair() {
        let i = Inputs {
            credential_provider: true,
            ..Default::default()
        };
        assert_eq!(
            args(&i),
            [
                "--config",
                CONFIG,
                "--image-credential-provider-config",
                CREDENTIAL_CONFIG,
                "--image-credential-provider-bin-dir",
                CREDENTIAL_BIN_DIR
            ]
        );
    }

    #[test]
    fn every_file_at_once_in_a_fixed_order() {
        let i = Inputs {
            kubeconfig: true,
            bootstrap: true,
            credential_provider: true,
            standalone_config: true,
            node_labels: Some(b"a=b\nexample.com/role=worker\n".to_vec()),
            node_ip: Some(b"10.0.0.5\n".to_vec()),
            hostname: Some(b"node-1\n".to_vec()),
        };
        let (a, problems) = kubelet_args(&i);
        assert!(problems.is_empty());
        assert_eq!(
            a,
            [
                "--config",
                CONFIG,
                "--kubeconfig",
                KUBECONFIG,
                "--bootstrap-kubeconfig",
                BOOTSTRAP_KUBECONFIG,
                "--image-credential-provider-config",
                CREDENTIAL_CONFIG,
                "--image-credential-provider-bin-dir",
                CREDENTIAL_BIN_DIR,
                "--node-labels",
                "a=b,example.com/role=worker",
                "--node-ip",
                "10.0.0.5",
                "--hostname-override",
                "node-1",
            ]
        );
    }

    #[test]
    fn hostname_with_trailing_newline_is_trimmed() {
        let i = Inputs {
            hostname: Some(b"worker-7\n".to_vec()),
            ..Default::default()
        };
        assert_eq!(args(&i)[2..], ["--hostname-override", "worker-7"]);
    }

    #[test]
    fn empty_node_ip_is_omitted_without_a_problem() {
        for raw in [&b""[..], b"\n", b"  \r\n"] {
            let i = Inputs {
                node_ip: Some(raw.to_vec()),
                ..Default::default()
            };
            let (a, p) = kubelet_args(&i);
            assert_eq!(a, ["--config", CONFIG]);
            assert!(p.is_empty());
        }
    }

    #[test]
    fn invalid_node_ip_is_omitted_and_reported() {
        let i = Inputs {
            node_ip: Some(b"10.0.0.300\n".to_vec()),
            ..Default::default()
        };
        let (a, p) = kubelet_args(&i);
        assert_eq!(a, ["--config", CONFIG]);
        assert_eq!(
            p,
            ["/etc/kubernetes/node-ip: \"10.0.0.300\" is not an IP address; --node-ip not set"]
        );
        assert_eq!(
            parse_node_ip(b" 10.0.0.1 , fd00::1\n"),
            Ok(Some("10.0.0.1,fd00::1".into()))
        );
    }

    #[test]
    fn bad_label_lines_are_skipped_and_reported() {
        let long = format!("k={}", "v".repeat(400));
        let raw = format!(
            "# comment\n good=yes \nno-equals\nBad_Prefix/x=1\nk={}\nkubernetes.io/role=\n{long}\n-lead=x\n",
            "v".repeat(64)
        );
        let (ok, bad) = parse_labels(raw.as_bytes());
        assert_eq!(ok, ["good=yes", "kubernetes.io/role="]);
        assert_eq!(bad.len(), 5, "{bad:?}");
        assert!(
            bad[0].starts_with("/etc/kubernetes/node-labels line 3: \"no-equals\": not key=value")
        );
        assert!(bad[3].contains("line 7: 402 characters, longer than any valid label"));
    }

    #[test]
    fn crio_gets_the_store_as_an_additional_image_store() {
        let a = crio_args(Some("/var/lib/kios/store"));
        assert!(a
            .windows(2)
            .any(|w| w == ["--storage-opt", "overlay.imagestore=/var/lib/kios/store"]));
        assert!(!crio_args(None).iter().any(|x| x == "--storage-opt"));
        assert!(crio_args(None)
            .windows(2)
            .any(|w| w == ["--listen", CRIO_SOCKET]));
    }
}
