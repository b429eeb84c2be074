//! kios-init for real: images built by kios-build, booted in QEMU (TCG, OVMF), with
//! the test doubles of CRI-O and the kubelet (`tests/standins`, installed as
//! `/usr/bin/crio` and `/usr/bin/kubelet`) driven by `kios.test.*` kernel
//! arguments. Checked from the serial log and from the data partition read after
//! power-off, and for ctrl-alt-del from QEMU's monitor. Eleven boots in all.

mod common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const STORE_TYPE: &str = kios_contract::partition::STORE_TYPE;

/// Builds an image whose system tree has busybox and the test doubles, with
/// `cmdline` added to the kernel command line and `modules` to the qemu base's.
fn image(dir: &Path, name: &str, cmdline: &[&str], modules: &[&str]) -> PathBuf {
    image_with(dir, name, cmdline, modules, |_| String::new())
}

/// [`image`], with `extra` adding to the system tree (given its root) first; the
/// YAML it returns is added to the profile.
fn image_with(
    dir: &Path,
    name: &str,
    cmdline: &[&str],
    modules: &[&str],
    extra: impl FnOnce(&Path) -> String,
) -> PathBuf {
    let system = dir.join(format!("{name}-system"));
    fs::create_dir_all(system.join("usr/bin")).unwrap();
    fs::create_dir_all(system.join("bin")).unwrap();
    let busybox = inputs().join("system/bin/busybox");
    if busybox.is_file() {
        fs::copy(&busybox, system.join("bin/busybox")).unwrap();
    }
    fs::copy(standin("kubelet-standin"), system.join("usr/bin/kubelet")).unwrap();
    fs::copy(standin("crio-standin"), system.join("usr/bin/crio")).unwrap();
    let more = extra(&system);
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
    ) + &more;
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

/// Asserts that the init logged a line starting with each of `steps`, in that order.
fn assert_in_order(lines: &[(f64, String)], steps: &[&str], log: &str) {
    let at = |want: &str| {
        lines
            .iter()
            .position(|(_, m)| m.starts_with(want))
            .unwrap_or_else(|| panic!("no `{want}` in the init's log:\n{log}"))
    };
    let order: Vec<usize> = steps.iter().map(|s| at(s)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{log}");
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

/// Every step is in the kernel log (for `dmesg`), at debug priority, so the kernel
/// does not print it on the console a second time: the init wrote it there already,
/// and the kernel's console write is synchronous.
#[test]
fn steps_are_in_the_kernel_log_but_not_echoed_on_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "kmsg", &["kios.test.kubelet=kmsg"], &[]);
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not power off; the log:\n{log}");
    let report = log
        .lines()
        .find_map(|l| {
            l.split_once("STANDIN kubelet kmsg: ")
                .map(|x| x.1.trim_end())
        })
        .unwrap_or_else(|| panic!("no kmsg report in:\n{log}"));
    let (count, priority) = report
        .split_once(" kios-init records; lo up at priority ")
        .unwrap_or_else(|| panic!("{report}"));
    assert!(count.parse::<u32>().unwrap() > 20, "{report}");
    assert_eq!(priority, "7", "{report}");
    // On the console: the init's own line, and no kernel echo of it
    // (`[    3.61] kios-init: loopback lo is up`).
    let on_console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("kios-init: loopback lo is up"))
        .collect();
    assert_eq!(on_console.len(), 1, "{on_console:?}");
    assert!(on_console[0].contains("ms] kios-init:"), "{on_console:?}");
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

/// An OCI bundle at `bundle` (`runc spec`, not a terminal) whose rootfs is a static
/// busybox that runs `args`.
fn oci_bundle(bundle: &Path, args: &[&str]) {
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy(
        inputs().join("system/bin/busybox"),
        rootfs.join("bin/busybox"),
    )
    .unwrap();
    runc_spec(bundle, args, None);
}

