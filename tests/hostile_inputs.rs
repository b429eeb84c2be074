//! Hostile inputs (issue 12, classes 4 and 10): every untrusted stream is read
//! through a bound, and an input folder is never left through a symlink.
//!
//! - a registry that streams a manifest without end, with or without a (lying)
//!   length, fails the pull with a clear error under a 2 GiB address-space limit;
//! - a FIFO as the profile, as a base or as the `kernel check` input fails at once;
//!   a character device as `--init` or as the `kernel check` input is refused, not
//!   read until memory runs out;
//! - a gzip bomb in a daemon image fails the build while it is decompressed, having
//!   written no more than about the disk's size into the temporary folder;
//! - a kernel module that is a symlink out of the kernel folder is an error naming
//!   it, not a copy of the host file in the initramfs.
//!
//! The hostile registry is a small HTTP server on 127.0.0.1 in this file; device
//! nodes are made with `mknod` in a temporary folder.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::layout;
use common::{
    build_command, inputs, kios_build, mkfifo, pause_yaml, profile_text, require_tool, text,
    write_profile,
};
use sha2::Digest as _;

/// What the hostile registry answers to a manifest request.
#[derive(Clone, Copy)]
enum Endless {
    /// `Transfer-Encoding: chunked`, chunks without end.
    Chunked,
    /// A `Content-Length` of 100 GiB, then bytes without end.
    HugeLength,
    /// A Bearer challenge whose token endpoint answers without end.
    Token,
    /// An error status (400) with a body without end.
    ErrorBody,
    /// A well-formed manifest whose one layer is 100 GiB by its descriptor; the
    /// blobs it names come without end.
    HugeLayer,
}

/// A registry on 127.0.0.1 that answers `GET /v2/` as a registry and every manifest
/// request with a body that never ends. Counts the bytes it managed to send.
struct HostileRegistry {
    port: u16,
    sent: Arc<AtomicU64>,
}

impl HostileRegistry {
    fn start(mode: Endless) -> HostileRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, mode, &counter));
            }
        });
        HostileRegistry { port, sent }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn serve(stream: TcpStream, mode: Endless, sent: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    // A TLS ClientHello (kios-build tries HTTPS first) is not a request line: close.
    if reader.read_line(&mut request).is_err() || !request.starts_with("GET ") {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request.split(' ').nth(1).unwrap_or("").to_string();
    let mut out = stream;
    if path == "/v2/" {
        let _ = out.write_all(
            b"HTTP/1.1 200 OK\r\nDocker-Distribution-Api-Version: registry/2.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
        return;
    }
    if matches!(mode, Endless::HugeLayer) && path.contains("/manifests/") {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":{}}}]}}"#,
            hex::encode(sha2::Sha256::digest(config)),
            config.len(),
            "ab".repeat(32),
            100u64 << 30
        );
        let _ = out.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{manifest}",
                manifest.len()
            )
            .as_bytes(),
        );
        return;
    }
    let chunked = "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (head, mode) = match mode {
        Endless::Token if path.starts_with("/token") => {
            (format!("HTTP/1.1 200 OK\r\n{chunked}"), Endless::Chunked)
        }
        Endless::Token => {
            let port = out.local_addr().unwrap().port();
            let _ = out.write_all(format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"hostile\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ).as_bytes());
            return;
        }
        Endless::ErrorBody => (
            format!("HTTP/1.1 400 Bad Request\r\n{chunked}"),
            Endless::Chunked,
        ),
        Endless::Chunked | Endless::HugeLayer => {
            (format!("HTTP/1.1 200 OK\r\n{chunked}"), Endless::Chunked)
        }
        Endless::HugeLength => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
                100u64 << 30
            ),
            Endless::HugeLength,
        ),
    };
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let block = vec![b' '; 1 << 16];
    loop {
        let written = match mode {
            Endless::Chunked => out
                .write_all(format!("{:x}\r\n", block.len()).as_bytes())
                .and_then(|()| out.write_all(&block))
                .and_then(|()| out.write_all(b"\r\n")),
            _ => out.write_all(&block),
        };
        if written.is_err() {
            return;
        }
        sent.fetch_add(block.len() as u64, Ordering::Relaxed);
    }
}

