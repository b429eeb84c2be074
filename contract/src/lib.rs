//! The contract between kios-build and the node: what the builder writes, kios-init
//! reads, `inspect` reports and the tests check, defined once.
//!
//! A value here is an interface: changing one changes what an image built by an older
//! kios-build means to a newer kios-init. The crate has no dependencies and no code
//! beyond constants, so that kios-init (libc only, static) can use it as freely as the
//! builder. It does not say how a file is formatted: that stays with the one module
//! that writes it and the one that reads it (`docs/boot-flow.md`, `docs/init.md`).

/// `path` without its leading `/`: how the builder's filesystem trees name a path
/// of the node (`relative(file::HOSTNAME)` is `etc/hostname`).
pub const fn relative(path: &'static str) -> &'static str {
    match path.as_bytes().split_first() {
        Some((b'/', rest)) => match core::str::from_utf8(rest) {
            Ok(rest) => rest,
            Err(_) => panic!("not UTF-8"),
        },
        _ => path,
    }
}

/// GPT partition type GUIDs, in the upper-case text form (UEFI 2.10, 5.3.3: the first
/// three fields little-endian on disk). kios-init finds its partitions by type, never
/// by number or label.
pub mod partition {
    /// The EFI system partition (UEFI 2.10, table 5.7).
    pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    /// The kiOS data partition (ext4), mounted read-write.
    pub const DATA_TYPE: &str = "97AAC693-D920-465A-94FE-EB59FC86DFAA";
    /// The kiOS pre-seeded image store (EROFS), mounted read-only.
    pub const STORE_TYPE: &str = "6AA8382C-3F51-482D-AEF7-46F7E6811D8E";
    /// The dm-verity hash tree of the store (`veritysetup`'s format, superblock
    /// first), present when the store is verified at boot.
    pub const STORE_VERITY_TYPE: &str = "8EC51F32-9A6B-4F1C-94CB-D739549DA307";
    /// Partition names (GPT entry names; for people and `inspect`, not for finding).
    pub const ESP_NAME: &str = "KIOS_ESP";
    pub const STORE_NAME: &str = "KIOS_STORE";
    pub const STORE_VERITY_NAME: &str = "KIOS_STORE_VERITY";
    pub const DATA_NAME: &str = "KIOS_DATA";
}

/// Kernel command line arguments kios-build writes into the UKI (so that they are
/// covered by its signature) and kios-init reads.
pub mod cmdline {
    /// `kios.store.verity=<root hash, hex>`: mount the store only through dm-verity
    /// with this root hash; never without it.
    pub const STORE_VERITY: &str = "kios.store.verity";
    /// `kios.store.verity.blocks=<N>`: the 4 KiB data blocks the hash tree covers
    /// (the superblock must say the same).
    pub const STORE_VERITY_BLOCKS: &str = "kios.store.verity.blocks";
}

/// Where kios-init mounts the partitions.
pub mod mount {
    /// The data partition: CRI-O's and the kubelet's state, the daemons' folders.
    pub const DATA: &str = "/var/lib/kios/data";
    /// The store partition, read-only: CRI-O's additional image store.
    pub const STORE: &str = "/var/lib/kios/store";
}

/// Files in the initramfs that kios-build generates and kios-init reads.
pub mod file {
    /// The kernel modules to load, one absolute `.ko` path a line, in load order.
    pub const MODULES: &str = "/etc/kios/modules";
    /// The node's hostname (one line).
    pub const HOSTNAME: &str = "/etc/hostname";
    /// `os-release(5)` of the image (also the UKI's `.osrel`).
    pub const OS_RELEASE: &str = "/etc/os-release";
    /// containers/storage's configuration: the store partition as an additional store.
    pub const STORAGE_CONF: &str = "/etc/containers/storage.conf";
    /// The kubelet's configuration once the node joins a cluster.
    pub const KUBELET_CONFIG: &str = "/etc/kubernetes/config.yaml";
    /// The kubelet's configuration in standalone mode (static pods only).
    pub const KUBELET_CONFIG_STANDALONE: &str = "/etc/kubernetes/config-standalone.yaml";
    /// The kubelet's kubeconfig; its appearance restarts the kubelet.
    pub const KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
    pub const BOOTSTRAP_KUBECONFIG: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
    pub const CREDENTIAL_CONFIG: &str = "/etc/kubernetes/credential-provider.yaml";
    pub const NODE_LABELS: &str = "/etc/kubernetes/node-labels";
    pub const NODE_IP: &str = "/etc/kubernetes/node-ip";
    /// The cluster's CA certificate, for the kubelet's client authentication.
    pub const CLUSTER_CA: &str = "/etc/kubernetes/pki/ca.crt";
    /// CRI-O's drop-in naming the pause image pre-seeded in the store.
    pub const CRIO_PAUSE_DROPIN: &str = "/etc/crio/crio.conf.d/10-kios-pause.conf";
    /// The static pods' folder (the kubelet's `staticPodPath`).
    pub const STATIC_PODS: &str = "/etc/kubernetes/manifests";
    pub const CREDENTIAL_BIN_DIR: &str = "/usr/libexec/kubernetes/credential-providers";
}

/// The system tree's programs kios-init starts.
pub mod program {
    pub const CRIO: &str = "/usr/bin/crio";
    pub const KUBELET: &str = "/usr/bin/kubelet";
    /// CRI-O's socket, whose appearance lets the kubelet start.
    pub const CRIO_SOCKET: &str = "/var/run/crio/crio.sock";
}

/// kios-init's system socket: one byte a command, from a privileged pod (a drain
/// agent, the bootstrap) that mounts it (`docs/boot-flow.md`).
pub mod socket {
    pub const PATH: &str = "/run/system.sock";
    /// Shut down and power off; kios-init echoes it to every client as the notice of
    /// a shutdown, and waits for [`CONTINUE`].
    pub const SHUTDOWN: u8 = 0x01;
    /// Go on with a shutdown that was announced.
    pub const CONTINUE: u8 = 0x02;
    pub const RESTART_KUBELET: u8 = 0x03;
    pub const RESTART_CRIO: u8 = 0x04;
    /// As [`SHUTDOWN`], then reboot.
    pub const REBOOT: u8 = 0x05;
}

/// kios-init's console log (`docs/init.md`).
pub mod log {
    /// The tag of every line: `[1234.567ms] kios-init: <message>`.
    pub const TAG: &str = "kios-init";
    /// The message of the last line of a successful boot sequence, exactly.
    pub const READY: &str = "ready";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_drops_only_the_leading_slash() {
        assert_eq!(relative(file::HOSTNAME), "etc/hostname");
        assert_eq!(relative("etc/x"), "etc/x");
        assert_eq!(relative("/"), "");
    }
}