/// `runc spec` in `bundle`, not on a terminal, running `args`; its root is `root`
/// when given (an absolute path on the node), else the bundle's `rootfs`.
fn runc_spec(bundle: &Path, args: &[&str], root: Option<&str>) {
    fs::create_dir_all(bundle).unwrap();
    let o = run(Command::new("runc").arg("spec").arg("--bundle").arg(bundle));
    assert!(o.status.success(), "runc spec: {}", text(&o));
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = serde_json::Value::Bool(false);
    spec["process"]["args"] = serde_json::json!(args);
    if let Some(root) = root {
        spec["root"]["path"] = serde_json::json!(root);
    }
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

/// An image whose kubelet double runs a container with the real runc (Debian's),
/// which `pivot_root`s into the bundle as CRI-O's runtimes do: the kernel refuses
/// that on its initial rootfs ("pivot_root .: invalid argument") unless kios-init
/// switched root. Then the double sends SIGTERM to PID 1.
fn container_image(dir: &Path, name: &str, cmdline: &[&str]) -> PathBuf {
    container_image_with(dir, name, cmdline, |system| {
        oci_bundle(
            &system.join("var/lib/kios-test/bundle"),
            &["/bin/busybox", "echo", "hello from a container"],
        );
        String::new()
    })
}

/// [`container_image`] with `extra` adding to the system tree and the profile.
fn container_image_with(
    dir: &Path,
    name: &str,
    cmdline: &[&str],
    extra: impl FnOnce(&Path) -> String,
) -> PathBuf {
    require_tool("runc", "runc");
    let cmdline: Vec<&str> = ["kios.test.kubelet=container"]
        .into_iter()
        .chain(cmdline.iter().copied())
        .collect();
    image_with(dir, name, &cmdline, &[], |system| {
        // A system tree the check accepts: Debian's runc and conmon with their
        // libraries, unpacked from the packages (scripts/make-system-tree, made by
        // prepare-inputs), and stand-ins (static) for CRI-O, the kubelet and pinns.
        let debian = inputs().join("debian-system");
        assert!(
            debian.join("usr/sbin/runc").is_file(),
            "{} is not made: run scripts/prepare-inputs",
            debian.display()
        );
        let o = run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", debian.display()))
            .arg(system));
        assert!(o.status.success(), "{}", text(&o));
        fs::copy(standin("crio-standin"), system.join("usr/bin/pinns")).unwrap();
        let more = extra(system);
        let o = run(kios_build().args(["system", "check"]).arg(system));
        assert!(
            o.status.success(),
            "system check of the test's tree: {}",
            text(&o)
        );
        more
    })
}

/// Checks that the container ran and that SIGTERM powered the node off cleanly.
fn assert_container_ran_then_sigterm_powered_off(img: &Path, dir: &Path, log: &str) {
    assert!(
        log.contains("STANDIN kubelet container stdout: hello from a container"),
        "{log}"
    );
    assert!(
        log.contains("STANDIN kubelet runc exited: exit status: 0"),
        "{log}"
    );
    let lines = init_lines(log);
    assert_in_order(
        &lines,
        &[
            "SIGTERM: shutdown (power off) requested",
            "0x02: continuing the shutdown",
            "stopping kubelet (TERM",
            "stopping crio (TERM",
            "unmounted ",
            "power off now",
        ],
        log,
    );
    assert!(log.contains("STANDIN kubelet got broadcast 0x01"), "{log}");
    fsck_clean(&data_partition(img, dir));
}

#[test]
fn a_container_runtime_can_pivot_root_out_of_the_root_and_sigterm_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    let img = container_image(dir.path(), "container", &[]);
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not power off; the log:\n{log}");
    // The kernel's rootfs is a tmpfs: root is a bind of it, nothing is copied.
    assert!(
        log.contains(
            "kios-init: switched root to a bind mount of the initramfs (tmpfs, nothing copied)"
        ),
        "{log}"
    );
    assert!(!log.contains("cannot remove the empty /newroot"), "{log}");
    assert_container_ran_then_sigterm_powered_off(&img, dir.path(), &log);
}

