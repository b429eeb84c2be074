//! The pre-seeded store against the real consumers: podman 4.3 and skopeo
//! (containers/storage 1.43, the library CRI-O uses).
//!
//! One image (gzip layers; a whiteout, an opaque directory, a file owned by 1000,
//! a symlink, a hard link, a device, an xattr) is pushed to a local registry,
//! pulled by podman into a fresh store, and copied back from the registry into an
//! OCI layout, from which kios-build writes its store. The store is a `Tree`;
//! [`materialise`] writes it on the host as root, as the store filesystem would
//! present it. Then (one test, run in order):
//! - `ours_matches_what_podman_pulls`: images.json, layers.json, big data,
//!   tar-split records and every diff tree agree with podman's;
//! - `podman_and_skopeo_read_ours`: podman lists the image with the registry's
//!   digest, skopeo reads it back with the same diff_ids (the tar-split rebuilds
//!   each layer tar exactly), and a fresh podman root with ours as a read-only
//!   additional image store runs a container from it.
//!
//! Tests run as root; podman, skopeo, runc, docker-registry and attr (getfattr,
//! setfattr) must be installed, and a missing one fails the test naming its package.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use kios_build::oci::{open_layout, Digest};
use kios_build::store::cstorage::{build_store, layer_ids, StoreImage, StoreOptions};
use kios_build::tree::{Kind, Tree};
use serde_json::{json, Value};

const NAME: &str = "test/x:1";

fn require_tools() {
    common::require_tool("podman", "podman");
    common::require_tool("skopeo", "skopeo");
    common::require_tool("runc", "runc");
    common::require_tool("docker-registry", "docker-registry");
    common::require_tool("setfattr", "attr");
    common::require_tool("getfattr", "attr");
    common::require_tool("mknod", "coreutils");
    assert_eq!(
        fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1),
        0,
        "tests/store_podman.rs must run as root (it writes device nodes and trusted.* xattrs)"
    );
}

