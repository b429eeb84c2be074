//! Hostile and careless profiles (issue #12, classes 2, 3, 8 and 11, and the
//! capabilities that give a container the host): each reproduction of the issue,
//! run through the real `kios-build validate` (and `build` where the failure used
//! to come late), must be refused with exit code 2 and the profile line, and every
//! value it echoes must be escaped and short.

mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::process::Output;

use kios_build::profile::{caps, owned};

/// Line 11 is the first line of `extra` in [`profile_text`].
const EXTRA: usize = 11;

fn validate(dir: &Path, text: &str) -> Output {
    let p = write_profile(dir, "node.yaml", text);
    run(kios_build().arg("validate").arg(&p))
}

/// `validate` of `text` exits 2 and says each of `expect`.
fn refused(text: &str, expect: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let o = validate(dir.path(), text);
    let t = text_of(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for e in expect {
        assert!(t.contains(e), "expected `{e}` in:\n{t}");
    }
    t
}

/// `validate` of `text` succeeds.
fn accepted(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let o = validate(dir.path(), text);
    assert_eq!(o.status.code(), Some(0), "{}", text_of(&o));
}

fn text_of(o: &Output) -> String {
    text(o)
}

/// A daemon `x` running the busybox layout of the inputs, pre-seeded, with `more`
/// (indented fields of the daemon) and `tail` (top-level YAML) after it.
fn daemon(more: &str, tail: &str) -> String {
    profile_text(&format!(
        "{pause}daemons:\n  - name: x\n    image: oci:{b}:1\n{more}{tail}",
        pause = pause_yaml(),
        b = inputs().join("busybox").display(),
    ))
}

/// The line of `extra` (1-based) a value written on it has in the profile.
fn line(n: usize) -> String {
    format!("node.yaml:{}:", EXTRA - 1 + n)
}

// ---- class 3: files: over a path kios-build owns ----

#[test]
fn files_over_every_owned_path_its_folders_and_parents_are_refused_with_the_line() {
    let mut paths: Vec<String> = owned::OWNED
        .iter()
        .map(|o| format!("/{}", o.path))
        .collect();
    // The reproductions of the issue: generated files and whole generated folders.
    paths.extend(
        [
            "/etc/hostname",
            "/etc/kios/modules",
            "/etc/os-release",
            "/etc/containers/storage.conf",
            "/etc/kubernetes",
            "/etc/crio",
            "/etc/crio/crio.conf.d",
            "/etc/kios",
            "/etc/kubernetes/manifests/x.yaml",
        ]
        .map(String::from),
    );
    for path in paths {
        let t = refused(
            &profile_text(&format!(
                "files:\n  - {{path: {path}, content: \"x\\n\"}}\n"
            )),
            &[&line(2), "which kios-build writes", "hint: set it through"],
        );
        assert!(t.contains(&format!("files: {path} ")), "{path}: {t}");
    }
}

#[test]
fn files_beside_owned_paths_are_accepted() {
    accepted(&profile_text(
        "files:\n  - {path: /etc/kubernetes/pki/extra.crt, content: \"x\\n\"}\n  - {path: /etc/crio/crio.conf.d/20-mine.conf, content: \"x\\n\"}\n  - {path: /etc/example.conf, content: \"x\\n\"}\n",
    ));
}

// ---- class 2: the static pod folder is reached only through the lint ----

const PRIVILEGED_HOST_PID_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: evil, namespace: kube-system}\nspec:\n  hostPID: true\n  containers:\n    - name: evil\n      image: busybox:1.36\n      securityContext: {privileged: true}\n";

