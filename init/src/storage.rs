//! The node's disks: find the data and store partitions, mount them, and put the
//! state that must survive a reboot on the data partition.
//!
//! Input: block devices in `/sys/class/block` and their GPTs (or `kios.data=` on the
//! kernel command line). Output: the mounts below and a [`Storage`] saying what is
//! there, which decides CRI-O's flags. Every failure degrades: with no data partition
//! the node runs with its state in memory, with no store CRI-O has no additional
//! image store. This module does not format or grow partitions (the builder and the
//! resize pod do).
//!
//! | what | where |
//! |---|---|
//! | data partition (ext4) | `/var/lib/kios/data` |
//! | `/var/lib/containers` (CRI-O storage root) | bind of `data/containers` |
//! | `/var/lib/kubelet` (pod directory) | bind of `data/kubelet` |
//! | `/var/log` (service and pod logs) | bind of `data/log` |
//! | `/etc` | overlay: lower the initramfs `/etc`, upper `data/etc/upper` |
//! | store partition (EROFS) | `/var/lib/kios/store`, read-only |
//!
//! With `kios.store.verity=` on the command line the store is mounted only through
//! a dm-verity device over it and its `KIOS_STORE_VERITY` hash partition
//! ([`crate::verity`]), and its metadata is read once; when any of that fails the
//! store is refused and [`Storage::refused`] says why: CRI-O must not start on it.

use std::time::Duration;

use crate::gpt;
use crate::system::{info, warn};
use crate::system::{Errno, Mount, MountFlags, System};

pub const DATA_TYPE: &str = kios_contract::partition::DATA_TYPE;
pub const STORE_TYPE: &str = kios_contract::partition::STORE_TYPE;
pub const STORE_VERITY_TYPE: &str = kios_contract::partition::STORE_VERITY_TYPE;
/// The device-mapper name of the verified store.
const VERITY_NAME: &str = "kios-store";
/// Read through dm-verity before the store is trusted: the files CRI-O reads first.
const STORE_METADATA: [&str; 2] = ["overlay-images/images.json", "overlay-layers/layers.json"];
pub const DATA_MOUNT: &str = kios_contract::mount::DATA;
pub const STORE_MOUNT: &str = kios_contract::mount::STORE;
/// Written on the data partition once its layout exists; its content is the version.
pub const LAYOUT_MARKER: &str = "/var/lib/kios/data/.kios-layout";
/// How long to wait for the data partition's disk to appear.
pub const DEVICE_WAIT: Duration = Duration::from_secs(5);
const DEVICE_POLL: Duration = Duration::from_millis(20);
const CMDLINE: &str = "/proc/cmdline";

/// The directories of the data partition, relative to it.
const LAYOUT: [&str; 6] = [
    "containers",
    "kubelet",
    "log",
    "log/kios",
    "etc/upper",
    "etc/work",
];

/// Bind mounts of data subdirectories: (subdirectory, target).
const BINDS: [(&str, &str); 3] = [
    ("containers", "/var/lib/containers"),
    ("kubelet", "/var/lib/kubelet"),
    ("log", "/var/log"),
];

/// What the storage step left mounted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    pub data: bool,
    pub store: bool,
    /// Why the store was refused (the command line asked for a verified store and
    /// it could not be verified): CRI-O and the kubelet are then not started.
    pub refused: Option<&'static str>,
}

/// The partitions found: device paths such as `/dev/vda3`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub data: Option<String>,
    pub store: Option<String>,
    pub store_verity: Option<String>,
}

/// The value of `kios.data=` on the kernel command line, if it names a device.
pub fn data_arg(cmdline: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(cmdline);
    text.split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix("kios.data="))
        .filter(|v| v.starts_with("/dev/") && !v.contains(".."))
        .map(str::to_owned)
}

