//! The rules every static pod must follow before it is written, each reported at the
//! profile line that caused it:
//!
//! - `privileged: true` or the SYS_ADMIN capability: an error, or a warning when the
//!   profile allows it for that pod by name (`allow.privileged`, `allow.sysAdmin`);
//! - `hostPID` / `hostIPC`: an error (never needed by a system daemon);
//! - two pods with the same name;
//! - an image the resolver does not know (not pre-seeded);
//! - a host path outside [`DEFAULT_HOST_PATHS`] and `allow.hostPaths`;
//! - a capability name Linux does not have.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use super::caps;
use super::generate::{Unit, UnitSource};
use super::spec::{NodeSpec, DEFAULT_HOST_PATHS};
use super::ImageResolver;
use crate::profile::Origin;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub origin: Origin,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {sev}: {}", self.origin, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, origin: &Origin, message: String, hint: impl Into<Option<String>>) {
        self.0.push(Finding {
            severity: Severity::Error,
            origin: origin.clone(),
            message,
            hint: hint.into(),
        });
    }

    fn warning(&mut self, origin: &Origin, message: String) {
        self.0.push(Finding {
            severity: Severity::Warning,
            origin: origin.clone(),
            message,
            hint: None,
        });
    }
}

/// What a pod asks for, each with the place the profile asked for it.
struct Asks {
    privileged: Vec<Origin>,
    capabilities: Vec<(String, Origin)>,
    host_paths: Vec<(String, Origin)>,
    images: Vec<(String, Origin)>,
    host_pid_ipc: bool,
}

fn asks(spec: &NodeSpec, u: &Unit) -> Asks {
    match &u.source {
        UnitSource::Daemon(i) => {
            let d = &spec.daemons[*i];
            let image = d
                .image
                .as_ref()
                .map(|i| (i.value.to_string(), i.origin.clone()));
            Asks {
                privileged: d
                    .privileged
                    .iter()
                    .filter(|p| p.value)
                    .map(|p| p.origin.clone())
                    .collect(),
                capabilities: d
                    .capabilities
                    .iter()
                    .map(|c| (c.value.clone(), c.origin.clone()))
                    .collect(),
                host_paths: d
                    .host_paths
                    .iter()
                    .map(|h| (h.path.value.clone(), h.path.origin.clone()))
                    .chain(
                        d.devices
                            .iter()
                            .map(|x| (x.value.clone(), x.origin.clone())),
                    )
                    .collect(),
                images: image.into_iter().collect(),
                host_pid_ipc: false,
            }
        }
        UnitSource::File(_) => from_pod(&u.pod, &u.origin),
    }
}

fn from_pod(pod: &Pod, at: &Origin) -> Asks {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut a = Asks {
        privileged: Vec::new(),
        capabilities: Vec::new(),
        host_paths: Vec::new(),
        images: Vec::new(),
        host_pid_ipc: spec.host_pid == Some(true) || spec.host_ipc == Some(true),
    };
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in all {
        if let Some(i) = &c.image {
            a.images.push((i.clone(), at.clone()));
        }
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            a.privileged.push(at.clone());
        }
        for cap in sc.capabilities.and_then(|c| c.add).unwrap_or_default() {
            a.capabilities.push((cap, at.clone()));
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(h) = &v.host_path {
            a.host_paths.push((h.path.clone(), at.clone()));
        }
    }
    a
}