#[test]
fn on_a_ramfs_rootfs_the_initramfs_is_copied_to_a_tmpfs_and_containers_still_pivot_root() {
    let dir = tempfile::tempdir().unwrap();
    // With root= on the command line the kernel makes its rootfs a ramfs
    // (init/do_mounts.c, init_rootfs); it still runs /init from the initramfs.
    let img = container_image(dir.path(), "ramfs", &["root=/dev/kios-test-none"]);
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not power off; the log:\n{log}");
    assert!(
        log.contains("kios-init: the initramfs is a ramfs; moved it to a tmpfs: "),
        "{log}"
    );
    assert!(
        log.contains("kios-init: running from the tmpfs root"),
        "{log}"
    );
    assert!(
        !log.contains("entries of the initramfs could not be moved"),
        "{log}"
    );
    assert_container_ran_then_sigterm_powered_off(&img, dir.path(), &log);
}

/// The whole path of a pre-seeded image, with real components wherever Debian has
/// them: kios-build writes busybox's image into the store partition, kios-init
/// mounts it read-only, and the kubelet double does what CRI-O would with it (finds
/// the image in the store's `images.json`, stacks its layers' `diff` folders with
/// overlayfs) and runs Debian's runc, from a system tree `system check` accepts, on
/// that root. The container's program is the image's busybox: the system tree has
/// none.
#[test]
fn the_real_runtime_runs_a_container_whose_root_is_an_image_of_the_pre_seeded_store() {
    let dir = tempfile::tempdir().unwrap();
    let i = inputs();
    let img = container_image_with(
        dir.path(),
        "store-container",
        &[
            "kios.test.kubelet=store-container",
            "kios.test.image=busybox",
        ],
        |system| {
            runc_spec(
                &system.join("var/lib/kios-test/store-bundle"),
                &["/bin/busybox", "echo", "hello from the store"],
                Some("/run/kios-test/rootfs"),
            );
            let _ = fs::remove_file(system.join("bin/busybox"));
            format!(
                "kubernetes:\n  pauseImage: oci:{}:kios\ndaemons:\n  - name: dhcp\n    image: oci:{}:1\n",
                i.join("pause").display(),
                i.join("busybox").display()
            )
        },
    );
    let inspect = run(kios_build().arg("inspect").arg("--json").arg(&img));
    assert!(inspect.status.success(), "{}", text(&inspect));
    assert!(
        String::from_utf8_lossy(&inspect.stdout).contains("busybox"),
        "the store holds the busybox image: {}",
        text(&inspect)
    );
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not power off; the log:\n{log}");
    assert!(
        log.contains("kios-init: mounted store partition ")
            && log.contains(" on /var/lib/kios/store (read-only)"),
        "{log}"
    );
    let stacked = log
        .lines()
        .find(|l| l.contains("STANDIN kubelet store image "))
        .unwrap_or_else(|| panic!("the double did not stack the image:\n{log}"));
    assert!(
        stacked.contains("busybox")
            && stacked.contains("layer(s) stacked on /run/kios-test/rootfs"),
        "{stacked}"
    );
    assert!(
        log.contains("STANDIN kubelet container stdout: hello from the store"),
        "{log}"
    );
    assert!(
        log.contains("STANDIN kubelet runc exited: exit status: 0"),
        "{log}"
    );
    fsck_clean(&data_partition(&img, dir.path()));
}

/// An image whose store (busybox's image and the pause image) has a dm-verity hash
/// tree, its root hash on the UKI's command line; `dm_verity` is added to the
/// modules by the build.
fn verity_image(dir: &Path, name: &str, cmdline: &[&str]) -> PathBuf {
    let i = inputs();
    image_with(dir, name, cmdline, &[], |_| {
        format!(
            "kubernetes:\n  pauseImage: oci:{}:kios\ndaemons:\n  - name: dhcp\n    image: oci:{}:1\nstore:\n  verity: true\n",
            i.join("pause").display(),
            i.join("busybox").display()
        )
    })
}

/// The root hash the image's UKI carries (`inspect --json`).
fn verity_root(img: &Path) -> String {
    let o = run(kios_build().arg("inspect").arg("--json").arg(img));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.split("kios.store.verity=")
        .nth(1)
        .map(|s| s.chars().take_while(char::is_ascii_hexdigit).collect())
        .unwrap_or_else(|| panic!("no kios.store.verity= in the command line: {out}"))
}

