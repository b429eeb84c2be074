//! The pre-seeded store in a built image: the static pods' images are written into
//! the `KIOS_STORE` partition as a containers/storage overlay store on EROFS; the
//! kernel mounts it, podman reads it as an additional read-only image store and runs
//! the pod's image by the exact reference the manifest names, with no registry; and
//! kios-init mounts it read-only at boot.

mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn daemon_profile(d: &Path) -> (std::path::PathBuf, String) {
    let inputs = inputs();
    let layer = d.join("layer");
    fs::create_dir_all(layer.join("bin")).unwrap();
    fs::copy(inputs.join("system/bin/busybox"), layer.join("bin/busybox")).unwrap();
    fs::create_dir_all(layer.join("etc")).unwrap();
    fs::write(layer.join("etc/daemon-release"), "dhcp stand-in\n").unwrap();
    let digest = oci_layout(&d.join("dhcp-layout"), "dhcp", &[&layer]);
    let text = profile_text(
        "daemons:\n  - name: dhcp\n    image: oci:dhcp-layout:dhcp\n    command: [/bin/busybox, udhcpc, -n, -q]\ndisk:\n  size: 320MiB\n",
    );
    (write_profile(d, "node.yaml", &text), digest)
}

#[test]
fn static_pod_images_are_pre_seeded_and_podman_runs_them_from_the_store_alone() {
    require_tool("fsck.erofs", "erofs-utils");
    require_tool("podman", "podman");
    require_tool("runc", "runc");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (profile, digest) = daemon_profile(d);
    let img = d.join("node.img");
    build(&profile, &img, 1_700_000_000);
    let i = inspect(&img);

    // The layout: ESP, store, data; the store listed with the image's digest.
    let roles: Vec<&str> = i["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["esp", "store", "data"]);
    let images = i["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["digest"], digest.as_str());
    assert_eq!(images[0]["names"][0], "localhost/kios/dhcp-layout:dhcp");
    // The pod names its image by that digest.
    let pod = i["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"].as_str().unwrap().ends_with("/dhcp.yaml"))
        .expect("dhcp pod");
    let pod_text = pod.to_string();
    let reference = format!("localhost/kios/dhcp-layout@{digest}");
    assert!(pod_text.contains(&reference), "{pod_text}");
    let etc = i["initramfs"]["etc"].as_array().unwrap();
    let conf = etc
        .iter()
        .find(|e| e["path"] == "/etc/containers/storage.conf")
        .expect("storage.conf");
    assert!(
        conf["content"]
            .as_str()
            .unwrap()
            .contains("/var/lib/kios/store"),
        "{conf}"
    );

    // The store partition: EROFS that fsck.erofs accepts and the kernel mounts.
    let store = i["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "store")
        .unwrap();
    let part = d.join("store.erofs");
    extract(
        &img,
        store["offset"].as_u64().unwrap(),
        store["size"].as_u64().unwrap(),
        &part,
    );
    let o = run(Command::new("fsck.erofs").arg(&part));
    assert!(
        o.status.success() && !text(&o).contains("<E>"),
        "{}",
        text(&o)
    );
    let mnt = d.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let o = run(Command::new("mount")
        .args(["-t", "erofs", "-o", "loop,ro"])
        .arg(&part)
        .arg(&mnt));
    assert!(
        o.status.success(),
        "mounting the store needs root and a loop device: {}",
        text(&o)
    );
    let _m = Mounted(mnt.clone());
    assert!(mnt.join("overlay-images/images.json").is_file());

    // podman: a fresh root, our store as an additional read-only image store.
    let conf = d.join("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    let podman = || {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &conf)
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!("overlay.imagestore={}", mnt.display()));
        c
    };
    let o = run(podman().args([
        "images",
        "--digests",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.Digest}}",
    ]));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains(&format!("localhost/kios/dhcp-layout:dhcp {digest}")),
        "{t}"
    );
    let o = run(podman()
        .args(["run", "--rm", "--network=none", "--pull=never"])
        .arg(&reference)
        .args(["/bin/busybox", "cat", "/etc/daemon-release"]));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("dhcp stand-in"), "{t}");
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
