//! Static pods and the kubelet configuration: golden manifests of the base profiles,
//! every generated file checked by kubernetes-validate (PyPI) for the profile's
//! Kubernetes version, each lint rule with a profile that breaks it, secrets that
//! never show, a property test on capabilities, and the real consumer: podman kube
//! play runs each generated pod and the container's CapEff is exactly what it declared.
//!
//! Goldens: `UPDATE_GOLDEN=1 cargo test --test pods` rewrites tests/golden/.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kios_build::pods::{self, MapResolver, PinnedImage};
use kios_build::profile;
use kios_build::profile::caps;
use proptest::prelude::*;

/// A loadable profile: a fake kernel folder and stub (the pods stage never opens
/// them), then `extra`.
fn profile_in(dir: &Path, extra: &str) -> PathBuf {
    fs::create_dir_all(dir.join("k")).unwrap();
    fs::write(dir.join("stub.efi"), b"x").unwrap();
    let p = dir.join("node.yaml");
    fs::write(
        &p,
        format!(
            "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nkernel: {{path: k}}\nboot: {{stub: {{path: stub.efi}}}}\ndisk: {{size: 1GiB}}\n{extra}"
        ),
    )
    .unwrap();
    p
}

fn digest_of(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Pins `example.com/*` references to made-up digests; knows nothing else.
fn fake_resolver(refs: &[&str]) -> MapResolver {
    let mut m = BTreeMap::new();
    for r in refs {
        let repo = r.rsplit_once(':').map(|(a, _)| a).unwrap_or(r);
        m.insert(
            r.to_string(),
            PinnedImage {
                reference_with_digest: format!("{repo}@sha256:{}", digest_of(r)),
                name: r.to_string(),
                index: None,
            },
        );
    }
    MapResolver(m)
}

const BASE_IMAGES: &str = "daemons:\n  - {name: dhcp, image: example.com/kios/dhcp:1}\n  - {name: ntp, image: example.com/kios/ntp:1}\n  - {name: resize, image: example.com/kios/resize:1}\n";
const IMAGES: [&str; 3] = [
    "example.com/kios/dhcp:1",
    "example.com/kios/ntp:1",
    "example.com/kios/resize:1",
];

fn generate(dir: &Path, extra: &str, images: &[&str]) -> Result<pods::Generated, String> {
    let p = profile_in(dir, extra);
    let prof = profile::load(&p).map_err(|e| e.to_string())?;
    pods::generate(&prof.node, &fake_resolver(images)).map_err(|e| e.to_string())
}

fn file<'a>(g: &'a pods::Generated, path: &str) -> &'a pods::GeneratedFile {
    g.files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} not generated: {:?}", g.files))
}

fn golden_dir() -> PathBuf {
    common::repo().join("tests/golden")
}

#[test]
fn base_profiles_generate_the_golden_manifests() {
    for base in ["qemu", "metal"] {
        let d = tempfile::tempdir().unwrap();
        let g = generate(
            d.path(),
            &format!("base: {base}\nkubernetes: {{version: \"1.34\"}}\n{BASE_IMAGES}"),
            &IMAGES,
        )
        .unwrap_or_else(|e| panic!("{base}: {e}"));
        let dir = golden_dir().join(base);
        let mut names = Vec::new();
        for f in &g.files {
            let name = f.path.replace('/', "__");
            names.push(name.clone());
            let golden = dir.join(&name);
            let got = String::from_utf8(f.content.clone()).unwrap();
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                fs::create_dir_all(&dir).unwrap();
                fs::write(&golden, &got).unwrap();
            }
            let want = fs::read_to_string(&golden).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}: run UPDATE_GOLDEN=1 cargo test --test pods",
                    golden.display()
                )
            });
            assert_eq!(got, want, "{base}: {} differs from its golden", f.path);
        }
        let mut on_disk: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        names.sort();
        assert_eq!(
            on_disk, names,
            "{base}: golden files without a generated file"
        );
    }
}

#[test]
fn base_daemons_without_an_image_are_not_run() {
    let d = tempfile::tempdir().unwrap();
    let g = generate(
        d.path(),
        "base: qemu\ndaemons: [{name: dhcp, image: example.com/kios/dhcp:1}]\n",
        &IMAGES,
    )
    .unwrap();
    let names: Vec<&str> = g.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["dhcp"]);
    assert_eq!(g.skipped, ["ntp", "resize"]);
    // A daemon the profile itself declares must have an image.
    let e = generate(d.path(), "daemons: [{name: mine, args: [x]}]\n", &IMAGES).unwrap_err();
    assert!(
        e.contains("node.yaml:6:18: daemon `mine` has no image"),
        "{e}"
    );
}

