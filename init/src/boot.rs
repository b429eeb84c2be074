//! The boot sequence of kios-init, as plain logic over [`System`].
//!
//! Input: the system interface and the config files it can read (`config.rs`).
//! Output: the initramfs moved onto a tmpfs root, the base filesystems mounted,
//! modules loaded, `lo` up, the disks mounted (`storage.rs`), the hostname set,
//! forwarding on, one log line per step, and last exactly `kios-init: ready`.
//!
//! Every step degrades rather than stops: a failure is logged as a warning and the
//! next step runs, because PID 1 has nobody to return an error to. This module does
//! not start or supervise anything (`supervise.rs`).

use crate::config::{self, HOSTNAME_FILE, MODULES_FILE};
use crate::log::READY;
use crate::storage::{self, Storage};
use crate::system::linux::STAGE_VAR;
use crate::system::{info, read_optional, warn};
use crate::system::{Errno, InitialRoot, ModuleError, Mount, MountFlags, System};

/// Where the mount that becomes `/` is made before it is moved there.
pub const NEWROOT: &str = "/newroot";

const NOSUID_NODEV: MountFlags = MountFlags::NOSUID.union(MountFlags::NODEV);
const NOSUID_NODEV_NOEXEC: MountFlags = NOSUID_NODEV.union(MountFlags::NOEXEC);

/// The filesystems every kiOS node has, in mount order (parents before children).
/// Options follow what systemd uses, which is what CRI-O and the kubelet expect.
pub const BASE_MOUNTS: [Mount<'static>; 9] = [
    base("proc", "/proc", NOSUID_NODEV_NOEXEC, None),
    base("sysfs", "/sys", NOSUID_NODEV_NOEXEC, None),
    base("devtmpfs", "/dev", MountFlags::NOSUID, Some("mode=0755")),
    Mount {
        source: Some("devpts"),
        target: "/dev/pts",
        fstype: Some("devpts"),
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620"),
    },
    Mount {
        source: Some("tmpfs"),
        target: "/dev/shm",
        fstype: Some("tmpfs"),
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    Mount {
        source: Some("tmpfs"),
        target: "/run",
        fstype: Some("tmpfs"),
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
    },
    Mount {
        source: Some("tmpfs"),
        target: "/tmp",
        fstype: Some("tmpfs"),
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
    },
    base(
        "securityfs",
        "/sys/kernel/security",
        NOSUID_NODEV_NOEXEC,
        None,
    ),
    base("cgroup2", "/sys/fs/cgroup", NOSUID_NODEV_NOEXEC, None),
];

/// A mount whose source names the filesystem type, as is usual for pseudo
/// filesystems.
const fn base(
    fstype: &'static str,
    target: &'static str,
    flags: MountFlags,
    data: Option<&'static str>,
) -> Mount<'static> {
    Mount {
        source: Some(fstype),
        target,
        fstype: Some(fstype),
        flags,
        data,
    }
}

/// Links in /dev that devtmpfs does not create and programs expect. An existing
/// entry is kept: devtmpfs usually has a `/dev/ptmx` node, which since Linux 4.7
/// finds the devpts instance mounted next to it, so the link is only a fallback.
const DEV_SYMLINKS: [(&str, &str); 5] = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("pts/ptmx", "/dev/ptmx"),
];

/// sysctls that a Kubernetes node needs for pod networking.
const FORWARDING_SYSCTLS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// Runs the boot sequence. Never fails; the last line it logs is `kios-init: ready`.
/// On the kernel's initial rootfs it moves it to a tmpfs and re-executes `/init`
/// first, so as PID 1 the first call does not return when that works.
pub fn run(sys: &mut dyn System) -> Storage {
    info(
        sys,
        &format!("starting kios-init {}", env!("CARGO_PKG_VERSION")),
    );
    switch_root(sys);
    mount_base_filesystems(sys);
    let kmsg_ratelimit_lifted = match sys.open_log_devices() {
        Ok(()) => {
            let lifted = lift_kmsg_ratelimit(sys);
            info(sys, "logging to /dev/kmsg too");
            lifted
        }
        Err(e) => {
            warn(sys, &format!("cannot open /dev/kmsg: {e}; console only"));
            false
        }
    };
    create_dev_symlinks(sys);
    make_root_shared(sys);
    load_modules(sys);
    bring_up_loopback(sys);
    let storage = storage::setup(sys);
    set_hostname(sys);
    enable_forwarding(sys);
    info(sys, READY);
    if kmsg_ratelimit_lifted {
        restore_kmsg_ratelimit(sys);
    }
    storage
}