/// One pass over the block devices: every whole disk's GPT is read.
pub fn scan(sys: &mut dyn System) -> Found {
    let mut found = Found::default();
    let Ok(devices) = sys.list_dir("/sys/class/block") else {
        return found;
    };
    for disk in &devices {
        let sysdir = format!("/sys/class/block/{disk}");
        if sys.exists(&format!("{sysdir}/partition")) {
            continue;
        }
        let sector = sys
            .read_file(&format!("{sysdir}/queue/logical_block_size"))
            .ok()
            .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u64>().ok())
            .filter(|s| s.is_power_of_two() && *s >= 512)
            .unwrap_or(512);
        let dev = format!("/dev/{disk}");
        let Some(header) = sys
            .read_at(&dev, sector, 512)
            .ok()
            .and_then(|b| gpt::parse_header(&b))
        else {
            continue;
        };
        let Ok(entries) = sys.read_at(
            &dev,
            header.entries_lba.saturating_mul(sector),
            header.entries_bytes(),
        ) else {
            continue;
        };
        for (number, ty) in gpt::parse_entries(&header, &entries) {
            let slot = match ty.as_str() {
                DATA_TYPE => &mut found.data,
                STORE_TYPE => &mut found.store,
                STORE_VERITY_TYPE => &mut found.store_verity,
                _ => continue,
            };
            if slot.is_none() {
                *slot = partition_device(sys, disk, &devices, number);
            }
        }
    }
    found
}

/// The device of partition `number` of `disk`: the entry of `/sys/class/block`
/// whose `partition` file says that number and that lives under the disk.
fn partition_device(
    sys: &mut dyn System,
    disk: &str,
    devices: &[String],
    number: u32,
) -> Option<String> {
    devices
        .iter()
        .filter(|d| d.starts_with(disk) && d.as_str() != disk)
        .find(|d| {
            sys.read_file(&format!("/sys/class/block/{d}/partition"))
                .ok()
                .and_then(|b| String::from_utf8_lossy(&b).trim().parse::<u32>().ok())
                == Some(number)
        })
        .map(|d| format!("/dev/{d}"))
}

/// Finds the partitions, waiting up to [`DEVICE_WAIT`] for the data partition (a
/// disk driver may still be probing).
pub fn find(sys: &mut dyn System) -> Found {
    let named = sys.read_file(CMDLINE).ok().and_then(|c| data_arg(&c));
    let start = sys.boot_time();
    loop {
        let mut found = scan(sys);
        if let Some(dev) = &named {
            found.data = sys.exists(dev).then(|| dev.clone());
        }
        let waited = sys.boot_time().since(start);
        if found.data.is_some() || waited >= DEVICE_WAIT {
            if waited >= DEVICE_POLL {
                info(
                    sys,
                    &format!("waited {} ms for block devices", waited.as_millis()),
                );
            }
            if found.data.is_none() {
                match &named {
                    Some(dev) => warn(sys, &format!(
                        "kios.data={dev} does not exist after {} ms; no data partition: state is kept in memory and lost at reboot",
                        DEVICE_WAIT.as_millis())),
                    None => warn(sys, &format!(
                        "no data partition (GPT type {DATA_TYPE}) after {} ms; state is kept in memory and lost at reboot",
                        DEVICE_WAIT.as_millis())),
                }
            }
            return found;
        }
        sys.sleep(DEVICE_POLL);
    }
}

/// Finds and mounts the data and store partitions and the mounts that put state on
/// the data partition. Never fails; see [`Storage`] for what it managed.
pub fn setup(sys: &mut dyn System) -> Storage {
    let found = find(sys);
    let mut storage = Storage::default();
    if let Some(dev) = &found.data {
        storage.data = mount_data(sys, dev);
    }
    let cmdline = sys.read_file(CMDLINE).unwrap_or_default();
    match (crate::verity::asked(&cmdline), &found.store) {
        (None, Some(dev)) => storage.store = mount_store(sys, dev, dev),
        (None, None) => info(
            sys,
            "no store partition; CRI-O starts without an additional image store",
        ),
        (Some(asked), store) => {
            let verified = asked.and_then(|a| match store {
                Some(dev) => mount_verified(sys, dev, found.store_verity.as_deref(), &a),
                None => Err(
                    "the command line asks for a verified store, but there is no store partition"
                        .into(),
                ),
            });
            match verified {
                Ok(()) => storage.store = true,
                Err(reason) => {
                    warn(sys, &format!("store verification failed: {reason}; CRI-O and the kubelet are not started on an unverified store"));
                    storage.refused = Some("the store failed verification");
                }
            }
        }
    }
    if let Err(e) = sys.mkdir_all("/var/log/kios", 0o755) {
        warn(
            sys,
            &format!("cannot create /var/log/kios: {e}; service logs are not kept"),
        );
    }
    storage
}

