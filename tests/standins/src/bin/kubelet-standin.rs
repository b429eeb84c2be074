//! Test double for the kubelet (not the kubelet): see tests/standins/README.md.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kios_standins::{
    announce, answer_shutdown, connect, mode, say, send, shutdown, started_before, stay,
};

const KUBECONFIG: &str = kios_contract::file::KUBECONFIG;
const MARKER: &str = "/run/kios-test-kubelet-started";
/// The OCI bundle the `container` mode runs (put in the image by the test).
const BUNDLE: &str = "/var/lib/kios-test/bundle";
/// The bundle of the `store-container` mode: its root is the image's layers from
/// the pre-seeded store, stacked by [`kios_standins::store`].
const STORE_BUNDLE: &str = "/var/lib/kios-test/store-bundle";

fn main() {
    let args = announce("kubelet");
    match mode("kubelet", "stay").as_str() {
        "crash" => std::process::exit(1),
        "shutdown" => shutdown("kubelet"),
        "kmsg" => {
            report_kmsg();
            shutdown("kubelet");
        }
        "bootstrap" => {
            if args.iter().any(|a| a == "--kubeconfig") {
                shutdown("kubelet");
            } else if !std::path::Path::new(KUBECONFIG).exists() {
                let _ = std::fs::create_dir_all("/etc/kubernetes");
                match std::fs::write(KUBECONFIG, "# written by the kubelet test double\n") {
                    Ok(()) => say("STANDIN kubelet wrote /etc/kubernetes/kubelet.conf"),
                    Err(e) => say(&format!("STANDIN kubelet cannot write {KUBECONFIG}: {e}")),
                }
                let _ = send(kios_contract::socket::RESTART_KUBELET);
            }
        }
        "pcr" => {
            report_pcr11();
            shutdown("kubelet");
        }
        "drain" => drain(),
        "restart-crio" => restart_crio(),
        "container" => {
            run_container(BUNDLE);
            sigterm_init();
        }
        "read-store" => {
            read_store();
            shutdown("kubelet");
        }
        "store-container" => {
            if store_rootfs() {
                run_container(STORE_BUNDLE);
            }
            sigterm_init();
        }
        _ => {}
    }
    stay()
}

/// Waits for a shutdown (from anywhere: ctrl-alt-del, say) and lets it continue.
fn drain() {
    let Some(s) = connect() else {
        say("STANDIN kubelet cannot reach /run/system.sock");
        return;
    };
    say("STANDIN kubelet waiting for a shutdown");
    answer_shutdown("kubelet", s);
}

/// First start: asks for a CRI-O restart and a kubelet restart at once (`0x04`,
/// `0x03`). Started again: asks for a reboot (`0x05`) and lets it continue.
fn restart_crio() {
    if !started_before(MARKER) {
        say("STANDIN kubelet sends 0x04 then 0x03");
        let _keep = send_bytes(&[0x04, 0x03]);
        stay()
    }
    say("STANDIN kubelet started again");
    match send_bytes(&[0x05]) {
        Some(s) => answer_shutdown("kubelet", s),
        None => say("STANDIN kubelet cannot reach /run/system.sock"),
    }
}

fn send_bytes(bytes: &[u8]) -> Option<std::os::unix::net::UnixStream> {
    use std::io::Write;
    let mut s = connect()?;
    s.write_all(bytes).ok()?;
    Some(s)
}