/// Container runtimes `pivot_root` out of `/`, which the kernel refuses on its
/// initial rootfs: `pivot_root(2)` needs the current root mount to have a parent
/// (fs/namespace.c: `if (!mnt_has_parent(root_mnt)) goto out4;`), and the initial
/// rootfs is the one mount that has none. So `/` must become another mount, one
/// attached on top of the rootfs.
///
/// - On a tmpfs rootfs (what the kernel makes when it has tmpfs and no `root=` is
///   given: init/do_mounts.c), `/` is bound onto `/newroot` and that bind moved onto
///   `/` (`MS_MOVE` + `chroot`). The bind shows the same files, so nothing is copied
///   and this process goes on; the tmpfs keeps its default size limit (half of RAM),
///   the one a new tmpfs would have. Shown to work with runc in `tests/init_qemu.rs`.
/// - On a ramfs rootfs (no size limit, no usage figures), as LinuxKit's init does:
///   copy the initramfs into a new tmpfs, make that `/`, and re-execute `/init` from
///   it so that nothing maps the old root. The re-executed init finds
///   `KIOS_INIT_STAGE=switched` and goes on.
fn switch_root(sys: &mut dyn System) {
    if sys.env(STAGE_VAR).as_deref() == Some("switched") {
        info(sys, "running from the tmpfs root");
        return;
    }
    match sys.initial_root() {
        None => info(sys, "/ is not the kernel's initial rootfs; no switch root"),
        Some(InitialRoot::Tmpfs) => bind_root(sys),
        Some(InitialRoot::Ramfs) => copy_root(sys),
    }
}

fn bind_root(sys: &mut dyn System) {
    let start = sys.boot_time();
    let bind = Mount {
        source: Some("/"),
        target: NEWROOT,
        fstype: None,
        flags: MountFlags::BIND.union(MountFlags::REC),
        data: None,
    };
    if let Err(e) = sys
        .mkdir_all(NEWROOT, 0o755)
        .and_then(|()| sys.mount(&bind))
    {
        warn(sys, &format!("cannot bind / on {NEWROOT}: {e}; staying on the initramfs (container runtimes cannot pivot_root)"));
        return;
    }
    if let Err(e) = sys.switch_root(NEWROOT) {
        let _ = sys.umount(NEWROOT, true);
        warn(sys, &format!("switching root to {NEWROOT} failed: {e}; staying on the initramfs (container runtimes cannot pivot_root)"));
        return;
    }
    // The bind shows the whole initramfs, its own (now empty) mount point included.
    if let Err(e) = sys.remove_dir(NEWROOT) {
        warn(sys, &format!("cannot remove the empty {NEWROOT}: {e}"));
    }
    let took = sys.boot_time().since(start);
    info(
        sys,
        &format!(
            "switched root to a bind mount of the initramfs (tmpfs, nothing copied) in {:.1} ms",
            took.as_secs_f64() * 1000.0
        ),
    );
}

fn copy_root(sys: &mut dyn System) {
    let start = sys.boot_time();
    let tmpfs = Mount {
        source: Some("rootfs"),
        target: NEWROOT,
        fstype: Some("tmpfs"),
        flags: MountFlags::NONE,
        data: Some("mode=0755"),
    };
    if let Err(e) = sys
        .mkdir_all(NEWROOT, 0o755)
        .and_then(|()| sys.mount(&tmpfs))
    {
        warn(sys, &format!("cannot mount a tmpfs on {NEWROOT}: {e}; staying on the initramfs (container runtimes cannot pivot_root)"));
        return;
    }
    match sys.move_root_entries(NEWROOT) {
        Ok(stats) => {
            let took = sys.boot_time().since(start);
            info(
                sys,
                &format!(
                    "the initramfs is a ramfs; moved it to a tmpfs: {} entries, {} KiB in {} ms",
                    stats.entries,
                    stats.bytes / 1024,
                    took.as_millis()
                ),
            );
            if stats.failed > 0 {
                warn(
                    sys,
                    &format!(
                        "{} entries of the initramfs could not be moved",
                        stats.failed
                    ),
                );
            }
        }
        Err(e) => warn(
            sys,
            &format!("moving the initramfs to {NEWROOT} failed: {e}; switching root anyway"),
        ),
    }
    if let Err(e) = sys.switch_root(NEWROOT) {
        warn(
            sys,
            &format!("switching root to {NEWROOT} failed: {e}; staying on the initramfs"),
        );
        return;
    }
    info(sys, "switched root; re-executing /init");
    let e = sys.reexec();
    warn(
        sys,
        &format!("re-executing /init failed: {e}; going on in this process"),
    );
}

