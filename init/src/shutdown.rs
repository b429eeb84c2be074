//! The end of a shutdown, once every other process is gone: sync, unmount every
//! filesystem in the reverse order of mounting (lazily as a last resort), sync
//! again, and power off or reboot.
//!
//! Input: `/proc/self/mounts`. Output: the calls above and one log line per step.
//! Stopping the services and killing processes is `supervise.rs`'s job.

use crate::system::{info, warn};
use crate::system::{PowerAction, System};

const MOUNTS: &str = "/proc/self/mounts";

/// Mount points in `/proc/self/mounts` order (which is mount order), with the
/// kernel's octal escapes (`\040` for a space) decoded.
pub fn mount_points(contents: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(contents)
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(unescape)
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(o) => {
                let v = o.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Syncs, unmounts, powers off or reboots. Returns only if `reboot(2)` failed.
pub fn finish(sys: &mut dyn System, action: PowerAction) {
    info(sys, "syncing filesystems");
    sys.sync();
    let points = sys
        .read_file(MOUNTS)
        .map(|c| mount_points(&c))
        .unwrap_or_default();
    let mut left = Vec::new();
    let mut unmounted = 0;
    for target in points.iter().rev().filter(|t| t.as_str() != "/") {
        match sys.umount(target, false) {
            Ok(()) => unmounted += 1,
            Err(_) => left.push(target.clone()),
        }
    }
    let mut lazy = 0;
    for target in &left {
        // A second try: a mount under it may have gone since.
        if sys.umount(target, false).is_ok() {
            unmounted += 1;
            continue;
        }
        match sys.umount(target, true) {
            Ok(()) => {
                lazy += 1;
                info(sys, &format!("{target} is busy; detached it lazily"));
            }
            Err(e) => warn(sys, &format!("cannot unmount {target}: {e}")),
        }
    }
    info(
        sys,
        &format!("unmounted {unmounted} filesystems, {lazy} lazily"),
    );
    sys.sync();
    info(sys, &format!("{action} now"));
    let e = sys.power(action);
    warn(sys, &format!("reboot(2) for {action} failed: {e}; halted"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::record::{Call, Recorder};
    use crate::system::Errno;

    const MOUNTS_TEXT: &[u8] = b"none / tmpfs rw 0 0\n\
        proc /proc proc rw 0 0\n\
        devtmpfs /dev devtmpfs rw 0 0\n\
        /dev/vda3 /var/lib/kios/data ext4 rw 0 0\n\
        /dev/vda3 /var/log ext4 rw 0 0\n\
        overlay /etc overlay rw 0 0\n\
        x /mnt/with\\040space tmpfs rw 0 0\n";

    #[test]
    fn mounts_are_undone_in_reverse_order_then_power_off() {
        let mut rec = Recorder::new().with_file(MOUNTS, MOUNTS_TEXT);
        finish(&mut rec, PowerAction::PowerOff);
        let order: Vec<String> = rec
            .actions()
            .into_iter()
            .filter_map(|c| match c {
                Call::Umount(t, _) => Some(format!("umount {t}")),
                Call::Sync => Some("sync".into()),
                Call::Power(a) => Some(format!("{a}")),
                _ => None,
            })
            .collect();
        assert_eq!(
            order,
            [
                "sync",
                "umount /mnt/with space",
                "umount /etc",
                "umount /var/log",
                "umount /var/lib/kios/data",
                "umount /dev",
                "umount /proc",
                "sync",
                "power off"
            ]
        );
    }

    #[test]
    fn a_busy_mount_is_detached_lazily_as_a_last_resort() {
        let mut rec = Recorder::new()
            .with_file(MOUNTS, MOUNTS_TEXT)
            .fail_when(|c| {
                matches!(c, Call::Umount(t, false) if t == "/dev").then_some(Errno(libc::EBUSY))
            });
        finish(&mut rec, PowerAction::Reboot);
        assert!(rec.calls.contains(&Call::Umount("/dev".into(), true)));
        assert!(rec
            .messages()
            .contains(&"unmounted 5 filesystems, 1 lazily"));
        assert_eq!(
            rec.calls.iter().rev().find(|c| matches!(c, Call::Power(_))),
            Some(&Call::Power(PowerAction::Reboot))
        );
    }
}
