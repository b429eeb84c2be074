//! The kubelet's files: `KubeletConfiguration` (kubelet.config.k8s.io/v1beta1, not in
//! k8s-openapi, so a serde struct here for the fields kiOS sets, the rest kept as
//! JSON values), node labels and IP, kubeconfigs, the cluster CA, the credential
//! provider configuration, and the CRI-O drop-in naming the pause image.
//!
//! Two configurations are written, identical but for the kubelet server's
//! authentication: `config.yaml` (webhook authentication and authorization, for a
//! node in a cluster) and `config-standalone.yaml` (webhook off: there is no API
//! server to ask). Which one init passes is in docs/boot-flow.md.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::spec::{deep_merge, NodeSpec, SecretSource};
use super::{Generated, GeneratedFile, PodsError};
use crate::profile::{Origin, Sourced, MESSAGE_CHARS};
use crate::untrusted::{read_regular, shown, shown_max};

/// The largest secret or CA file read (kubeconfigs with embedded certificates and
/// CA bundles are tens of KiB).
const MAX_SECRET: u64 = 4 << 20;

pub const STATIC_POD_PATH: &str = kios_contract::file::STATIC_PODS;
pub const CRIO_ENDPOINT: &str = "unix:///var/run/crio/crio.sock";
pub const CONFIG: &str = "etc/kubernetes/config.yaml";
pub const CONFIG_STANDALONE: &str = "etc/kubernetes/config-standalone.yaml";
pub const KUBECONFIG: &str = "etc/kubernetes/kubelet.conf";
pub const BOOTSTRAP_KUBECONFIG: &str = "etc/kubernetes/bootstrap-kubelet.conf";
pub const CLUSTER_CA: &str = "etc/kubernetes/pki/ca.crt";
pub const CREDENTIAL_PROVIDER: &str = "etc/kubernetes/credential-provider.yaml";
pub const NODE_LABELS: &str = "etc/kubernetes/node-labels";
pub const NODE_IP: &str = "etc/kubernetes/node-ip";
pub const CRIO_DROPIN: &str = "etc/crio/crio.conf.d/10-kios-pause.conf";

/// Top-level fields of KubeletConfiguration v1beta1 (k8s.io/kubelet/config/v1beta1,
/// types.go, up to 1.37). A name not here is refused at its profile line.
pub const FIELDS: &[&str] = &[
    "enableServer",
    "staticPodPath",
    "podLogsDir",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "staticPodURL",
    "staticPodURLHeader",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsCipherSuites",
    "tlsCurvePreferences",
    "tlsMinVersion",
    "rotateCertificates",
    "serverTLSBootstrap",
    "authentication",
    "authorization",
    "registryPullQPS",
    "registryBurst",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "eventRecordQPS",
    "eventBurst",
    "enableDebuggingHandlers",
    "enableContentionProfiling",
    "healthzPort",
    "healthzBindAddress",
    "oomScoreAdj",
    "clusterDomain",
    "clusterDNS",
    "streamingConnectionIdleTimeout",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "volumeStatsAggPeriod",
    "kubeletCgroups",
    "systemCgroups",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "cpuManagerPolicy",
    "singleProcessOOMKill",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "draManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "runtimeRequestTimeout",
    "hairpinMode",
    "maxPods",
    "podCIDR",
    "podPidsLimit",
    "resolvConf",
    "runOnce",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "maxOpenFiles",
    "contentType",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "podsPerCore",
    "enableControllerAttachDetach",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "featureGates",
    "failSwapOn",
    "memorySwap",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy",
    "systemReserved",
    "kubeReserved",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "allowedUnsafeSysctls",
    "volumePluginDir",
    "providerID",
    "kernelMemcgNotification",
    "logging",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "memoryThrottlingFactor",
    "memoryReservationPolicy",
    "registerWithTaints",
    "registerNode",
    "tracing",
    "localStorageCapacityIsolation",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "failCgroupV1",
    "userNamespaces",
];

/// Fields kiOS depends on: init, CRI-O and the static pods assume these values.
const FIXED: &[&str] = &[
    "apiVersion",
    "kind",
    "staticPodPath",
    "containerRuntimeEndpoint",
];

/// Fields that would give the kubelet pods from elsewhere than the linted
/// `/etc/kubernetes/manifests` (an HTTP URL): a way around the lint.
const OTHER_POD_SOURCES: &[&str] = &["staticPodURL", "staticPodURLHeader"];

