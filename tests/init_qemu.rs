//! kios-init for real: images built by kios-build, booted in QEMU (TCG, OVMF), with
//! the test doubles of CRI-O and the kubelet (`tests/standins`, installed as
//! `/usr/bin/crio` and `/usr/bin/kubelet`) driven by `kios.test.*` kernel
//! arguments. Checked from the serial log and from the data partition read after
//! power-off. Four boots in all.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const STORE_TYPE: &str = "6AA8382C-3F51-482D-AEF7-46F7E6811D8E";

/// The static test doubles made by
/// `cargo build --release -p kios-standins --target x86_64-unknown-linux-gnu`.
fn standin(name: &str) -> PathBuf {
    let dir = std::env::var_os("KIOS_STANDINS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(|t| PathBuf::from(t).join("x86_64-unknown-linux-gnu/release"))
        })
        .unwrap_or_else(|| repo().join("target/x86_64-unknown-linux-gnu/release"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "test double {} missing: RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p kios-standins --target x86_64-unknown-linux-gnu",
        p.display()
    );
    p
}

/// Builds an image whose system tree has busybox and the test doubles, with
/// `cmdline` added to the kernel command line and `modules` to the qemu base's.
fn image(dir: &Path, name: &str, cmdline: &[&str], modules: &[&str]) -> PathBuf {
    let system = dir.join(format!("{name}-system"));
    fs::create_dir_all(system.join("usr/bin")).unwrap();
    fs::create_dir_all(system.join("bin")).unwrap();
    let busybox = inputs().join("system/bin/busybox");
    if busybox.is_file() {
        fs::copy(&busybox, system.join("bin/busybox")).unwrap();
    }
    fs::copy(standin("kubelet-standin"), system.join("usr/bin/kubelet")).unwrap();
    fs::copy(standin("crio-standin"), system.join("usr/bin/crio")).unwrap();
    let i = inputs();
    let list = |items: &[&str]| format!("[{}]", items.join(", "));
    let profile = format!(
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nhostname: test-node\n\
         kernel:\n  path: {k}\n  cmdline: {c}\n  modules: {m}\n\
         boot:\n  stub: {{path: {s}}}\nsystem:\n  path: {y}\ndisk:\n  size: 256MiB\n",
        k = i.join("kernel").display(),
        c = list(cmdline),
        m = list(modules),
        s = i.join("stub/linuxx64.efi.stub").display(),
        y = system.display(),
    );
    let p = write_profile(dir, &format!("{name}.yaml"), &profile);
    let img = dir.join(format!("{name}.img"));
    build(&p, &img, 1_700_000_000);
    img
}

/// The data partition of `img` as its own file.
fn data_partition(img: &Path, dir: &Path) -> PathBuf {
    let (offset, size) = partition(img, "KIOS_DATA");
    let out = dir.join("data.ext4");
    extract(img, offset, size, &out);
    out
}

fn fsck_clean(data: &Path) {
    require_tool("fsck.ext4", "e2fsprogs");
    let o = run(Command::new("fsck.ext4").arg("-fn").arg(data));
    assert!(o.status.success(), "fsck.ext4 -fn failed:\n{}", text(&o));
}

fn debugfs(data: &Path, request: &str) -> String {
    require_tool("debugfs", "e2fsprogs");
    let o = run(Command::new("debugfs").arg("-R").arg(request).arg(data));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The init's console lines (`[<ms>ms] kios-init: <message>`), as (ms, message).
fn init_lines(log: &str) -> Vec<(f64, String)> {
    log.lines()
        .filter_map(|l| {
            let l = l.trim_start_matches(|c: char| c != '[');
            let rest = l.strip_prefix('[')?;
            let (ms, msg) = rest.split_once("ms] kios-init: ")?;
            Some((ms.parse().ok()?, msg.trim_end().to_owned()))
        })
        .collect()
}

fn standin_args<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("STANDIN {name} ARGS: ");
    log.lines()
        .filter_map(|l| l.find(&prefix).map(|i| l[i + prefix.len()..].trim_end()))
        .collect()
}