/// The kernel's switch for rate limiting userspace writes to `/dev/kmsg`.
pub const DEVKMSG_SYSCTL: &str = "/proc/sys/kernel/printk_devkmsg";

/// By default (`printk.devkmsg=ratelimit`) the kernel keeps only 10 userspace
/// records per 5 s, which would drop most of the boot log from `dmesg`, `ready`
/// included. So the limit is lifted for the boot sequence and put back after it.
/// Returns whether it was lifted. A value set on the kernel command line is locked
/// and left alone.
fn lift_kmsg_ratelimit(sys: &mut dyn System) -> bool {
    match sys.read_file(DEVKMSG_SYSCTL) {
        Ok(value) if value.trim_ascii() == b"ratelimit" => {
            match sys.write_file(DEVKMSG_SYSCTL, b"on\n") {
                Ok(()) => true,
                Err(e) => {
                    warn(sys, &format!("cannot lift the /dev/kmsg rate limit: {e}"));
                    false
                }
            }
        }
        _ => false,
    }
}

/// Logs only on failure: the boot's last line must stay `ready`.
fn restore_kmsg_ratelimit(sys: &mut dyn System) {
    if let Err(e) = sys.write_file(DEVKMSG_SYSCTL, b"ratelimit\n") {
        warn(
            sys,
            &format!("cannot restore the /dev/kmsg rate limit: {e}"),
        );
    }
}

/// Mounts [`BASE_MOUNTS`], creating mount points first. A failed mount is logged
/// and skipped (securityfs, for one, may not be built into the kernel).
fn mount_base_filesystems(sys: &mut dyn System) {
    let mut mounted = 0;
    for m in &BASE_MOUNTS {
        let fstype = m.fstype.unwrap_or("?");
        if let Err(e) = sys.mkdir_all(m.target, 0o755) {
            warn(
                sys,
                &format!(
                    "cannot create mount point {}: {e}; {fstype} not mounted",
                    m.target
                ),
            );
            continue;
        }
        match sys.mount(m) {
            Ok(()) => {
                mounted += 1;
                info(sys, &format!("mounted {fstype} on {}", m.target));
            }
            Err(e) => warn(
                sys,
                &format!(
                    "mounting {fstype} on {} failed: {e}; continuing without it",
                    m.target
                ),
            ),
        }
    }
    info(
        sys,
        &format!(
            "base filesystems: {mounted} of {} mounted",
            BASE_MOUNTS.len()
        ),
    );
}

fn create_dev_symlinks(sys: &mut dyn System) {
    for (target, link) in DEV_SYMLINKS {
        match sys.symlink(target, link) {
            Ok(()) => {}
            Err(Errno(libc::EEXIST)) => {}
            Err(e) => warn(sys, &format!("cannot link {link} -> {target}: {e}")),
        }
    }
}

/// Makes every mount shared, so that mounts made by container runtimes propagate
/// (CRI-O and the kubelet need `rshared` mounts for volumes).
fn make_root_shared(sys: &mut dyn System) {
    let shared = Mount {
        source: None,
        target: "/",
        fstype: None,
        flags: MountFlags::REC.union(MountFlags::SHARED),
        data: None,
    };
    match sys.mount(&shared) {
        Ok(()) => info(sys, "made / shared (recursively)"),
        Err(e) => warn(sys, &format!("making / shared failed: {e}")),
    }
}

