//! The pre-seeded store in a built image: the static pods' images are written into
//! the `KIOS_STORE` partition as a containers/storage overlay store on EROFS; the
//! kernel mounts it, podman reads it as an additional read-only image store and runs
//! the pod's image by the exact reference the manifest names, with no registry; and
//! kios-init mounts it read-only at boot. Both for the default, compressed store
//! (lz4hc) and for a plain one (`store: {compression: none}`).

mod common;
#[path = "common/registry.rs"]
mod fixture;
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn daemon_profile(d: &Path) -> (std::path::PathBuf, String) {
    daemon_profile_with(d, "")
}

/// The daemon profile with `extra` YAML appended.
fn daemon_profile_with(d: &Path, extra: &str) -> (std::path::PathBuf, String) {
    let inputs = inputs();
    let layer = d.join("layer");
    fs::create_dir_all(layer.join("bin")).unwrap();
    fs::copy(inputs.join("system/bin/busybox"), layer.join("bin/busybox")).unwrap();
    fs::create_dir_all(layer.join("etc")).unwrap();
    fs::write(layer.join("etc/daemon-release"), "dhcp stand-in\n").unwrap();
    let digest = oci_layout(&d.join("dhcp-layout"), "dhcp", &[&layer]);
    let text = profile_text(&format!(
        "daemons:\n  - name: dhcp\n    image: oci:dhcp-layout:dhcp\n    command: [/bin/busybox, udhcpc, -n, -q]\ndisk:\n  size: 320MiB\n{}{extra}",
        pause_yaml()
    ));
    (write_profile(d, "node.yaml", &text), digest)
}

#[test]
fn static_pod_images_are_pre_seeded_and_podman_runs_them_from_the_store_alone() {
    pre_seeded_and_run_by_podman("", "0padding");
}

#[test]
fn a_plain_store_is_read_by_podman_alike() {
    pre_seeded_and_run_by_podman("store:\n  compression: none\n", "");
}

/// Builds the daemon profile with `extra`, checks the store partition's EROFS
/// features name `feature` (or none beyond the checksum), then what podman and
/// skopeo read from it. busybox (2 MB) is what podman runs: with compression, its
/// blocks come through the kernel's LZ4 decompression.
fn pre_seeded_and_run_by_podman(extra: &str, feature: &str) {
    require_tool("skopeo", "skopeo");
    require_tool("dump.erofs", "erofs-utils");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (profile, digest) = daemon_profile_with(d, extra);
    let img = d.join("node.img");
    build(&profile, &img, 1_700_000_000);
    let i = inspect(&img);

    // The layout: ESP, store, data; the store lists the pod's image and the pause
    // image, each with its digest.
    let roles: Vec<&str> = i["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["esp", "store", "data"]);
    let pause = kios_build::oci::layout::open_layout(&pause_layout(), Some("kios"), "amd64")
        .unwrap()
        .manifest_digest
        .to_string();
    let images = store_images(&i);
    assert_eq!(
        images,
        [
            (
                "localhost/kios/dhcp-layout:dhcp".to_string(),
                digest.clone()
            ),
            ("localhost/kios/pause:kios".to_string(), pause.clone())
        ]
    );
    // The pod names its image by that digest; CRI-O's pause image is the store's.
    let pod = i["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().unwrap().ends_with("/dhcp.yaml"))
        .expect("dhcp pod");
    let pod_text = pod.to_string();
    let reference = format!("localhost/kios/dhcp-layout@{digest}");
    assert!(pod_text.contains(&reference), "{pod_text}");
    assert!(etc_file(&i, "/etc/containers/storage.conf").contains("/var/lib/kios/store"));
    let crio = etc_file(&i, "/etc/crio/crio.conf.d/10-kios-pause.conf");
    assert!(
        crio.contains("pause_image = \"localhost/kios/pause:kios\""),
        "{crio}"
    );

    // inspect reads the list from the partition itself: a damaged partition is an
    // error, not a listing of what the build meant to write.
    let store = i["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "store")
        .unwrap()
        .clone();
    let damaged = d.join("damaged.img");
    fs::copy(&img, &damaged).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&damaged).unwrap();
        f.seek(SeekFrom::Start(store["offset"].as_u64().unwrap() + 1024))
            .unwrap();
        f.write_all(&[0; 4]).unwrap();
    }
    let o = run(kios_build().arg("inspect").arg(&damaged).arg("--json"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("the store partition cannot be read"),
        "{}",
        text(&o)
    );

    // The store partition: EROFS that fsck.erofs accepts and the kernel mounts.
    let (_m, mnt) = mount_store(&img, d);
    assert!(mnt.join("overlay-images/images.json").is_file());
    let o = run(Command::new("dump.erofs")
        .arg("-s")
        .arg(d.join("store.erofs")));
    let features = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .map(|f| f.trim().to_string())
        .unwrap_or_default();
    let want = format!("sb_csum {feature}");
    assert_eq!(features, want.trim(), "{}", text(&o));
    // inspect says so too.
    let compression = if feature.is_empty() { "none" } else { "lz4" };
    assert_eq!(i["store_compression"], compression, "{i}");

    // podman: a fresh root, our store as an additional read-only image store.
    let podman = Podman::new(d, &mnt, None);
    let (ok, t) = podman.run(&[
        "images",
        "--digests",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.Digest}}",
    ]);
    assert!(ok, "{t}");
    assert!(
        t.contains(&format!("localhost/kios/dhcp-layout:dhcp {digest}")),
        "{t}"
    );
    assert!(
        t.contains(&format!("localhost/kios/pause:kios {pause}")),
        "{t}"
    );
    let (ok, t) = podman.run(&[
        "run",
        "--rm",
        "--network=none",
        "--pull=never",
        &reference,
        "/bin/busybox",
        "cat",
        "/etc/daemon-release",
    ]);
    assert!(ok, "{t}");
    assert!(t.contains("dhcp stand-in"), "{t}");

    // skopeo reads each image back out of the mounted partition: the same config,
    // and each layer uncompresses to the original's diff_id (rebuilt from our
    // tar-split files and the diff trees).
    for (name, layout, tag) in [
        (
            "localhost/kios/dhcp-layout:dhcp",
            d.join("dhcp-layout"),
            "dhcp",
        ),
        ("localhost/kios/pause:kios", pause_layout(), "kios"),
    ] {
        let original = kios_build::oci::layout::open_layout(&layout, Some(tag), "amd64").unwrap();
        let back = d.join(format!("back-{tag}"));
        let o = run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &format!(
                "containers-storage:[overlay@{}+{}:overlay.imagestore={}]{name}",
                podman.root.display(),
                podman.runroot.display(),
                mnt.display()
            ),
            &format!("oci:{}:{tag}", back.display()),
        ]));
        assert!(o.status.success(), "skopeo copy {name}: {}", text(&o));
        let read = kios_build::oci::layout::open_layout(&back, Some(tag), "amd64").unwrap();
        assert_eq!(read.config_digest, original.config_digest, "{name}");
        assert_eq!(read.layers.len(), original.layers.len(), "{name}");
        for (n, layer) in read.layers.iter().enumerate() {
            assert_eq!(
                layer.diff_id, original.layers[n].diff_id,
                "{name} layer {n}"
            );
            let mut tar = Vec::new();
            let f = fs::File::open(&layer.path).unwrap();
            if layer.media_type.ends_with("gzip") {
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(f), &mut tar).unwrap();
            } else {
                std::io::Read::read_to_end(&mut std::io::BufReader::new(f), &mut tar).unwrap();
            }
            assert_eq!(
                kios_build::oci::Digest::of_bytes(&tar),
                original.layers[n].diff_id,
                "{name} layer {n} as skopeo read it from the store"
            );
        }
    }
}