fn sh(cmd: &mut Command) -> String {
    let out = common::run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        common::text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------- the image

/// A tar member: name as written in the header, kind, data or link target,
/// uid/gid, mode, PAX records.
struct M {
    name: &'static str,
    ty: tar::EntryType,
    data: Vec<u8>,
    owner: u64,
    mode: u32,
    pax: Vec<(&'static str, &'static [u8])>,
    dev: (u32, u32),
}

fn m(name: &'static str, ty: tar::EntryType, data: &[u8]) -> M {
    let mode = match ty {
        tar::EntryType::Directory => 0o755,
        tar::EntryType::Symlink => 0o777,
        _ => 0o644,
    };
    M {
        name,
        ty,
        data: data.to_vec(),
        owner: 0,
        mode,
        pax: vec![],
        dev: (0, 0),
    }
}

/// A PAX tar as GNU tar writes one (`./`-prefixed names kept as they are).
fn tar_of(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        if !m.pax.is_empty() {
            b.append_pax_extensions(m.pax.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(m.ty);
        h.set_mode(m.mode);
        h.set_uid(m.owner);
        h.set_gid(m.owner);
        h.set_mtime(1_000_000 + m.name.len() as u64);
        h.set_device_major(m.dev.0).unwrap();
        h.set_device_minor(m.dev.1).unwrap();
        let name = &mut h.as_old_mut().name;
        name[..m.name.len()].copy_from_slice(m.name.as_bytes());
        let is_link = matches!(m.ty, tar::EntryType::Symlink | tar::EntryType::Link);
        if is_link {
            let l = &mut h.as_old_mut().linkname;
            l[..m.data.len()].copy_from_slice(&m.data);
            h.set_size(0);
        } else {
            h.set_size(m.data.len() as u64);
        }
        h.set_cksum();
        b.append(&h, if is_link { &[][..] } else { &m.data[..] })
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn layers() -> Vec<Vec<u8>> {
    use tar::EntryType as E;
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox: apt-get install busybox-static");
    let mut bb = m("./bin/busybox", E::Regular, &busybox);
    bb.mode = 0o755;
    let mut home = m("./home/u/", E::Directory, b"");
    home.owner = 1000;
    home.mode = 0o700;
    let mut f = m("./home/u/f", E::Regular, b"u\n");
    f.owner = 1000;
    f.mode = 0o4750;
    let mut null = m("./dev/null", E::Char, b"");
    null.dev = (1, 3);
    null.mode = 0o666;
    let base = tar_of(&[
        m("./", E::Directory, b""),
        m("./bin/", E::Directory, b""),
        bb,
        m("./bin/hl", E::Symlink, b"../etc/hello"),
        m("./d/", E::Directory, b""),
        m("./d/a", E::Regular, b"a\n"),
        m("./dev/", E::Directory, b""),
        null,
        m("./etc/", E::Directory, b""),
        m("./etc/gone", E::Regular, b"x\n"),
        m("./etc/hello", E::Regular, b"hello\n"),
        m("./etc/hello2", E::Link, b"./etc/hello"),
        m("./home/", E::Directory, b""),
        home,
        f,
    ]);
    let mut new = m("./etc/new", E::Regular, b"new\n");
    new.pax = vec![("SCHILY.xattr.user.test", b"val\n\x00bin")];
    let top = tar_of(&[
        m("./", E::Directory, b""),
        m("./d/", E::Directory, b""),
        m("./d/.wh..wh..opq", E::Regular, b""),
        m("./d/b", E::Regular, b"b\n"),
        m("./etc/", E::Directory, b""),
        m("./etc/.wh.gone", E::Regular, b""),
        new,
    ]);
    // The top layer ends at a header boundary without the end-of-archive blocks, as
    // `umoci insert` writes layers: podman takes it, and so must we, and skopeo must
    // read the same bytes back from our store (tar-split keeps the missing marker).
    let mut top = top;
    top.truncate(top.len() - 1024);
    assert!(top[top.len() - 512..].iter().any(|&b| b != 0));
    vec![base, top]
}

fn write_layout(dir: &Path) {
    let tars: Vec<(&str, Vec<u8>)> = layers()
        .into_iter()
        .map(|t| (common::layout::OCI_GZIP, t))
        .collect();
    let d = common::layout::image_with(
        dir,
        "amd64",
        &tars,
        json!({"created": "2024-01-02T03:04:05Z", "config": {"Cmd": ["/bin/busybox", "true"]}}),
    );
    common::layout::tag(dir, &[("1", d)]);
}

// ---------------------------------------------------------------- the fixture

/// What both tests share: a registry serving the image, podman's store of it,
/// and ours, materialised three times: one to compare, one for podman as
/// `--root` (podman writes its own state there), one to mount read-only.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    reference: String,
    pulled: PathBuf,
    podman_root: PathBuf,
    ours: PathBuf,
    ours_rw: PathBuf,
    ours_ro: PathBuf,
    registry: Child,
    conf: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.registry.kill();
        let _ = self.registry.wait();
        // The overlay driver bind-mounts its home on itself in each root it opens.
        for root in ["podman", "ours-rw", "fresh"] {
            let _ = Command::new("umount")
                .arg(self.dir.join(root).join("overlay"))
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture() -> Fixture {
    {
        require_tools();
        let tmp = tempfile::Builder::new()
            .prefix("kios-store-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let dir = tmp.path().to_path_buf();
        let port = free_port();
        fs::write(
            dir.join("registry.yml"),
            format!(
                "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                dir.join("reg").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let conf = dir.join("containers.conf");
        fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        let f = Fixture {
            reference: format!("127.0.0.1:{port}/{NAME}"),
            pulled: dir.join("pulled"),
            podman_root: dir.join("podman"),
            ours: dir.join("ours"),
            ours_rw: dir.join("ours-rw"),
            ours_ro: dir.join("ours-ro"),
            dir,
            _tmp: tmp,
            registry,
            conf,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "docker-registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let layout = f.dir.join("layout");
        write_layout(&layout);
        sh(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", layout.display()),
            &format!("docker://{}", f.reference),
        ]));
        // Build ours from what the registry serves, as a pull sees it.
        sh(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{}", f.reference),
            &format!("oci:{}:1", f.pulled.display()),
        ]));
        sh(podman(&f, &f.podman_root).args([
            "pull",
            "--quiet",
            "--tls-verify=false",
            &f.reference,
        ]));

        let image = open_layout(&f.pulled, Some("1"), "amd64").unwrap();
        let spool = f.dir.join("spool");
        fs::create_dir(&spool).unwrap();
        let images = [StoreImage {
            image,
            names: vec![f.reference.clone()],
        }];
        let tree = build_store(&images, &spool, &StoreOptions::new(1_700_000_000)).unwrap();
        materialise(&tree, &f.ours);
        materialise(&tree, &f.ours_rw);
        materialise(&tree, &f.ours_ro);
        f
    }
}

/// podman with its own root and runroot under the fixture, runc and low ulimits.
fn podman(f: &Fixture, root: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", &f.conf)
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(root.with_extension("run"))
        .args(["--storage-driver", "overlay"]);
    c
}

// ---------------------------------------------------------------- materialise

/// Writes `tree` below `dest` exactly: owners, modes, xattrs, devices, hard
/// links, mtimes. A test fixture standing in for the store filesystem.
fn materialise(tree: &Tree, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let mut links = Vec::new();
    for (path, entry) in tree.iter() {
        let p = dest.join(path.as_str());
        match &entry.kind {
            Kind::Dir => {
                if !path.is_root() {
                    fs::create_dir(&p).unwrap();
                }
            }
            Kind::File(c) => {
                let mut out = fs::File::create(&p).unwrap();
                std::io::copy(&mut c.open().unwrap(), &mut out).unwrap();
            }
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, &p).unwrap(),
            Kind::Hardlink(t) => links.push((p, dest.join(t.as_str()))),
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                let ty = if matches!(entry.kind, Kind::CharDevice { .. }) {
                    "c"
                } else {
                    "b"
                };
                sh(Command::new("mknod")
                    .arg(&p)
                    .arg(ty)
                    .arg(major.to_string())
                    .arg(minor.to_string()));
            }
            Kind::Fifo => {
                sh(Command::new("mkfifo").arg(&p));
            }
        }
    }
    for (link, target) in links {
        fs::hard_link(target, link).unwrap();
    }
    let entries: Vec<_> = tree.iter().collect();
    for (path, entry) in &entries {
        let p = dest.join(path.as_str());
        std::os::unix::fs::lchown(&p, Some(entry.uid), Some(entry.gid)).unwrap();
        if !matches!(entry.kind, Kind::Symlink(_) | Kind::Hardlink(_)) {
            fs::set_permissions(&p, fs::Permissions::from_mode(entry.mode)).unwrap();
        }
        for (name, value) in &entry.xattrs {
            sh(Command::new("setfattr")
                .arg("-h")
                .arg("-n")
                .arg(name)
                .arg("-v")
                .arg(format!("0x{}", hex::encode(value)))
                .arg(&p));
        }
    }
    // Deepest first, so that setting a child's time does not move its parent's.
    for (path, entry) in entries.iter().rev() {
        if matches!(entry.kind, Kind::Hardlink(_)) {
            continue;
        }
        sh(Command::new("touch")
            .args(["-h", "-m", "-d", &format!("@{}", entry.mtime)])
            .arg(dest.join(path.as_str())));
    }
}

// ---------------------------------------------------------------- reading stores

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn gunzip(p: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(fs::File::open(p).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// Every xattr below `root`, by path relative to it (`getfattr -R`, links not
/// followed).
fn xattrs(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = sh(Command::new("getfattr")
        .args(["-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names"])
        .arg(root));
    let mut all = BTreeMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            cur = f
                .strip_prefix(root.to_str().unwrap())
                .unwrap_or(f)
                .to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            all.entry(cur.clone())
                .or_insert_with(BTreeMap::new)
                .insert(k.to_string(), v.to_string());
        }
    }
    all
}

/// A diff directory as comparable lines: path, type and mode, owner, device,
/// link target, content hash, mtime (where podman sets it from the layer), xattrs,
/// and the other names of each hard-linked inode.
fn describe_diff(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let x = xattrs(root);
    let mut stack = vec![root.to_path_buf()];
    let mut paths = Vec::new();
    while let Some(p) = stack.pop() {
        paths.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    paths.sort();
    for p in &paths {
        let md = fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
        let ft = md.file_type();
        let is_whiteout = ft.is_char_device_like() && md.rdev() == 0;
        // Podman stamps the diff root and whiteout devices with the time of the pull.
        let mtime = if rel.is_empty() || is_whiteout {
            "-".to_string()
        } else {
            md.mtime().to_string()
        };
        let detail = if ft.is_symlink() {
            format!("-> {}", fs::read_link(p).unwrap().display())
        } else if ft.is_file() {
            if md.nlink() > 1 {
                inodes.entry(md.ino()).or_default().push(rel.clone());
            }
            common::sha256_file(p)
        } else {
            format!("rdev {:x}", md.rdev())
        };
        out.push(format!(
            "/{rel} mode {:o} owner {}:{} mtime {mtime} {detail} xattrs {:?}",
            md.mode(),
            md.uid(),
            md.gid(),
            x.get(&format!("/{rel}"))
                .or_else(|| x.get(&rel))
                .cloned()
                .unwrap_or_default()
        ));
    }
    for names in inodes.values() {
        out.push(format!("hard links: {names:?}"));
    }
    out
}

trait CharDev {
    fn is_char_device_like(&self) -> bool;
}
impl CharDev for fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

/// Paths below `root`, with the short link names replaced by the layer they name.
fn layout_paths(root: &Path, shorts: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
        if rel.contains("/diff/") {
            continue; // compared by describe_diff
        }
        let mut shown = rel.clone();
        for (short, id) in shorts {
            shown = shown.replace(short, &format!("<link of {id}>"));
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let mode = md.mode();
        out.insert(format!("{shown} {mode:o} {}:{}", md.uid(), md.gid()));
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

fn short_names(root: &Path, ids: &[String]) -> BTreeMap<String, String> {
    ids.iter()
        .map(|id| {
            let s = fs::read_to_string(root.join("overlay").join(id).join("link")).unwrap();
            (s, id.clone())
        })
        .collect()
}

// ---------------------------------------------------------------- the tests

/// What podman records about its own run, not about the image; left out of the
/// comparison.
const PODMAN_RUN_STATE: &[&str] = &[
    "libpod",                     // podman's database
    "mounts",                     // mount bookkeeping
    "tmp",                        // podman's scratch
    "userns.lock",                // user namespace allocation
    "defaultNetworkBackend",      // podman's network choice
    "overlay-containers",         // the container store (none in ours)
    "overlay/.has-mount-program", // driver probe cache of the writable root
];

/// One test, so that the registry, mounts and directories it sets up are torn
/// down when it ends.
#[test]
fn ours_matches_what_podman_pulls_and_podman_and_skopeo_read_it() {
    let f = fixture();
    ours_matches_what_podman_pulls(&f);
    podman_and_skopeo_read_ours(&f);
}

fn ours_matches_what_podman_pulls(f: &Fixture) {
    let (p, o) = (&f.podman_root, &f.ours);

    // images.json: identical records (podman's "created" is the config's).
    let pi = read_json(&p.join("overlay-images/images.json"));
    let oi = read_json(&o.join("overlay-images/images.json"));
    assert_eq!(pi, oi, "images.json");
    let image_id = oi[0]["id"].as_str().unwrap().to_string();

    // layers.json: identical except the time each layer was written.
    let strip = |mut v: Value| {
        for l in v.as_array_mut().unwrap() {
            l.as_object_mut().unwrap().remove("created");
        }
        v
    };
    let pl = strip(read_json(&p.join("overlay-layers/layers.json")));
    let ol = strip(read_json(&o.join("overlay-layers/layers.json")));
    assert_eq!(pl, ol, "layers.json");
    let ids: Vec<String> = ol
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    let diff_ids: Vec<Digest> = ol
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff-digest"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(layer_ids(&diff_ids), ids);

    // Big data: the same files with the same bytes.
    for e in fs::read_dir(p.join("overlay-images").join(&image_id)).unwrap() {
        let e = e.unwrap();
        let ours = o.join("overlay-images").join(&image_id).join(e.file_name());
        assert_eq!(
            fs::read(e.path()).unwrap(),
            fs::read(&ours).unwrap_or_else(|_| panic!("missing {}", ours.display())),
            "{:?}",
            e.file_name()
        );
    }

    for id in &ids {
        // The tar-split records: the same JSON lines, byte for byte.
        let name = format!("overlay-layers/{id}.tar-split.gz");
        assert_eq!(gunzip(&p.join(&name)), gunzip(&o.join(&name)), "{name}");
        // The diff trees.
        let diff = format!("overlay/{id}/diff");
        assert_eq!(
            describe_diff(&p.join(&diff)),
            describe_diff(&o.join(&diff)),
            "{diff}"
        );
        // lower: the same layers, by their (differently named) links.
        let lower = |root: &Path| {
            let shorts = short_names(root, &ids);
            fs::read_to_string(root.join("overlay").join(id).join("lower"))
                .map(|l| {
                    l.split(':')
                        .map(|s| shorts[s.trim_start_matches("l/")].clone())
                        .collect::<Vec<_>>()
                })
                .ok()
        };
        assert_eq!(lower(p), lower(o), "overlay/{id}/lower");
    }

    // Everything else: the same files and directories, modes and owners.
    let mut theirs = layout_paths(p, &short_names(p, &ids));
    theirs.retain(|l| {
        !PODMAN_RUN_STATE
            .iter()
            .any(|s| l.starts_with(&format!("{s} ")) || l.starts_with(&format!("{s}/")))
    });
    let ours = layout_paths(o, &short_names(o, &ids));
    assert_eq!(theirs, ours, "store layout (left: podman's)");
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn podman_and_skopeo_read_ours(f: &Fixture) {
    let served = open_layout(&f.pulled, Some("1"), "amd64").unwrap();

    // podman with ours as its root lists the image with the registry's digest.
    let out = sh(podman(f, &f.ours_rw).args(["images", "--digests", "--format", "json"]));
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["Id"], served.config_digest.hex(), "{out}");
    assert_eq!(
        listed[0]["Digest"],
        served.manifest_digest.to_string(),
        "{out}"
    );
    assert_eq!(listed[0]["Names"], json!([f.reference]), "{out}");

    // skopeo reads it back: same config, same diff_ids, and each layer it writes
    // (rebuilt from tar-split and diff, recompressed) uncompresses to its diff_id.
    let back = f.dir.join("back");
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!(
            "containers-storage:[overlay@{}+{}]{}",
            f.ours_rw.display(),
            f.ours_rw.with_extension("run").display(),
            f.reference
        ),
        &format!("oci:{}:1", back.display()),
    ]));
    let read_back = open_layout(&back, Some("1"), "amd64").unwrap();
    assert_eq!(read_back.config_digest, served.config_digest);
    for (i, layer) in read_back.layers.iter().enumerate() {
        assert_eq!(layer.diff_id, served.layers[i].diff_id);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(&layer.path).unwrap())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(
            Digest::of_bytes(&tar),
            layer.diff_id,
            "layer {i} as rebuilt from our tar-split"
        );
    }

    // A fresh root with ours as a read-only additional image store.
    let mnt = f.dir.join("store-mount");
    fs::create_dir_all(&mnt).unwrap();
    sh(Command::new("mount")
        .args(["--bind"])
        .arg(&f.ours_ro)
        .arg(&mnt));
    let _unmount = Unmount(mnt.clone());
    sh(Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&mnt));
    let fresh = f.dir.join("fresh");
    let with_store = |args: &[&str]| {
        let mut c = podman(f, &fresh);
        c.arg("--storage-opt")
            .arg(format!("additionalimagestore={}", mnt.display()))
            .args(args);
        c
    };
    let out = sh(&mut with_store(&[
        "images",
        "--digests",
        "--format",
        "json",
    ]));
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        listed[0]["Digest"],
        served.manifest_digest.to_string(),
        "{out}"
    );
    assert_eq!(listed[0]["ReadOnly"], true, "{out}");
    let script = "test ! -e /etc/gone && test ! -e /d/a && test \"$(cat /d/b)\" = b \
                  && test \"$(stat -c %u:%a /home/u/f)\" = 1000:4750 \
                  && test \"$(cat /bin/hl)\" = hello && test /etc/hello -ef /etc/hello2 \
                  && echo kios-store-ok";
    let out = sh(&mut with_store(&[
        "run",
        "--rm",
        "--network=none",
        &f.reference,
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]));
    assert!(out.contains("kios-store-ok"), "{out}");
    let out = sh(&mut with_store(&[
        "run",
        "--rm",
        "--network=none",
        &f.reference,
        "/bin/busybox",
        "true",
    ]));
    assert!(out.is_empty(), "{out}");
}
