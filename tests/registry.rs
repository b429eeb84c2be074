//! Pulling inputs from a real registry (Debian's docker-registry on 127.0.0.1, images
//! pushed by skopeo): by tag and digest, multi-arch indexes, zstd layers, Docker
//! schema 2, TLS with basic auth, tampered blobs, a registry that dies mid-pull,
//! the warm cache, and the lock with `--locked --offline`.

mod common;
#[path = "common/registry.rs"]
mod fixture;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::{inputs, run, text};
use fixture::{Registry, OCI_GZIP, OCI_TAR, OCI_ZSTD};
use kios_build::oci::reference::ImageRef;
use kios_build::oci::registry::{pull, RegistryOptions, Request};
use kios_build::oci::{apply_layers, Digest, Limits};
use kios_build::progress::Progress;
use kios_build::tree::{Kind, Tree, TreePath};
use serde_json::Value;
use tempfile::TempDir;

/// `kios-build`; `$KIOS_BUILD_BIN` overrides the binary cargo built, for machines
/// where several checkouts share one target folder (and its `debug/kios-build`).
fn kios_build() -> std::process::Command {
    let mut c = common::kios_build();
    if let Some(bin) = std::env::var_os("KIOS_BUILD_BIN") {
        let mut o = std::process::Command::new(bin);
        o.env("KIOS_INIT", common::init_binary());
        o.env_remove("SOURCE_DATE_EPOCH");
        c = o;
    }
    c
}

const MARK: &str = "etc/kios-from-registry";

/// A system image: busybox and a marker file under /etc (which `inspect` shows).
fn system_layout(dir: &Path, media_type: &str) -> Value {
    let mark = fixture::tar_of(&[(MARK, 0o644, b"pulled\n")]);
    let d = fixture::image(
        dir,
        "amd64",
        &[(media_type, fixture::busybox_tar()), (media_type, mark)],
    );
    fixture::tag(dir, &[("1", d.clone())]);
    d
}

/// The stub as an image holding it at systemd's path.
fn stub_layout(dir: &Path) -> Value {
    let stub = fs::read(inputs().join("stub/linuxx64.efi.stub")).unwrap();
    let tar = fixture::tar_of(&[(kios_build::inputs::DEFAULT_STUB_FILE, 0o644, &stub)]);
    let d = fixture::image(dir, "amd64", &[(OCI_GZIP, tar)]);
    fixture::tag(dir, &[("1", d.clone())]);
    d
}

fn profile(dir: &Path, system: &str, stub: Option<&str>, extra: &str) -> PathBuf {
    let i = inputs();
    let stub = match stub {
        Some(s) => format!("{{image: {s}}}"),
        None => format!("{{path: {}}}", i.join("stub/linuxx64.efi.stub").display()),
    };
    let text = format!(
        "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nhostname: test-node\nkernel:\n  path: {}\nboot:\n  stub: {stub}\nsystem:\n  image: {system}\n{extra}",
        i.join("kernel").display()
    );
    let p = dir.join("node.yaml");
    fs::write(&p, text).unwrap();
    p
}

fn build_cmd(profile: &Path, out: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    run(common::build_command(profile, out)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env("REGISTRY_AUTH_FILE", "/nonexistent/auth.json"))
}

fn marker_in(img: &Path) -> bool {
    let o = run(kios_build().arg("inspect").arg(img).arg("--json"));
    assert!(o.status.success(), "{}", text(&o));
    let i: Value = serde_json::from_slice(&o.stdout).unwrap();
    i["initramfs"]["etc"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == format!("/{MARK}") && e["content"] == "pulled\n")
}

/// Every file under the cache's blobs is complete: named by its own digest.
fn assert_cache_clean(cache: &Path) {
    let dir = cache.join("blobs/sha256");
    for e in fs::read_dir(&dir).into_iter().flatten() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::of_bytes(&bytes).hex(),
            name,
            "the cache holds a file that is not a verified blob: {name}"
        );
    }
}