fn mount_data(sys: &mut dyn System, dev: &str) -> bool {
    let m = Mount {
        source: Some(dev),
        target: DATA_MOUNT,
        fstype: Some("ext4"),
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: None,
    };
    if let Err(e) = sys
        .mkdir_all(DATA_MOUNT, 0o755)
        .and_then(|()| sys.mount(&m))
    {
        warn(sys, &format!("mounting the data partition {dev} on {DATA_MOUNT} failed: {e}; state is kept in memory and lost at reboot"));
        return false;
    }
    info(
        sys,
        &format!("mounted data partition {dev} on {DATA_MOUNT}"),
    );
    let first_boot = !sys.exists(LAYOUT_MARKER);
    for dir in LAYOUT {
        if let Err(e) = sys.mkdir_all(&format!("{DATA_MOUNT}/{dir}"), 0o755) {
            warn(sys, &format!("cannot create {DATA_MOUNT}/{dir}: {e}"));
        }
    }
    if first_boot {
        match sys.create_file(LAYOUT_MARKER, b"1\n") {
            Ok(()) => info(sys, "first boot: created the data partition layout"),
            Err(e) => warn(sys, &format!("cannot write {LAYOUT_MARKER}: {e}")),
        }
    }
    for (sub, target) in BINDS {
        let source = format!("{DATA_MOUNT}/{sub}");
        let m = Mount {
            source: Some(&source),
            target,
            fstype: None,
            flags: MountFlags::BIND,
            data: None,
        };
        match sys.mkdir_all(target, 0o755).and_then(|()| sys.mount(&m)) {
            Ok(()) => info(sys, &format!("bound {source} on {target}")),
            Err(e) => warn(
                sys,
                &format!("binding {source} on {target} failed: {e}; {target} stays in memory"),
            ),
        }
    }
    let options =
        format!("lowerdir=/etc,upperdir={DATA_MOUNT}/etc/upper,workdir={DATA_MOUNT}/etc/work");
    let m = Mount {
        source: Some("overlay"),
        target: "/etc",
        fstype: Some("overlay"),
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: Some(&options),
    };
    match sys.mount(&m) {
        Ok(()) => info(
            sys,
            "mounted the /etc overlay (changes kept on the data partition)",
        ),
        Err(e) => warn(
            sys,
            &format!("mounting the /etc overlay failed: {e}; changes to /etc are lost at reboot"),
        ),
    }
    true
}

/// Mounts the store through dm-verity and reads its metadata through it: the root
/// hash is checked by the first reads. On any failure nothing is left mounted or
/// mapped, and the reason is returned.
fn mount_verified(
    sys: &mut dyn System,
    dev: &str,
    hash: Option<&str>,
    asked: &crate::verity::Asked,
) -> Result<(), String> {
    let hash = hash.ok_or_else(|| {
        format!("there is no hash partition (GPT type {STORE_VERITY_TYPE}) for the store {dev}")
    })?;
    let sb = sys
        .read_at(hash, 0, 512)
        .map_err(|e| format!("cannot read {hash}: {e}"))?;
    let sb = crate::verity::superblock(&sb).map_err(|e| format!("{hash}: {e}"))?;
    let (sectors, params) = crate::verity::table(asked, &sb, dev, hash)?;
    let target = crate::system::DmTarget {
        sectors,
        kind: "verity",
        params: &params,
    };
    let mapped = sys.dm_create(VERITY_NAME, &target).map_err(|e| {
        format!(
            "cannot set up dm-verity over {dev} and {hash}: {e} (is the dm_verity module listed?)"
        )
    })?;
    let undo = |sys: &mut dyn System, mounted: bool| {
        if mounted {
            let _ = sys.umount(STORE_MOUNT, false);
        }
        let _ = sys.dm_remove(VERITY_NAME);
    };
    if !mount_store(sys, &mapped, dev) {
        undo(sys, false);
        return Err(format!(
            "the store on {mapped} cannot be mounted (a changed store fails its first reads here)"
        ));
    }
    for file in STORE_METADATA {
        let path = format!("{STORE_MOUNT}/{file}");
        if let Err(e) = sys.read_file(&path) {
            undo(sys, true);
            return Err(format!(
                "reading {file} through dm-verity failed: {e}: the store does not match the root hash on the command line"
            ));
        }
    }
    info(
        sys,
        &format!(
            "store verified by dm-verity: root hash {}, {} blocks, hash tree on {hash}; metadata read back",
            asked.root, asked.blocks
        ),
    );
    Ok(())
}

