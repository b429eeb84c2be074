//! `kios-build system check` on real trees: Debian's dynamically linked conmon and
//! runc (installed with podman) with and without their libraries, a binary of another
//! architecture (the aarch64 kios-init), a kubelet that is not executable, hostile
//! trees (symlink loops, links out of the tree, a 2 GB sparse "library" whose header
//! claims huge tables); and `build` printing the findings, or refusing with
//! `--strict`.

mod common;
#[path = "common/registry.rs"]
mod fixture;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The libraries `ldd` resolves for `binary` on this host, and its interpreter: what
/// the Debian package's dependencies installed.
fn host_libraries(binary: &str) -> (Vec<(String, PathBuf)>, PathBuf) {
    let out = run_tool("ldd", "libc-bin", &[binary]);
    let text = String::from_utf8_lossy(&out);
    let mut libs = Vec::new();
    let mut interp = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [name, "=>", path, ..] if path.starts_with('/') => {
                libs.push((name.to_string(), PathBuf::from(path)))
            }
            [path, ..] if path.starts_with('/') => interp = Some(PathBuf::from(path)),
            _ => {}
        }
    }
    (libs, interp.expect("ldd names the interpreter"))
}

/// The `DT_NEEDED` entries of `binary`, as `objdump -p` prints them.
fn needed(binary: &str) -> Vec<String> {
    let out = run_tool("objdump", "binutils", &["-p", binary]);
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NEEDED"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// Copies the host file `from` (following links) to `rel` in `tree`.
fn put(tree: &Path, rel: &str, from: &Path, mode: u32) {
    let to = tree.join(rel.trim_start_matches('/'));
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, &to).unwrap();
    fs::set_permissions(&to, fs::Permissions::from_mode(mode)).unwrap();
}

fn check(tree: &str, arch: &str) -> (Option<i32>, String) {
    let o = run(kios_build().args(["system", "check", tree, "--arch", arch]));
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn debian_conmon_alone_names_each_missing_library_and_the_interpreter_then_passes_with_them() {
    require_tool("conmon", "conmon");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path();
    put(tree, "/usr/bin/conmon", Path::new("/usr/bin/conmon"), 0o755);
    let (code, out) = check(tree.to_str().unwrap(), "amd64");
    assert_eq!(code, Some(1), "{out}");
    let (libs, interp) = host_libraries("/usr/bin/conmon");
    let needed = needed("/usr/bin/conmon");
    assert!(needed.len() >= 3, "{needed:?}");
    for name in &needed {
        assert!(
            out.contains(&format!("/usr/bin/conmon: needs {name},")),
            "{name}:\n{out}"
        );
    }
    assert!(
        out.contains(&format!(
            "ELF interpreter {} is not in the tree",
            interp.display()
        )),
        "{out}"
    );

    // The libraries from the package's dependencies, where the host has them.
    for (_, path) in &libs {
        put(tree, path.to_str().unwrap(), path, 0o644);
    }
    put(tree, interp.to_str().unwrap(), &interp, 0o755);
    let (_, out) = check(tree.to_str().unwrap(), "amd64");
    assert!(!out.contains("needs "), "{out}");
    assert!(!out.contains("interpreter"), "{out}");

    // With the other programs a node runs, the tree passes: runc (dynamic, with
    // its libraries) and static stand-ins for CRI-O, pinns and the kubelet.
    require_tool("runc", "runc");
    let runc = fs::canonicalize("/usr/bin/runc").unwrap();
    put(tree, "/usr/bin/runc", &runc, 0o755);
    for (_, path) in host_libraries(runc.to_str().unwrap()).0 {
        put(tree, path.to_str().unwrap(), &path, 0o644);
    }
    put(tree, "/usr/bin/crio", &standin("crio-standin"), 0o755);
    put(tree, "/usr/bin/pinns", &standin("crio-standin"), 0o755);
    put(tree, "/usr/bin/kubelet", &standin("kubelet-standin"), 0o755);
    let (code, out) = check(tree.to_str().unwrap(), "amd64");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 errors"), "{out}");
}

#[test]
fn an_arm64_binary_a_non_executable_kubelet_and_a_missing_crio_are_each_named() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path();
    put(tree, "/usr/bin/runc", &init_binary_arm64(), 0o755);
    put(tree, "/usr/bin/kubelet", &standin("kubelet-standin"), 0o644);
    let (code, out) = check(tree.to_str().unwrap(), "amd64");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("/usr/bin/runc: built for aarch64 (64-bit), but the image is amd64"),
        "{out}"
    );
    assert!(
        out.contains("/usr/bin/kubelet: the kubelet is not executable (mode 0644)"),
        "{out}"
    );
    assert!(out.contains("/usr/bin/crio: CRI-O is missing"), "{out}");
    // The same aarch64 binary is right in an arm64 tree (where the x86_64 kubelet
    // is the one of another architecture).
    let (_, out) = check(tree.to_str().unwrap(), "arm64");
    assert!(!out.contains("/usr/bin/runc: built for"), "{out}");
    assert!(out.contains("/usr/bin/kubelet: built for x86_64"), "{out}");
}