/// Checks a top-level key of the profile's `kubelet.config`: `Err((message, hint))`.
pub fn check_config_key(key: &str) -> Result<(), (String, Option<String>)> {
    if OTHER_POD_SOURCES.contains(&key) {
        return Err((
            format!("kubelet.config.{key} would run pods that no lint has checked"),
            Some(format!(
                "static pods come only from {STATIC_POD_PATH}: give them with `daemons:` or `pods:`"
            )),
        ));
    }
    if FIXED.contains(&key) {
        return Err((
            format!("kubelet.config.{} is set by kiOS and cannot be changed", shown(key)),
            Some(format!(
                "kiOS runs the kubelet with staticPodPath {STATIC_POD_PATH} and CRI-O at {CRIO_ENDPOINT}"
            )),
        ));
    }
    if FIELDS.contains(&key) {
        return Ok(());
    }
    let close = FIELDS
        .iter()
        .map(|f| {
            (
                super::caps::distance(&f.to_ascii_lowercase(), &key.to_ascii_lowercase()),
                f,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, f)| f)
        .map(|f| format!("did you mean `{f}`? "))
        .unwrap_or_default();
    Err((
        format!(
            "`{}` is not a KubeletConfiguration (kubelet.config.k8s.io/v1beta1) field",
            shown(key)
        ),
        Some(format!(
            "{close}see https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/"
        )),
    ))
}

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

/// Checks `kubelet.nodeIP` as the kubelet's `--node-ip` takes it: one address, or
/// two of different families (dual stack). `Err((message, hint))`.
pub fn check_node_ip(value: &str) -> Result<(), (String, String)> {
    let hint = || {
        "write one address, or an IPv4 and an IPv6 address separated by a comma (10.0.0.5,fd00::5)"
            .to_string()
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for part in value.split(',') {
        let ip = part.trim().parse::<IpAddr>().map_err(|_| {
            (
                format!("`{}` is not an IP address", shown(part.trim())),
                hint(),
            )
        })?;
        ips.push(ip);
    }
    match ips.as_slice() {
        [_] => Ok(()),
        [a, b] if a.is_ipv4() != b.is_ipv4() => Ok(()),
        [_, _] => Err((
            "kubelet.nodeIP has two addresses of the same family: the kubelet takes at most one IPv4 and one IPv6 address".into(),
            hint(),
        )),
        _ => Err((
            format!(
                "kubelet.nodeIP has {} addresses: the kubelet takes at most two (one IPv4, one IPv6)",
                ips.len()
            ),
            hint(),
        )),
    }
}

/// Validates a label the kubelet will put on its Node (`--node-labels`).
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns_ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !dns_ok {
            return Err(format!(
                "label prefix `{}` is not a DNS subdomain",
                shown(p)
            ));
        }
        // The kubelet refuses to set labels of these namespaces on itself, but for
        // its own and node.kubernetes.io (NodeRestriction).
        let k8s = |d: &str| p == d || p.ends_with(&format!(".{d}"));
        let own = |d: &str| p == d || p.ends_with(&format!(".{d}"));
        if (k8s("kubernetes.io") || k8s("k8s.io"))
            && !own("kubelet.kubernetes.io")
            && !own("node.kubernetes.io")
        {
            return Err(format!(
                "the kubelet may not set `{}` on its node: labels under kubernetes.io and k8s.io are reserved but for kubelet.kubernetes.io/ and node.kubernetes.io/",
                shown(key)
            ));
        }
    }
    if !name_ok(name) {
        return Err(format!("`{}` is not a label key", shown(key)));
    }
    if !value.is_empty() && !name_ok(value) {
        return Err(format!(
            "`{}` is not a label value (at most 63 letters, digits, '-', '_' or '.')",
            shown(value)
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_kubelet_rules() {
        assert!(check_label("node.kubernetes.io/pool", "edge").is_ok());
        assert!(check_label("example.com/tier", "").is_ok());
        assert!(check_label("node-role.kubernetes.io/worker", "")
            .unwrap_err()
            .contains("may not set"));
        assert!(check_label("pool", "a b").is_err());
    }

    #[test]
    fn config_keys_are_checked() {
        assert!(check_config_key("maxPods").is_ok());
        assert!(check_config_key("maxpods")
            .unwrap_err()
            .1
            .unwrap()
            .contains("maxPods"));
        assert!(check_config_key("staticPodPath")
            .unwrap_err()
            .0
            .contains("set by kiOS"));
        assert!(check_config_key("staticPodURL")
            .unwrap_err()
            .0
            .contains("no lint has checked"));
    }
}
