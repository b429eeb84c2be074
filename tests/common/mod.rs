//! Shared fixtures for the integration tests: the offline inputs, the static
//! kios-init, the real tools the tests call, and QEMU.
//!
//! A missing tool or input makes the test fail with what to install or run; no
//! test is ever skipped.
#![allow(dead_code)]

pub mod keys;
pub mod layout;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The offline inputs made by scripts/prepare-inputs.
pub fn inputs() -> PathBuf {
    checked_inputs(inputs_root(), "scripts/prepare-inputs")
}

/// `$KIOS_TEST_INPUTS`, else `.inputs` beside the repository.
fn inputs_root() -> PathBuf {
    std::env::var_os("KIOS_TEST_INPUTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".inputs"))
}

/// `dir`, once its kernel, stub and system parts are complete (`make` says how).
fn checked_inputs(dir: PathBuf, make: &str) -> PathBuf {
    for part in ["kernel", "stub", "system"] {
        assert!(
            dir.join(part).join(".done").exists(),
            "test inputs missing in {}: run {make} (or scripts/test)",
            dir.display()
        );
    }
    dir
}

/// Runs `tool` (from the Debian `package`) with `args`, which must succeed: its
/// standard output.
pub fn run_tool(tool: &str, package: &str, args: &[&str]) -> Vec<u8> {
    require_tool(tool, package);
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{tool}` ({e}): install the `{package}` package"));
    assert!(
        out.status.success(),
        "`{tool} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The static kios-init made by scripts/build-init.
pub fn init_binary() -> PathBuf {
    let p = std::env::var_os("KIOS_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/x86_64-unknown-linux-gnu/release/kios-init"));
    assert!(
        p.is_file(),
        "kios-init not built at {}: run scripts/build-init (or scripts/test)",
        p.display()
    );
    p
}

/// Fails the test when `tool` is not installed, naming the Debian package.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
        || Path::new("/sbin").join(tool).is_file();
    assert!(
        found,
        "`{tool}` is required by this test: apt-get install {package} (scripts/install-deps does)"
    );
}

/// `kios-build` with kios-init set.
pub fn kios_build() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kios-build"));
    c.env("KIOS_INIT", init_binary());
    // arm64 profiles take theirs from KIOS_INIT_ARM64; tests that build one call
    // init_binary_arm64() first, which fails when it is missing.
    if let Some(p) = built_init_arm64() {
        c.env("KIOS_INIT_ARM64", p);
    }
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().expect("command starts");
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A profile for the qemu base using the offline inputs, with `extra` YAML appended.
pub fn profile_text(extra: &str) -> String {
    let i = inputs();
    format!(
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nhostname: test-node\nkernel:\n  path: {k}\nboot:\n  stub: {{path: {s}}}\nsystem:\n  path: {y}\n{extra}",
        k = i.join("kernel").display(),
        s = i.join("stub/linuxx64.efi.stub").display(),
        y = i.join("system").display(),
    )
}