#[test]
fn an_image_pulled_by_tag_builds_and_a_warm_locked_offline_build_needs_no_registry() {
    let mut reg = Registry::start();
    let work = TempDir::new().unwrap();
    system_layout(&work.path().join("sys"), OCI_GZIP);
    stub_layout(&work.path().join("stub"));
    reg.push(&work.path().join("sys"), "1", "test/system", "1", &[]);
    reg.push(&work.path().join("stub"), "1", "test/stub", "1", &[]);
    let before = reg.blob_gets();
    let system = format!("{}/test/system:1", reg.host());
    let stub = format!("{}/test/stub:1", reg.host());
    let p = profile(work.path(), &system, Some(&stub), "");
    let cache = work.path().join("cache");
    let img = work.path().join("node.img");

    let o = build_cmd(&p, &img, &cache, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        marker_in(&img),
        "the system image's files are in the initramfs"
    );
    let cold = reg.blob_gets() - before;
    // system: config + 2 layers; stub: config + 1 layer.
    assert_eq!(cold, 5, "{}", text(&o));
    let lock: Value =
        serde_json::from_slice(&fs::read(work.path().join("kios.lock")).unwrap()).unwrap();
    let images = lock["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{lock}");
    assert!(images.iter().all(|i| i["platform"] == "linux/amd64"));
    assert!(images.iter().any(|i| i["reference"] == system));
    assert_cache_clean(&cache);

    // Warm: no blob is fetched again.
    let o = build_cmd(&p, &img, &cache, &["--locked"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(reg.blob_gets() - before, cold, "a warm build fetched blobs");

    // Registry gone: the lock and the cache are enough.
    reg.stop();
    let img2 = work.path().join("offline.img");
    let o = build_cmd(&p, &img2, &cache, &["--locked", "--offline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(marker_in(&img2));

    // Offline with an empty cache names what is missing.
    let empty = work.path().join("empty-cache");
    let o = build_cmd(&p, &img2, &empty, &["--offline"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("offline") && err.contains("test/system"),
        "{err}"
    );

    // A tag that moved fails --locked.
    reg.restart();
    let other = work.path().join("sys2");
    fixture::image(
        &other,
        "amd64",
        &[(OCI_GZIP, fixture::tar_of(&[("x", 0o644, b"2")]))],
    );
    let d = fixture::image(
        &other,
        "amd64",
        &[(OCI_GZIP, fixture::tar_of(&[("y", 0o644, b"3")]))],
    );
    fixture::tag(&other, &[("1", d)]);
    reg.push(&other, "1", "test/system", "1", &[]);
    let o = build_cmd(&p, &img2, &cache, &["--locked"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("now resolves to"),
        "{}",
        text(&o)
    );

    // cache prune --all empties the cache.
    let o = run(kios_build()
        .args(["cache", "prune", "--all", "--cache-dir"])
        .arg(&cache));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read_dir(cache.join("blobs/sha256")).unwrap().count(), 0);
}

fn opts(cache: &Path) -> RegistryOptions {
    RegistryOptions {
        cache_dir: cache.to_path_buf(),
        ..Default::default()
    }
}

fn read_file(image: &kios_build::oci::LayoutImage, spool: &Path, path: &str) -> Vec<u8> {
    let mut tree = Tree::new(0);
    apply_layers(image, spool, &Limits::default(), &mut tree).unwrap();
    match &tree.get(&TreePath::parse(path).unwrap()).unwrap().kind {
        Kind::File(c) => c.read_all().unwrap(),
        k => panic!("{path} is {k:?}"),
    }
}

#[test]
fn indexes_zstd_layers_docker_schema2_and_digests_are_pulled() {
    let reg = Registry::start();
    let work = TempDir::new().unwrap();
    let w = work.path();
    // A multi-arch index: amd64 and arm64 entries.
    let multi = w.join("multi");
    let amd = fixture::image(
        &multi,
        "amd64",
        &[(OCI_GZIP, fixture::tar_of(&[("arch", 0o644, b"amd64")]))],
    );
    let arm = fixture::image(
        &multi,
        "arm64",
        &[(OCI_TAR, fixture::tar_of(&[("arch", 0o644, b"arm64")]))],
    );
    let idx = fixture::index(&multi, &[amd.clone(), arm.clone()]);
    fixture::tag(&multi, &[("m", idx)]);
    reg.push(&multi, "m", "test/multi", "1", &["--all"]);
    // A zstd layer, and a Docker schema 2 copy of a gzip image.
    let z = w.join("zstd");
    let zd = fixture::image(
        &z,
        "amd64",
        &[(OCI_ZSTD, fixture::tar_of(&[("z", 0o644, b"zstd")]))],
    );
    fixture::tag(&z, &[("z", zd)]);
    reg.push(&z, "z", "test/zstd", "1", &[]);
    let g = w.join("gzip");
    let gd = fixture::image(
        &g,
        "amd64",
        &[(OCI_GZIP, fixture::tar_of(&[("d", 0o644, b"docker")]))],
    );
    fixture::tag(&g, &[("g", gd)]);
    reg.push(&g, "g", "test/docker", "1", &["--format", "v2s2"]);

    let cache = w.join("cache");
    let spool = w.join("spool");
    fs::create_dir_all(&spool).unwrap();
    let r = |s: &str| Request {
        reference: ImageRef::parse(&format!("{}/{s}", reg.host())).unwrap(),
        digest: None,
    };
    let q = Progress::quiet();
    let got = pull(
        &[r("test/multi:1"), r("test/zstd:1"), r("test/docker:1")],
        "amd64",
        &opts(&cache),
        &q,
    )
    .unwrap();
    // skopeo re-serialises the index when it pushes it; the image manifests are
    // pushed as they are.
    let pushed_index = got[0].digest.clone();
    assert_ne!(
        pushed_index.to_string(),
        amd["digest"],
        "a tag resolves to the index"
    );
    assert_eq!(got[0].image.manifest_digest.to_string(), amd["digest"]);
    assert_eq!(got[0].platform, "linux/amd64");
    assert_eq!(read_file(&got[0].image, &spool, "arch"), b"amd64");
    assert_eq!(read_file(&got[1].image, &spool, "z"), b"zstd");
    assert_eq!(
        got[2]
            .image
            .manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .as_deref(),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    assert_eq!(read_file(&got[2].image, &spool, "d"), b"docker");

    // arm64 from the same index, and pulls by digest (index and manifest).
    // (skopeo gzips the uncompressed arm64 layer as it pushes: a new manifest.)
    let got = pull(&[r("test/multi:1")], "arm64", &opts(&cache), &q).unwrap();
    assert_eq!(got[0].image.config.architecture().to_string(), "arm64");
    assert_eq!(got[0].platform, "linux/arm64");
    assert_eq!(read_file(&got[0].image, &spool, "arch"), b"arm64");
    let arm = got[0].image.manifest_digest.to_string();
    let by_digest = |d: &str| r(&format!("test/multi@{d}"));
    let fresh = w.join("cache2");
    let got = pull(
        &[by_digest(&pushed_index.to_string()), by_digest(&arm)],
        "arm64",
        &opts(&fresh),
        &q,
    )
    .unwrap();
    assert_eq!(got[0].image.manifest_digest.to_string(), arm);
    assert_eq!(got[1].digest.to_string(), arm);
    let err = pull(&[r("test/multi:1")], "riscv64", &opts(&cache), &q).unwrap_err();
    assert!(err.to_string().contains("linux/riscv64"), "{err}");
    let err = pull(&[r("test/absent:1")], "amd64", &opts(&cache), &q).unwrap_err();
    assert!(err.to_string().contains("test/absent"), "{err}");
}

#[test]
fn a_registry_with_tls_and_basic_auth_needs_the_ca_and_the_credentials() {
    const PASSWORD: &str = "pa55-w0rd-xyzzy";
    let reg = Registry::start_with(true, Some(("kios", PASSWORD)));
    let tls = reg.tls.as_ref().unwrap();
    let work = TempDir::new().unwrap();
    system_layout(&work.path().join("sys"), OCI_GZIP);
    reg.push(&work.path().join("sys"), "1", "test/system", "1", &[]);
    let p = profile(
        work.path(),
        &format!("{}/test/system:1", reg.host()),
        None,
        "",
    );
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("kios:{PASSWORD}"));
    let good = work.path().join("auth.json");
    fs::write(
        &good,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let wrong = work.path().join("wrong.json");
    let bad = base64::engine::general_purpose::STANDARD.encode("kios:nope");
    fs::write(
        &wrong,
        format!(r#"{{"auths":{{"{}":{{"auth":"{bad}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    let cache = work.path().join("cache");
    let pull_cmd = |auth: &Path, ca: Option<&Path>| {
        let mut c = kios_build();
        c.arg("pull").arg(&p).arg("--cache-dir").arg(&cache);
        if let Some(ca) = ca {
            c.arg("--registry-ca").arg(ca);
        }
        c.env("REGISTRY_AUTH_FILE", auth);
        run(&mut c)
    };
    let show = |o: &std::process::Output| {
        let t = text(o);
        assert!(
            !t.contains(PASSWORD) && !t.contains(&auth),
            "a secret was printed:\n{t}"
        );
        t
    };

    let o = pull_cmd(&good, None);
    let t = show(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("--registry-ca") && t.contains(&reg.host()),
        "{t}"
    );

    let o = pull_cmd(Path::new("/nonexistent"), Some(&tls.ca));
    let t = show(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("refused access") && t.contains("test/system"),
        "{t}"
    );

    let o = pull_cmd(&wrong, Some(&tls.ca));
    let t = show(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("refused access"), "{t}");

    let o = pull_cmd(&good, Some(&tls.ca));
    show(&o);
    assert!(o.status.success(), "{}", text(&o));
    // The CA may come from the profile too; the build then needs no flag.
    fs::copy(&tls.ca, work.path().join("ca.pem")).unwrap();
    let p = profile(
        work.path(),
        &format!("{}/test/system:1", reg.host()),
        None,
        "registries:\n  ca: ca.pem\n",
    );
    let img = work.path().join("node.img");
    let o = run(common::build_command(&p, &img)
        .arg("--cache-dir")
        .arg(work.path().join("cache-b"))
        .env("REGISTRY_AUTH_FILE", &good));
    show(&o);
    assert!(o.status.success(), "{}", text(&o));
    assert!(marker_in(&img));
}

#[test]
fn a_tampered_blob_is_rejected_and_no_image_is_written() {
    let reg = Registry::start();
    let work = TempDir::new().unwrap();
    let d = system_layout(&work.path().join("sys"), OCI_GZIP);
    reg.push(&work.path().join("sys"), "1", "test/system", "1", &[]);
    let manifest: Digest = d["digest"].as_str().unwrap().parse().unwrap();
    let m: Value =
        serde_json::from_slice(&fs::read(manifest.blob_path(&work.path().join("sys"))).unwrap())
            .unwrap();
    let layer: Digest = m["layers"][0]["digest"].as_str().unwrap().parse().unwrap();
    let file = reg.blob_file(&layer);
    let mut bytes = fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    fs::write(&file, bytes).unwrap();

    let p = profile(
        work.path(),
        &format!("{}/test/system:1", reg.host()),
        None,
        "",
    );
    let cache = work.path().join("cache");
    let img = work.path().join("node.img");
    let o = build_cmd(&p, &img, &cache, &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("does not match its digest") && t.contains(&layer.to_string()),
        "{t}"
    );
    assert!(t.contains("test/system") && t.contains(&reg.host()), "{t}");
    assert!(!img.exists(), "no image may be written");
    assert!(
        !layer.blob_path(&cache).exists(),
        "the bad blob is not cached"
    );
    assert_cache_clean(&cache);
    let leftovers: Vec<_> = fs::read_dir(work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A TCP proxy in front of the registry that "stops the registry" once it has
/// passed `budget` bytes towards the client: it cuts every connection and closes
/// new ones at once, until the budget is raised again.
struct Proxy {
    port: u16,
    budget: Arc<AtomicI64>,
}

impl Proxy {
    fn start(upstream: u16, budget: i64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let budget = Arc::new(AtomicI64::new(budget));
        let b = budget.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if b.load(Ordering::SeqCst) <= 0 {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(Shutdown::Write);
                });
                let b = b.clone();
                std::thread::spawn(move || {
                    let (mut s, mut c) = (server, client);
                    let mut buf = [0u8; 16 << 10];
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let left = b.fetch_sub(n as i64, Ordering::SeqCst);
                        if left <= 0 {
                            break;
                        }
                        let n = n.min(left as usize);
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c.shutdown(Shutdown::Both);
                    let _ = s.shutdown(Shutdown::Both);
                });
            }
        });
        Proxy { port, budget }
    }
}

#[test]
fn a_registry_stopped_mid_pull_is_retried_then_the_next_build_resumes_from_the_cache() {
    let reg = Registry::start();
    let work = TempDir::new().unwrap();
    // One layer: busybox and the marker.
    let bin = fs::read(inputs().join("system/bin/busybox")).unwrap();
    let tar = fixture::tar_of(&[("bin/busybox", 0o755, &bin), (MARK, 0o644, b"pulled\n")]);
    let d = fixture::image(&work.path().join("sys"), "amd64", &[(OCI_GZIP, tar)]);
    fixture::tag(&work.path().join("sys"), &[("1", d.clone())]);
    reg.push(&work.path().join("sys"), "1", "test/system", "1", &[]);
    let m: Value = serde_json::from_slice(
        &fs::read(
            d["digest"]
                .as_str()
                .unwrap()
                .parse::<Digest>()
                .unwrap()
                .blob_path(&work.path().join("sys")),
        )
        .unwrap(),
    )
    .unwrap();
    let busybox_layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let busybox_size = m["layers"][0]["size"].as_i64().unwrap();
    // Enough for the probes, the manifest and the config (fetched before layers),
    // and about half of busybox.
    let proxy = Proxy::start(reg.port, (64 << 10) + busybox_size / 2);
    let host = format!("127.0.0.1:{}", proxy.port);
    let p = profile(work.path(), &format!("{host}/test/system:1"), None, "");
    let cache = work.path().join("cache");
    let img = work.path().join("node.img");
    let o = build_cmd(&p, &img, &cache, &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("retrying"), "{t}");
    assert!(t.contains("gave up after 4 attempts"), "{t}");
    assert!(
        t.contains(&host) && t.contains("test/system") && t.contains(&busybox_layer),
        "{t}"
    );
    assert!(!img.exists());
    assert_cache_clean(&cache);
    let cached = fs::read_dir(cache.join("blobs/sha256")).unwrap().count();
    assert_eq!(cached, 2, "manifest and config are kept:\n{t}");

    // "Restarted": the next build fetches only what is missing.
    proxy.budget.store(i64::MAX, Ordering::SeqCst);
    let before = reg.blob_gets();
    let o = build_cmd(&p, &img, &cache, &[]);
    assert!(o.status.success(), "{}", text(&o));
    // Only the layer is fetched again (the manifest comes from /manifests/).
    assert_eq!(reg.blob_gets() - before, 1, "{}", text(&o));
    assert!(marker_in(&img));
}

/// Registry images into the pre-seeded store: a daemon's image, an `images:` entry
/// and the pause image, all from the registry, are pinned in the lock, written into
/// the store partition under their registry names, named by digest in the pod and
/// by name in CRI-O's drop-in; with the registry gone, `--locked --offline` builds
/// the same bytes again.
#[test]
fn registry_images_of_pods_images_and_pause_are_pre_seeded() {
    let mut reg = Registry::start();
    let work = TempDir::new().unwrap();
    let w = work.path();
    let dhcp = w.join("dhcp");
    let d = fixture::image(&dhcp, "amd64", &[(OCI_GZIP, fixture::busybox_tar())]);
    fixture::tag(&dhcp, &[("1", d.clone())]);
    let extra = w.join("extra");
    let e = fixture::image(
        &extra,
        "amd64",
        &[(OCI_GZIP, fixture::tar_of(&[("etc/extra", 0o644, b"x\n")]))],
    );
    fixture::tag(&extra, &[("2", e.clone())]);
    reg.push(&dhcp, "1", "test/dhcp", "1", &[]);
    reg.push(&extra, "2", "test/extra", "2", &[]);
    reg.push(&common::pause_layout(), "kios", "kios/pause", "3.10", &[]);
    let pause_digest =
        kios_build::oci::layout::open_layout(&common::pause_layout(), Some("kios"), "amd64")
            .unwrap()
            .manifest_digest
            .to_string();
    let h = reg.host();
    let p = common::write_profile(
        w,
        "node.yaml",
        &common::profile_text(&format!(
            "kubernetes:\n  pauseImage: {h}/kios/pause:3.10\ndaemons:\n  - name: dhcp\n    image: {h}/test/dhcp:1\nimages:\n  - {h}/test/extra:2\ndisk:\n  size: 320MiB\n"
        )),
    );
    let cache = w.join("cache");
    let img = w.join("node.img");
    let o = build_cmd(&p, &img, &cache, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let lock: Value = serde_json::from_slice(&fs::read(w.join("kios.lock")).unwrap()).unwrap();
    assert_eq!(lock["images"].as_array().unwrap().len(), 3, "{lock}");

    let i = common::inspect(&img);
    let images = common::store_images(&i);
    assert_eq!(
        images,
        [
            (format!("{h}/kios/pause:3.10"), pause_digest),
            (
                format!("{h}/test/dhcp:1"),
                d["digest"].as_str().unwrap().to_string()
            ),
            (
                format!("{h}/test/extra:2"),
                e["digest"].as_str().unwrap().to_string()
            ),
        ]
    );
    let pod = common::etc_file(&i, "/etc/kubernetes/manifests/dhcp.yaml");
    assert!(
        pod.contains(&format!(
            "image: {h}/test/dhcp@{}",
            d["digest"].as_str().unwrap()
        )),
        "{pod}"
    );
    let crio = common::etc_file(&i, "/etc/crio/crio.conf.d/10-kios-pause.conf");
    assert!(
        crio.contains(&format!("pause_image = \"{h}/kios/pause:3.10\"")),
        "{crio}"
    );

    // The registry gone: the lock and the cache make the same image.
    reg.stop();
    let again = w.join("again.img");
    let o = build_cmd(&p, &again, &cache, &["--locked", "--offline"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(common::sha256_file(&img), common::sha256_file(&again));
}

/// A profile with pods that names no pause image needs registry.k8s.io's: offline
/// and without it in the cache, the error says where that reference comes from and
/// how to build without it.
#[test]
fn the_default_pause_image_that_cannot_be_had_is_explained() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let layer = w.join("layer");
    fs::create_dir_all(layer.join("bin")).unwrap();
    fs::write(layer.join("bin/x"), b"x").unwrap();
    common::oci_layout(&w.join("dhcp"), "1", &[&layer]);
    let p = common::write_profile(
        w,
        "node.yaml",
        &common::profile_text("daemons:\n  - name: dhcp\n    image: oci:dhcp:1\n"),
    );
    let img = w.join("node.img");
    let o = build_cmd(&p, &img, &w.join("cache"), &["--offline"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("registry.k8s.io/pause:3.10 is the pause image of Kubernetes 1.33")
            && err.contains("kubernetes.pauseImage")
            && err.contains("scripts/make-pause-image"),
        "{err}"
    );
    assert!(!img.exists());
}

/// A multi-arch image named by its index digest (as `crane digest` or a registry
/// UI gives it) in `images:` and in a `pods:` file: pre-seeded with the index kept
/// beside the platform manifest, exactly as `podman pull` of the same reference
/// stores it, so that podman (containers/storage) finds and runs it by the index
/// digest from our store partition.
#[test]
fn an_image_named_by_its_index_digest_is_found_by_it_in_the_store() {
    let reg = Registry::start();
    let work = TempDir::new().unwrap();
    let w = work.path();
    let multi = w.join("multi");
    let amd = fixture::image(&multi, "amd64", &[(OCI_GZIP, fixture::busybox_tar())]);
    let arm = fixture::image(
        &multi,
        "arm64",
        &[(OCI_GZIP, fixture::tar_of(&[("arm", 0o644, b"arm\n")]))],
    );
    let index = fixture::index(&multi, &[amd.clone(), arm]);
    fixture::tag(&multi, &[("1", index.clone())]);
    reg.push(&multi, "1", "test/multi", "1", &["--all"]);
    let h = reg.host();
    let by_index = format!("{h}/test/multi@{}", index["digest"].as_str().unwrap());
    fs::write(
        w.join("relay.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: relay, namespace: kube-system}}\nspec:\n  containers:\n  - name: relay\n    image: {by_index}\n    command: [/bin/busybox, sleep, \"3600\"]\n"
        ),
    )
    .unwrap();
    let p = common::write_profile(
        w,
        "node.yaml",
        &common::profile_text(&format!(
            "{}images:\n  - {by_index}\npods: [relay.yaml]\ndisk:\n  size: 320MiB\n",
            common::pause_yaml()
        )),
    );
    let img = w.join("node.img");
    let o = build_cmd(&p, &img, &w.join("cache"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let i = common::inspect(&img);
    let listed = i["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["digest"] == amd["digest"])
        .unwrap_or_else(|| panic!("the amd64 manifest is not pre-seeded: {i}"))
        .clone();
    assert_eq!(listed["indexDigest"], index["digest"], "{listed}");

    // podman pulls the same reference into a fresh store: the image's record must
    // carry the same names and big data (the index under manifest-<index digest>).
    let (_m, mnt) = common::mount_store(&img, w);
    let ours: Value =
        serde_json::from_slice(&fs::read(mnt.join("overlay-images/images.json")).unwrap()).unwrap();
    let ours = ours
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["digest"] == index["digest"])
        .unwrap_or_else(|| panic!("no image recorded with the index's digest"))
        .clone();
    let theirs_root = w.join("podman-pulled");
    let o = run(std::process::Command::new("podman")
        .arg("--root")
        .arg(&theirs_root)
        .arg("--runroot")
        .arg(w.join("podman-pulled-run"))
        .args([
            "--storage-driver",
            "overlay",
            "pull",
            "--quiet",
            "--tls-verify=false",
        ])
        .arg(&by_index));
    assert!(o.status.success(), "{}", text(&o));
    let theirs: Value =
        serde_json::from_slice(&fs::read(theirs_root.join("overlay-images/images.json")).unwrap())
            .unwrap();
    let theirs = theirs[0].clone();
    for field in [
        "id",
        "digest",
        "names",
        "big-data-names",
        "big-data-sizes",
        "big-data-digests",
    ] {
        assert_eq!(
            ours[field], theirs[field],
            "{field}:\nours   {ours}\npodman {theirs}"
        );
    }

    // podman with our partition as its additional store runs it by the index digest.
    let podman = common::Podman::new(w, &mnt, None);
    let (ok, t) = podman.run(&[
        "run",
        "--rm",
        "--network=none",
        "--pull=never",
        &by_index,
        "/bin/busybox",
        "echo",
        "found-by-index",
    ]);
    assert!(ok && t.contains("found-by-index"), "{t}");
}