#[test]
fn hostile_trees_are_checked_inside_the_tree_and_within_bounds() {
    require_tool("prlimit", "util-linux");
    require_tool("conmon", "conmon");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path();
    put(tree, "/usr/bin/conmon", Path::new("/usr/bin/conmon"), 0o755);
    let libdir = tree.join("lib/x86_64-linux-gnu");
    fs::create_dir_all(&libdir).unwrap();
    // A loop, and links that leave the tree (to the host's real libraries).
    symlink("libc.so.6", libdir.join("libc.so.6")).unwrap();
    symlink(
        "/lib/x86_64-linux-gnu/libglib-2.0.so.0",
        libdir.join("libglib-2.0.so.0"),
    )
    .unwrap();
    symlink(
        "../../../../../../../usr/lib/x86_64-linux-gnu/libsystemd.so.0",
        libdir.join("libsystemd.so.0"),
    )
    .unwrap();
    fs::create_dir_all(tree.join("lib64")).unwrap();
    symlink("/etc/shadow", tree.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    // A 2 GB sparse "library" whose ELF header claims 65535 program headers of
    // 65535 bytes each.
    let big = tree.join("usr/lib/libbig.so");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    let f = fs::File::create(&big).unwrap();
    f.set_len(2 << 30).unwrap();
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[18..20].copy_from_slice(&62u16.to_le_bytes());
    h[32..40].copy_from_slice(&64u64.to_le_bytes());
    h[54..56].copy_from_slice(&u16::MAX.to_le_bytes());
    h[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
    std::os::unix::fs::FileExt::write_all_at(&f, &h, 0).unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--as=1073741824")
        .arg("--cpu=60")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_kios-build"))
        .args(["system", "check"])
        .arg(tree);
    let o = run(&mut cmd);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a reported result, not a crash:\n{out}"
    );
    // The loop is not followed for ever, and links out of the tree resolve inside
    // it, where nothing is: the libraries and the interpreter are missing, whatever
    // the host has.
    assert!(out.contains("needs libc.so.6,"), "{out}");
    assert!(out.contains("needs libglib-2.0.so.0,"), "{out}");
    assert!(out.contains("needs libsystemd.so.0,"), "{out}");
    assert!(
        out.contains(
            "ELF interpreter /lib64/ld-linux-x86-64.so.2 is not in the tree: /etc does not exist"
        ),
        "{out}"
    );
    assert!(
        out.contains("/usr/lib/libbig.so: a damaged ELF file"),
        "{out}"
    );
}

#[test]
fn build_prints_the_findings_and_builds_but_refuses_with_strict_before_writing() {
    inputs();
    let dir = tempfile::tempdir().unwrap();
    let profile = repo().join("examples/qemu.yaml");
    let out = dir.path().join("node.img");
    let o = run(&mut common::build_command(&profile, &out));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("warning: the system tree"), "{t}");
    assert!(t.contains("/usr/bin/crio: CRI-O is missing"), "{t}");
    fs::remove_file(&out).unwrap();
    let o = run(common::build_command(&profile, &out).arg("--strict"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("the system tree fails its check (--strict)"),
        "{t}"
    );
    assert!(!out.exists(), "nothing is written with --strict");
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "no partial file either: {left:?}");
}

/// The Debian tree with the stand-ins, which the check accepts, in `dir/system`.
fn debian_tree_with_standins(dir: &Path) -> PathBuf {
    let debian = inputs().join("debian-system");
    assert!(
        debian.join("usr/sbin/runc").is_file() && debian.join("usr/bin/conmon").is_file(),
        "{} is not made: run scripts/prepare-inputs",
        debian.display()
    );
    let tree = dir.join("system");
    let o = run(Command::new("cp").arg("-a").arg(&debian).arg(&tree));
    assert!(o.status.success(), "{}", text(&o));
    put(&tree, "/usr/bin/crio", &standin("crio-standin"), 0o755);
    put(&tree, "/usr/bin/pinns", &standin("crio-standin"), 0o755);
    put(
        &tree,
        "/usr/bin/kubelet",
        &standin("kubelet-standin"),
        0o755,
    );
    tree
}

