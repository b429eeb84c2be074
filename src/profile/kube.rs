//! The Kubernetes side of a profile: `kubernetes`, `kubelet`, `daemons`, `allow`,
//! `pods`, `files` and `images`, as read from each layer and merged over the bases
//! into a [`NodeSpec`] (plain values, [`super::spec`]).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{image_input, input, shown_path, Layer, Origin, ProfileError, RawProfile, Sourced, S};
use crate::profile::spec::{self as node, NodeSpec};
use crate::untrusted::shown;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKubernetes {
    pub(super) version: Option<S<String>>,
    #[serde(rename = "pauseImage")]
    pub(super) pause_image: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawKubelet {
    pub(super) config: Option<HashMap<S<String>, serde_json::Value>>,
    pub(super) labels: Option<HashMap<S<String>, S<String>>>,
    #[serde(rename = "nodeIP")]
    pub(super) node_ip: Option<S<String>>,
    pub(super) kubeconfig: Option<RawSecret>,
    pub(super) bootstrap_kubeconfig: Option<RawSecret>,
    #[serde(rename = "clusterCA")]
    pub(super) cluster_ca: Option<RawSecret>,
    pub(super) credential_provider: Option<RawSecret>,
}

/// A secret: a file, or an environment variable holding the content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    pub(super) file: Option<S<String>>,
    pub(super) env: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawDaemon {
    pub(super) name: S<String>,
    pub(super) image: Option<S<String>>,
    pub(super) command: Option<Vec<S<String>>>,
    pub(super) args: Option<Vec<S<String>>>,
    pub(super) capabilities: Option<Vec<S<String>>>,
    pub(super) host_network: Option<S<bool>>,
    pub(super) oneshot: Option<S<bool>>,
    pub(super) host_paths: Option<Vec<RawHostPath>>,
    pub(super) devices: Option<Vec<S<String>>>,
    pub(super) env: Option<HashMap<S<String>, S<String>>>,
    pub(super) privileged: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawHostPath {
    pub(super) path: S<String>,
    pub(super) read_only: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawAllow {
    pub(super) privileged: Option<Vec<S<String>>>,
    pub(super) sys_admin: Option<Vec<S<String>>>,
    pub(super) capabilities: Option<HashMap<S<String>, Vec<S<String>>>>,
    pub(super) devices: Option<HashMap<S<String>, Vec<S<String>>>>,
    pub(super) host_paths: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) path: S<String>,
    pub(super) mode: Option<S<String>>,
    pub(super) content: Option<S<String>>,
    pub(super) source: Option<S<String>>,
}

/// Merges the Kubernetes side of the layers (base first): `kubernetes.version`,
/// `kubelet.nodeIP` and the kubelet's files replace; `kubelet.config` is deep-merged
/// and `kubelet.labels` merged by key; `daemons` are merged by name (the fields a
/// profile sets replace the base's); `allow` lists and `pods` are appended; `files`
/// are merged by path.
pub(super) fn merge_node(layers: &[(Layer, RawProfile)]) -> Result<NodeSpec, ProfileError> {
    let top = &layers[layers.len() - 1].0;
    let mut spec = NodeSpec {
        kubernetes: Sourced {
            value: node::DEFAULT_VERSION,
            origin: top.origin(1, 1),
        },
        kubelet: node::KubeletSpec::default(),
        daemons: Vec::new(),
        pods: Vec::new(),
        files: Vec::new(),
        allow: node::Allow::default(),
        pause: None,
        images: Vec::new(),
    };
    for (layer, raw) in layers {
        if let Some(v) = raw.kubernetes.as_ref().and_then(|k| k.version.as_ref()) {
            let parsed = node::KubeVersion::parse(&v.value).map_err(|e| {
                ProfileError::at(
                    &layer.at(v),
                    e,
                    Some("write for example `version: \"1.34\"`".into()),
                )
            })?;
            spec.kubernetes = Sourced {
                value: parsed,
                origin: layer.at(v),
            };
        }
        if let Some(p) = raw.kubernetes.as_ref().and_then(|k| k.pause_image.as_ref()) {
            spec.pause = Some(image_input(layer, p, "kubernetes.pauseImage")?);
        }
        for i in raw.images.iter().flatten() {
            let img = image_input(layer, i, "images")?;
            if !spec.images.iter().any(|x| x.value == img.value) {
                spec.images.push(img);
            }
        }
        if let Some(k) = &raw.kubelet {
            merge_kubelet(layer, k, &mut spec.kubelet)?;
        }
        let mut seen_here: Vec<&S<String>> = Vec::new();
        for d in raw.daemons.iter().flatten() {
            if let Some(first) = seen_here.iter().find(|n| n.value == d.name.value) {
                return Err(ProfileError::at(
                    &layer.at(&d.name),
                    format!(
                        "duplicate pod name `{}`: already used at {}",
                        shown(&d.name.value),
                        layer.at(first)
                    ),
                    Some("each daemon needs its own name; a profile changes a base's daemon by naming it once".into()),
                ));
            }
            seen_here.push(&d.name);
            merge_daemon(layer, d, &mut spec.daemons)?;
        }
        if let Some(a) = &raw.allow {
            merge_allow(layer, a, &mut spec.allow)?;
        }
        for p in raw.pods.iter().flatten() {
            let path = local_file(layer, p, "pods")?;
            spec.pods.push(Sourced {
                value: path,
                origin: layer.at(p),
            });
        }
        for f in raw.files.iter().flatten() {
            let file = extra_file(layer, f)?;
            spec.files.retain(|x| x.path.value != file.path.value);
            spec.files.push(file);
        }
    }
    Ok(spec)
}

fn merge_allow(layer: &Layer, a: &RawAllow, out: &mut node::Allow) -> Result<(), ProfileError> {
    out.privileged
        .extend(a.privileged.iter().flatten().map(|x| layer.sourced(x)));
    let grant = |what: &str, pod: &S<String>, field| node::Grant {
        what: what.to_string(),
        pod: layer.sourced(pod),
        field,
    };
    for pod in a.sys_admin.iter().flatten() {
        out.capabilities
            .push(grant("SYS_ADMIN", pod, "allow.sysAdmin"));
    }
    let host_caps = || {
        crate::profile::caps::HOST
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (cap, pods) in sorted(&a.capabilities) {
        let c = cap.value.trim();
        if crate::profile::caps::host_risk(c).is_none() {
            let why = if crate::profile::caps::number(c).is_some() {
                format!("`{c}` needs no `allow` entry: a pod may declare it")
            } else {
                format!("`{}` is not a Linux capability", shown(c))
            };
            return Err(ProfileError::at(
                &layer.at(cap),
                format!("allow.capabilities: {why}"),
                Some(format!(
                    "list here only the capabilities that give a container the host: {}",
                    host_caps()
                )),
            ));
        }
        for pod in pods {
            out.capabilities.push(grant(c, pod, "allow.capabilities"));
        }
    }
    for (dev, pods) in sorted(&a.devices) {
        let d = dev.value.trim();
        if !crate::profile::caps::HOST_DEVICES.contains(&d) {
            return Err(ProfileError::at(
                &layer.at(dev),
                format!(
                    "allow.devices: `{}` needs no `allow` entry (only the host's memory devices do)",
                    shown(d)
                ),
                Some(format!(
                    "list here only {}; other devices are checked against the allowed host paths",
                    crate::profile::caps::HOST_DEVICES.join(", ")
                )),
            ));
        }
        for pod in pods {
            out.devices.push(grant(d, pod, "allow.devices"));
        }
    }
    for p in a.host_paths.iter().flatten() {
        if !p.value.starts_with('/')
            || p.value.split('/').any(|c| c == "..")
            || p.value.chars().any(char::is_control)
        {
            return Err(ProfileError::at(
                &layer.at(p),
                format!(
                    "allow.hostPaths: `{}` is not an absolute path",
                    shown(&p.value)
                ),
                Some("write an absolute path without `..`, e.g. /srv/data".into()),
            ));
        }
        out.host_paths.push(layer.sourced(p));
    }
    Ok(())
}

/// A map's entries sorted by key: errors and merges do not depend on hash order.
fn sorted<V>(m: &Option<HashMap<S<String>, V>>) -> Vec<(&S<String>, &V)> {
    let mut v: Vec<_> = m.iter().flatten().collect();
    v.sort_by(|a, b| a.0.value.cmp(&b.0.value));
    v
}

fn merge_kubelet(
    layer: &Layer,
    k: &RawKubelet,
    out: &mut node::KubeletSpec,
) -> Result<(), ProfileError> {
    let mut keys: Vec<(&S<String>, &serde_json::Value)> = k.config.iter().flatten().collect();
    keys.sort_by(|a, b| a.0.value.cmp(&b.0.value));
    for (key, value) in keys {
        super::kubelet::check_config_key(&key.value)
            .map_err(|(m, h)| ProfileError::at(&layer.at(key), m, h))?;
        let merged = match out.config.remove(&key.value) {
            Some((_, mut old)) => {
                node::deep_merge(&mut old, value.clone());
                old
            }
            None => value.clone(),
        };
        out.config
            .insert(key.value.clone(), (layer.at(key), merged));
    }
    for (key, value) in k.labels.iter().flatten() {
        super::kubelet::check_label(&key.value, &value.value)
            .map_err(|m| ProfileError::at(&layer.at(key), m, None))?;
        out.labels.insert(key.value.clone(), layer.sourced(value));
    }
    if let Some(ip) = &k.node_ip {
        super::kubelet::check_node_ip(&ip.value)
            .map_err(|(m, h)| ProfileError::at(&layer.at(ip), m, Some(h)))?;
        out.node_ip = Some(layer.sourced(ip));
    }
    for (raw, slot, field) in [
        (&k.kubeconfig, &mut out.kubeconfig, "kubelet.kubeconfig"),
        (
            &k.bootstrap_kubeconfig,
            &mut out.bootstrap_kubeconfig,
            "kubelet.bootstrapKubeconfig",
        ),
        (&k.cluster_ca, &mut out.cluster_ca, "kubelet.clusterCA"),
        (
            &k.credential_provider,
            &mut out.credential_provider,
            "kubelet.credentialProvider",
        ),
    ] {
        let Some(r) = raw else { continue };
        *slot = Some(match (&r.file, &r.env) {
            (Some(f), None) => Sourced {
                value: node::SecretSource::File(local_file(layer, f, field)?),
                origin: layer.at(f),
            },
            (None, Some(e)) => {
                let name = e.value.trim();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(ProfileError::at(
                        &layer.at(e),
                        format!(
                            "`{field}.env`: `{}` is not an environment variable name",
                            shown(name)
                        ),
                        None,
                    ));
                }
                Sourced {
                    value: node::SecretSource::Env(name.to_string()),
                    origin: layer.at(e),
                }
            }
            (Some(_), Some(e)) => {
                return Err(ProfileError::at(
                    &layer.at(e),
                    format!("`{field}` has both `file` and `env`"),
                    Some("keep one".into()),
                ))
            }
            (None, None) => {
                return Err(ProfileError::at(
                    &top_of(layer),
                    format!("`{field}` needs `file: PATH` or `env: VARIABLE`"),
                    None,
                ))
            }
        });
    }
    Ok(())
}

fn top_of(layer: &Layer) -> Origin {
    layer.origin(1, 1)
}

fn merge_daemon(
    layer: &Layer,
    d: &RawDaemon,
    daemons: &mut Vec<node::Daemon>,
) -> Result<(), ProfileError> {
    let name = d.name.value.trim();
    let dns_label = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !dns_label {
        return Err(ProfileError::at(
            &layer.at(&d.name),
            format!("`{}` is not a valid daemon name", shown(name)),
            Some(
                "use lower-case letters, digits and '-', at most 63 characters (it names the pod)"
                    .into(),
            ),
        ));
    }
    let idx = match daemons.iter().position(|x| x.name.value == name) {
        Some(i) => i,
        None => {
            daemons.push(node::Daemon {
                name: layer.sourced(&d.name),
                image: None,
                command: Vec::new(),
                args: Vec::new(),
                capabilities: Vec::new(),
                host_network: false,
                oneshot: false,
                host_paths: Vec::new(),
                devices: Vec::new(),
                env: Default::default(),
                privileged: None,
                from_builtin_base: layer.dir.is_none(),
            });
            daemons.len() - 1
        }
    };
    let t = &mut daemons[idx];
    if let Some(img) = input(layer, None, d.image.as_ref(), &format!("daemons[{name}]"))? {
        t.image = Some(img);
    }
    // No NUL in what becomes a process' argument or environment: exec(2) cannot
    // pass it, and the pod would fail on the node, not here.
    let no_nul = |x: &S<String>, field: &str| {
        if x.value.contains('\0') {
            return Err(ProfileError::at(
                &layer.at(x),
                format!(
                    "daemons[{name}].{field}: `{}` holds a NUL byte",
                    shown(&x.value)
                ),
                Some("a process' arguments and environment cannot hold NUL bytes".into()),
            ));
        }
        Ok(x.value.clone())
    };
    if let Some(c) = &d.command {
        t.command = c
            .iter()
            .map(|x| no_nul(x, "command"))
            .collect::<Result<_, _>>()?;
    }
    if let Some(a) = &d.args {
        t.args = a
            .iter()
            .map(|x| no_nul(x, "args"))
            .collect::<Result<_, _>>()?;
    }
    if let Some(c) = &d.capabilities {
        t.capabilities = c.iter().map(|x| layer.sourced(x)).collect();
    }
    if let Some(h) = &d.host_network {
        t.host_network = h.value;
    }
    if let Some(o) = &d.oneshot {
        t.oneshot = o.value;
    }
    if let Some(p) = &d.privileged {
        t.privileged = Some(layer.sourced(p));
    }
    if let Some(hp) = &d.host_paths {
        t.host_paths = hp
            .iter()
            .map(|h| node::HostPath {
                path: layer.sourced(&h.path),
                read_only: h.read_only.as_ref().map(|r| r.value).unwrap_or(true),
            })
            .collect();
    }
    if let Some(dev) = &d.devices {
        t.devices = dev.iter().map(|x| layer.sourced(x)).collect();
    }
    for (k, v) in sorted(&d.env) {
        // What Kubernetes takes as a variable name (any printable ASCII but `=`, since
        // RelaxedEnvironmentVariableValidation); `=` would split the name on exec.
        let ok = !k.value.is_empty()
            && k.value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'=');
        if !ok {
            return Err(ProfileError::at(
                &layer.at(k),
                format!(
                    "daemons[{name}].env: `{}` is not an environment variable name",
                    shown(&k.value)
                ),
                Some("use printable ASCII without `=`, e.g. LOG_LEVEL".into()),
            ));
        }
        t.env.insert(k.value.clone(), no_nul(v, "env")?);
    }
    Ok(())
}

/// A local file a profile names (absolute; it must exist).
pub(super) fn local_file(
    layer: &Layer,
    p: &S<String>,
    field: &str,
) -> Result<PathBuf, ProfileError> {
    let dir = layer.local_dir(p)?;
    let abs = dir.join(&p.value);
    if !abs.is_file() {
        return Err(ProfileError::at(
            &layer.at(p),
            format!("`{field}`: {} is not a file", shown_path(&abs)),
            Some(format!(
                "paths are relative to the profile's folder ({})",
                shown_path(dir)
            )),
        ));
    }
    Ok(abs)
}

fn extra_file(layer: &Layer, f: &RawFile) -> Result<node::ExtraFile, ProfileError> {
    let path = f.path.value.trim();
    let normal = path.starts_with("/etc/")
        && !path.ends_with('/')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !normal {
        return Err(ProfileError::at(
            &layer.at(&f.path),
            format!("files: `{}` is not a file path under /etc", shown(path)),
            Some("write an absolute path such as /etc/kubernetes/pki/extra-ca.crt".into()),
        ));
    }
    // What the initramfs can hold (`TreePath`, cpio newc): checked here so that
    // `validate` says it, not the build once the tree is made.
    if path.chars().any(char::is_control) {
        return Err(ProfileError::at(
            &layer.at(&f.path),
            format!(
                "files: `{}` holds a control character (NUL, newline, escape...)",
                shown(path)
            ),
            Some("write the path in printable characters".into()),
        ));
    }
    let tree_path = crate::tree::TreePath::parse(path).map_err(|_| {
        ProfileError::at(
            &layer.at(&f.path),
            format!(
                "files: `{}` is too long for a path of the node",
                shown(path)
            ),
            Some("keep each name under 256 bytes and the whole path under 4096".into()),
        )
    })?;
    if let Some((message, hint)) = super::owned::refuse_extra_file(&tree_path) {
        return Err(ProfileError::at(&layer.at(&f.path), message, Some(hint)));
    }
    let mode = match &f.mode {
        None => 0o644,
        Some(m) => u32::from_str_radix(m.value.trim(), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                ProfileError::at(
                    &layer.at(m),
                    format!("`{}` is not a file mode", shown(&m.value)),
                    Some("write it in octal, quoted: mode: \"0644\"".into()),
                )
            })?,
    };
    let content = match (&f.content, &f.source) {
        (Some(c), None) => node::ExtraContent::Inline(c.value.clone()),
        (None, Some(s)) => node::ExtraContent::Source(local_file(layer, s, "files.source")?),
        _ => {
            return Err(ProfileError::at(
                &layer.at(&f.path),
                format!(
                    "files: `{}` needs exactly one of `content` and `source`",
                    shown(path)
                ),
                None,
            ))
        }
    };
    Ok(node::ExtraFile {
        path: Sourced {
            value: path.to_string(),
            origin: layer.at(&f.path),
        },
        mode,
        content,
    })
}
