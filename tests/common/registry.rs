//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) on
//! 127.0.0.1 and a free port, optionally with TLS from a throwaway CA and htpasswd
//! basic auth; OCI layouts written by hand and pushed with `skopeo copy`. The
//! registry is killed when the fixture is dropped. Missing tools fail the test
//! with the Debian package to install.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kios_build::oci::Digest;
use serde_json::{json, Value};

use crate::common::require_tool;

pub const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

pub struct Tls {
    /// The CA's and the server's keys and certificates.
    pub dir: PathBuf,
    /// The CA certificate that signed the server's (PEM), alone in its folder.
    pub ca: PathBuf,
}

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls: Option<Tls>,
    /// `user:password` when htpasswd auth is on.
    pub creds: Option<(String, String)>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(tool: &str, package: &str, args: &[&str]) -> Vec<u8> {
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

impl Registry {
    /// A plain-HTTP registry without auth.
    pub fn start() -> Registry {
        Registry::start_with(false, None)
    }

    /// With TLS (a fresh CA) and/or htpasswd basic auth for `(user, password)`.
    pub fn start_with(tls: bool, creds: Option<(&str, &str)>) -> Registry {
        require_tool("docker-registry", "docker-registry");
        let dir = tempfile::TempDir::new().unwrap();
        let port = free_port();
        let tls = tls.then(|| make_tls(dir.path()));
        let mut config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test\n",
            dir.path().join("storage").display()
        );
        if let Some(t) = &tls {
            config.push_str(&format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                t.dir.join("server.crt").display(),
                t.dir.join("server.key").display()
            ));
        }
        if let Some((u, p)) = creds {
            let line = run("htpasswd", "apache2-utils", &["-Bbn", u, p]);
            fs::write(dir.path().join("htpasswd"), line).unwrap();
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut r = Registry {
            dir,
            port,
            tls,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            child: None,
        };
        r.restart();
        r
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// (Re)starts the server on the same port and storage; waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts (apt-get install docker-registry)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "docker-registry exited ({status}):\n{}",
                    fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Pushes `oci:LAYOUT:TAG` to `repo:dest_tag` with skopeo; `extra` are more
    /// `skopeo copy` flags (`--all`, `--format v2s2`).
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, dest_tag: &str, extra: &[&str]) {
        require_tool("skopeo", "skopeo");
        let src = format!("oci:{}:{tag}", layout.display());
        let dest = format!("docker://{}/{repo}:{dest_tag}", self.host());
        let mut args: Vec<String> = vec!["copy".into(), "--quiet".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        match &self.tls {
            Some(t) => args.push(format!(
                "--dest-cert-dir={}",
                t.ca.parent().unwrap().display()
            )),
            None => args.push("--dest-tls-verify=false".into()),
        }
        if let Some((u, p)) = &self.creds {
            args.push(format!("--dest-creds={u}:{p}"));
        }
        args.push(src);
        args.push(dest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("skopeo", "skopeo", &args);
    }

    /// `GET …/blobs/…` requests the registry has logged so far.
    pub fn blob_gets(&self) -> usize {
        fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// The registry's own file of a blob (distribution's filesystem driver layout).
    pub fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, signed by it.
fn make_tls(dir: &Path) -> Tls {
    let d = dir.join("tls");
    fs::create_dir_all(&d).unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    run(
        "openssl",
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kios test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ],
    );
    run(
        "openssl",
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
    );
    fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(
        "openssl",
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("server.crt"),
        ],
    );
    // skopeo's --dest-cert-dir takes every *.key as a client key: give it the CA
    // alone.
    let ca_dir = dir.join("ca");
    fs::create_dir_all(&ca_dir).unwrap();
    fs::copy(d.join("ca.crt"), ca_dir.join("ca.crt")).unwrap();
    Tls {
        ca: ca_dir.join("ca.crt"),
        dir: d,
    }
}

/// A reproducible tar of `files` (path, mode, content), GNU tar's format.
pub fn tar_of(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, _, _) in files {
        let mut acc = String::new();
        for c in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            acc = if acc.is_empty() {
                c.to_string()
            } else {
                format!("{acc}/{c}")
            };
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(0);
                h.set_mtime(0);
                h.set_cksum();
                b.append_data(&mut h, format!("{acc}/"), std::io::empty())
                    .unwrap();
            }
        }
    }
    for (path, mode, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(content.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, path, *content).unwrap();
    }
    b.into_inner().unwrap()
}

/// `tar` compressed for `media_type`.
pub fn compress(media_type: &str, tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match media_type {
        OCI_GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        OCI_ZSTD => zstd::encode_all(tar, 3).unwrap(),
        _ => tar.to_vec(),
    }
}

fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let d = Digest::of_bytes(bytes);
    let path = d.blob_path(dir);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
    json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len()})
}

/// Writes an image (its layers given as (media type, uncompressed tar)) into the
/// layout `dir`, without touching index.json; returns the manifest's descriptor.
pub fn image(dir: &Path, arch: &str, layers: &[(&str, Vec<u8>)]) -> Value {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let descs: Vec<Value> = layers
        .iter()
        .map(|(mt, tar)| blob(dir, mt, &compress(mt, tar)))
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(_, tar)| Digest::of_bytes(tar).to_string())
        .collect();
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": descs,
    });
    let mut d = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    d["platform"] = json!({"architecture": arch, "os": "linux"});
    d
}

/// Writes `index.json` tagging each descriptor.
pub fn tag(dir: &Path, tagged: &[(&str, Value)]) {
    let manifests: Vec<Value> = tagged
        .iter()
        .map(|(t, d)| {
            let mut d = d.clone();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": t});
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// An image index over `manifests`, as a blob of `dir`; returns its descriptor.
pub fn index(dir: &Path, manifests: &[Value]) -> Value {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    blob(
        dir,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    )
}

/// busybox from the test inputs, as a layer tar holding bin/busybox.
pub fn busybox_tar() -> Vec<u8> {
    let bin = fs::read(crate::common::inputs().join("system/bin/busybox")).unwrap();
    tar_of(&[("bin/busybox", 0o755, &bin)])
}