pub fn write_profile(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

/// `kios-build build PROFILE -o OUT`, for a test to add its flags and environment.
pub fn build_command(profile: &Path, out: &Path) -> Command {
    let mut cmd = kios_build();
    cmd.arg("build").arg(profile).arg("-o").arg(out);
    cmd
}

/// Builds `profile` to `out` with `epoch`, asserting success.
pub fn build(profile: &Path, out: &Path, epoch: u64) {
    let o = run(build_command(profile, out)
        .arg("--quiet")
        .env("SOURCE_DATE_EPOCH", epoch.to_string()));
    assert!(o.status.success(), "build failed:\n{}", text(&o));
}

/// `kios-build inspect --json` as a JSON value.
pub fn inspect(img: &Path) -> serde_json::Value {
    let o = run(kios_build().arg("inspect").arg(img).arg("--json"));
    assert!(o.status.success(), "inspect failed:\n{}", text(&o));
    serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON")
}

/// Copies `size` bytes at `offset` of `img` to a new file `dest` (holes stay holes).
pub fn extract(img: &Path, offset: u64, size: u64, dest: &Path) {
    let mut src = fs::File::open(img).unwrap();
    let mut dst = fs::File::create(dest).unwrap();
    dst.set_len(size).unwrap();
    src.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = ((size - done) as usize).min(buf.len());
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(done)).unwrap();
            dst.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// `kios-build run IMG` with the console going to `log` (a file the test can read
/// while the guest runs), the network off, `args` after the image (`--until`,
/// `--writable`, `-- QEMU_ARGS`...). Every QEMU boot of the tests goes through the
/// product's own `run`: one way to boot an image. The child is `kios-build`; QEMU
/// dies with it (PR_SET_PDEATHSIG).
pub fn spawn_run(img: &Path, log: &Path, args: &[String]) -> Child {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    let out = fs::File::create(log).unwrap();
    kios_build()
        .arg("run")
        .arg(img)
        .args(["--network", "none"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .expect("kios-build run starts")
}

/// Runs `kios-build run IMG ARGS` to its end (it stops at `--until`, at QEMU's exit
/// or at `--timeout`); returns its exit code, the console and what it said on stderr.
pub fn run_image(img: &Path, args: &[String]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let child = spawn_run(img, &log, args);
    let out = child.wait_with_output().unwrap();
    let console = fs::read(&log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    (
        out.status.code(),
        console,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Boots `img` until `until` appears on the serial console or `timeout` passes.
/// Returns whether it appeared, and the console. `writable` boots the image itself
/// rather than a snapshot.
pub fn boot(img: &Path, until: &str, timeout: Duration, writable: bool) -> (bool, String) {
    let mut args = vec![
        "--until".to_string(),
        regex::escape(until),
        "--timeout".to_string(),
        timeout.as_secs().to_string(),
    ];
    if writable {
        args.push("--writable".into());
    }
    let (code, console, _) = run_image(img, &args);
    (code == Some(0), console)
}

/// Writes an OCI image layout at `layout` with one image tagged `tag` for linux/amd64,
/// whose layers are the given host folders, in order (GNU tar, gzip -n; owners and
/// modes as they are on the host, mtimes 0). Returns the manifest digest.
pub fn oci_layout(layout: &Path, tag: &str, layers: &[&Path]) -> String {
    let tars: Vec<(&str, Vec<u8>)> = layers
        .iter()
        .map(|d| (layout::OCI_GZIP, layout::folder_tar(d, false)))
        .collect();
    let d = layout::image(layout, "amd64", &tars);
    layout::tag(layout, &[(tag, d.clone())]);
    d["digest"].as_str().unwrap().to_string()
}

/// Boots `img` itself (writable) in QEMU until the guest powers off or `timeout`
/// passes. Returns whether QEMU exited by itself (power-off, reboot or failure: the
/// caller reads the console), and the console.
pub fn boot_to_poweroff(img: &Path, timeout: Duration) -> (bool, String) {
    let args = [
        "--writable".to_string(),
        "--timeout".to_string(),
        timeout.as_secs().to_string(),
    ];
    let (_, console, stderr) = run_image(img, &args);
    (!stderr.contains("no power-off within"), console)
}

/// `(first byte, size in bytes)` of the GPT partition named `name` in `img`, from
/// `sgdisk -i`.
pub fn partition(img: &Path, name: &str) -> (u64, u64) {
    require_tool("sgdisk", "gdisk");
    let list = run(Command::new("sgdisk").arg("-p").arg(img));
    let number = String::from_utf8_lossy(&list.stdout)
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no partition {name} in {}:\n{}", img.display(), text(&list)));
    let info = run(Command::new("sgdisk").arg("-i").arg(&number).arg(img));
    let field = |key: &str| -> u64 {
        String::from_utf8_lossy(&info.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or_else(|| panic!("no {key} in sgdisk -i:\n{}", text(&info)))
    };
    let first = field("First sector: ");
    let last = field("Last sector: ");
    (first * 512, (last - first + 1) * 512)
}

/// The arm64 offline inputs made by `scripts/prepare-inputs` (`.inputs/arm64/`).
pub fn inputs_arm64() -> PathBuf {
    checked_inputs(
        inputs_root().join("arm64"),
        "scripts/prepare-inputs --arch arm64",
    )
}

fn built_init_arm64() -> Option<PathBuf> {
    let p = std::env::var_os("KIOS_INIT_ARM64")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/aarch64-unknown-linux-gnu/release/kios-init"));
    p.is_file().then_some(p)
}

/// The static aarch64 kios-init made by `scripts/build-init arm64`.
pub fn init_binary_arm64() -> PathBuf {
    built_init_arm64().unwrap_or_else(|| {
        panic!(
            "the aarch64 kios-init is not built (KIOS_INIT_ARM64 or target/aarch64-unknown-linux-gnu/release/kios-init): run scripts/build-init arm64 (or scripts/test); it needs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross"
        )
    })
}

/// A profile for the qemu-arm64 base using the arm64 offline inputs, with `extra`
/// YAML appended.
pub fn profile_text_arm64(extra: &str) -> String {
    init_binary_arm64();
    let i = inputs_arm64();
    format!(
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu-arm64\nhostname: test-node-arm64\nkernel:\n  path: {k}\nboot:\n  stub: {{path: {s}}}\nsystem:\n  path: {y}\n{extra}",
        k = i.join("kernel").display(),
        s = i.join("stub/linuxaa64.efi.stub").display(),
        y = i.join("system").display(),
    )
}

/// What a QEMU boot showed.
pub struct Boot {
    /// Whether the awaited text appeared on the serial console.
    pub seen: bool,
    pub log: String,
    /// From QEMU's start to the text (or to the end).
    pub elapsed: Duration,
}

/// Boots the arm64 `img` (`kios-build run` picks `qemu-system-aarch64 -machine
/// virt` and AAVMF from the image's UKI) until `until` appears or `timeout` passes.
pub fn boot_arm64(img: &Path, until: &str, timeout: Duration) -> Boot {
    require_tool("qemu-system-aarch64", "qemu-system-arm");
    let start = Instant::now();
    let (seen, log) = boot(img, until, timeout, false);
    Boot {
        seen,
        log,
        elapsed: start.elapsed(),
    }
}

/// Writes an OCI image layout at `layout` whose `index.json` lists one image per
/// `(architecture, folder)`, all tagged `tag`, each with its linux/ARCH platform and a
/// single layer made of the folder (GNU tar, gzip -n, mtimes 0, owners 0): the shape
/// `skopeo copy --all` gives a multi-arch image. Returns the manifest digests, in order.
pub fn oci_multi_arch_layout(layout: &Path, tag: &str, images: &[(&str, &Path)]) -> Vec<String> {
    let descs: Vec<serde_json::Value> = images
        .iter()
        .map(|(arch, dir)| {
            layout::image(
                layout,
                arch,
                &[(layout::OCI_GZIP, layout::folder_tar(dir, true))],
            )
        })
        .collect();
    let tagged: Vec<(&str, serde_json::Value)> = descs.iter().map(|d| (tag, d.clone())).collect();
    layout::tag(layout, &tagged);
    descs
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

/// kiOS' pause image as an OCI layout (`scripts/make-pause-image`, which
/// scripts/test runs): what test profiles with pods pre-seed as their pause image.
pub fn pause_layout() -> PathBuf {
    let p = inputs().join("pause");
    assert!(
        p.join("index.json").is_file(),
        "{} is missing: run scripts/make-pause-image (scripts/test does)",
        p.display()
    );
    p
}

/// The profile lines naming [`pause_layout`] as the pause image; it is stored as
/// `localhost/kios/pause:kios`.
pub fn pause_yaml() -> String {
    format!(
        "kubernetes:\n  pauseImage: oci:{}:kios\n",
        pause_layout().display()
    )
}

/// A mount, unmounted when dropped.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The `store` partition of a built image, checked by `fsck.erofs` and mounted
/// read-only (loop) at `dir/store-mnt`, as kios-init mounts it. Needs root.
pub fn mount_store(img: &Path, dir: &Path) -> (Mounted, PathBuf) {
    require_tool("fsck.erofs", "erofs-utils");
    let i = inspect(img);
    let store = i["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "store")
        .unwrap_or_else(|| panic!("no store partition in {i}"))
        .clone();
    let part = dir.join("store.erofs");
    extract(
        img,
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
    let mnt = dir.join("store-mnt");
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
    (Mounted(mnt.clone()), mnt)
}

/// podman with a fresh root under `dir`, runc, and `store` (a mounted pre-seeded
/// store) as its read-only additional image store; `infra` is the pods' infra
/// (pause) image, as CRI-O's `pause_image` names it on a node.
pub struct Podman {
    pub conf: PathBuf,
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub store: PathBuf,
}

impl Podman {
    pub fn new(dir: &Path, store: &Path, infra: Option<&str>) -> Podman {
        require_tool("podman", "podman");
        require_tool("runc", "runc");
        let conf = dir.join("containers.conf");
        let mut text = String::from(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        );
        if let Some(i) = infra {
            text.push_str(&format!("infra_image = \"{i}\"\n"));
        }
        fs::write(&conf, text).unwrap();
        Podman {
            conf,
            root: dir.join("podman-root"),
            runroot: dir.join("podman-run"),
            store: store.to_path_buf(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!("overlay.imagestore={}", self.store.display()));
        c
    }

    /// Runs podman with `args`, which must succeed: its standard output, trimmed.
    pub fn stdout(&self, args: &[&str]) -> String {
        let o = run(self.cmd().args(args));
        assert!(o.status.success(), "podman {args:?}:\n{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Runs podman with `args`: whether it succeeded, and what it printed.
    pub fn run(&self, args: &[&str]) -> (bool, String) {
        let o = run(self.cmd().args(args));
        (
            o.status.success(),
            format!("podman {args:?}:\n{}", text(&o)),
        )
    }
}

/// The pre-seeded images `inspect --json` lists, as sorted (first name, digest).
pub fn store_images(inspected: &serde_json::Value) -> Vec<(String, String)> {
    let mut images: Vec<(String, String)> = inspected["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images in {inspected}"))
        .iter()
        .map(|x| {
            (
                x["names"][0].as_str().unwrap().to_string(),
                x["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    images.sort();
    images
}

/// The content of the file `path` of the image's /etc, as `inspect --json` shows it.
pub fn etc_file(inspected: &serde_json::Value, path: &str) -> String {
    inspected["initramfs"]["etc"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("no {path} in the image's /etc"))["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{path} has no text content"))
        .to_string()
}

/// What every boot to `ready` shows on the console, whatever the architecture: the
/// profile's modules loaded without a failure, the hostname set, cgroup2 mounted.
pub fn assert_booted_log(log: &str, hostname: &str) {
    let summary = log
        .lines()
        .find(|l| l.contains("kios-init: modules: "))
        .unwrap_or_else(|| panic!("no module summary:\n{log}"));
    assert!(summary.trim_end().ends_with(" 0 failed"), "{summary}");
    assert!(
        log.contains(&format!("kios-init: hostname set to {hostname}")),
        "{log}"
    );
    assert!(
        log.contains("kios-init: mounted cgroup2 on /sys/fs/cgroup"),
        "{log}"
    );
}

/// The static test doubles made by
/// `cargo build --release -p kios-standins --target x86_64-unknown-linux-gnu`.
pub fn standin(name: &str) -> PathBuf {
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

/// A device node (`kind` `c` or `b`, with its numbers) or a FIFO (`p`) at `path`, made
/// with `mknod` in a test's own folder: tests never touch the real `/dev`.
pub fn mknod(path: &Path, kind: &str, major_minor: Option<(u32, u32)>) {
    let mut args = vec![path.to_str().unwrap().to_string(), kind.to_string()];
    if let Some((ma, mi)) = major_minor {
        args.push(ma.to_string());
        args.push(mi.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_tool("mknod", "coreutils", &args);
}

/// A FIFO at `path`.
pub fn mkfifo(path: &Path) {
    mknod(path, "p", None);
}

/// Changes one byte of the store partition of `img` after the build: the second
/// byte of the first `"big-data-names"` key, inside `overlay-images/images.json`
/// (what an attacker would edit to point a name at other layers). Returns the
/// byte's offset in the image.
pub fn change_store_metadata(img: &Path) -> u64 {
    let (offset, size) = partition(img, "KIOS_STORE");
    let mut store = vec![0u8; size as usize];
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut store).unwrap();
    let needle = b"\"big-data-names\"";
    let at = store
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("images.json is in the store partition");
    let byte = offset + at as u64 + 1;
    f.seek(SeekFrom::Start(byte)).unwrap();
    f.write_all(b"B").unwrap();
    byte
}