/// Mounts `source` (the store partition `dev`, or the dm-verity device over it)
/// read-only on [`STORE_MOUNT`].
fn mount_store(sys: &mut dyn System, source: &str, dev: &str) -> bool {
    let m = Mount {
        source: Some(source),
        target: STORE_MOUNT,
        fstype: Some("erofs"),
        flags: MountFlags::RDONLY
            .union(MountFlags::NOSUID)
            .union(MountFlags::NODEV),
        data: None,
    };
    match sys
        .mkdir_all(STORE_MOUNT, 0o755)
        .and_then(|()| sys.mount(&m))
    {
        Ok(()) => {
            info(
                sys,
                &if source == dev {
                    format!("mounted store partition {dev} on {STORE_MOUNT} (read-only)")
                } else {
                    format!("mounted store partition {dev} through {source} on {STORE_MOUNT} (read-only)")
                },
            );
            true
        }
        Err(e) => {
            let hint = if e == Errno(libc::ENODEV) {
                " (is the erofs module listed?)"
            } else {
                ""
            };
            let fallback = if source == dev {
                "; CRI-O starts without an additional image store"
            } else {
                ""
            };
            warn(
                sys,
                &format!(
                    "mounting the store partition {dev} from {source} failed: {e}{hint}{fallback}"
                ),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::tests::table;
    use crate::system::record::{Call, Recorder};

    /// A virtio disk `vda` with the given partition types, as the kernel shows it.
    pub fn disk(rec: Recorder, types: &[&str]) -> Recorder {
        let (h, e) = table(types);
        let mut rec = rec
            .with_dir("/sys/class/block", &["vda"])
            .with_file("/dev/vda@512", &h)
            .with_file("/dev/vda@1024", &e);
        let mut names = vec!["vda".to_owned()];
        for (i, t) in types.iter().enumerate() {
            if !t.is_empty() {
                let name = format!("vda{}", i + 1);
                rec = rec.with_file(
                    &format!("/sys/class/block/{name}/partition"),
                    format!("{}\n", i + 1).as_bytes(),
                );
                rec = rec.with_file(&format!("/dev/{name}"), b"");
                names.push(name);
            }
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        rec.with_dir("/sys/class/block", &names)
    }

    const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

    fn mounts(rec: &Recorder) -> Vec<(String, String)> {
        rec.calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { source, target, .. } => {
                    Some((source.clone().unwrap_or_default(), target.clone()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn partitions_are_found_by_type_guid() {
        let mut rec = disk(
            Recorder::new(),
            &[ESP, STORE_TYPE, DATA_TYPE, STORE_VERITY_TYPE],
        );
        assert_eq!(
            scan(&mut rec),
            Found {
                data: Some("/dev/vda3".into()),
                store: Some("/dev/vda2".into()),
                store_verity: Some("/dev/vda4".into()),
            }
        );
    }

    #[test]
    fn data_store_binds_and_overlay_are_mounted_in_order() {
        let mut rec = disk(Recorder::new(), &[ESP, STORE_TYPE, DATA_TYPE]);
        let s = setup(&mut rec);
        assert_eq!(
            s,
            Storage {
                data: true,
                store: true,
                refused: None
            }
        );
        let m = mounts(&rec);
        let expect = [
            ("/dev/vda3", DATA_MOUNT),
            ("/var/lib/kios/data/containers", "/var/lib/containers"),
            ("/var/lib/kios/data/kubelet", "/var/lib/kubelet"),
            ("/var/lib/kios/data/log", "/var/log"),
            ("overlay", "/etc"),
            ("/dev/vda2", STORE_MOUNT),
        ];
        let got: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, expect);
        let store_flags = rec.calls.iter().find_map(|c| match c {
            Call::Mount {
                target,
                flags,
                fstype,
                ..
            } if target == STORE_MOUNT => Some((*flags, fstype.clone())),
            _ => None,
        });
        assert_eq!(
            store_flags,
            Some((
                MountFlags(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV),
                Some("erofs".into())
            ))
        );
        let overlay = rec.calls.iter().find_map(|c| match c {
            Call::Mount { target, data, .. } if target == "/etc" => data.clone(),
            _ => None,
        });
        assert_eq!(overlay.as_deref(), Some("lowerdir=/etc,upperdir=/var/lib/kios/data/etc/upper,workdir=/var/lib/kios/data/etc/work"));
    }

    const ROOT: &str = "5e1655100c17afb36159344ca2d4f38cffa431ff71cf3119202254445b0e552f";

    /// A disk with a store and its hash partition (entry 4), and a command line
    /// asking for the store to be verified.
    fn verity_disk() -> Recorder {
        let cmdline =
            format!("console=ttyS0 kios.store.verity={ROOT} kios.store.verity.blocks=789\n");
        disk(
            Recorder::new(),
            &[ESP, STORE_TYPE, DATA_TYPE, STORE_VERITY_TYPE],
        )
        .with_file(CMDLINE, cmdline.as_bytes())
        .with_file("/dev/vda4@0", &crate::verity::tests::sb(789, &[0xab]))
    }

    fn dm_calls(rec: &Recorder) -> Vec<&Call> {
        rec.calls
            .iter()
            .filter(|c| matches!(c, Call::DmCreate { .. } | Call::DmRemove(_)))
            .collect()
    }

    #[test]
    fn a_verified_store_is_mounted_from_its_dm_verity_device_after_its_metadata_reads() {
        let mut rec = verity_disk()
            .with_file("/var/lib/kios/store/overlay-images/images.json", b"[]")
            .with_file("/var/lib/kios/store/overlay-layers/layers.json", b"[]");
        let s = setup(&mut rec);
        assert!(s.store);
        assert_eq!(s.refused, None);
        assert_eq!(
            dm_calls(&rec),
            [&Call::DmCreate {
                name: "kios-store".into(),
                sectors: 789 * 8,
                kind: "verity".into(),
                params: format!("1 /dev/vda2 /dev/vda4 4096 4096 789 1 sha256 {ROOT} ab"),
            }]
        );
        assert!(mounts(&rec).contains(&("/dev/dm-0".into(), STORE_MOUNT.into())));
        assert!(!mounts(&rec).iter().any(|(src, _)| src == "/dev/vda2"));
        assert!(rec
            .messages()
            .join("\n")
            .contains("store verified by dm-verity: root hash 5e1655"));
    }

    #[test]
    fn a_store_whose_first_reads_fail_is_unmounted_unmapped_and_refused() {
        // What the kernel answers for a block that does not match its hash.
        let mut rec = verity_disk().fail_when(|c| {
            matches!(c, Call::ReadFile(p) if p.ends_with("images.json")).then_some(Errno(libc::EIO))
        });
        let s = setup(&mut rec);
        assert!(!s.store);
        assert_eq!(s.refused, Some("the store failed verification"));
        assert!(matches!(
            dm_calls(&rec)[..],
            [Call::DmCreate { .. }, Call::DmRemove(_)]
        ));
        assert!(rec.calls.contains(&Call::Umount(STORE_MOUNT.into(), false)));
        let log = rec.messages().join("\n");
        assert!(log.contains("store verification failed: reading overlay-images/images.json through dm-verity failed: EIO"), "{log}");
    }

    #[test]
    fn without_its_hash_partition_or_with_another_block_count_the_store_is_refused_unmounted() {
        let cmdline = format!("kios.store.verity={ROOT} kios.store.verity.blocks=789");
        let mut rec = disk(Recorder::new(), &[ESP, STORE_TYPE, DATA_TYPE])
            .with_file(CMDLINE, cmdline.as_bytes());
        let s = setup(&mut rec);
        assert_eq!((s.store, s.refused.is_some()), (false, true));
        assert!(rec
            .messages()
            .join("\n")
            .contains("there is no hash partition"));
        assert!(!mounts(&rec).iter().any(|(_, t)| t == STORE_MOUNT));

        let mut rec = verity_disk().with_file("/dev/vda4@0", &crate::verity::tests::sb(7, &[1]));
        let s = setup(&mut rec);
        assert_eq!((s.store, s.refused.is_some()), (false, true));
        assert!(rec
            .messages()
            .join("\n")
            .contains("covers 7 blocks but the command line says 789"));
        assert!(dm_calls(&rec).is_empty());

        // Asked for, but the disk has no store at all: refused, not silently skipped.
        let mut rec =
            disk(Recorder::new(), &[ESP, DATA_TYPE]).with_file(CMDLINE, cmdline.as_bytes());
        let s = setup(&mut rec);
        assert_eq!((s.store, s.refused.is_some()), (false, true));
    }

    #[test]
    fn first_boot_creates_the_layout_and_the_marker() {
        let mut rec = disk(Recorder::new(), &[ESP, DATA_TYPE]);
        setup(&mut rec);
        assert!(rec.calls.contains(&Call::MkdirAll(
            "/var/lib/kios/data/etc/upper".into(),
            0o755
        )));
        assert!(rec
            .calls
            .contains(&Call::CreateFile(LAYOUT_MARKER.into(), b"1\n".to_vec())));
        assert!(rec
            .messages()
            .contains(&"first boot: created the data partition layout"));
    }

    #[test]
    fn later_boots_keep_the_layout() {
        let mut rec = disk(Recorder::new(), &[ESP, DATA_TYPE]).with_file(LAYOUT_MARKER, b"1\n");
        setup(&mut rec);
        assert!(!rec.calls.iter().any(|c| matches!(c, Call::CreateFile(..))));
        assert!(!rec.messages().iter().any(|m| m.starts_with("first boot")));
    }

    #[test]
    fn no_store_partition_degrades_with_a_clear_line() {
        let mut rec = disk(Recorder::new(), &[ESP, DATA_TYPE]);
        let s = setup(&mut rec);
        assert_eq!(
            s,
            Storage {
                data: true,
                store: false,
                refused: None
            }
        );
        assert!(rec
            .messages()
            .contains(&"no store partition; CRI-O starts without an additional image store"));
    }

    #[test]
    fn no_data_partition_waits_a_bounded_time_then_degrades() {
        let mut rec = disk(Recorder::new(), &[ESP]);
        let s = setup(&mut rec);
        assert_eq!(s, Storage::default());
        assert!(mounts(&rec).is_empty());
        let m = rec.messages();
        assert!(
            m.iter().any(|l| l.starts_with(
                "no data partition (GPT type 97AAC693-D920-465A-94FE-EB59FC86DFAA) after 5000 ms"
            )),
            "{m:?}"
        );
        let slept: Duration = rec
            .calls
            .iter()
            .filter_map(|c| match c {
                Call::Sleep(d) => Some(*d),
                _ => None,
            })
            .sum();
        assert!(slept <= DEVICE_WAIT + DEVICE_POLL, "{slept:?}");
    }

    #[test]
    fn kios_data_names_the_device() {
        assert_eq!(
            data_arg(b"console=ttyS0 kios.data=/dev/sdb1 quiet\n"),
            Some("/dev/sdb1".into())
        );
        assert_eq!(data_arg(b"kios.data=sdb1"), None);
        assert_eq!(data_arg(b"kios.data=/dev/../etc"), None);
        let mut rec = disk(Recorder::new(), &[ESP, DATA_TYPE])
            .with_file(CMDLINE, b"kios.data=/dev/vdb\n")
            .with_file("/dev/vdb", b"");
        assert_eq!(find(&mut rec).data.as_deref(), Some("/dev/vdb"));
    }

    #[test]
    fn a_data_mount_failure_degrades() {
        let mut rec = disk(Recorder::new(), &[ESP, DATA_TYPE]).fail_mount(DATA_MOUNT, libc::EINVAL);
        let s = setup(&mut rec);
        assert!(!s.data);
        assert!(rec.messages().iter().any(|m| m.starts_with(
            "mounting the data partition /dev/vda2 on /var/lib/kios/data failed: EINVAL"
        )));
        assert_eq!(mounts(&rec).len(), 1);
    }
}
