//! Daemon declarations -> typed `Pod` objects -> manifest YAML; the `pods:` files read
//! and checked; the profile's extra `/etc` files.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, HostPathVolumeSource, Pod, PodSecurityContext, PodSpec,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Generated, GeneratedFile, ImageResolver, PodSummary, PodsError};
use crate::profile::spec::{Daemon, ExtraContent, NodeSpec};
use crate::profile::{shown_path, Origin, MESSAGE_CHARS};
use crate::untrusted::{read_regular, shown, shown_max};

/// The namespace static pods are mirrored into.
pub const NAMESPACE: &str = "kube-system";
/// Lets CRI-O give a container a device without `privileged` (the runtime handler
/// must allow the annotation: see docs/boot-flow.md).
pub const DEVICES_ANNOTATION: &str = "io.kubernetes.cri-o.Devices";

/// A static pod about to be written: from a daemon or from a `pods:` file.
pub(crate) struct Unit {
    pub name: String,
    pub origin: Origin,
    pub pod: Pod,
    pub source: UnitSource,
}

pub(crate) enum UnitSource {
    /// Index into `NodeSpec::daemons`.
    Daemon(usize),
    /// The file's bytes, copied as they are.
    File(Vec<u8>),
}

/// The largest `pods:` file read: a Pod object is at most what the API server
/// stores (1.5 MiB in etcd); real static pods are a few KiB.
const MAX_POD_FILE: u64 = 1536 << 10;
/// The largest `files:` source read: the initramfs holds it in memory.
const MAX_EXTRA_FILE: u64 = 16 << 20;

/// A DNS-1123 subdomain (RFC 1123 labels joined by '.', at most 253 characters).
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Builds the pod of every daemon that has an image and reads every `pods:` file.
pub(crate) fn collect(
    spec: &NodeSpec,
    resolver: &dyn ImageResolver,
) -> Result<Vec<Unit>, PodsError> {
    let mut units = Vec::new();
    for (i, d) in spec.daemons.iter().enumerate() {
        let Some(image) = &d.image else {
            if d.from_builtin_base {
                continue;
            }
            return Err(PodsError::at(
                &d.name.origin,
                format!("daemon `{}` has no image", shown(&d.name.value)),
                Some("set its `image`: a registry reference or oci:DIR:TAG"),
            ));
        };
        let reference = image.value.to_string();
        let pinned = resolver
            .resolve(&reference)
            .map(|p| p.reference_with_digest)
            .unwrap_or(reference);
        units.push(Unit {
            name: d.name.value.clone(),
            origin: d.name.origin.clone(),
            pod: daemon_pod(d, &pinned),
            source: UnitSource::Daemon(i),
        });
    }
    for f in &spec.pods {
        let bytes = read_regular(&f.value, MAX_POD_FILE).map_err(|source| PodsError::Read {
            origin: f.origin.clone(),
            path: f.value.clone(),
            source,
        })?;
        let file = shown_path(&f.value);
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| PodsError::at(&f.origin, format!("{file} is not UTF-8 text"), None))?;
        let pod: Pod = serde_saphyr::from_str(&text).map_err(|e| {
            PodsError::at(
                &f.origin,
                format!(
                    "{file} is not a Pod manifest: {}",
                    shown_max(e.to_string().lines().next().unwrap_or(""), MESSAGE_CHARS)
                ),
                Some("a static pod file holds one `apiVersion: v1`, `kind: Pod` object"),
            )
        })?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(PodsError::at(
                &f.origin,
                format!("{file} has no metadata.name"),
                None,
            ));
        }
        // The name makes the manifest's file name: a DNS subdomain, as Kubernetes
        // requires of a pod's name, cannot leave the manifests folder.
        if !is_dns_subdomain(&name) {
            return Err(PodsError::at(
                &f.origin,
                format!("{file}: metadata.name `{}` is not a valid pod name", shown(&name)),
                Some("use lower-case letters, digits, '-' and '.', at most 253 characters (a DNS subdomain)"),
            ));
        }
        if pod.spec.as_ref().map(|s| s.containers.is_empty()) != Some(false) {
            return Err(PodsError::at(
                &f.origin,
                format!("{file} has no containers"),
                None,
            ));
        }
        units.push(Unit {
            name,
            origin: f.origin.clone(),
            pod,
            source: UnitSource::File(bytes),
        });
    }
    Ok(units)
}

