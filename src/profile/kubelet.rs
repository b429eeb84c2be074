//! The kubelet's side of a profile, checked where the profile is read: the
//! KubeletConfiguration keys `kubelet.config` may set (and the ones kiOS keeps for
//! itself), node labels and `kubelet.nodeIP` as the kubelet takes them.
//!
//! Pure checks over values, so that `profile` can refuse a bad key at its line
//! without knowing how the configuration is written (`crate::pods::kubelet`).

use std::net::IpAddr;

use crate::untrusted::shown;

/// The kubelet's static pod folder: the only source of pods on a kiOS node.
pub const STATIC_POD_PATH: &str = kios_contract::file::STATIC_PODS;
/// CRI-O's socket as the kubelet names it.
pub const CRIO_ENDPOINT: &str = "unix:///var/run/crio/crio.sock";

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