#[test]
fn a_verified_store_is_mounted_through_dm_verity_and_crio_starts_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = verity_image(dir.path(), "verity", &["kios.test.kubelet=shutdown"]);
    let root = verity_root(&img);
    assert_eq!(root.len(), 64, "{root}");
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not power off; the log:\n{log}");
    assert!(
        log.contains(&format!(
            "kios-init: store verified by dm-verity: root hash {root}"
        )),
        "{log}"
    );
    assert!(
        log.contains("kios-init: mounted store partition /dev/vda2 through /dev/dm-"),
        "{log}"
    );
    let crio = standin_args(&log, "crio");
    assert!(
        crio.first()
            .is_some_and(|a| a.contains("--storage-opt overlay.imagestore=/var/lib/kios/store")),
        "{log}"
    );
    assert!(!log.contains("verification failed"), "{log}");
    fsck_clean(&data_partition(&img, dir.path()));
}

/// The attack dm-verity is for: the store partition changed after the build (one
/// byte of an image's record in `images.json`). The kernel refuses the block, init
/// says why, starts neither CRI-O nor the kubelet, and stays up: ctrl-alt-del still
/// reboots the node cleanly.
#[test]
fn a_store_changed_after_the_build_is_refused_crio_is_not_started_and_init_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let img = verity_image(dir.path(), "tampered", &["kios.test.kubelet=shutdown"]);
    change_store_metadata(&img);
    let mut vm = Vm::start(&img);
    assert!(
        vm.wait_for("kubelet is not started", BOOT_TIMEOUT),
        "init did not refuse the store; the log:\n{}",
        vm.log()
    );
    let log = vm.log();
    assert!(
        log.contains("kios-init: store verification failed: "),
        "{log}"
    );
    assert!(
        log.contains("crio is not started: the store failed verification"),
        "{log}"
    );
    assert!(!log.contains("STANDIN crio"), "CRI-O's double ran:\n{log}");
    assert!(
        !log.contains("STANDIN kubelet"),
        "the kubelet's double ran:\n{log}"
    );
    let reply = vm.monitor("sendkey ctrl-alt-delete");
    assert!(
        vm.wait_exit(Duration::from_secs(180)),
        "QEMU did not exit after ctrl-alt-del (monitor said {reply:?}); the log:\n{}",
        vm.log()
    );
    assert!(vm.log().contains("kios-init: reboot now"), "{}", vm.log());
}