#[test]
fn kios_init_mounts_the_store_partition_read_only_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let (profile, _) = daemon_profile(dir.path());
    let img = dir.path().join("node.img");
    build(&profile, &img, 1_700_000_000);
    let (seen, log) = boot(&img, "kios-init: ready", Duration::from_secs(400), false);
    assert!(seen, "{log}");
    assert!(
        log.contains("kios-init: loaded module /lib/modules/") && log.contains("/erofs.ko"),
        "{log}"
    );
    assert!(
        log.contains("mounted store partition /dev/vda2 on /var/lib/kios/store (read-only)"),
        "{log}"
    );
}

/// A daemon image whose layer is hostile (an entry climbing out with `..`, a
/// symlink then a file written through it, a hard link to a path outside): the
/// build fails with exit code 2, naming the image and the entry, and leaves no
/// image behind.
#[test]
fn a_hostile_daemon_image_fails_the_build_naming_image_and_entry() {
    /// A tar with raw member names (the tar crate refuses to write these).
    fn raw_tar(members: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, link, data) in members {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }
    use tar::EntryType as E;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "dotdot",
            raw_tar(&[("../escape", E::Regular, "", b"x")]),
            "../escape",
        ),
        (
            "through-symlink",
            raw_tar(&[
                ("etc", E::Symlink, "/tmp", b""),
                ("etc/evil", E::Regular, "", b"x"),
            ]),
            "etc/evil",
        ),
        (
            "hardlink-out",
            raw_tar(&[("passwd", E::Link, "../../etc/passwd", b"")]),
            "passwd",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, tar, entry) in cases {
        let layout = d.join(name);
        let m = fixture::image(&layout, "amd64", &[(fixture::OCI_GZIP, tar)]);
        fixture::tag(&layout, &[("1", m)]);
        let p = write_profile(
            d,
            "node.yaml",
            &profile_text(&format!(
                "daemons:\n  - name: dhcp\n    image: oci:{name}:1\n{}",
                pause_yaml()
            )),
        );
        let img = d.join("node.img");
        let o = run(&mut common::build_command(&p, &img));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {t}");
        assert!(
            t.contains(&format!("oci:{}:1", layout.display())),
            "{name}: the image is not named: {t}"
        );
        assert!(t.contains(entry), "{name}: the entry is not named: {t}");
        assert!(!img.exists(), "{name}: an image was left behind");
        assert!(
            fs::read_dir(d).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("node.img")),
            "{name}: a temporary file was left behind"
        );
    }
}
