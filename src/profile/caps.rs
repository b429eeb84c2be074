//! Linux capability names and numbers (linux/include/uapi/linux/capability.h), as
//! Kubernetes spells them: without the `CAP_` prefix.

/// Every capability of Linux 6.x, by number.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities that give a container the host, and why: a pod gets one only
/// when the profile allows it for that pod by name (`allow.capabilities`, or
/// `allow.sysAdmin` for SYS_ADMIN). Chosen from capabilities(7): each one, alone or
/// with a device or a syscall the default seccomp profile of a `pods:` file may let
/// through, reaches the host's kernel, memory or files past the container.
pub const HOST: &[(&str, &str)] = &[
    ("SYS_ADMIN", "is nearly root (mounts, namespaces, many kernel interfaces)"),
    ("SYS_MODULE", "loads code into the host's kernel (kernel modules)"),
    ("SYS_PTRACE", "reads and changes the memory of other processes"),
    ("BPF", "loads BPF programs into the host's kernel"),
    ("PERFMON", "traces the host's kernel (perf events, with BPF it reads kernel memory)"),
    ("SYS_RAWIO", "reaches I/O ports and physical memory (iopl, ioperm, /dev/mem)"),
    ("SYS_BOOT", "reboots the host or replaces its kernel (kexec_load)"),
    (
        "DAC_READ_SEARCH",
        "opens any file of the host's filesystems by handle (open_by_handle_at), past the container's root",
    ),
];

/// Devices that are the host's physical memory and I/O ports: a pod gets one only
/// when the profile's `allow.devices` names it for that pod.
pub const HOST_DEVICES: &[&str] = &["/dev/mem", "/dev/kmem", "/dev/port"];

/// Why capability `name` gives a container the host; `None` for the others.
pub fn host_risk(name: &str) -> Option<&'static str> {
    HOST.iter().find(|(c, _)| *c == name).map(|(_, why)| *why)
}

/// The number of capability `name` (no `CAP_` prefix, upper case).
pub fn number(name: &str) -> Option<u32> {
    CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .map(|n| n as u32)
}

/// The bit mask of a set of capabilities, as `/proc/PID/status` shows `CapEff`.
/// Unknown names are ignored.
pub fn mask<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter_map(number)
        .fold(0, |m, n| m | (1u64 << n))
}

/// The known name closest to `name`, for a "did you mean" hint.
pub fn closest(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let upper = upper.trim_start_matches("CAP_");
    CAPABILITIES
        .iter()
        .map(|c| (distance(upper, c), *c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_masks_match_the_kernel() {
        assert_eq!(number("NET_ADMIN"), Some(12));
        assert_eq!(number("SYS_TIME"), Some(25));
        assert_eq!(number("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(mask(["NET_ADMIN", "NET_RAW"]), 0x3000);
        assert_eq!(closest("NET_ADMN"), Some("NET_ADMIN"));
        assert_eq!(closest("cap_sys_time"), Some("SYS_TIME"));
    }

    #[test]
    fn host_capabilities_are_linux_capabilities() {
        for (c, _) in HOST {
            assert!(number(c).is_some(), "{c}");
        }
        assert!(host_risk("SYS_MODULE").is_some());
        assert!(host_risk("NET_ADMIN").is_none());
    }
}