#[test]
fn a_privileged_host_pid_pod_given_as_files_is_refused() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("evil.yaml"), PRIVILEGED_HOST_PID_POD).unwrap();
    let t = profile_text(
        "files:\n  - {path: /etc/kubernetes/manifests/evil.yaml, source: evil.yaml}\n",
    );
    let o = validate(d.path(), &t);
    let s = text_of(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(s.contains(&line(2)), "{s}");
    assert!(s.contains("is inside /etc/kubernetes/manifests"), "{s}");
    assert!(s.contains("`daemons:` and `pods:`"), "{s}");
    // The same pod through `pods:` is refused by the lint.
    let t = profile_text(&format!("{}pods: [evil.yaml]\n", pause_yaml()));
    let o = validate(d.path(), &t);
    let s = text_of(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(s.contains("pod `evil` asks for privileged: true"), "{s}");
    assert!(s.contains("pod `evil` shares the host's PID"), "{s}");
}

#[test]
fn a_kubelet_pod_url_is_refused() {
    refused(
        &profile_text("kubelet:\n  config: {staticPodURL: \"http://127.0.0.1:1/pods\"}\n"),
        &[
            &line(2),
            "kubelet.config.staticPodURL would run pods that no lint has checked",
        ],
    );
}

/// A copy of the inputs' system tree with `add` (path, content) in it.
fn system_with(dir: &Path, add: &[(&str, &str)]) -> std::path::PathBuf {
    let sys = dir.join("system");
    fs::create_dir_all(sys.join("bin")).unwrap();
    fs::copy(inputs().join("system/bin/busybox"), sys.join("bin/busybox")).unwrap();
    for (path, content) in add {
        let p = sys.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    sys
}

fn profile_with_system(sys: &Path) -> String {
    profile_text("").replace(
        &format!("path: {}\n", inputs().join("system").display()),
        &format!("path: {}\n", sys.display()),
    )
}

#[test]
fn a_system_tree_with_a_static_pod_or_an_owned_file_is_refused_by_validate_and_build() {
    for (path, says) in [
        (
            "etc/kubernetes/manifests/evil.yaml",
            "/etc/kubernetes/manifests/evil.yaml is inside /etc/kubernetes/manifests",
        ),
        ("etc/hostname", "/etc/hostname is /etc/hostname"),
        (
            "etc/kubernetes/config.yaml",
            "/etc/kubernetes/config.yaml is /etc/kubernetes/config.yaml",
        ),
    ] {
        let d = tempfile::tempdir().unwrap();
        let sys = system_with(d.path(), &[(path, PRIVILEGED_HOST_PID_POD)]);
        let p = write_profile(d.path(), "node.yaml", &profile_with_system(&sys));
        let o = run(kios_build().arg("validate").arg(&p));
        let s = text_of(&o);
        assert_eq!(o.status.code(), Some(2), "{s}");
        assert!(s.contains("node.yaml:10:"), "the `system:` line: {s}");
        assert!(s.contains(&format!("the system tree's {says}")), "{s}");
        assert!(s.contains("remove it from the system tree"), "{s}");
        let img = d.path().join("out.img");
        let o = run(&mut common::build_command(&p, &img));
        assert_eq!(o.status.code(), Some(2), "{}", text_of(&o));
        assert!(!img.exists());
    }
    // A symlink over a generated folder would send the generated files elsewhere.
    let d = tempfile::tempdir().unwrap();
    let sys = system_with(d.path(), &[]);
    fs::create_dir_all(sys.join("etc")).unwrap();
    std::os::unix::fs::symlink("/var/lib/kios/x", sys.join("etc/kubernetes")).unwrap();
    let p = write_profile(d.path(), "node.yaml", &profile_with_system(&sys));
    let o = run(kios_build().arg("validate").arg(&p));
    let s = text_of(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(s.contains("/etc/kubernetes is not a folder"), "{s}");
    // Folders above owned paths, and files beside them, are fine.
    let d = tempfile::tempdir().unwrap();
    let sys = system_with(
        d.path(),
        &[
            ("etc/crio/crio.conf", "x"),
            ("etc/kubernetes/pki/other.crt", "x"),
        ],
    );
    fs::create_dir_all(sys.join("etc/kubernetes/manifests")).unwrap();
    let p = write_profile(d.path(), "node.yaml", &profile_with_system(&sys));
    let o = run(kios_build().arg("validate").arg(&p));
    assert_eq!(o.status.code(), Some(0), "{}", text_of(&o));
}

// ---- capabilities and devices that give a container the host ----

#[test]
fn each_host_capability_needs_an_allow_entry() {
    for (cap, _) in caps::HOST {
        let t = refused(
            &daemon(&format!("    capabilities: [NET_RAW, {cap}]\n"), ""),
            &[
                &format!("pod `x` asks for {cap}"),
                "gives the container the host",
            ],
        );
        // The capability's own line: the `capabilities:` line of the daemon.
        assert!(
            t.contains(&format!("node.yaml:{}:", EXTRA + 5)),
            "{cap}: {t}"
        );
        let allow = if *cap == "SYS_ADMIN" {
            "allow: {sysAdmin: [x]}\n".to_string()
        } else {
            format!("allow:\n  capabilities: {{{cap}: [x]}}\n")
        };
        accepted(&daemon(
            &format!("    capabilities: [NET_RAW, {cap}]\n"),
            &allow,
        ));
        // Allowing it to another pod does not allow it to this one.
        refused(
            &daemon(
                &format!("    capabilities: [{cap}]\n"),
                &format!("allow:\n  capabilities: {{{cap}: [y]}}\n"),
            ),
            &[&format!("pod `x` asks for {cap}")],
        );
    }
    // Capabilities that do not give the host need no entry, and cannot have one.
    accepted(&daemon(
        "    capabilities: [NET_ADMIN, NET_RAW, SYS_TIME]\n",
        "",
    ));
    refused(
        &daemon("", "allow:\n  capabilities: {NET_ADMIN: [x]}\n"),
        &["allow.capabilities: `NET_ADMIN` needs no `allow` entry"],
    );
}

#[test]
fn host_memory_devices_need_an_allow_entry_however_they_are_asked_for() {
    for dev in caps::HOST_DEVICES {
        let t = refused(
            &daemon(&format!("    devices: [{dev}]\n"), ""),
            &[&format!("pod `x` asks for the host device {dev}")],
        );
        assert!(
            t.contains(&format!("node.yaml:{}:", EXTRA + 5)),
            "{dev}: {t}"
        );
        accepted(&daemon(
            &format!("    devices: [{dev}]\n"),
            &format!("allow:\n  devices: {{{dev}: [x]}}\n"),
        ));
        // As a host path, spelled loosely.
        let loose = dev.replace("/dev/", "/dev//./");
        refused(
            &daemon(&format!("    hostPaths: [{{path: \"{loose}\"}}]\n"), ""),
            &[&format!("pod `x` asks for the host device {dev}")],
        );
    }
    // In a `pods:` file: a hostPath volume, or CRI-O's device annotation.
    let d = tempfile::tempdir().unwrap();
    let pod = |extra_meta: &str, volumes: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n{extra_meta}spec:\n  containers:\n    - name: p\n      image: busybox:1.36\n{volumes}"
        )
    };
    let images = format!(
        "{}pods: [p.yaml]\nimages: [oci:{}:1]\n",
        pause_yaml(),
        inputs().join("busybox").display()
    );
    for (meta, vols) in [
        (
            "  annotations: {io.kubernetes.cri-o.Devices: \"/dev/port:/dev/port:rw\"}\n",
            "",
        ),
        ("", "  volumes: [{name: m, hostPath: {path: /dev/kmem}}]\n"),
    ] {
        fs::write(d.path().join("p.yaml"), pod(meta, vols)).unwrap();
        let o = validate(d.path(), &profile_text(&images));
        let s = text_of(&o);
        assert_eq!(o.status.code(), Some(2), "{s}");
        assert!(s.contains("pod `p` asks for the host device /dev/"), "{s}");
    }
}

// ---- class 8: what validate used to pass and build rejected late ----

#[test]
fn disk_sizes_too_small_unaligned_or_absurd_are_refused_by_validate() {
    for (size, says) in [
        ("1", "is not a whole number of MiB"),
        ("0", "is too small"),
        ("100MiB", "is too small"),
        ("129MiB", "is too small"),
        ("1537KiB", "is not a whole number of MiB"),
        ("5TiB", "is larger than the 4TiB an image may be"),
        ("18446744073709551615", "is not a whole number of MiB"),
        ("16383PiB", "unknown unit"),
    ] {
        refused(
            &profile_text(&format!("disk:\n  size: {size}\n")),
            &[&line(2), says],
        );
    }
    accepted(&profile_text("disk:\n  size: 130MiB\n"));
}

#[test]
fn nul_and_control_bytes_in_names_and_arguments_are_refused_by_validate() {
    // The qemu base's modules come first: the profile's are appended.
    let t = profile_text("").replace("kernel:\n", "kernel:\n  modules: [\"virtio\\0blk\"]\n");
    refused(&t, &["node.yaml:6:", "is not a kernel module name"]);
    let t = profile_text("").replace(
        "kernel:\n",
        "kernel:\n  cmdline: [\"quiet\\0init=/bin/sh\"]\n",
    );
    refused(&t, &["node.yaml:6:", "without control characters"]);
    let t = profile_text("").replace("kernel:\n", "kernel:\n  cmdline: [\"a\\tb\"]\n");
    refused(&t, &["node.yaml:6:", "without control characters"]);
    refused(
        &profile_text("files:\n  - {path: \"/etc/a\\0b\", content: x}\n"),
        &[&line(2), "holds a control character"],
    );
    refused(
        &daemon("    args: [\"-c\", \"a\\0b\"]\n", ""),
        &[&format!("node.yaml:{}:", EXTRA + 5), "holds a NUL byte"],
    );
    refused(
        &daemon("    env: {LEVEL: \"a\\0b\"}\n", ""),
        &[&format!("node.yaml:{}:", EXTRA + 5), "holds a NUL byte"],
    );
    refused(
        &profile_text("hostname: \"a\\0b\"\n").replace("hostname: test-node\n", ""),
        &["node.yaml:", "is not a valid hostname"],
    );
}

#[test]
fn an_over_long_kernel_command_line_is_refused_by_validate() {
    // 2048 bytes with the NUL (COMMAND_LINE_SIZE, x86 and arm64): the base's
    // arguments plus this one pass it.
    let long = format!("x={}", "a".repeat(2040));
    let t = profile_text("").replace("kernel:\n", &format!("kernel:\n  cmdline: [{long}]\n"));
    refused(
        &t,
        &[
            "node.yaml:6:",
            "COMMAND_LINE_SIZE",
            "the kernel keeps at most 2047",
        ],
    );
    let t = profile_text("").replace("kernel:\n", "kernel:\n  cmdline: [quiet]\n");
    accepted(&t);
}

#[test]
fn environment_names_with_equals_or_nul_are_refused_by_validate() {
    for name in ["\"A=B\"", "\"A\\0B\"", "\"\"", "\"A\\nB\""] {
        refused(
            &daemon(&format!("    env: {{{name}: v}}\n"), ""),
            &[
                &format!("node.yaml:{}:", EXTRA + 5),
                "is not an environment variable name",
            ],
        );
    }
    accepted(&daemon("    env: {LOG_LEVEL: debug, my.var: x}\n", ""));
}

#[test]
fn more_node_ips_than_the_kubelet_takes_are_refused_by_validate() {
    for (ips, says) in [
        ("10.0.0.1,fd00::1,10.0.0.2", "has 3 addresses"),
        ("10.0.0.1,10.0.0.2", "two addresses of the same family"),
        ("fd00::1,fd00::2", "two addresses of the same family"),
        ("10.0.0.300", "is not an IP address"),
    ] {
        refused(
            &profile_text(&format!("kubelet:\n  nodeIP: \"{ips}\"\n")),
            &[&line(2), says],
        );
    }
    accepted(&profile_text("kubelet:\n  nodeIP: \"10.0.0.5,fd00::5\"\n"));
}

// ---- class 11: what a profile says is echoed escaped and short ----

/// stderr of `o`, which must hold no byte a terminal acts on but the line breaks.
fn safe_stderr(o: &Output) -> String {
    for &b in &o.stderr {
        assert!(
            b == b'\n' || !(b < 0x20 || b == 0x7f),
            "raw control byte {b:#x} in stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn escape_sequences_in_values_are_shown_escaped_and_cannot_forge_a_line() {
    let cases = [
        // hostname, module, daemon name, capability, file path, label, node IP
        profile_text("").replace("hostname: test-node", "hostname: \"\\e[2J\\e]0;owned\\a\""),
        profile_text("").replace("kernel:\n", "kernel:\n  modules: [\"\\e[31mred\"]\n"),
        profile_text("daemons:\n  - {name: \"x\\e[2J\", image: busybox:1}\n"),
        daemon("    capabilities: [\"NET_\\e[2J\"]\n", ""),
        profile_text("files:\n  - {path: \"/etc/kubernetes/manifests/\\e[2Jx\", content: x}\n"),
        profile_text("kubelet:\n  labels: {\"a\\e[2J\": b}\n"),
        profile_text("kubelet:\n  nodeIP: \"1.2.3.4\\nerror: forged line\"\n"),
        profile_text("").replace(
            "hostname: test-node",
            "hostname: \"x\\nerror: forged line\"",
        ),
    ];
    for t in cases {
        let d = tempfile::tempdir().unwrap();
        let o = validate(d.path(), &t);
        assert_eq!(o.status.code(), Some(2), "{}", text_of(&o));
        let s = safe_stderr(&o);
        assert!(s.contains("\\u{1b}") || s.contains("\\n"), "{s}");
        assert!(
            !s.lines().any(|l| l.starts_with("error: forged")),
            "a value forged a line: {s}"
        );
    }
}

#[test]
fn a_huge_bad_value_is_echoed_short() {
    // Within the bound of a profile file: the value is cut where it is shown.
    let big = "a".repeat(900_000);
    let d = tempfile::tempdir().unwrap();
    let o = validate(
        d.path(),
        &profile_text("").replace("hostname: test-node", &format!("hostname: \"{big}\\e\"")),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text_of(&o));
    let s = safe_stderr(&o);
    assert!(s.len() < 4000, "{} bytes of error: {}", s.len(), &s[..300]);
    assert!(s.contains("is not a valid hostname"), "{s}");
    assert!(s.contains("bytes in all)"), "{s}");
    // 50 MB: refused whole or cut, never echoed.
    let big = "\u{1b}".repeat(50_000_000);
    let o = validate(
        d.path(),
        &profile_text("").replace("hostname: test-node", &format!("hostname: \"{big}\"")),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text_of(&o));
    let s = safe_stderr(&o);
    assert!(s.len() < 4000, "{} bytes of error", s.len());
}

// ---- pods: and files: sources are read bounded ----

#[test]
fn oversized_pod_and_file_sources_are_refused_not_read_whole() {
    let d = tempfile::tempdir().unwrap();
    // A pod file larger than any Pod the API server stores (1.5 MiB).
    let mut pod = PRIVILEGED_HOST_PID_POD.to_string();
    pod.push_str(&format!("# {}\n", "x".repeat(2 << 20)));
    fs::write(d.path().join("big.yaml"), pod).unwrap();
    let o = validate(
        d.path(),
        &profile_text(&format!("{}pods: [big.yaml]\n", pause_yaml())),
    );
    let s = text_of(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(
        s.contains("node.yaml:13:") && s.contains("larger than"),
        "{s}"
    );
    // A files: source past 16 MiB, under a memory limit that reading it whole
    // twice would break.
    let f = fs::File::create(d.path().join("big.bin")).unwrap();
    f.set_len(3 << 30).unwrap();
    let p = write_profile(
        d.path(),
        "node.yaml",
        &profile_text("files:\n  - {path: /etc/big.bin, source: big.bin}\n"),
    );
    let o = run(std::process::Command::new("prlimit")
        .arg("--as=2000000000")
        .arg(env!("CARGO_BIN_EXE_kios-build"))
        .arg("validate")
        .arg(&p)
        .env("KIOS_INIT", init_binary()));
    let s = text_of(&o);
    assert_eq!(o.status.code(), Some(2), "{s}");
    assert!(
        s.contains("node.yaml:12:") && s.contains("larger than"),
        "{s}"
    );
}