/// Runs a container with the real runc, which `pivot_root`s into the bundle's
/// rootfs as CRI-O's runtimes do: that fails with EINVAL on the kernel's initial
/// rootfs, so this shows the switch root did its job.
fn run_container(bundle: &str) {
    let child = Command::new("/usr/sbin/runc")
        .args([
            "--root",
            "/run/runc",
            "run",
            "--bundle",
            bundle,
            "kios-test",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    match child {
        Ok(out) => {
            for l in BufReader::new(&out.stdout[..])
                .lines()
                .map_while(Result::ok)
            {
                say(&format!("STANDIN kubelet container stdout: {l}"));
            }
            for l in BufReader::new(&out.stderr[..])
                .lines()
                .map_while(Result::ok)
            {
                say(&format!("STANDIN kubelet container stderr: {l}"));
            }
            say(&format!("STANDIN kubelet runc exited: {}", out.status));
        }
        Err(e) => say(&format!("STANDIN kubelet cannot run runc: {e}")),
    }
}

/// Assembles the root of the image `kios.test.image=` names from the store kios-init
/// mounted, as CRI-O would; says what it stacked.
fn store_rootfs() -> bool {
    let name = mode("image", "busybox");
    let store = std::path::Path::new(kios_contract::mount::STORE);
    let stacked = kios_standins::store::layer_dirs(store, &name)
        .and_then(|(full, dirs)| kios_standins::store::mount_rootfs(&dirs).map(|()| (full, dirs)));
    match stacked {
        Ok((full, dirs)) => {
            say(&format!(
                "STANDIN kubelet store image {full}: {} layer(s) stacked on {}",
                dirs.len(),
                kios_standins::store::ROOTFS
            ));
            true
        }
        Err(e) => {
            say(&format!("STANDIN kubelet cannot use the store: {e}"));
            false
        }
    }
}

/// Reads every regular file of the mounted store once and says how long it took
/// (`scripts/bench-store-boot`: what the store's compression costs a node that
/// starts its containers' files from it, cold).
fn read_store() {
    use std::io::Read;
    let start = std::time::Instant::now();
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    let mut dirs = vec![std::path::PathBuf::from(kios_contract::mount::STORE)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            say(&format!("STANDIN kubelet cannot list {}", dir.display()));
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                let Ok(mut f) = std::fs::File::open(entry.path()) else {
                    say(&format!(
                        "STANDIN kubelet cannot open {}",
                        entry.path().display()
                    ));
                    continue;
                };
                files += 1;
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => bytes += n as u64,
                        Err(e) => {
                            say(&format!(
                                "STANDIN kubelet read error {}: {e}",
                                entry.path().display()
                            ));
                            break;
                        }
                    }
                }
            }
        }
    }
    let ms = start.elapsed().as_millis().max(1);
    say(&format!(
        "STANDIN kubelet read-store {files} files, {bytes} bytes in {ms} ms ({} MB/s)",
        bytes as u128 * 1000 / ms / 1_000_000
    ));
}

/// Says the TPM's PCR 11 (sha256 bank), as the kernel shows it.
fn report_pcr11() {
    const PCR11: &str = "/sys/class/tpm/tpm0/pcr-sha256/11";
    match std::fs::read_to_string(PCR11) {
        Ok(v) => say(&format!(
            "STANDIN kubelet pcr11: {}",
            v.trim().to_lowercase()
        )),
        Err(e) => say(&format!("STANDIN kubelet cannot read {PCR11}: {e}")),
    }
}

/// Sends SIGTERM to PID 1 (the only way it gets one: from inside), staying
/// connected to the system socket to answer the shutdown broadcast.
fn sigterm_init() {
    let Some(s) = connect() else {
        say("STANDIN kubelet cannot reach /run/system.sock");
        return;
    };
    // SAFETY: kill(2) has no memory effects.
    let rc = unsafe { libc::kill(1, libc::SIGTERM) };
    say(&format!("STANDIN kubelet sent SIGTERM to pid 1 (rc {rc})"));
    answer_shutdown("kubelet", s);
}

/// Reads the kernel log (`/dev/kmsg`, without blocking) and says how many records
/// kios-init wrote and the priority of its `loopback lo is up` record.
fn report_kmsg() {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nonblock())
        .open("/dev/kmsg");
    let Ok(mut f) = f else {
        say("STANDIN kubelet cannot open /dev/kmsg");
        return;
    };
    let (mut records, mut priority) = (0, None);
    let mut buf = vec![0u8; 8192];
    // One read(2) is one record: "PRIORITY,SEQ,TIME,FLAGS;MESSAGE".
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        let rec = String::from_utf8_lossy(&buf[..n]);
        let Some((head, msg)) = rec.split_once(';') else {
            continue;
        };
        if msg.starts_with("kios-init: ") {
            records += 1;
            if msg.starts_with("kios-init: loopback lo is up") {
                priority = head
                    .split(',')
                    .next()
                    .and_then(|p| p.parse::<u32>().ok())
                    .map(|p| p & 7);
            }
        }
    }
    say(&format!(
        "STANDIN kubelet kmsg: {records} kios-init records; lo up at priority {}",
        priority
            .map(|p| p.to_string())
            .unwrap_or_else(|| "none".into())
    ));
}

/// `O_NONBLOCK` (x86_64 and aarch64 Linux).
fn libc_o_nonblock() -> i32 {
    0o4000
}