#[test]
fn generated_manifests_follow_least_privilege() {
    let d = tempfile::tempdir().unwrap();
    let g = generate(d.path(), &format!("base: qemu\n{BASE_IMAGES}"), &IMAGES).unwrap();
    for p in &g.pods {
        let f = file(&g, &format!("etc/kubernetes/manifests/{}.yaml", p.name));
        let v: serde_json::Value =
            serde_saphyr::from_str(std::str::from_utf8(&f.content).unwrap()).unwrap();
        let spec = &v["spec"];
        let c = &spec["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(spec["hostPID"], false);
        assert_eq!(spec["hostIPC"], false);
        assert_eq!(spec["priorityClassName"], "system-node-critical");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert!(c["image"].as_str().unwrap().contains("@sha256:"), "{c}");
        let restart = if p.oneshot { "OnFailure" } else { "Always" };
        assert_eq!(spec["restartPolicy"], restart, "{}", p.name);
    }
}

/// `kubernetes-validate` (PyPI), or a failure naming what to install.
fn kubernetes_validate() -> Command {
    let ok = Command::new("kubernetes-validate")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`kubernetes-validate` is required by this test: pip install kubernetes-validate (scripts/install-deps does)"
    );
    Command::new("kubernetes-validate")
}

#[test]
fn every_manifest_passes_kubernetes_validate_for_each_supported_version() {
    let d = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for minor in kios_build::profile::spec::SUPPORTED_MINORS {
        let g = generate(
            d.path(),
            &format!("base: metal\nkubernetes: {{version: \"1.{minor}\"}}\n{BASE_IMAGES}"),
            &IMAGES,
        )
        .unwrap();
        let mut files = Vec::new();
        for f in g.files.iter().filter(|f| f.path.contains("/manifests/")) {
            let p = out
                .path()
                .join(format!("{minor}-{}", f.path.replace('/', "_")));
            fs::write(&p, &f.content).unwrap();
            files.push(p);
        }
        assert_eq!(files.len(), 3);
        let o = kubernetes_validate()
            .args(["--strict", "--kubernetes-version", &format!("1.{minor}.0")])
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "1.{minor}: {text}");
        assert!(!text.contains("WARN"), "1.{minor}: {text}");
    }
}

#[test]
fn kubelet_configuration_is_merged_typed_and_has_no_schema_in_kubernetes_validate() {
    let d = tempfile::tempdir().unwrap();
    let g = generate(
        d.path(),
        "kubelet:\n  config: {maxPods: 58, evictionHard: {memory.available: 200Mi}, authentication: {anonymous: {enabled: false}}}\n  labels: {node.kubernetes.io/pool: edge}\n  nodeIP: 10.0.0.5\n",
        &[],
    )
    .unwrap();
    for path in [pods::kubelet::CONFIG, pods::kubelet::CONFIG_STANDALONE] {
        let text = String::from_utf8(file(&g, path).content.clone()).unwrap();
        let typed: pods::kubelet::KubeletConfiguration = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(typed.max_pods, Some(58));
        assert_eq!(typed.static_pod_path, "/etc/kubernetes/manifests");
        assert_eq!(
            typed.container_runtime_endpoint,
            "unix:///var/run/crio/crio.sock"
        );
        assert_eq!(typed.rest["evictionHard"]["memory.available"], "200Mi");
        assert_eq!(typed.shutdown_grace_period, "30s");
        let standalone = path == pods::kubelet::CONFIG_STANDALONE;
        assert_eq!(typed.authentication.webhook.enabled, !standalone);
        assert_eq!(
            typed.authorization.mode,
            if standalone { "AlwaysAllow" } else { "Webhook" }
        );
    }
    // kubernetes-validate knows no kubelet.config.k8s.io schema: the typed
    // round-trip above is the check. Prove the tool still says so.
    let p = d.path().join("kubelet.yaml");
    fs::write(&p, &file(&g, pods::kubelet::CONFIG).content).unwrap();
    let o = kubernetes_validate()
        .args(["--kubernetes-version", "1.33.0"])
        .arg(&p)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        t.to_lowercase().contains("kubeletconfiguration") || t.contains("schema"),
        "{t}"
    );
    assert_eq!(
        file(&g, pods::kubelet::NODE_LABELS).content,
        b"node.kubernetes.io/pool=edge\n"
    );
    assert_eq!(file(&g, pods::kubelet::NODE_IP).content, b"10.0.0.5\n");
}