/// A `kios-build run` of an image (writable, so the data partition can be read after)
/// with QEMU's human monitor on a unix socket, for acting on the VM from outside.
struct Vm {
    child: Child,
    log: PathBuf,
    monitor: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vm {
    fn start(img: &Path) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let monitor = dir.path().join("monitor.sock");
        let args: Vec<String> = [
            "--writable",
            "--timeout",
            "3600",
            "--",
            "-monitor",
            &format!("unix:{},server=on,wait=off", monitor.display()),
        ]
        .map(str::to_string)
        .to_vec();
        let child = spawn_run(img, &log, &args);
        Vm {
            child,
            log,
            monitor,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether `text` appears on the console before QEMU exits or `timeout` passes.
    fn wait_for(&mut self, text: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(text) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.log().contains(text);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }

    /// Whether QEMU exits by itself within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }

    /// Runs one human-monitor command; returns what QEMU printed up to its next prompt.
    fn monitor(&self, command: &str) -> String {
        let mut s = UnixStream::connect(&self.monitor).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut seen = Vec::new();
        let mut read_to_prompt = |s: &mut UnixStream| {
            let start = seen.len();
            let mut buf = [0u8; 512];
            while !String::from_utf8_lossy(&seen[start..]).contains("(qemu) ") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            String::from_utf8_lossy(&seen[start..]).into_owned()
        };
        let banner = read_to_prompt(&mut s);
        assert!(banner.contains("(qemu) "), "no monitor prompt: {banner:?}");
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        read_to_prompt(&mut s)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctrl_alt_del_from_the_keyboard_is_a_sigint_that_reboots_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "cad", &["kios.test.kubelet=drain"], &[]);
    let mut vm = Vm::start(&img);
    assert!(
        vm.wait_for("STANDIN kubelet waiting for a shutdown", BOOT_TIMEOUT),
        "the kubelet double never waited; the log:\n{}",
        vm.log()
    );
    // The PS/2 keyboard (i8042) of q35: the kernel's keyboard handler turns
    // ctrl-alt-del into SIGINT for PID 1, as kios-init asked with CAD_OFF.
    let reply = vm.monitor("sendkey ctrl-alt-delete");
    let exited = vm.wait_exit(Duration::from_secs(180));
    let log = vm.log();
    assert!(
        exited,
        "QEMU did not exit after ctrl-alt-del (monitor said {reply:?}); the log:\n{log}"
    );
    let lines = init_lines(&log);
    assert_in_order(
        &lines,
        &[
            "SIGINT (ctrl-alt-del): shutdown (reboot) requested",
            "0x02: continuing the shutdown",
            "stopping kubelet (TERM",
            "stopping crio (TERM",
            "stopping every other process (TERM)",
            "syncing filesystems",
            "unmounted ",
            "reboot now",
        ],
        &log,
    );
    assert!(log.contains("STANDIN kubelet got broadcast 0x01"), "{log}");
    drop(vm);
    fsck_clean(&data_partition(&img, dir.path()));
}
#[test]
fn after_0x04_restarts_crio_the_kubelet_starts_only_once_its_socket_is_back_and_0x05_reboots() {
    let dir = tempfile::tempdir().unwrap();
    // The kubelet double sends 0x04 and 0x03 together, so the kubelet is down while
    // CRI-O restarts; the restarted CRI-O double creates its socket 1.5 s late.
    // Started again, the kubelet double asks for a reboot (0x05) and lets it go on.
    let img = image(
        dir.path(),
        "restart",
        &[
            "kios.test.kubelet=restart-crio",
            "kios.test.crio=slow-restart",
        ],
        &[],
    );
    let (exited, log) = boot_to_poweroff(&img, BOOT_TIMEOUT);
    assert!(exited, "QEMU did not exit; the log:\n{log}");
    let lines = init_lines(&log);
    let times = |prefix: &str| -> Vec<f64> {
        lines
            .iter()
            .filter(|(_, m)| m.starts_with(prefix))
            .map(|(t, _)| *t)
            .collect()
    };
    let crio = times("crio started");
    let socket = times("CRI-O socket /var/run/crio/crio.sock is ready");
    let kubelet = times("kubelet started");
    assert_eq!(crio.len(), 2, "{log}");
    assert_eq!(socket.len(), 2, "{log}");
    // Started at boot, and again for 0x03 only: CRI-O's restart leaves it alone.
    assert_eq!(kubelet.len(), 2, "{log}");
    let restart = times("0x04 on the system socket: restarting crio");
    assert_eq!(restart.len(), 1, "{log}");
    assert!(
        restart[0] < crio[1] && crio[1] < socket[1] && socket[1] <= kubelet[1],
        "0x04 at {restart:?}, crio {crio:?}, socket {socket:?}, kubelet {kubelet:?}\n{log}"
    );
    assert!(
        kubelet[1] - crio[1] >= 1000.0,
        "the kubelet did not wait for the late socket: crio {crio:?}, kubelet {kubelet:?}\n{log}"
    );
    assert!(
        lines
            .iter()
            .any(|(_, m)| m == "the kubelet waits for CRI-O's socket"),
        "{log}"
    );
    assert!(log.contains("STANDIN kubelet started again"), "{log}");
    assert_in_order(
        &lines,
        &[
            "0x05 on the system socket: shutdown (reboot) requested",
            "0x02: continuing the shutdown",
            "stopping kubelet (TERM",
            "stopping crio (TERM",
            "reboot now",
        ],
        &log,
    );
    fsck_clean(&data_partition(&img, dir.path()));
}