/// `system: {image: ...}` is how users ship a system tree; `system check` reads it
/// where it lives: from an OCI layout, and from a registry by its reference (pulled
/// into the blob cache as a build would), giving the same report as the folder.
/// Without the platform asked for, the check fails naming it.
#[test]
fn a_system_image_is_checked_from_a_layout_and_from_a_registry_as_its_folder_is() {
    let dir = tempfile::tempdir().unwrap();
    let tree = debian_tree_with_standins(dir.path());
    let (code, from_folder) = check(tree.to_str().unwrap(), "amd64");
    assert_eq!(code, Some(0), "{from_folder}");

    let layout = dir.path().join("layout");
    let layer = common::layout::folder_tar(&tree, true);
    let desc = fixture::image(&layout, "amd64", &[(fixture::OCI_GZIP, layer)]);
    fixture::tag(&layout, &[("1.0", desc)]);
    let (code, from_layout) = check(&format!("oci:{}:1.0", layout.display()), "amd64");
    assert_eq!(code, Some(0), "{from_layout}");
    assert_eq!(from_layout, from_folder);

    let registry = fixture::Registry::start();
    registry.push(&layout, "1.0", "kios/system", "1.0", &[]);
    let reference = format!("{}/kios/system:1.0", registry.host());
    let cache = dir.path().join("cache");
    let pull = |arch: &str| {
        run(kios_build()
            .args(["system", "check", &reference, "--arch", arch, "--quiet"])
            .arg("--insecure-registry")
            .arg(registry.host())
            .arg("--cache-dir")
            .arg(&cache))
    };
    let o = pull("amd64");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), from_folder);
    assert!(
        fs::read_dir(cache.join("blobs/sha256")).unwrap().count() >= 3,
        "the image was pulled into the blob cache"
    );
    let o = pull("arm64");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("arm64"), "{}", text(&o));

    // A folder name that does not exist is not taken for an image on Docker Hub.
    let o = run(kios_build().args(["system", "check", "no-such-tree"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no-such-tree: no such folder, and not an image reference"),
        "{}",
        text(&o)
    );
}

/// The tree `scripts/make-system-tree` assembles from Debian's packages (runc,
/// conmon and their dependency closure, made by `scripts/prepare-inputs`) lacks only
/// what Debian 12 does not ship: with stand-ins for CRI-O, pinns and the kubelet the
/// check accepts it, and `validate --strict` takes it as a profile's system tree.
#[test]
fn a_system_tree_from_debian_packages_passes_with_the_stand_ins() {
    let debian = inputs().join("debian-system");
    assert!(
        debian.join("usr/sbin/runc").is_file() && debian.join("usr/bin/conmon").is_file(),
        "{} is not made: run scripts/prepare-inputs",
        debian.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("system");
    let o = run(Command::new("cp").arg("-a").arg(&debian).arg(&tree));
    assert!(o.status.success(), "{}", text(&o));
    let (code, out) = check(tree.to_str().unwrap(), "amd64");
    assert_eq!(code, Some(1), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors.len(),
        3,
        "only CRI-O, the kubelet and pinns are missing:\n{out}"
    );
    for missing in ["/usr/bin/crio", "/usr/bin/kubelet", "/usr/bin/pinns"] {
        assert!(out.contains(&format!("error: {missing}:")), "{out}");
    }
    put(&tree, "/usr/bin/crio", &standin("crio-standin"), 0o755);
    put(&tree, "/usr/bin/pinns", &standin("crio-standin"), 0o755);
    put(
        &tree,
        "/usr/bin/kubelet",
        &standin("kubelet-standin"),
        0o755,
    );
    let (code, out) = check(tree.to_str().unwrap(), "amd64");
    assert_eq!(code, Some(0), "{out}");
    let elf: usize = out
        .rsplit('(')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        elf > 50,
        "real libraries were checked, not a handful: {out}"
    );
    let profile = write_profile(
        dir.path(),
        "node.yaml",
        &profile_text("").replace(
            &format!("system:\n  path: {}", inputs().join("system").display()),
            &format!("system:\n  path: {}", tree.display()),
        ),
    );
    let text_of = fs::read_to_string(&profile).unwrap();
    assert!(text_of.contains(tree.to_str().unwrap()), "{text_of}");
    let o = run(kios_build().arg("validate").arg("--strict").arg(&profile));
    assert!(o.status.success(), "{}", text(&o));
}
