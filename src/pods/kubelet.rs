//! The kubelet's files: `KubeletConfiguration` (kubelet.config.k8s.io/v1beta1, not in
//! k8s-openapi, so a serde struct here for the fields kiOS sets, the rest kept as
//! JSON values), node labels and IP, kubeconfigs, the cluster CA, the credential
//! provider configuration, and the CRI-O drop-in naming the pause image.
//!
//! Two configurations are written, identical but for the kubelet server's
//! authentication: `config.yaml` (webhook authentication and authorization, for a
//! node in a cluster) and `config-standalone.yaml` (webhook off: there is no API
//! server to ask). Which one init passes is in docs/boot-flow.md.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{Generated, GeneratedFile, PodsError};
use crate::profile::kubelet::{check_label, check_node_ip};
use crate::profile::spec::{deep_merge, NodeSpec, SecretSource};
use crate::profile::{Origin, Sourced, MESSAGE_CHARS};
use crate::untrusted::{read_regular, shown, shown_max};

/// The largest secret or CA file read (kubeconfigs with embedded certificates and
/// CA bundles are tens of KiB).
const MAX_SECRET: u64 = 4 << 20;

pub use crate::profile::kubelet::{CRIO_ENDPOINT, STATIC_POD_PATH};
pub use crate::profile::owned::{
    BOOTSTRAP_KUBECONFIG, CLUSTER_CA, CONFIG, CONFIG_STANDALONE, CREDENTIAL_PROVIDER, CRIO_DROPIN,
    KUBECONFIG, NODE_IP, NODE_LABELS,
};