fn path_allowed(path: &str, allowed: &[String]) -> bool {
    let p = path.trim_end_matches('/');
    allowed.iter().any(|a| {
        let a = a.trim_end_matches('/');
        p == a || p.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Checks every pod; errors and warnings, in profile order.
pub(crate) fn lint(spec: &NodeSpec, units: &[Unit], resolver: &dyn ImageResolver) -> Vec<Finding> {
    let mut f = Findings(Vec::new());
    let allowed_paths: Vec<String> = DEFAULT_HOST_PATHS
        .iter()
        .map(|s| s.to_string())
        .chain(spec.allow.host_paths.iter().map(|s| s.value.clone()))
        .collect();
    let allows = |list: &[crate::profile::Sourced<String>], name: &str| {
        list.iter()
            .find(|x| x.value == name)
            .map(|x| x.origin.clone())
    };
    for (i, u) in units.iter().enumerate() {
        if let Some(first) = units[..i].iter().find(|o| o.name == u.name) {
            f.error(
                &u.origin,
                format!(
                    "duplicate pod name `{}`: already used at {}",
                    u.name, first.origin
                ),
                Some("each static pod needs its own name".to_string()),
            );
        }
        let a = asks(spec, u);
        for at in &a.privileged {
            match allows(&spec.allow.privileged, &u.name) {
                Some(by) => f.warning(
                    at,
                    format!(
                        "pod `{}` runs privileged (allowed by allow.privileged at {by})",
                        u.name
                    ),
                ),
                None => f.error(
                    at,
                    format!("pod `{}` asks for privileged: true", u.name),
                    Some(format!(
                        "declare only the capabilities it needs; if it really must be privileged, add `allow: {{privileged: [{}]}}`",
                        u.name
                    )),
                ),
            }
        }
        if a.host_pid_ipc {
            f.error(
                &u.origin,
                format!("pod `{}` shares the host's PID or IPC namespace", u.name),
                Some("remove hostPID and hostIPC: static pods of kiOS never get them".into()),
            );
        }
        for (cap, at) in &a.capabilities {
            if caps::number(cap).is_none() {
                let hint = match caps::closest(cap) {
                    Some(c) => format!("did you mean {c}? Capabilities are written without CAP_, e.g. NET_ADMIN"),
                    None => "write a Linux capability without CAP_, e.g. NET_ADMIN (see capabilities(7))".into(),
                };
                f.error(at, format!("`{cap}` is not a Linux capability"), Some(hint));
            } else if cap == "SYS_ADMIN" {
                match allows(&spec.allow.sys_admin, &u.name) {
                    Some(by) => f.warning(
                        at,
                        format!(
                            "pod `{}` gets SYS_ADMIN (allowed by allow.sysAdmin at {by})",
                            u.name
                        ),
                    ),
                    None => f.error(
                        at,
                        format!("pod `{}` asks for SYS_ADMIN", u.name),
                        Some(format!(
                            "SYS_ADMIN is nearly root: use a narrower capability; if it really needs it, add `allow: {{sysAdmin: [{}]}}`",
                            u.name
                        )),
                    ),
                }
            }
        }
        for (path, at) in &a.host_paths {
            if !path.starts_with('/') {
                f.error(at, format!("host path `{path}` is not absolute"), None);
            } else if path.split('/').any(|c| c == "..") || !path_allowed(path, &allowed_paths) {
                f.error(
                    at,
                    format!(
                        "host path {path} of pod `{}` is outside the allowed host paths",
                        u.name
                    ),
                    Some(format!(
                        "allowed: {}; add it to `allow: {{hostPaths: [...]}}` if the pod needs it",
                        allowed_paths.join(", ")
                    )),
                );
            }
        }
        for (image, at) in &a.images {
            if resolver.resolve(image).is_none() {
                f.error(
                    at,
                    format!("image {image} of pod `{}` is not pre-seeded", u.name),
                    Some("every static pod image must be in the node's image store: list it under `images:` (a registry reference or oci:DIR:TAG) so that it is pre-seeded".into()),
                );
            }
        }
    }
    f.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_match_whole_components() {
        let allowed = vec!["/var/lib/kios".to_string(), "/dev".to_string()];
        assert!(path_allowed("/var/lib/kios", &allowed));
        assert!(path_allowed("/var/lib/kios/dhcp/", &allowed));
        assert!(path_allowed("/dev/vda", &allowed));
        assert!(!path_allowed("/var/lib/kiosk", &allowed));
        assert!(!path_allowed("/", &allowed));
        assert!(!path_allowed("/devices", &allowed));
    }
}
