//! The host is never harmed by a build (issue #12, classes 1, 5, 6 and 7): `-o` is
//! never a device, a FIFO, a folder, a symlink or an input; the work folder is
//! private; SIGTERM, SIGINT and SIGHUP leave nothing behind, and what a SIGKILL
//! leaves the next run removes; concurrent pulls in one folder keep every entry of
//! `kios.lock`.

mod common;
#[path = "common/registry.rs"]
mod fixture;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{inputs, kios_build, mknod, profile_text, run, text, write_profile};
use fixture::{Registry, OCI_GZIP};
use serde_json::Value;
use tempfile::TempDir;

/// Runs `kios-build build PROFILE -o OUT --quiet` with `TMPDIR` set to `tmp`.
fn build(profile: &Path, out: &Path, tmp: &Path, args: &[&str]) -> std::process::Output {
    run(common::build_command(profile, out)
        .arg("--quiet")
        .args(args)
        .env("TMPDIR", tmp))
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn partials(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

#[test]
fn an_output_that_is_a_device_fifo_folder_or_symlink_is_refused_and_left_untouched() {
    let d = TempDir::new().unwrap();
    let tmp = TempDir::new().unwrap();
    let p = write_profile(d.path(), "node.yaml", &profile_text(""));
    // A private /dev/null (1:3) and a block device (7:0, a loop device's numbers):
    // never the real /dev.
    let chr = d.path().join("null");
    mknod(&chr, "c", Some((1, 3)));
    let blk = d.path().join("loop");
    mknod(&blk, "b", Some((7, 0)));
    let fifo = d.path().join("fifo");
    mknod(&fifo, "p", None);
    let dir = d.path().join("folder");
    fs::create_dir(&dir).unwrap();
    let link = d.path().join("link-to-null");
    std::os::unix::fs::symlink(&chr, &link).unwrap();
    let cases: [(&Path, &str); 5] = [
        (&chr, "a character device"),
        (&blk, "a block device"),
        (&fifo, "a FIFO"),
        (&dir, "a folder"),
        (&link, "a symbolic link"),
    ];
    let before: Vec<(u32, u64, u64)> = cases
        .iter()
        .map(|(p, _)| {
            let m = fs::symlink_metadata(p).unwrap();
            (m.mode(), m.rdev(), m.ino())
        })
        .collect();
    for (out, kind) in cases {
        let o = build(&p, out, tmp.path(), &[]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {t}", out.display());
        assert!(
            t.contains(&format!("the output exists and is {kind}")) && t.contains("hint:"),
            "{t}"
        );
    }
    let after: Vec<(u32, u64, u64)> = cases
        .iter()
        .map(|(p, _)| {
            let m = fs::symlink_metadata(p).unwrap();
            (m.mode(), m.rdev(), m.ino())
        })
        .collect();
    assert_eq!(before, after, "every node is as it was");
    assert!(fs::symlink_metadata(&chr)
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    assert!(partials(d.path()).is_empty(), "{:?}", names(d.path()));
    assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
}

#[test]
fn an_output_that_is_an_input_of_the_build_is_refused_and_the_input_is_unchanged() {
    let d = TempDir::new().unwrap();
    let tmp = TempDir::new().unwrap();
    let source = d.path().join("extra.conf");
    fs::write(&source, "key=value\n").unwrap();
    let base = write_profile(d.path(), "base.yaml", &profile_text(""));
    let p = write_profile(
        d.path(),
        "node.yaml",
        &format!(
            "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: ./base.yaml\nfiles:\n  - {{path: /etc/extra.conf, source: {}}}\n",
            source.display()
        ),
    );
    let hard = d.path().join("hardlink-to-profile");
    fs::hard_link(&p, &hard).unwrap();
    let kernel = inputs().join("kernel");
    let cases: Vec<(PathBuf, &str)> = vec![
        (p.clone(), "the profile"),
        (hard, "the profile"),
        (base.clone(), "a base profile"),
        (source.clone(), "a `files:` source"),
        (kernel.join("new.img"), "the kernel folder"),
    ];
    let sums: Vec<Vec<u8>> = [&p, &base, &source]
        .iter()
        .map(|f| fs::read(f).unwrap())
        .collect();
    for (out, what) in &cases {
        let o = build(&p, out, tmp.path(), &[]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {t}", out.display());
        assert!(
            t.contains(what) && t.contains("an input of this build"),
            "{t}"
        );
    }
    let after: Vec<Vec<u8>> = [&p, &base, &source]
        .iter()
        .map(|f| fs::read(f).unwrap())
        .collect();
    assert_eq!(sums, after, "the inputs are unchanged");
    assert!(!kernel.join("new.img").exists());
    assert!(partials(d.path()).is_empty(), "{:?}", names(d.path()));
}

/// A profile whose build spends seconds after its `.partial` is made: its system
/// folder carries 24 MiB of random bytes, and the disk is converted to raw.xz
/// (single-threaded xz of incompressible data).
fn slow_profile(dir: &Path) -> PathBuf {
    let system = dir.join("system");
    let o = run(Command::new("cp")
        .arg("-a")
        .arg(inputs().join("system"))
        .arg(&system));
    assert!(o.status.success(), "{}", text(&o));
    let mut random = vec![0u8; 24 << 20];
    let mut f = fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut random).unwrap();
    fs::write(system.join("random.bin"), random).unwrap();
    let i = inputs();
    let text = format!(
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nhostname: test-node\nkernel:\n  path: {k}\nboot:\n  stub: {{path: {s}}}\nsystem:\n  path: {y}\ndisk:\n  format: raw.xz\n",
        k = i.join("kernel").display(),
        s = i.join("stub/linuxx64.efi.stub").display(),
        y = system.display(),
    );
    write_profile(dir, "slow.yaml", &text)
}

fn spawn_build(profile: &Path, out: &Path, tmp: &Path) -> Child {
    common::build_command(profile, out)
        .arg("--quiet")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `ready` holds, failing the test after two minutes (or if `child`
/// ended first).
fn wait_for(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the build ended ({status}) before {what}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The work folders in `tmp`.
fn work_folders(tmp: &Path) -> Vec<PathBuf> {
    names(tmp)
        .into_iter()
        .filter(|n| n.starts_with("kios-build-"))
        .map(|n| tmp.join(n))
        .collect()
}

fn kill(child: &Child, sig: libc::c_int) {
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

#[test]
fn sigterm_sigint_and_sighup_mid_build_leave_no_partial_and_no_work_folder() {
    let d = TempDir::new().unwrap();
    let p = slow_profile(d.path());
    // Each signal at another stage: while the inputs are read (the work folder is
    // there, no partial yet), as the disk is written (the first partial), and during
    // the conversion to raw.xz (two partials).
    for (sig, name, partial, delay) in [
        (libc::SIGTERM, "SIGTERM", false, 0),
        (libc::SIGINT, "SIGINT", true, 0),
        (libc::SIGHUP, "SIGHUP", true, 1500),
    ] {
        let out_dir = TempDir::new_in(d.path()).unwrap();
        let tmp = TempDir::new_in(d.path()).unwrap();
        let out = out_dir.path().join("node.img");
        let mut child = spawn_build(&p, &out, tmp.path());
        wait_for(&mut child, "work folder", || {
            !work_folders(tmp.path()).is_empty()
        });
        // The work folder is private while the build runs.
        let folder = &work_folders(tmp.path())[0];
        let mode = fs::symlink_metadata(folder).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", folder.display());
        if partial {
            wait_for(&mut child, "partial file", || {
                !partials(out_dir.path()).is_empty()
            });
        }
        std::thread::sleep(Duration::from_millis(delay));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name}: the build ended too soon"
        );
        kill(&child, sig);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(128 + sig), "{name}: {err}");
        assert!(err.contains(&format!("interrupted by {name}")), "{err}");
        assert!(
            names(out_dir.path()).is_empty(),
            "{name} left {:?}",
            names(out_dir.path())
        );
        assert!(
            names(tmp.path()).is_empty(),
            "{name} left {:?}",
            names(tmp.path())
        );
    }
}

#[test]
fn after_a_sigkill_the_work_folder_was_private_and_the_next_run_removes_the_debris() {
    let d = TempDir::new().unwrap();
    let p = slow_profile(d.path());
    let out_dir = TempDir::new_in(d.path()).unwrap();
    let tmp = TempDir::new_in(d.path()).unwrap();
    let out = out_dir.path().join("node.img");
    let mut child = spawn_build(&p, &out, tmp.path());
    wait_for(&mut child, "partial file", || {
        !partials(out_dir.path()).is_empty()
    });
    kill(&child, libc::SIGKILL);
    child.wait().unwrap();

    // What a killed run leaves: a 0700 work folder holding the initramfs, and a
    // 0600 partial image.
    let folders = work_folders(tmp.path());
    assert_eq!(folders.len(), 1, "{:?}", names(tmp.path()));
    let mode = fs::symlink_metadata(&folders[0]).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    assert!(folders[0].join("initrd.img").is_file());
    let left = partials(out_dir.path());
    assert!(!left.is_empty());
    for n in &left {
        let mode = fs::metadata(out_dir.path().join(n)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{n}");
    }
    // Not ours: a folder of another user, a symlink with our prefix, another
    // output's partial. The next run leaves them.
    let foreign = tmp.path().join("kios-build-foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join(".lock"), "").unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let link = tmp.path().join("kios-build-link");
    std::os::unix::fs::symlink(&folders[0], &link).unwrap();
    let other = out_dir.path().join(".other.img.1-x.partial");
    fs::write(&other, "").unwrap();

    let small = write_profile(d.path(), "small.yaml", &profile_text(""));
    let o = build(&small, &out, tmp.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.is_file());
    assert_eq!(
        names(out_dir.path()),
        vec![".other.img.1-x.partial".to_string(), "node.img".to_string()]
    );
    assert_eq!(
        names(tmp.path()),
        vec![
            "kios-build-foreign".to_string(),
            "kios-build-link".to_string()
        ]
    );
}

/// A system image: busybox and a marker file.
fn system_layout(dir: &Path) {
    let mark = fixture::tar_of(&[("etc/mark", 0o644, b"pulled\n")]);
    let d = fixture::image(
        dir,
        "amd64",
        &[(OCI_GZIP, fixture::busybox_tar()), (OCI_GZIP, mark)],
    );
    fixture::tag(dir, &[("1", d)]);
}

#[test]
fn concurrent_pulls_of_profiles_in_one_folder_keep_every_lock_entry() {
    const N: usize = 6;
    let reg = Registry::start();
    let work = TempDir::new().unwrap();
    let layout = work.path().join("sys");
    system_layout(&layout);
    for i in 0..N {
        reg.push(&layout, "1", "test/system", &format!("v{i}"), &[]);
    }
    let i = inputs();
    let profiles: Vec<PathBuf> = (0..N)
        .map(|n| {
            let text = format!(
                "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nhostname: node-{n}\nkernel:\n  path: {k}\nboot:\n  stub: {{path: {s}}}\nsystem:\n  image: {host}/test/system:v{n}\n",
                k = i.join("kernel").display(),
                s = i.join("stub/linuxx64.efi.stub").display(),
                host = reg.host(),
            );
            write_profile(work.path(), &format!("node-{n}.yaml"), &text)
        })
        .collect();
    let cache = work.path().join("cache");
    let children: Vec<Child> = profiles
        .iter()
        .map(|p| {
            kios_build()
                .arg("pull")
                .arg(p)
                .arg("--quiet")
                .arg("--cache-dir")
                .arg(&cache)
                .env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }
    let lock: Value =
        serde_json::from_slice(&fs::read(work.path().join("kios.lock")).unwrap()).unwrap();
    let refs: Vec<&str> = lock["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reference"].as_str().unwrap())
        .collect();
    for n in 0..N {
        let want = format!("{}/test/system:v{n}", reg.host());
        assert!(refs.contains(&want.as_str()), "{want} lost: {refs:?}");
    }
    assert!(partials(work.path()).is_empty(), "{:?}", names(work.path()));
}

#[test]
fn a_kios_lock_that_is_a_symlink_or_a_fifo_is_refused_and_left_as_it_was() {
    let reg = Registry::start();
    let work = TempDir::new().unwrap();
    let layout = work.path().join("sys");
    system_layout(&layout);
    reg.push(&layout, "1", "test/system", "1", &[]);
    let i = inputs();
    let text_p = format!(
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nhostname: node\nkernel:\n  path: {k}\nboot:\n  stub: {{path: {s}}}\nsystem:\n  image: {host}/test/system:1\n",
        k = i.join("kernel").display(),
        s = i.join("stub/linuxx64.efi.stub").display(),
        host = reg.host(),
    );
    let p = write_profile(work.path(), "node.yaml", &text_p);
    let lock = work.path().join("kios.lock");
    let pull = || {
        run(kios_build()
            .arg("pull")
            .arg(&p)
            .arg("--quiet")
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json"))
    };

    // A symlink to a file elsewhere: never replaced, nor written through.
    let elsewhere = work.path().join("elsewhere.json");
    fs::write(&elsewhere, "{\"version\": 1, \"images\": []}\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &lock).unwrap();
    let o = pull();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("kios.lock") && t.contains("a symbolic link"),
        "{t}"
    );
    assert!(fs::symlink_metadata(&lock)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_to_string(&elsewhere).unwrap(),
        "{\"version\": 1, \"images\": []}\n"
    );

    // A FIFO: refused at once (reading it would wait for a writer forever).
    fs::remove_file(&lock).unwrap();
    mknod(&lock, "p", None);
    let o = pull();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("kios.lock") && t.contains("FIFO"), "{t}");
    assert!(fs::symlink_metadata(&lock).unwrap().file_type().is_fifo());
    assert!(partials(work.path()).is_empty(), "{:?}", names(work.path()));
}
