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

use crate::common::{require_tool, run_tool};

// The layout writers live in common::layout; the tests reach them as fixture::*.
#[allow(unused_imports)]
pub use crate::common::layout::{compress, image, index, tag, tar_of, OCI_GZIP, OCI_TAR, OCI_ZSTD};

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
            let line = run_tool("htpasswd", "apache2-utils", &["-Bbn", u, p]);
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
        run_tool("skopeo", "skopeo", &args);
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
    run_tool(
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
    run_tool(
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
    run_tool(
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

/// busybox from the test inputs, as a layer tar holding bin/busybox.
pub fn busybox_tar() -> Vec<u8> {
    let bin = fs::read(crate::common::inputs().join("system/bin/busybox")).unwrap();
    tar_of(&[("bin/busybox", 0o755, &bin)])
}