/// Loads the modules listed in [`MODULES_FILE`], in order. `EEXIST` (already loaded
/// or built in) counts as loaded; any other error is logged and the next module is
/// tried.
fn load_modules(sys: &mut dyn System) {
    let Some(contents) =
        read_optional(sys, MODULES_FILE, "no modules to load", "no modules loaded")
    else {
        return;
    };
    let list = config::parse_modules(&contents);
    for problem in &list.problems {
        warn(
            sys,
            &format!(
                "{MODULES_FILE} line {}: {}; line ignored",
                problem.line, problem.error
            ),
        );
    }
    let (mut loaded, mut already, mut no_device, mut failed) = (0, 0, 0, 0);
    for module in &list.modules {
        match sys.load_module(module.as_str()) {
            Ok(()) => {
                loaded += 1;
                info(sys, &format!("loaded module {module}"));
            }
            Err(ModuleError::Kernel(Errno(libc::EEXIST))) => {
                already += 1;
                info(sys, &format!("module {module} already loaded"));
            }
            // A driver for hardware this machine lacks refuses to load with ENODEV
            // (crc32c-intel on a CPU without SSE4.2, a NIC driver with no NIC): the
            // module list is written for a class of machines, so this is expected.
            Err(ModuleError::Kernel(Errno(libc::ENODEV))) => {
                no_device += 1;
                info(
                    sys,
                    &format!("module {module}: no matching device (ENODEV); skipped"),
                );
            }
            Err(ModuleError::Open(e)) => {
                failed += 1;
                warn(
                    sys,
                    &format!("cannot open module {module}: {e}; continuing"),
                );
            }
            Err(ModuleError::Kernel(e)) => {
                failed += 1;
                let hint = match e.0 {
                    libc::ENOENT => " (unknown symbol: is a module it needs listed before it?)",
                    libc::ENOEXEC => " (not a module for this kernel)",
                    _ => "",
                };
                warn(
                    sys,
                    &format!("loading module {module} failed: {e}{hint}; continuing"),
                );
            }
        }
    }
    info(
        sys,
        &format!(
            "modules: {loaded} loaded, {already} already loaded, {no_device} without a device, {failed} failed"
        ),
    );
}

fn bring_up_loopback(sys: &mut dyn System) {
    match sys.interface_up("lo") {
        Ok(()) => info(sys, "loopback lo is up"),
        Err(e) => warn(sys, &format!("bringing up lo failed: {e}")),
    }
}

/// Sets the hostname from [`HOSTNAME_FILE`]; a missing or invalid file leaves the
/// kernel's default (`(none)`, or `hostname=` from the command line).
fn set_hostname(sys: &mut dyn System) {
    let Some(contents) = read_optional(
        sys,
        HOSTNAME_FILE,
        "hostname unchanged",
        "hostname unchanged",
    ) else {
        return;
    };
    let name = match config::parse_hostname(&contents) {
        Ok(name) => name,
        Err(e) => {
            warn(
                sys,
                &format!("{HOSTNAME_FILE}: invalid hostname: {e}; hostname unchanged"),
            );
            return;
        }
    };
    match sys.set_hostname(name.as_str()) {
        Ok(()) => info(sys, &format!("hostname set to {name}")),
        Err(e) => warn(sys, &format!("setting hostname {name} failed: {e}")),
    }
}

