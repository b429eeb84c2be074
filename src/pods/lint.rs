//! The rules every static pod must follow before it is written, each reported at the
//! profile line that caused it:
//!
//! - `privileged: true`, a capability that gives the container the host
//!   ([`caps::HOST`]: SYS_ADMIN, SYS_MODULE, SYS_PTRACE, BPF, PERFMON, SYS_RAWIO,
//!   SYS_BOOT, DAC_READ_SEARCH) or a host memory device ([`caps::HOST_DEVICES`]:
//!   /dev/mem, /dev/kmem, /dev/port, as a device or a host path): an error, or a
//!   warning when the profile allows it for that pod by name (`allow.privileged`,
//!   `allow.capabilities` or `allow.sysAdmin`, `allow.devices`);
//! - `hostPID` / `hostIPC`: an error (never needed by a system daemon);
//! - two pods with the same name;
//! - an image the resolver does not know (not pre-seeded);
//! - a host path (or a CRI-O device annotation of a `pods:` file) outside
//!   [`DEFAULT_HOST_PATHS`] and `allow.hostPaths`;
//! - a capability name Linux does not have.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use super::generate::{Unit, UnitSource, DEVICES_ANNOTATION};
use super::ImageResolver;
use crate::profile::caps;
use crate::profile::spec::{Grant, NodeSpec, DEFAULT_HOST_PATHS};
use crate::profile::Origin;
use crate::untrusted::shown;

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