/// The fields kiOS sets, typed: the merged configuration is read back through this
/// struct, so a profile value of the wrong type is refused here, not by the kubelet
/// at boot. Everything else passes through as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    pub static_pod_path: String,
    pub container_runtime_endpoint: String,
    pub cgroup_driver: String,
    pub read_only_port: i32,
    pub shutdown_grace_period: String,
    pub shutdown_grace_period_critical_pods: String,
    pub authentication: Authentication,
    pub authorization: Authorization,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<i32>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    pub anonymous: Enabled,
    pub webhook: Enabled,
    #[serde(default)]
    pub x509: X509,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509 {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Enabled {
    pub enabled: bool,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Authorization {
    pub mode: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// kiOS' defaults, before the profile's `kubelet.config`.
fn defaults(spec: &NodeSpec, standalone: bool) -> Value {
    let mut authn = json!({
        "anonymous": {"enabled": false},
        "webhook": {"enabled": !standalone},
        "x509": {},
    });
    if spec.kubelet.cluster_ca.is_some() {
        authn["x509"]["clientCAFile"] = json!(format!("/{CLUSTER_CA}"));
    }
    json!({
        "apiVersion": spec.kubernetes.value.kubelet_config_api(),
        "kind": "KubeletConfiguration",
        "staticPodPath": STATIC_POD_PATH,
        "containerRuntimeEndpoint": CRIO_ENDPOINT,
        "cgroupDriver": "cgroupfs",
        "readOnlyPort": 0,
        "shutdownGracePeriod": "30s",
        "shutdownGracePeriodCriticalPods": "10s",
        "authentication": authn,
        "authorization": {"mode": if standalone { "AlwaysAllow" } else { "Webhook" }},
    })
}

/// The KubeletConfiguration YAML: kiOS' defaults with the profile's overrides.
pub fn configuration(spec: &NodeSpec, standalone: bool) -> Result<String, PodsError> {
    let mut v = defaults(spec, standalone);
    for (key, (_, value)) in &spec.kubelet.config {
        deep_merge(&mut v, json!({ key: value.clone() }));
    }
    let typed: KubeletConfiguration = serde_json::from_value(v.clone()).map_err(|e| {
        // Name the profile key whose value does not fit.
        let culprit = spec.kubelet.config.iter().find(|(key, _)| {
            let mut alone = defaults(spec, standalone);
            deep_merge(&mut alone, json!({ *key: v[key.as_str()].clone() }));
            serde_json::from_value::<KubeletConfiguration>(alone).is_err()
        });
        match culprit {
            Some((key, (origin, _))) => PodsError::at(
                origin,
                format!(
                    "kubelet.config.{} has the wrong type: {}",
                    shown(key),
                    shown_max(&e.to_string(), MESSAGE_CHARS)
                ),
                None,
            ),
            None => PodsError::Serialize {
                what: "kubelet configuration".into(),
                message: shown_max(&e.to_string(), MESSAGE_CHARS),
            },
        }
    })?;
    let body = super::to_yaml(&typed, "kubelet configuration")?;
    let which = if standalone {
        "standalone (no API server: webhook authentication off)"
    } else {
        "in a cluster"
    };
    Ok(format!(
        "# Generated by kios-build: the kubelet's configuration {which}.\n{body}"
    ))
}

fn read_secret(s: &Sourced<SecretSource>, what: &str) -> Result<Vec<u8>, PodsError> {
    let bytes = match &s.value {
        SecretSource::File(p) => read_regular(p, MAX_SECRET).map_err(|source| PodsError::Read {
            origin: s.origin.clone(),
            path: p.clone(),
            source,
        })?,
        SecretSource::Env(name) => std::env::var_os(name)
            .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec())
            .ok_or_else(|| {
                PodsError::at(
                    &s.origin,
                    format!(
                        "the {what}: environment variable {} is not set",
                        shown(name)
                    ),
                    Some("export it before the build, or name a file instead"),
                )
            })?,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // Never quote the content, only where it came from.
        return Err(PodsError::at(
            &s.origin,
            format!("the {what} ({}) is empty", shown(&s.value.to_string())),
            None,
        ));
    }
    Ok(bytes)
}

fn at_origin(origin: &Origin, e: String) -> PodsError {
    PodsError::at(origin, e, None)
}

/// Writes the kubelet's files into `out`.
pub(crate) fn write(
    spec: &NodeSpec,
    resolver: &dyn super::ImageResolver,
    out: &mut Generated,
) -> Result<(), PodsError> {
    // CRI-O looks the pause image up by name: the store's name when pre-seeded.
    let pause = resolver.resolve(&spec.pause_image().value.to_string());
    let mut push = |path: &str, mode: u32, content: Vec<u8>, secret: bool| {
        out.files.push(GeneratedFile {
            path: path.to_string(),
            mode,
            content,
            secret,
        })
    };
    push(
        CONFIG,
        0o644,
        configuration(spec, false)?.into_bytes(),
        false,
    );
    push(
        CONFIG_STANDALONE,
        0o644,
        configuration(spec, true)?.into_bytes(),
        false,
    );
    let k = &spec.kubelet;
    if !k.labels.is_empty() {
        let mut pairs = Vec::new();
        for (key, v) in &k.labels {
            check_label(key, &v.value).map_err(|e| at_origin(&v.origin, e))?;
            pairs.push(format!("{key}={}", v.value));
        }
        push(
            NODE_LABELS,
            0o644,
            format!("{}\n", pairs.join(",")).into_bytes(),
            false,
        );
    }
    if let Some(ip) = &k.node_ip {
        check_node_ip(&ip.value).map_err(|(m, h)| PodsError::at(&ip.origin, m, Some(&h)))?;
        push(
            NODE_IP,
            0o644,
            format!("{}\n", ip.value.trim()).into_bytes(),
            false,
        );
    }
    for (src, path, mode, what) in [
        (&k.kubeconfig, KUBECONFIG, 0o600, "kubeconfig"),
        (
            &k.bootstrap_kubeconfig,
            BOOTSTRAP_KUBECONFIG,
            0o600,
            "bootstrap kubeconfig",
        ),
        (
            &k.credential_provider,
            CREDENTIAL_PROVIDER,
            0o600,
            "credential provider configuration",
        ),
        (&k.cluster_ca, CLUSTER_CA, 0o644, "cluster CA"),
    ] {
        if let Some(s) = src {
            let bytes = read_secret(s, what)?;
            push(path, mode, bytes, mode == 0o600);
        }
    }
    push(
        CRIO_DROPIN,
        0o644,
        format!(
            "# Generated by kios-build: the pause image of Kubernetes {}{}.\n[crio.image]\npause_image = \"{}\"\n",
            spec.kubernetes.value,
            if pause.is_some() { ", pre-seeded" } else { "" },
            pause.map(|p| p.name).unwrap_or_else(|| spec.kubernetes.value.pause_image().to_string())
        )
        .into_bytes(),
        false,
    );
    Ok(())
}