/// Runs `cmd` under an address-space limit of `bytes` (prlimit, util-linux).
fn limited(bytes: u64, cmd: &Command) -> Command {
    require_tool("prlimit", "util-linux");
    let mut c = Command::new("prlimit");
    c.arg(format!("--as={bytes}"))
        .arg("--")
        .arg(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c
}

/// Waits for `child` at most `limit`; kills it and fails the test when it hangs.
fn finish_within(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} still ran after {limit:?}: it hangs\n{}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A failure reported by kios-build itself: an exit status, not a signal (an
/// allocator abort or a kill), and the error on stderr.
fn assert_clean_failure(out: &Output) -> String {
    assert!(
        matches!(out.status.code(), Some(c) if c != 0),
        "expected a reported failure, not success or a signal\n{}",
        text(out)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("error:"), "{}", text(out));
    err
}

/// A profile in `d` whose dhcp daemon runs `test/endless:1` from `registry`.
fn endless_profile(d: &Path, registry: &HostileRegistry) -> PathBuf {
    write_profile(
        d,
        "node.yaml",
        &profile_text(&format!(
            "daemons:\n  - name: dhcp\n    image: {}/test/endless:1\n{}",
            registry.host(),
            pause_yaml()
        )),
    )
}

fn hostile_registry_pull_fails_within_memory(mode: Endless, expected: &str) {
    let registry = HostileRegistry::start(mode);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let profile = endless_profile(d, &registry);
    let mut cmd = kios_build();
    cmd.arg("pull")
        .arg(&profile)
        .arg("--quiet")
        .arg("--cache-dir")
        .arg(d.join("cache"));
    let out = finish_within(
        spawn(&mut limited(2 << 30, &cmd)),
        Duration::from_secs(120),
        "a pull from an endless registry",
    );
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("test/endless") && err.contains(expected),
        "the error names the repository and says {expected:?}:\n{err}"
    );
    // The body was given up at the bound, not read on: what the server could send
    // is the bound plus what the sockets' buffers hold.
    let sent = registry.sent.load(Ordering::Relaxed);
    assert!(sent < 64 << 20, "{sent} bytes were read from the registry");
}

#[test]
fn a_layer_larger_than_the_disk_is_refused_before_a_byte_of_it_is_downloaded() {
    hostile_registry_pull_fails_within_memory(Endless::HugeLayer, "more than the whole disk");
}

#[test]
fn a_registry_streaming_a_chunked_manifest_without_end_fails_the_pull_cleanly() {
    hostile_registry_pull_fails_within_memory(Endless::Chunked, "larger than the 4MiB allowed");
}

#[test]
fn a_registry_announcing_a_huge_manifest_length_fails_the_pull_cleanly() {
    hostile_registry_pull_fails_within_memory(Endless::HugeLength, "larger than the 4MiB allowed");
}

#[test]
fn a_token_endpoint_answering_without_end_fails_the_pull_cleanly() {
    hostile_registry_pull_fails_within_memory(
        Endless::Token,
        "the token endpoint: the answer is longer than the 1MiB allowed",
    );
}

#[test]
fn an_error_answer_without_end_is_read_only_for_its_start() {
    hostile_registry_pull_fails_within_memory(
        Endless::ErrorBody,
        "the registry answered HTTP 400 Bad Request",
    );
}

#[test]
fn a_fifo_as_the_registry_auth_file_or_ca_file_is_refused_at_once() {
    let registry = HostileRegistry::start(Endless::Chunked);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("auth.fifo");
    mkfifo(&fifo);
    let profile = endless_profile(d, &registry);
    let pull = || {
        let mut c = kios_build();
        c.arg("pull")
            .arg(&profile)
            .arg("--quiet")
            .arg("--cache-dir")
            .arg(d.join("cache"));
        c
    };
    let out = finish_within(
        spawn(pull().env("REGISTRY_AUTH_FILE", &fifo)),
        Duration::from_secs(60),
        "a pull with a FIFO as the auth file",
    );
    let err = assert_clean_failure(&out);
    assert!(err.contains("auth.fifo") && err.contains("a FIFO"), "{err}");
    let out = finish_within(
        spawn(pull().arg("--registry-ca").arg(&fifo)),
        Duration::from_secs(60),
        "a pull with a FIFO as the CA file",
    );
    let err = assert_clean_failure(&out);
    assert!(err.contains("auth.fifo") && err.contains("a FIFO"), "{err}");
}

/// `/dev/zero`'s twin (char 1:5), made in a temporary folder.
fn zero_device(dir: &Path) -> PathBuf {
    let p = dir.join("zero");
    common::mknod(&p, "c", Some((1, 5)));
    p
}

#[test]
fn a_fifo_as_the_profile_or_as_a_base_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("node.yaml");
    mkfifo(&fifo);
    let out = finish_within(
        spawn(kios_build().arg("validate").arg(&fifo)),
        Duration::from_secs(20),
        "validate of a FIFO profile",
    );
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("node.yaml") && err.contains("a FIFO") && err.contains("regular file"),
        "{err}"
    );

    let base = d.join("base.yaml");
    mkfifo(&base);
    let child = write_profile(
        d,
        "child.yaml",
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: ./base.yaml\nhostname: x\n",
    );
    let out = finish_within(
        spawn(kios_build().arg("validate").arg(&child)),
        Duration::from_secs(20),
        "validate of a profile whose base is a FIFO",
    );
    let err = assert_clean_failure(&out);
    assert!(err.contains("base.yaml") && err.contains("a FIFO"), "{err}");

    // A regular file that no profile could be is refused by size, not parsed.
    let huge = d.join("huge.yaml");
    fs::File::create(&huge).unwrap().set_len(64 << 20).unwrap();
    let out = run_limited(1 << 30, kios_build().arg("validate").arg(&huge));
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("huge.yaml") && err.contains("larger than"),
        "{err}"
    );
}