#[test]
fn kubelet_config_errors_name_the_profile_line() {
    let d = tempfile::tempdir().unwrap();
    let e = generate(d.path(), "kubelet:\n  config: {maxPodz: 5}\n", &[]).unwrap_err();
    assert!(
        e.contains("node.yaml:7:12: `maxPodz` is not a KubeletConfiguration"),
        "{e}"
    );
    assert!(e.contains("did you mean `maxPods`"), "{e}");
    let e = generate(
        d.path(),
        "kubelet:\n  config:\n    staticPodPath: /x\n",
        &[],
    )
    .unwrap_err();
    assert!(
        e.contains("node.yaml:8:5: kubelet.config.staticPodPath is set by kiOS"),
        "{e}"
    );
    let e = generate(d.path(), "kubelet:\n  config:\n    maxPods: many\n", &[]).unwrap_err();
    assert!(
        e.contains("node.yaml:8:5: kubelet.config.maxPods has the wrong type"),
        "{e}"
    );
    let e = generate(d.path(), "kubernetes: {version: \"1.29\"}\n", &[]).unwrap_err();
    assert!(
        e.contains("node.yaml:6:23: Kubernetes 1.29 is not supported"),
        "{e}"
    );
}

// ---- lint: one profile per rule, and its message ----

fn lint_err(extra: &str, images: &[&str]) -> String {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("pods")).unwrap();
    fs::write(
        d.path().join("pods/relay.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: relay}\nspec:\n  containers:\n  - name: relay\n    image: example.com/relay:1\n    securityContext: {privileged: true}\n",
    )
    .unwrap();
    generate(d.path(), extra, images).unwrap_err()
}

const D: &str = "daemons:\n  - name: x\n    image: example.com/x:1\n";

#[test]
fn lint_privileged_is_an_error_unless_allowed_then_a_warning() {
    let e = lint_err(&format!("{D}    privileged: true\n"), &["example.com/x:1"]);
    assert!(
        e.contains("node.yaml:9:17: error: pod `x` asks for privileged: true"),
        "{e}"
    );
    assert!(e.contains("allow: {privileged: [x]}"), "{e}");
    let d = tempfile::tempdir().unwrap();
    let g = generate(
        d.path(),
        &format!("{D}    privileged: true\nallow: {{privileged: [x]}}\n"),
        &["example.com/x:1"],
    )
    .unwrap();
    let w = g
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        w.contains(
            "node.yaml:9:17: warning: pod `x` runs privileged (allowed by allow.privileged at"
        ),
        "{w}"
    );
    // A pods: file is held to the same rule.
    let e = lint_err("pods: [pods/relay.yaml]\n", &["example.com/relay:1"]);
    assert!(
        e.contains("node.yaml:6:8: error: pod `relay` asks for privileged: true"),
        "{e}"
    );
}

#[test]
fn lint_sys_admin_is_an_error_unless_allowed() {
    let e = lint_err(
        &format!("{D}    capabilities: [NET_RAW, SYS_ADMIN]\n"),
        &["example.com/x:1"],
    );
    assert!(
        e.contains("node.yaml:9:29: error: pod `x` asks for SYS_ADMIN"),
        "{e}"
    );
    let d = tempfile::tempdir().unwrap();
    let g = generate(
        d.path(),
        &format!("{D}    capabilities: [SYS_ADMIN]\nallow: {{sysAdmin: [x]}}\n"),
        &["example.com/x:1"],
    )
    .unwrap();
    assert!(g.warnings[0]
        .to_string()
        .contains("warning: pod `x` gets SYS_ADMIN"));
}