#[test]
fn first_boot_lays_out_the_data_partition_and_bootstrap_state_survives_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "persist", &["kios.test.kubelet=bootstrap"], &[]);

    // First boot: the kubelet double starts standalone, writes kubelet.conf as a
    // bootstrap would, asks for a restart (0x03), is started again with
    // --kubeconfig, then shuts the node down (0x01, 0x02).
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not power off; the log:\n{log}");
    assert!(
        log.contains("kios-init: first boot: created the data partition layout"),
        "{log}"
    );
    assert!(
        log.contains(
            "kios-init: no store partition; CRI-O starts without an additional image store"
        ),
        "{log}"
    );
    assert!(
        log.contains("kios-init: CRI-O socket /var/run/crio/crio.sock is ready"),
        "{log}"
    );
    let kubelets = standin_args(&log, "kubelet");
    assert!(kubelets.len() >= 2, "{log}");
    assert!(!kubelets[0].contains("--kubeconfig"), "{log}");
    assert!(
        kubelets
            .last()
            .is_some_and(|a| a.contains("--kubeconfig /etc/kubernetes/kubelet.conf")),
        "{log}"
    );
    assert!(log.contains("STANDIN kubelet got broadcast 0x01"), "{log}");
    assert!(
        log.contains("kios-init: 0x02: continuing the shutdown"),
        "{log}"
    );
    assert!(log.contains("kios-init: power off now"), "{log}");

    let data = data_partition(&img, dir.path());
    fsck_clean(&data);
    let root = debugfs(&data, "ls -p /");
    for d in ["containers", "kubelet", "log", "etc", ".kios-layout"] {
        assert!(
            root.contains(&format!("/{d}/")),
            "no {d} on the data partition:\n{root}"
        );
    }
    assert!(debugfs(&data, "cat /etc/upper/kubernetes/kubelet.conf")
        .contains("written by the kubelet test double"));
    let kubelet_log = debugfs(&data, "cat /log/kios/kubelet.log");
    assert!(
        kubelet_log.contains("STANDIN kubelet ARGS: --config /etc/kubernetes/config.yaml"),
        "{kubelet_log}"
    );
    assert!(debugfs(&data, "cat /log/kios/crio.log")
        .contains("STANDIN crio ARGS: --listen /var/run/crio/crio.sock"));

    // Second boot: the file written through the /etc overlay is still there, so the
    // kubelet gets --kubeconfig from its first start.
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(
        exited,
        "QEMU did not power off on the second boot; the log:\n{log}"
    );
    assert!(!log.contains("first boot:"), "{log}");
    let kubelets = standin_args(&log, "kubelet");
    assert!(
        kubelets
            .first()
            .is_some_and(|a| a.contains("--kubeconfig /etc/kubernetes/kubelet.conf")),
        "{log}"
    );
    fsck_clean(&data_partition(&img, dir.path()));
}

#[test]
fn crashing_kubelet_and_crio_are_restarted_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(
        dir.path(),
        "crash",
        &["kios.test.kubelet=crash", "kios.test.crio=crash"],
        &[],
    );
    let (seen, log) = boot(
        &img,
        "kios-init: restarting kubelet in 4000 ms",
        BOOT_TIMEOUT,
        false,
    );
    assert!(
        seen,
        "the kubelet was not restarted 4 times; the log:\n{log}"
    );
    let lines = init_lines(&log);
    for n in [1, 2, 3] {
        let want = format!(
            "restarting kubelet in {} ms (failure {n} in a row)",
            500 << (n - 1)
        );
        assert!(lines.iter().any(|(_, m)| *m == want), "no `{want}`:\n{log}");
    }
    assert!(
        lines
            .iter()
            .any(|(_, m)| m == "restarting crio in 500 ms (failure 1 in a row)"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|(_, m)| m == "crio| STANDIN crio crashing"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|(_, m)| m.starts_with("kubelet| STANDIN kubelet ARGS:")),
        "{log}"
    );
    // The gaps between kubelet starts grow with the backoff.
    let starts: Vec<f64> = lines
        .iter()
        .filter(|(_, m)| m.starts_with("kubelet started"))
        .map(|(t, _)| *t)
        .collect();
    assert!(starts.len() >= 4, "{log}");
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= 500.0 && gaps[1] >= 1000.0 && gaps[2] >= 2000.0,
        "{gaps:?}"
    );
}

#[test]
fn store_partition_is_mounted_read_only_and_given_to_crio_as_an_image_store() {
    require_tool("mkfs.erofs", "erofs-utils");
    require_tool("sgdisk", "gdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = image(
        dir.path(),
        "store",
        &["kios.test.kubelet=shutdown"],
        &["erofs"],
    );

    // A tiny EROFS image as partition 3 at the end of a grown disk.
    let tree = dir.path().join("store-tree");
    fs::create_dir_all(tree.join("overlay-images")).unwrap();
    fs::write(tree.join("overlay-images/images.json"), "[]\n").unwrap();
    let erofs = dir.path().join("store.erofs");
    let o = run(Command::new("mkfs.erofs").arg(&erofs).arg(&tree));
    assert!(o.status.success(), "{}", text(&o));
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(f.metadata().unwrap().len() + 8 * 1024 * 1024)
        .unwrap();
    drop(f);
    let o = run(Command::new("sgdisk")
        .args([
            "-e",
            "-n",
            "3:0:0",
            "-t",
            &format!("3:{STORE_TYPE}"),
            "-c",
            "3:KIOS_STORE",
        ])
        .arg(&img));
    assert!(o.status.success(), "{}", text(&o));
    let (offset, size) = partition(&img, "KIOS_STORE");
    let bytes = fs::read(&erofs).unwrap();
    assert!(bytes.len() as u64 <= size);
    let mut f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&bytes).unwrap();
    drop(f);

    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not power off; the log:\n{log}");
    assert!(
        log.contains(
            "kios-init: mounted store partition /dev/vda3 on /var/lib/kios/store (read-only)"
        ),
        "{log}"
    );
    let crio = standin_args(&log, "crio");
    assert!(
        crio.first()
            .is_some_and(|a| a.contains("--storage-opt overlay.imagestore=/var/lib/kios/store")),
        "{log}"
    );
    fsck_clean(&data_partition(&img, dir.path()));
}