fn run_limited(bytes: u64, cmd: &mut Command) -> Output {
    finish_within(
        spawn(&mut limited(bytes, cmd)),
        Duration::from_secs(60),
        "kios-build",
    )
}

#[test]
fn kernel_check_refuses_a_fifo_a_device_and_an_oversized_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("config.fifo");
    mkfifo(&fifo);
    let out = finish_within(
        spawn(kios_build().args(["kernel", "check"]).arg(&fifo)),
        Duration::from_secs(20),
        "kernel check of a FIFO",
    );
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("config.fifo") && err.contains("a FIFO"),
        "{err}"
    );

    let zero = zero_device(d);
    let out = run_limited(1 << 30, kios_build().args(["kernel", "check"]).arg(&zero));
    let err = assert_clean_failure(&out);
    assert!(
        err.contains(zero.to_str().unwrap()) && err.contains("a character device"),
        "{err}"
    );

    let sparse = d.join("vmlinux");
    fs::File::create(&sparse)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let out = run_limited(1 << 30, kios_build().args(["kernel", "check"]).arg(&sparse));
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("vmlinux") && err.contains("larger than"),
        "{err}"
    );
}

#[test]
fn a_device_or_a_fifo_as_init_is_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let profile = write_profile(d, "node.yaml", &profile_text(""));
    let zero = zero_device(d);
    let out = run_limited(
        1 << 30,
        kios_build()
            .arg("validate")
            .arg(&profile)
            .arg("--init")
            .arg(&zero),
    );
    let err = assert_clean_failure(&out);
    assert!(
        err.contains(zero.to_str().unwrap())
            && err.contains("a character device")
            && err.contains("--init"),
        "{err}"
    );

    let fifo = d.join("init.fifo");
    mkfifo(&fifo);
    let out = finish_within(
        spawn(
            kios_build()
                .arg("validate")
                .arg(&profile)
                .arg("--init")
                .arg(&fifo),
        ),
        Duration::from_secs(60),
        "validate with a FIFO as --init",
    );
    let err = assert_clean_failure(&out);
    assert!(err.contains("init.fifo") && err.contains("a FIFO"), "{err}");
}

/// A one-layer image in the layout `dir`, tagged `tag`, whose gzip layer holds one
/// file of `size` zero bytes. Written streaming: neither the tar nor the gzip is
/// ever in memory.
fn bomb_layout(dir: &Path, tag: &str, size: u64) {
    /// Hashes and counts what goes through to `inner`.
    struct Hashing<W> {
        inner: W,
        hash: sha2::Sha256,
        count: u64,
    }
    impl<W: Write> Write for Hashing<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hash.update(&buf[..n]);
            self.count += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let hex = |h: sha2::Sha256| format!("sha256:{}", hex::encode(h.finalize()));

    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let part = dir.join("layer.part");
    let file = Hashing {
        inner: std::io::BufWriter::new(fs::File::create(&part).unwrap()),
        hash: sha2::Sha256::new(),
        count: 0,
    };
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = Hashing {
        inner: gz,
        hash: sha2::Sha256::new(),
        count: 0,
    };
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(0);
    header.set_cksum();
    tar.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        tar.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    // Padding to the block, then the two zero blocks that end the archive.
    let pad = (512 - size % 512) % 512;
    tar.write_all(&vec![0u8; pad as usize + 1024]).unwrap();
    let diff_id = hex(tar.hash);
    let mut file = tar.inner.finish().unwrap();
    file.flush().unwrap();
    let (digest, layer_size) = (hex(file.hash), file.count);
    drop(file.inner);
    let digest_hex = digest.trim_start_matches("sha256:");
    fs::rename(&part, dir.join("blobs/sha256").join(digest_hex)).unwrap();

    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = layout::blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [{"mediaType": layout::OCI_GZIP, "digest": digest, "size": layer_size}],
    });
    let desc = layout::blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    layout::tag(dir, &[(tag, desc)]);
}