fn enable_forwarding(sys: &mut dyn System) {
    for sysctl in FORWARDING_SYSCTLS {
        match sys.write_file(sysctl, b"1\n") {
            Ok(()) => info(sys, &format!("enabled {sysctl}")),
            Err(e) => warn(sys, &format!("cannot enable {sysctl}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::record::{Call, Recorder};

    const MODULES: &[u8] = b"# in dependency order\n\
        /lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko\n\
        /lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio_ring.ko\r\n\
        \n\
        /lib/modules/6.1.0-56-amd64/kernel/drivers/block/virtio_blk.ko   \n";

    fn boot(rec: Recorder) -> Recorder {
        let mut rec = rec;
        run(&mut rec);
        rec
    }

    #[test]
    fn on_a_tmpfs_initramfs_root_is_a_bind_of_it_before_anything_else() {
        let rec = boot(Recorder::new().initramfs());
        let a = rec.actions();
        assert_eq!(a.first(), Some(&&Call::MkdirAll(NEWROOT.into(), 0o755)));
        assert_eq!(
            a.get(1),
            Some(&&Call::Mount {
                source: Some("/".into()),
                target: NEWROOT.into(),
                fstype: None,
                flags: MountFlags(libc::MS_BIND | libc::MS_REC),
                data: None,
            })
        );
        assert_eq!(a.get(2), Some(&&Call::SwitchRoot(NEWROOT.into())));
        assert_eq!(a.get(3), Some(&&Call::RemoveDir(NEWROOT.into())));
        assert!(matches!(a.get(4), Some(Call::MkdirAll(p, _)) if p == "/proc"));
        // Nothing is copied and this process goes on.
        assert!(!rec
            .calls
            .iter()
            .any(|c| matches!(c, Call::MoveRootEntries(_) | Call::Reexec)));
        assert!(
            rec.messages().contains(
                &"switched root to a bind mount of the initramfs (tmpfs, nothing copied) in 1.2 ms"
            ),
            "{:?}",
            rec.messages()
        );
        assert_eq!(rec.messages().last(), Some(&READY));
    }

    #[test]
    fn a_failed_bind_stays_on_the_initramfs_and_boots_on() {
        let rec = boot(
            Recorder::new()
                .initramfs()
                .fail_mount(NEWROOT, libc::EINVAL),
        );
        assert!(!rec.calls.iter().any(|c| matches!(c, Call::SwitchRoot(_))));
        assert!(rec.messages().contains(
            &"cannot bind / on /newroot: EINVAL (errno 22); staying on the initramfs (container runtimes cannot pivot_root)"
        ));
        assert_eq!(rec.messages().last(), Some(&READY));
    }

    #[test]
    fn a_failed_switch_detaches_the_bind_and_boots_on() {
        let rec = boot(
            Recorder::new()
                .initramfs()
                .fail_when(|c| matches!(c, Call::SwitchRoot(_)).then_some(Errno(libc::EPERM))),
        );
        let a = rec.actions();
        assert_eq!(a.get(3), Some(&&Call::Umount(NEWROOT.into(), true)));
        assert!(!rec.calls.iter().any(|c| matches!(c, Call::RemoveDir(_))));
        assert_eq!(rec.messages().last(), Some(&READY));
    }

    #[test]
    fn on_a_ramfs_initramfs_it_is_copied_to_a_tmpfs_and_init_reexecuted() {
        let rec = boot(Recorder::new().initramfs_on_ramfs());
        let a = rec.actions();
        assert_eq!(a.first(), Some(&&Call::MkdirAll(NEWROOT.into(), 0o755)));
        assert!(
            matches!(a.get(1), Some(Call::Mount { target, fstype, .. }) if target == NEWROOT && fstype.as_deref() == Some("tmpfs"))
        );
        assert_eq!(a.get(2), Some(&&Call::MoveRootEntries(NEWROOT.into())));
        assert_eq!(a.get(3), Some(&&Call::SwitchRoot(NEWROOT.into())));
        assert_eq!(a.get(4), Some(&&Call::Reexec));
        assert!(matches!(a.get(5), Some(Call::MkdirAll(p, _)) if p == "/proc"));
        assert!(
            rec.messages().contains(
                &"the initramfs is a ramfs; moved it to a tmpfs: 10 entries, 0 KiB in 1 ms"
            ),
            "{:?}",
            rec.messages()
        );
    }

    #[test]
    fn the_reexecuted_init_does_not_switch_again() {
        let rec = boot(
            Recorder::new()
                .initramfs_on_ramfs()
                .with_file("env:KIOS_INIT_STAGE", b"switched"),
        );
        assert!(!rec
            .calls
            .iter()
            .any(|c| matches!(c, Call::MoveRootEntries(_) | Call::SwitchRoot(_))));
        assert!(rec.messages().contains(&"running from the tmpfs root"));
    }

    #[test]
    fn a_failed_tmpfs_mount_stays_on_the_ramfs_and_boots_on() {
        let rec = boot(
            Recorder::new()
                .initramfs_on_ramfs()
                .fail_mount(NEWROOT, libc::ENOMEM),
        );
        assert!(!rec.calls.iter().any(|c| matches!(c, Call::SwitchRoot(_))));
        assert_eq!(rec.messages().last(), Some(&READY));
    }

    #[test]
    fn a_root_that_is_not_the_initial_rootfs_is_left_alone() {
        let rec = boot(Recorder::new());
        assert!(!rec
            .calls
            .iter()
            .any(|c| matches!(c, Call::SwitchRoot(_) | Call::RemoveDir(_))));
        assert!(rec
            .messages()
            .contains(&"/ is not the kernel's initial rootfs; no switch root"));
    }

    fn mount_targets(rec: &Recorder) -> Vec<&str> {
        rec.calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { target, .. } => Some(target.as_str()),
                _ => None,
            })
            .collect()
    }

    fn loaded_modules(rec: &Recorder) -> Vec<&str> {
        rec.calls
            .iter()
            .filter_map(|c| match c {
                Call::LoadModule(path) => Some(path.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn base_filesystems_are_mounted_in_order_then_root_is_made_shared() {
        let rec = boot(Recorder::new());
        assert_eq!(
            mount_targets(&rec),
            [
                "/proc",
                "/sys",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/tmp",
                "/sys/kernel/security",
                "/sys/fs/cgroup",
                "/",
            ]
        );
        let last = rec.calls.iter().rev().find_map(|c| match c {
            Call::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } if target == "/" => Some((source.clone(), fstype.clone(), *flags, data.clone())),
            _ => None,
        });
        assert_eq!(
            last,
            Some((None, None, MountFlags(libc::MS_REC | libc::MS_SHARED), None))
        );
    }

    #[test]
    fn each_mount_point_is_created_just_before_its_mount() {
        let rec = boot(Recorder::new());
        let actions = rec.actions();
        for (i, call) in actions.iter().enumerate() {
            if let Call::Mount { target, .. } = call {
                if target != "/" {
                    let before = i.checked_sub(1).and_then(|j| actions.get(j));
                    assert_eq!(before, Some(&&Call::MkdirAll(target.clone(), 0o755)));
                }
            }
        }
    }

    #[test]
    fn devpts_and_run_get_the_documented_options() {
        let rec = boot(Recorder::new());
        let data_of = |wanted: &str| {
            rec.calls.iter().find_map(|c| match c {
                Call::Mount { target, data, .. } if target == wanted => data.clone(),
                _ => None,
            })
        };
        assert_eq!(
            data_of("/dev/pts").as_deref(),
            Some("newinstance,ptmxmode=0666,mode=0620")
        );
        assert_eq!(data_of("/run").as_deref(), Some("mode=0755"));
    }

    #[test]
    fn a_failing_mount_is_logged_and_the_boot_continues() {
        let rec = boot(Recorder::new().fail_mount("/sys/kernel/security", libc::ENODEV));
        let messages = rec.messages();
        assert!(messages.contains(
            &"mounting securityfs on /sys/kernel/security failed: ENODEV (errno 19); continuing without it"
        ));
        assert!(mount_targets(&rec).contains(&"/sys/fs/cgroup"));
        assert!(messages.contains(&"base filesystems: 8 of 9 mounted"));
        assert_eq!(messages.last(), Some(&READY));
    }

    #[test]
    fn a_mount_point_that_cannot_be_created_skips_only_that_mount() {
        let rec = boot(Recorder::new().fail_when(|c| {
            matches!(c, Call::MkdirAll(p, _) if p == "/tmp").then_some(Errno(libc::EROFS))
        }));
        assert!(!mount_targets(&rec).contains(&"/tmp"));
        assert!(rec
            .messages()
            .contains(&"cannot create mount point /tmp: EROFS (errno 30); tmpfs not mounted"));
        assert_eq!(rec.messages().last(), Some(&READY));
    }

    #[test]
    fn kmsg_is_opened_after_dev_is_mounted() {
        let rec = boot(Recorder::new());
        let pos = |wanted: &Call| rec.calls.iter().position(|c| c == wanted);
        let open = pos(&Call::OpenLogDevices);
        let dev = rec
            .calls
            .iter()
            .position(|c| matches!(c, Call::Mount { target, .. } if target == "/dev"));
        assert!(open.is_some() && dev < open);
    }

    #[test]
    fn kmsg_rate_limit_is_lifted_for_the_boot_and_restored_after_ready() {
        let rec = boot(Recorder::new().with_file(DEVKMSG_SYSCTL, b"ratelimit\n"));
        let on = Call::WriteFile(DEVKMSG_SYSCTL.into(), b"on\n".to_vec());
        let back = Call::WriteFile(DEVKMSG_SYSCTL.into(), b"ratelimit\n".to_vec());
        let pos = |wanted: &Call| rec.calls.iter().position(|c| c == wanted);
        let ready = rec
            .calls
            .iter()
            .position(|c| matches!(c, Call::Log(l) if l.message() == READY));
        assert!(pos(&Call::OpenLogDevices) < pos(&on));
        assert!(pos(&on).is_some() && ready < pos(&back) && ready.is_some());
        assert_eq!(rec.messages().last(), Some(&READY));
    }

    #[test]
    fn kmsg_rate_limit_set_otherwise_is_left_alone() {
        let rec = boot(Recorder::new().with_file(DEVKMSG_SYSCTL, b"on\n"));
        assert!(!rec
            .calls
            .iter()
            .any(|c| matches!(c, Call::WriteFile(p, _) if p == DEVKMSG_SYSCTL)));
    }

    #[test]
    fn modules_are_loaded_in_file_order() {
        let rec = boot(Recorder::new().with_file(MODULES_FILE, MODULES));
        assert_eq!(
            loaded_modules(&rec),
            [
                "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko",
                "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio_ring.ko",
                "/lib/modules/6.1.0-56-amd64/kernel/drivers/block/virtio_blk.ko",
            ]
        );
        assert!(rec
            .messages()
            .contains(&"modules: 3 loaded, 0 already loaded, 0 without a device, 0 failed"));
    }

    #[test]
    fn eexist_counts_as_already_loaded() {
        let virtio = "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko";
        let rec = boot(
            Recorder::new()
                .with_file(MODULES_FILE, MODULES)
                .fail_module(virtio, ModuleError::Kernel(Errno(libc::EEXIST))),
        );
        let messages = rec.messages();
        assert!(messages.contains(&format!("module {virtio} already loaded").as_str()));
        assert!(
            messages.contains(&"modules: 2 loaded, 1 already loaded, 0 without a device, 0 failed")
        );
        assert!(!messages.iter().any(|m| m.contains("failed: EEXIST")));
    }

    #[test]
    fn a_module_that_fails_to_load_is_logged_with_errno_and_the_next_is_tried() {
        let ring = "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio_ring.ko";
        let rec = boot(
            Recorder::new()
                .with_file(MODULES_FILE, MODULES)
                .fail_module(ring, ModuleError::Kernel(Errno(libc::ENOEXEC))),
        );
        let messages = rec.messages();
        assert!(messages.contains(
            &format!(
                "loading module {ring} failed: ENOEXEC (errno 8) (not a module for this kernel); continuing"
            )
            .as_str()
        ));
        assert_eq!(loaded_modules(&rec).len(), 3);
        assert!(
            messages.contains(&"modules: 2 loaded, 0 already loaded, 0 without a device, 1 failed")
        );
        assert_eq!(messages.last(), Some(&READY));
    }

    #[test]
    fn a_module_without_its_hardware_is_skipped_not_failed() {
        let rec = boot(
            Recorder::new()
                .with_file(MODULES_FILE, b"/lib/crc32c-intel.ko\n/lib/ok.ko\n")
                .fail_module(
                    "/lib/crc32c-intel.ko",
                    ModuleError::Kernel(Errno(libc::ENODEV)),
                ),
        );
        let messages = rec.messages();
        assert!(
            messages.contains(&"module /lib/crc32c-intel.ko: no matching device (ENODEV); skipped")
        );
        assert!(
            messages.contains(&"modules: 1 loaded, 0 already loaded, 1 without a device, 0 failed")
        );
    }

    #[test]
    fn a_missing_module_file_and_an_unknown_symbol_are_told_apart() {
        let rec = boot(
            Recorder::new()
                .with_file(
                    MODULES_FILE,
                    b"/lib/gone.ko\n/lib/needs_dep.ko\n/lib/ok.ko\n",
                )
                .fail_module("/lib/gone.ko", ModuleError::Open(Errno(libc::ENOENT)))
                .fail_module(
                    "/lib/needs_dep.ko",
                    ModuleError::Kernel(Errno(libc::ENOENT)),
                ),
        );
        let messages = rec.messages();
        assert!(messages.contains(&"cannot open module /lib/gone.ko: ENOENT (errno 2); continuing"));
        assert!(messages.contains(
            &"loading module /lib/needs_dep.ko failed: ENOENT (errno 2) (unknown symbol: is a module it needs listed before it?); continuing"
        ));
        assert!(
            messages.contains(&"modules: 1 loaded, 0 already loaded, 0 without a device, 2 failed")
        );
    }

    #[test]
    fn bad_module_lines_are_logged_and_the_good_ones_loaded() {
        let rec = boot(Recorder::new().with_file(MODULES_FILE, b"virtio.ko\n/lib/a.ko\n"));
        assert_eq!(loaded_modules(&rec), ["/lib/a.ko"]);
        assert!(rec.messages().contains(
            &"/etc/kios/modules line 1: \"virtio.ko\" is not an absolute path; line ignored"
        ));
    }

    #[test]
    fn missing_module_list_loads_nothing_and_is_not_a_warning() {
        let rec = boot(Recorder::new());
        assert!(loaded_modules(&rec).is_empty());
        assert!(rec
            .messages()
            .contains(&"no /etc/kios/modules; no modules to load"));
    }

    #[test]
    fn loopback_is_brought_up() {
        let rec = boot(Recorder::new());
        assert!(rec.calls.contains(&Call::InterfaceUp("lo".into())));
        assert!(rec.messages().contains(&"loopback lo is up"));
    }

    #[test]
    fn hostname_with_trailing_newline_is_trimmed_and_set() {
        let rec = boot(Recorder::new().with_file(HOSTNAME_FILE, b"node-1\n"));
        assert!(rec.calls.contains(&Call::SetHostname("node-1".into())));
        assert!(rec.messages().contains(&"hostname set to node-1"));
    }

    #[test]
    fn invalid_hostname_is_logged_and_not_set() {
        let rec = boot(Recorder::new().with_file(HOSTNAME_FILE, b"bad_name\n"));
        assert!(!rec.calls.iter().any(|c| matches!(c, Call::SetHostname(_))));
        assert!(rec
            .messages()
            .iter()
            .any(|m| m.starts_with("/etc/hostname: invalid hostname: \"bad_name\"")));
        assert_eq!(rec.messages().last(), Some(&READY));
    }

    #[test]
    fn missing_hostname_file_leaves_the_hostname_alone() {
        let rec = boot(Recorder::new());
        assert!(!rec.calls.iter().any(|c| matches!(c, Call::SetHostname(_))));
        assert!(rec
            .messages()
            .contains(&"no /etc/hostname; hostname unchanged"));
    }

    #[test]
    fn every_step_failing_still_ends_with_ready() {
        let rec = boot(
            Recorder::new()
                .with_file(MODULES_FILE, MODULES)
                .with_file(HOSTNAME_FILE, b"node\n")
                .fail_when(|c| match c {
                    Call::Log(_) | Call::ReadFile(_) | Call::Sleep(_) => None,
                    _ => Some(Errno(libc::EPERM)),
                }),
        );
        let lines: Vec<_> = rec.log_lines().collect();
        assert_eq!(lines.last().map(|l| l.message()), Some(READY));
        assert!(lines.len() > 10);
    }

    #[test]
    fn final_console_line_is_timestamped_ready_and_times_increase() {
        let rec = boot(Recorder::new());
        let lines: Vec<_> = rec.log_lines().collect();
        let last = lines.last().map(|l| l.console_text()).unwrap_or_default();
        // The recorder's clock advances 1.25 ms per reading, plus the 5 s spent
        // waiting for a data partition that never comes.
        assert!(
            last.starts_with('[') && last.ends_with("ms] kios-init: ready"),
            "{last}"
        );
        assert!(lines.windows(2).all(|w| w[0].at < w[1].at));
        assert_eq!(
            lines.first().map(|l| l.message()),
            Some("starting kios-init 0.1.0")
        );
    }
}