#[test]
fn lint_duplicate_pod_names() {
    let e = lint_err(
        &format!("{D}  - name: x\n    image: example.com/x:1\n"),
        &["example.com/x:1"],
    );
    assert!(
        e.contains("node.yaml:9:11: duplicate pod name `x`: already used at"),
        "{e}"
    );
    let e = lint_err(
        "daemons: [{name: relay, image: example.com/x:1}]\npods: [pods/relay.yaml]\nallow: {privileged: [relay]}\n",
        &["example.com/x:1", "example.com/relay:1"],
    );
    assert!(
        e.contains("node.yaml:7:8: error: duplicate pod name `relay`: already used at"),
        "{e}"
    );
}

#[test]
fn lint_image_not_pre_seeded() {
    let e = lint_err(D, &[]);
    assert!(
        e.contains("node.yaml:8:12: error: image example.com/x:1 of pod `x` is not pre-seeded"),
        "{e}"
    );
    let e = lint_err(
        "pods: [pods/relay.yaml]\nallow: {privileged: [relay]}\n",
        &[],
    );
    assert!(
        e.contains("error: image example.com/relay:1 of pod `relay` is not pre-seeded"),
        "{e}"
    );
}

#[test]
fn lint_host_path_outside_the_allowed_list() {
    let extra = format!("{D}    hostPaths: [{{path: /root/.ssh}}]\n");
    let e = lint_err(&extra, &["example.com/x:1"]);
    assert!(e.contains("node.yaml:9:24: error: host path /root/.ssh of pod `x` is outside the allowed host paths"), "{e}");
    let d = tempfile::tempdir().unwrap();
    generate(
        d.path(),
        &format!("{extra}allow: {{hostPaths: [/root/.ssh]}}\n"),
        &["example.com/x:1"],
    )
    .unwrap();
    let e = lint_err(
        &format!("{D}    devices: [/etc/../root/disk]\n"),
        &["example.com/x:1"],
    );
    assert!(e.contains("outside the allowed host paths"), "{e}");
}

#[test]
fn lint_capability_that_does_not_exist() {
    let e = lint_err(
        &format!("{D}    capabilities: [NET_ADMN]\n"),
        &["example.com/x:1"],
    );
    assert!(
        e.contains("node.yaml:9:20: error: `NET_ADMN` is not a Linux capability"),
        "{e}"
    );
    assert!(e.contains("did you mean NET_ADMIN?"), "{e}");
}

// ---- secrets ----

const SECRET: &str = "token-Zq8xW3vN9kLm2Pq7Rt5s";

fn secret_profile(dir: &Path, extra: &str) -> PathBuf {
    fs::write(
        dir.join("kubelet.conf"),
        format!("apiVersion: v1\nkind: Config\nusers: [{{name: n, user: {{token: {SECRET}}}}}]\n"),
    )
    .unwrap();
    fs::write(dir.join("cred.yaml"), format!("# {SECRET}\n")).unwrap();
    let text = format!(
        "{}kubelet:\n  kubeconfig: {{file: kubelet.conf}}\n  credentialProvider: {{file: cred.yaml}}\n{extra}",
        common::profile_text("")
    );
    common::write_profile(dir, "node.yaml", &text)
}