/// The bytes below `dir` (apparent sizes), not following symlinks.
fn tree_size(dir: &Path) -> u64 {
    let Ok(list) = fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in list.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        total += if m.is_dir() {
            tree_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

#[test]
fn a_gzip_bomb_in_a_daemon_image_fails_within_the_disk_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    bomb_layout(&d.join("bomb"), "1", 4 << 30);
    let blob_bytes = tree_size(&d.join("bomb"));
    assert!(blob_bytes < 64 << 20, "the bomb is small: {blob_bytes}");
    let profile = write_profile(
        d,
        "node.yaml",
        &profile_text(&format!(
            "daemons:\n  - name: dhcp\n    image: oci:bomb:1\ndisk:\n  size: 320MiB\n{}",
            pause_yaml()
        )),
    );
    let tmp = d.join("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut cmd = build_command(&profile, &d.join("node.img"));
    cmd.arg("--quiet").env("TMPDIR", &tmp);
    let child = spawn(&mut cmd);
    // The temporary folder's size, sampled while the build runs.
    let mut peak = 0;
    let start = Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(tree_size(&tmp));
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the build of a bomb still runs after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("bomb") && err.contains("layer 0") && err.contains("disk.size"),
        "the error names image and layer and what to change:\n{err}"
    );
    assert!(
        peak < 640 << 20,
        "the temporary folder grew to {peak} bytes for a 320MiB disk"
    );
}

/// A copy of the test kernel folder made of hard links (no space, no time), with
/// its index files replaced (never written through: they are links to the inputs).
fn kernel_copy(dest: &Path) -> (PathBuf, String) {
    let src = inputs().join("kernel");
    common::run_tool(
        "cp",
        "coreutils",
        &["-al", src.to_str().unwrap(), dest.to_str().unwrap()],
    );
    let modules = dest.join("lib/modules");
    let version = fs::read_dir(&modules)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    (modules.join(&version), version)
}

#[test]
fn a_kernel_module_linked_out_of_the_kernel_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel = d.join("kernel");
    let (version_dir, _) = kernel_copy(&kernel);
    let secret = d.join("secret");
    fs::write(&secret, "host secret\n").unwrap();

    // modules.dep gains a module whose file is a symlink to a host file outside.
    let dep = version_dir.join("modules.dep");
    let mut index = fs::read_to_string(&dep).unwrap();
    fs::remove_file(&dep).unwrap(); // a hard link to the inputs: replace, never write
    index.push_str("kernel/evil.ko:\n");
    fs::write(&dep, index).unwrap();
    symlink(&secret, version_dir.join("kernel/evil.ko")).unwrap();

    let text = profile_text("").replace(
        &format!("  path: {}\n", inputs().join("kernel").display()),
        &format!("  path: {}\n  modules: [evil]\n", kernel.display()),
    );
    let profile = write_profile(d, "node.yaml", &text);
    let out = common::run(kios_build().arg("validate").arg(&profile));
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("evil.ko") && err.contains("outside") && err.contains("secret"),
        "the error names the module and where it leads:\n{err}"
    );

    // A link that stays inside the kernel folder is followed.
    fs::remove_file(version_dir.join("kernel/evil.ko")).unwrap();
    let real = fs::read_dir(version_dir.join("kernel/fs/ext4"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    symlink(&real, version_dir.join("kernel/evil.ko")).unwrap();
    let out = common::run(kios_build().arg("validate").arg(&profile));
    assert!(out.status.success(), "{}", common::text(&out));
}

#[test]
fn a_kernel_image_linked_out_of_the_kernel_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kernel = d.join("kernel");
    kernel_copy(&kernel);
    let outside = d.join("vmlinuz-elsewhere");
    fs::copy(kernel.join("boot/vmlinuz"), &outside).unwrap();
    fs::remove_file(kernel.join("boot/vmlinuz")).unwrap();
    symlink(&outside, kernel.join("boot/vmlinuz")).unwrap();
    let profile = write_profile(
        d,
        "node.yaml",
        &profile_text("").replace(
            &format!("  path: {}\n", inputs().join("kernel").display()),
            &format!("  path: {}\n", kernel.display()),
        ),
    );
    let out = common::run(kios_build().arg("validate").arg(&profile));
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("boot/vmlinuz") && err.contains("outside"),
        "{err}"
    );
}