/// The device paths of a CRI-O devices annotation: `HOST[:CONTAINER[:PERMS]]`,
/// comma-separated (CRI-O, `io.kubernetes.cri-o.Devices`).
fn annotated_devices(pod: &Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() == DEVICES_ANNOTATION)
        .flat_map(|(_, v)| v.split(','))
        .map(|d| d.split(':').next().unwrap_or("").trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// `path` with repeated `/`, `.` components and a trailing `/` removed, as the
/// kernel resolves it (`..` is refused before this is used).
fn normal(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
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
    // CRI-O gives these devices to the containers without `privileged`.
    for d in annotated_devices(pod) {
        a.host_paths.push((d, at.clone()));
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
    let mut linter = Linter {
        spec,
        resolver,
        allowed_paths: DEFAULT_HOST_PATHS
            .iter()
            .map(|s| s.to_string())
            .chain(spec.allow.host_paths.iter().map(|s| s.value.clone()))
            .collect(),
        f: Findings(Vec::new()),
    };
    for (i, u) in units.iter().enumerate() {
        let pod = shown(&u.name);
        if let Some(first) = units[..i].iter().find(|o| o.name == u.name) {
            linter.f.error(
                &u.origin,
                format!(
                    "duplicate pod name `{pod}`: already used at {}",
                    first.origin
                ),
                Some("each static pod needs its own name".to_string()),
            );
        }
        let a = asks(spec, u);
        linter.privileged(u, &pod, &a);
        if a.host_pid_ipc {
            linter.f.error(
                &u.origin,
                format!("pod `{pod}` shares the host's PID or IPC namespace"),
                Some("remove hostPID and hostIPC: static pods of kiOS never get them".into()),
            );
        }
        linter.capabilities(u, &pod, &a);
        linter.host_devices(u, &pod, &a);
        linter.host_paths(&pod, &a);
        linter.images(&pod, &a);
    }
    linter.f.0
}

/// The rules, over one profile's allow-lists; findings collect in order.
struct Linter<'a> {
    spec: &'a NodeSpec,
    resolver: &'a dyn ImageResolver,
    /// [`DEFAULT_HOST_PATHS`] and `allow.hostPaths`.
    allowed_paths: Vec<String>,
    f: Findings,
}

impl Linter<'_> {
    /// Where `allow:` grants `what` to the pod `name`: the field and its place.
    fn granted(list: &[Grant], what: &str, name: &str) -> Option<(&'static str, Origin)> {
        list.iter()
            .find(|g| g.what == what && g.pod.value == name)
            .map(|g| (g.field, g.pod.origin.clone()))
    }

    /// `privileged: true`: an error unless `allow.privileged` names the pod.
    fn privileged(&mut self, u: &Unit, pod: &str, a: &Asks) {
        let allowed_by = self
            .spec
            .allow
            .privileged
            .iter()
            .find(|x| x.value == u.name)
            .map(|x| x.origin.clone());
        for at in &a.privileged {
            match &allowed_by {
                Some(by) => self.f.warning(
                    at,
                    format!("pod `{pod}` runs privileged (allowed by allow.privileged at {by})"),
                ),
                None => self.f.error(
                    at,
                    format!("pod `{pod}` asks for privileged: true"),
                    Some(format!(
                        "declare only the capabilities it needs; if it really must be privileged, add `allow: {{privileged: [{pod}]}}`"
                    )),
                ),
            }
        }
    }

    /// Every capability must exist; one that gives the host must be allowed.
    fn capabilities(&mut self, u: &Unit, pod: &str, a: &Asks) {
        for (cap, at) in &a.capabilities {
            if caps::number(cap).is_none() {
                let hint = match caps::closest(cap) {
                    Some(c) => format!("did you mean {c}? Capabilities are written without CAP_, e.g. NET_ADMIN"),
                    None => "write a Linux capability without CAP_, e.g. NET_ADMIN (see capabilities(7))".into(),
                };
                self.f.error(
                    at,
                    format!("`{}` is not a Linux capability", shown(cap)),
                    Some(hint),
                );
            } else if let Some(why) = caps::host_risk(cap) {
                match Self::granted(&self.spec.allow.capabilities, cap, &u.name) {
                    Some((field, by)) => self.f.warning(
                        at,
                        format!("pod `{pod}` gets {cap} (allowed by {field} at {by})"),
                    ),
                    None => {
                        let allow = if cap == "SYS_ADMIN" {
                            format!("`allow: {{sysAdmin: [{pod}]}}`")
                        } else {
                            format!("`allow: {{capabilities: {{{cap}: [{pod}]}}}}`")
                        };
                        self.f.error(
                            at,
                            format!("pod `{pod}` asks for {cap}"),
                            Some(format!(
                                "{cap} gives the container the host: it {why}; use a narrower capability, or if it really needs it, add {allow}"
                            )),
                        )
                    }
                }
            }
        }
    }

    /// A host memory device, as a device or a host path, must be allowed.
    fn host_devices(&mut self, u: &Unit, pod: &str, a: &Asks) {
        for (path, at) in &a.host_paths {
            let dev = normal(path);
            if !caps::HOST_DEVICES.contains(&dev.as_str()) || path.split('/').any(|c| c == "..") {
                continue;
            }
            match Self::granted(&self.spec.allow.devices, &dev, &u.name) {
                Some((field, by)) => self.f.warning(
                    at,
                    format!("pod `{pod}` gets the host device {dev} (allowed by {field} at {by})"),
                ),
                None => self.f.error(
                    at,
                    format!("pod `{pod}` asks for the host device {dev}"),
                    Some(format!(
                        "{dev} is the host's memory or I/O ports: it gives the container the host; if it really needs it, add `allow: {{devices: {{{dev}: [{pod}]}}}}`"
                    )),
                ),
            }
        }
    }

    /// Every host path is absolute, printable, and inside the allowed paths.
    fn host_paths(&mut self, pod: &str, a: &Asks) {
        for (path, at) in &a.host_paths {
            if !path.starts_with('/') {
                self.f.error(
                    at,
                    format!("host path `{}` is not absolute", shown(path)),
                    None,
                );
            } else if path.chars().any(char::is_control) {
                self.f.error(
                    at,
                    format!("host path `{}` holds a control character", shown(path)),
                    Some("write the path in printable characters".into()),
                );
            } else if path.split('/').any(|c| c == "..") || !path_allowed(path, &self.allowed_paths)
            {
                self.f.error(
                    at,
                    format!(
                        "host path {} of pod `{pod}` is outside the allowed host paths",
                        shown(path)
                    ),
                    Some(format!(
                        "allowed: {}; add it to `allow: {{hostPaths: [...]}}` if the pod needs it",
                        self.allowed_paths
                            .iter()
                            .map(|p| shown(p))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                );
            }
        }
    }

    /// Every image is one the resolver knows: pre-seeded.
    fn images(&mut self, pod: &str, a: &Asks) {
        for (image, at) in &a.images {
            if self.resolver.resolve(image).is_none() {
                self.f.error(
                    at,
                    format!(
                        "image {} of pod `{pod}` is not pre-seeded",
                        shown(image)
                    ),
                    Some("every static pod image must be in the node's image store: list it under `images:` (a registry reference or oci:DIR:TAG) so that it is pre-seeded".into()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_are_folded_before_they_are_compared() {
        assert_eq!(normal("/dev//./mem/"), "/dev/mem");
        assert_eq!(normal("/dev/mem"), "/dev/mem");
        assert_eq!(normal("//dev/kmem"), "/dev/kmem");
    }

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