#[test]
fn secrets_are_written_0600_and_never_shown() {
    let d = tempfile::tempdir().unwrap();
    let p = secret_profile(d.path(), "");
    let prof = profile::load(&p).unwrap();
    let g = pods::generate(&prof.node, &MapResolver::default()).unwrap();
    let kc = file(&g, pods::kubelet::KUBECONFIG);
    assert_eq!(kc.mode, 0o600);
    assert!(kc.secret);
    assert!(String::from_utf8_lossy(&kc.content).contains(SECRET));
    assert_eq!(file(&g, pods::kubelet::CREDENTIAL_PROVIDER).mode, 0o600);
    assert!(!format!("{g:?}").contains(SECRET), "Debug shows a secret");

    // validate, a failing build (the error is about something else), a good build
    // and inspect: the secret appears in none of their output.
    let mut seen = String::new();
    let o = common::run(common::kios_build().arg("validate").arg(&p));
    assert!(o.status.success(), "{}", common::text(&o));
    seen += &common::text(&o);
    let bad = secret_profile(d.path(), "kubelet:\n  config: {maxPods: [1]}\n");
    let o = common::run(common::kios_build().arg("validate").arg(&bad));
    assert!(!o.status.success());
    seen += &common::text(&o);
    // The good build also runs the base's dhcp daemon from a local layout, so that
    // inspect has a static pod to list.
    let layout = busybox_layout(d.path());
    let p = secret_profile(
        d.path(),
        &format!(
            "daemons: [{{name: dhcp, image: \"oci:{}:busybox\"}}]\n{}",
            layout.display(),
            common::pause_yaml()
        ),
    );
    let img = d.path().join("node.img");
    let o = common::run(&mut common::build_command(&p, &img));
    assert!(o.status.success(), "{}", common::text(&o));
    seen += &common::text(&o);
    for json in [true, false] {
        let mut c = common::kios_build();
        c.arg("inspect").arg(&img);
        if json {
            c.arg("--json");
        }
        let o = common::run(&mut c);
        assert!(o.status.success(), "{}", common::text(&o));
        seen += &common::text(&o);
    }
    assert!(seen.contains("/etc/kubernetes/kubelet.conf"), "{seen}");
    assert!(!seen.contains(SECRET), "the secret was shown:\n{seen}");
    let v = common::inspect(&img);
    let etc = v["initramfs"]["etc"].as_array().unwrap();
    let kc = etc
        .iter()
        .find(|e| e["path"] == "/etc/kubernetes/kubelet.conf")
        .unwrap();
    assert_eq!(kc["mode"], "0600");
    assert!(kc["content"].is_null());
    let pods = v["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0]["name"], "dhcp");
    assert_eq!(
        pods[0]["capabilities"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(pods[0]["host_network"], true);
    assert!(pods[0]["images"][0]
        .as_str()
        .unwrap()
        .starts_with("localhost/kios/layout@sha256:"));
    assert!(seen.contains("static pods"), "{seen}");
}

// ---- property: no container gets a capability it did not declare ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn no_container_gets_an_undeclared_capability(
        picks in proptest::collection::vec(0usize..caps::CAPABILITIES.len(), 0..8),
        host_network in any::<bool>(),
        oneshot in any::<bool>(),
        privileged in any::<bool>(),
    ) {
        let declared: Vec<String> = picks.iter().map(|i| caps::CAPABILITIES[*i].to_string()).collect();
        let d = tempfile::tempdir().unwrap();
        let caps_yaml = declared.join(", ");
        let mut extra = format!(
            "daemons:\n  - name: p\n    image: example.com/p:1\n    capabilities: [{caps_yaml}]\n    hostNetwork: {host_network}\n    oneshot: {oneshot}\n    privileged: {privileged}\nallow: {{privileged: [p], sysAdmin: [p], capabilities: {{{host}}}}}\n",
            // The capabilities that give the host need their allow entry.
            host = caps::HOST.iter().map(|(c, _)| format!("{c}: [p]")).collect::<Vec<_>>().join(", ")
        );
        if declared.is_empty() {
            extra = extra.replace("    capabilities: []\n", "");
        }
        let g = generate(d.path(), &extra, &["example.com/p:1"]).unwrap();
        let f = file(&g, "etc/kubernetes/manifests/p.yaml");
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_saphyr::from_str(std::str::from_utf8(&f.content).unwrap()).unwrap();
        for c in pod.spec.unwrap().containers {
            let sc = c.security_context.unwrap();
            let c = sc.capabilities.unwrap();
            prop_assert_eq!(c.drop.unwrap(), vec!["ALL".to_string()]);
            for a in c.add.unwrap_or_default() {
                prop_assert!(declared.contains(&a), "{} was not declared", a);
            }
            prop_assert_eq!(sc.privileged.unwrap_or(false), privileged);
        }
    }
}

// ---- the real consumer: podman kube play ----

/// An OCI layout `DIR/layout:busybox` whose one layer holds the static busybox of
/// the offline inputs as /bin/busybox.
fn busybox_layout(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(
        common::inputs().join("system/bin/busybox"),
        root.join("bin/busybox"),
    )
    .unwrap();
    let layout = dir.join("layout");
    common::oci_layout(&layout, "busybox", &[&root]);
    layout
}

#[test]
fn podman_runs_each_generated_pod_from_the_pre_seeded_store_with_exactly_its_capabilities() {
    let d = tempfile::tempdir().unwrap();
    let layout = busybox_layout(d.path());
    let work = d.path().join("hostdir");
    fs::create_dir_all(&work).unwrap();
    let show = "[/bin/busybox, sh, -c, 'grep CapEff /proc/self/status; touch /probe 2>/dev/null && echo rootfs-writable; sleep 300']";
    let extra = format!(
        "daemons:
  - name: netcfg
    image: oci:{l}:busybox
    command: {show}
    capabilities: [NET_ADMIN, NET_RAW]
    hostNetwork: true
    oneshot: true
  - name: clock
    image: oci:{l}:busybox
    command: {show}
    capabilities: [SYS_TIME]
    hostNetwork: true
  - name: nothing
    image: oci:{l}:busybox
    command: {show}
    hostPaths: [{{path: {w}, readOnly: false}}]
  - name: several
    image: oci:{l}:busybox
    command: {show}
    capabilities: [CHOWN, KILL, SETUID, NET_BIND_SERVICE]
allow: {{hostPaths: [{w}]}}
",
        l = layout.display(),
        w = work.display()
    );
    // A whole build: the pods' image and the pause image go into the store
    // partition; podman reads them from it, mounted read-only, with no registry.
    let p = common::write_profile(
        d.path(),
        "node.yaml",
        &common::profile_text(&format!(
            "{extra}{}disk:\n  size: 320MiB\n",
            common::pause_yaml()
        )),
    );
    let prof = profile::load(&p).unwrap();
    // A container cannot get more than this process may give (some sandboxes drop
    // e.g. SYS_RESOURCE from the bounding set): then the test would prove nothing.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    for daemon in prof.node.daemons.iter().filter(|d| d.image.is_some()) {
        let want = caps::mask(daemon.capabilities.iter().map(|c| c.value.as_str()));
        assert_eq!(
            want & bounding,
            want,
            "{}: the test runs without some of its capabilities",
            daemon.name.value
        );
    }
    let img = d.path().join("node.img");
    common::build(&p, &img, 1_700_000_000);
    let i = common::inspect(&img);
    // The infra (pause) container as CRI-O would run it: the drop-in's image.
    let crio = common::etc_file(&i, "/etc/crio/crio.conf.d/10-kios-pause.conf");
    let pause = crio
        .lines()
        .find_map(|l| l.strip_prefix("pause_image = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no pause_image in {crio}"));
    assert_eq!(pause, "localhost/kios/pause:kios");
    let (_mounted, store) = common::mount_store(&img, d.path());
    let podman = common::Podman::new(d.path(), &store, Some(&pause));
    let (ok, t) = podman.run(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(ok && t.contains(&pause), "{t}");
    assert_eq!(i["pods"].as_array().unwrap().len(), 4, "{}", i["pods"]);
    for daemon in prof.node.daemons.iter().filter(|d| d.image.is_some()) {
        let name = &daemon.name.value;
        let text = common::etc_file(&i, &format!("/etc/kubernetes/manifests/{name}.yaml"));
        assert!(
            text.contains("image: localhost/kios/layout@sha256:"),
            "{text}"
        );
        let manifest = d.path().join(format!("{name}.yaml"));
        fs::write(&manifest, &text).unwrap();
        let mut args = vec!["kube", "play"];
        if !daemon.host_network {
            // Pods without host network get none: the default bridge would change
            // the host's iptables.
            args.push("--network=none");
        }
        let m = manifest.display().to_string();
        args.push(&m);
        let (ok, t) = podman.run(&args);
        assert!(ok, "{name}: {t}");
        // The pod's sandbox runs the pre-seeded pause image.
        let infra = podman.stdout(&["pod", "inspect", "--format", "{{.InfraContainerID}}", name]);
        let image = podman.stdout(&["inspect", "--format", "{{.ImageName}}", &infra]);
        assert_eq!(image, pause, "{name}: the infra container's image");
        let container = format!("{name}-{name}");
        let mut logs = String::new();
        for _ in 0..100 {
            let (_, t) = podman.run(&["logs", &container]);
            logs = t;
            if logs.contains("CapEff") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let (_, _) = podman.run(&["kube", "down", &m]);
        let line = logs
            .lines()
            .find(|l| l.starts_with("CapEff:"))
            .unwrap_or_else(|| panic!("{name}: no CapEff in\n{logs}"));
        let got = u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).unwrap();
        let want = caps::mask(daemon.capabilities.iter().map(|c| c.value.as_str()));
        assert_eq!(got, want, "{name}: CapEff {got:#x}, declared {want:#x}");
        assert!(
            !logs.contains("rootfs-writable"),
            "{name}: the root filesystem is writable"
        );
    }
}