/// The pod of daemon `d`, running `image` (already pinned).
pub fn daemon_pod(d: &Daemon, image: &str) -> Pod {
    let name = d.name.value.clone();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, h) in d.host_paths.iter().enumerate() {
        let vol = format!("host-{i}");
        volumes.push(Volume {
            name: vol.clone(),
            host_path: Some(HostPathVolumeSource {
                path: h.path.value.clone(),
                // A folder the daemon writes (its state, /etc/kubernetes) may not
                // exist on a first boot; a read-only one may be a file.
                type_: (!h.read_only).then(|| "DirectoryOrCreate".into()),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: vol,
            mount_path: h.path.value.clone(),
            read_only: Some(h.read_only),
            ..VolumeMount::default()
        });
    }
    for (i, dev) in d.devices.iter().enumerate() {
        let vol = format!("device-{i}");
        volumes.push(Volume {
            name: vol.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dev.value.clone(),
                type_: Some("BlockDevice".into()),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: vol,
            mount_path: dev.value.clone(),
            ..VolumeMount::default()
        });
    }
    let privileged = d.privileged.as_ref().map(|p| p.value).unwrap_or(false);
    let mut add: Vec<String> = Vec::new();
    for c in &d.capabilities {
        if !add.contains(&c.value) {
            add.push(c.value.clone());
        }
    }
    let security = SecurityContext {
        // Kubernetes refuses privileged with allowPrivilegeEscalation: false.
        allow_privilege_escalation: (!privileged).then_some(false),
        privileged: privileged.then_some(true),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then_some(add),
            drop: Some(vec!["ALL".into()]),
        }),
        ..SecurityContext::default()
    };
    let env: Vec<EnvVar> = d
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            value_from: None,
        })
        .collect();
    let container = Container {
        name: name.clone(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: (!d.command.is_empty()).then(|| d.command.clone()),
        args: (!d.args.is_empty()).then(|| d.args.clone()),
        env: (!env.is_empty()).then_some(env),
        security_context: Some(security),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    };
    let mut labels = BTreeMap::new();
    labels.insert("app.kubernetes.io/name".to_string(), name.clone());
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "kios-build".to_string(),
    );
    let annotations = (!d.devices.is_empty()).then(|| {
        let devs: Vec<&str> = d.devices.iter().map(|x| x.value.as_str()).collect();
        BTreeMap::from([(DEVICES_ANNOTATION.to_string(), devs.join(","))])
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels),
            annotations,
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            host_network: d.host_network.then_some(true),
            host_pid: Some(false),
            host_ipc: Some(false),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            priority_class_name: Some("system-node-critical".into()),
            restart_policy: Some(if d.oneshot { "OnFailure" } else { "Always" }.into()),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            volumes: (!volumes.is_empty()).then_some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The YAML of a generated manifest.
pub fn manifest_yaml(pod: &Pod) -> Result<String, PodsError> {
    let body = super::to_yaml(
        pod,
        &format!(
            "manifest of pod `{}`",
            pod.metadata.name.as_deref().unwrap_or("")
        ),
    )?;
    Ok(format!(
        "# Generated by kios-build from the profile's daemon `{}`. Do not edit: change the profile.\n{body}",
        pod.metadata.name.as_deref().unwrap_or("")
    ))
}

/// Writes the manifests and the pod summaries.
pub(crate) fn write(spec: &NodeSpec, units: &[Unit], out: &mut Generated) -> Result<(), PodsError> {
    for u in units {
        let (content, from, oneshot) = match &u.source {
            UnitSource::Daemon(i) => (
                manifest_yaml(&u.pod)?.into_bytes(),
                "daemon",
                spec.daemons[*i].oneshot,
            ),
            UnitSource::File(bytes) => (
                bytes.clone(),
                "file",
                pod_spec(&u.pod).restart_policy.as_deref() == Some("OnFailure"),
            ),
        };
        out.files.push(GeneratedFile {
            path: format!("etc/kubernetes/manifests/{}.yaml", u.name),
            mode: 0o644,
            content,
            secret: false,
        });
        out.pods.push(summarize(&u.pod, from, oneshot));
    }
    for d in &spec.daemons {
        if d.image.is_none() && d.from_builtin_base {
            out.skipped.push(d.name.value.clone());
        }
    }
    Ok(())
}

fn pod_spec(pod: &Pod) -> PodSpec {
    pod.spec.clone().unwrap_or_default()
}

/// What a pod runs and may touch: its images, added capabilities, host network and
/// host paths. Also what `inspect` shows.
pub fn summarize(pod: &Pod, from: &'static str, oneshot: bool) -> PodSummary {
    let spec = pod_spec(pod);
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut images = Vec::new();
    let mut capabilities = Vec::new();
    for c in containers {
        if let Some(i) = &c.image {
            if !images.contains(i) {
                images.push(i.clone());
            }
        }
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) && !capabilities.contains(&"privileged".to_string()) {
            capabilities.push("privileged".to_string());
        }
        for a in sc.capabilities.and_then(|c| c.add).unwrap_or_default() {
            if !capabilities.contains(&a) {
                capabilities.push(a);
            }
        }
    }
    let host_paths = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    let devices = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEVICES_ANNOTATION))
        .map(|d| d.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    PodSummary {
        name: pod.metadata.name.clone().unwrap_or_default(),
        from,
        images,
        privileged: capabilities.iter().any(|c| c == "privileged"),
        capabilities,
        host_network: spec.host_network == Some(true),
        host_paths,
        devices,
        oneshot,
    }
}

/// The profile's `files:`.
pub(crate) fn extra_files(spec: &NodeSpec, out: &mut Generated) -> Result<(), PodsError> {
    for f in &spec.files {
        let rel = f.path.value.trim_start_matches('/').to_string();
        if out.files.iter().any(|g| g.path == rel) {
            return Err(PodsError::at(
                &f.path.origin,
                format!("{} is a file kios-build generates", shown(&f.path.value)),
                Some("set it through the profile's kubelet or daemons sections instead"),
            ));
        }
        let content = match &f.content {
            ExtraContent::Inline(s) => s.clone().into_bytes(),
            ExtraContent::Source(p) => {
                read_regular(p, MAX_EXTRA_FILE).map_err(|source| PodsError::Read {
                    origin: f.path.origin.clone(),
                    path: p.clone(),
                    source,
                })?
            }
        };
        out.files.push(GeneratedFile {
            path: rel,
            mode: f.mode,
            content,
            secret: f.mode & 0o077 == 0,
        });
    }
    Ok(())
}
