//! Registry credentials from the files Docker, podman and skopeo share: the file
//! named by `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`. For a registry, in Docker's order: `credHelpers[registry]`,
//! then `auths[registry]` (`auth` = base64 `user:password`, or `username` and
//! `password`), then `credsStore`. A helper is the program
//! `docker-credential-<name>`, run as `docker-credential-<name> get` with the
//! registry on stdin, answering `{"Username": …, "Secret": …}`.
//!
//! A [`Credential`] never shows its secret: its `Debug` and `Display` print the user
//! only, and no error here contains file contents or helper output. The challenge
//! flows themselves (Basic, or a Bearer token fetched with these credentials) are
//! [`super::registry`]'s. Identity tokens (OAuth2 refresh tokens, helper user
//! `<token>`) are not supported.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

/// A user name and its secret (password or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    secret: String,
}

impl Credential {
    pub fn new(username: impl Into<String>, secret: impl Into<String>) -> Credential {
        Credential {
            username: username.into(),
            secret: secret.into(),
        }
    }

    /// The `Authorization` header value of HTTP Basic (RFC 7617) for this credential.
    pub(crate) fn basic_authorization(&self) -> String {
        let pair = format!("{}:{}", self.username, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, <secret>)", self.username)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the registry auth file {path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{path}: the entry for {registry} is not valid ({why})")]
    Entry {
        path: PathBuf,
        registry: String,
        why: &'static str,
    },
    #[error("credential helper docker-credential-{helper} for {registry}: {why}")]
    Helper {
        helper: String,
        registry: String,
        why: String,
    },
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The largest auth file read (real ones are a few KiB).
const MAX_AUTH_FILE: u64 = 4 << 20;
/// The largest answer read from a credential helper.
const MAX_HELPER_ANSWER: u64 = 1 << 20;

/// Where credentials are read from.
pub fn auth_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The credential for `registry` (as written in a reference: `docker.io`,
/// `ghcr.io`, `127.0.0.1:5443`), or `None` for anonymous access.
pub fn credential_for(registry: &str) -> Result<Option<Credential>, AuthError> {
    match auth_file() {
        Some(p) if p.exists() => credential_in(&p, registry),
        _ => Ok(None),
    }
}

/// The keys a registry may be stored under (Docker Hub has its historical URL).
fn keys(registry: &str) -> Vec<String> {
    let mut v = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == "docker.io" || registry == "index.docker.io" {
        v.push("https://index.docker.io/v1/".into());
        v.push("index.docker.io".into());
        v.push("registry-1.docker.io".into());
    }
    v
}

pub fn credential_in(path: &Path, registry: &str) -> Result<Option<Credential>, AuthError> {
    // A regular file only, of a size an auth file can have: a FIFO or a device named
    // by $REGISTRY_AUTH_FILE must not hang the pull or fill memory.
    let text =
        crate::untrusted::read_regular(path, MAX_AUTH_FILE).map_err(|e| AuthError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    // serde_json's message names a line and column, never the content.
    let config: ConfigFile = serde_json::from_slice(&text).map_err(|e| AuthError::File {
        path: path.to_path_buf(),
        why: format!(
            "not valid JSON of its kind at line {} column {}",
            e.line(),
            e.column()
        ),
    })?;
    let keys = keys(registry);
    if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
        return run_helper(helper, registry);
    }
    if let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) {
        let bad = |why| AuthError::Entry {
            path: path.to_path_buf(),
            registry: registry.to_string(),
            why,
        };
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("`auth` is not base64"))?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad("`auth` is not UTF-8"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad("`auth` is not base64 of user:password"))?;
            return Ok(Some(Credential::new(user, pass)));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credential::new(u.clone(), p.clone())));
        }
        // An empty entry (`{}`) means "use credsStore".
    }
    match &config.creds_store {
        Some(store) if !store.is_empty() => run_helper(store, registry),
        _ => Ok(None),
    }
}

#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

fn run_helper(helper: &str, registry: &str) -> Result<Option<Credential>, AuthError> {
    let err = |why: String| AuthError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        why,
    };
    if helper.contains('/') || helper.is_empty() {
        return Err(err("the helper name must be a plain name".into()));
    }
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot run {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| err(format!("cannot write to it: {e}")))?;
    }
    // The answer is a few hundred bytes; a helper that writes without end is stopped
    // at the bound instead of filling memory.
    let mut stdout = Vec::new();
    let read = match child.stdout.take() {
        Some(o) => std::io::Read::read_to_end(
            &mut crate::untrusted::Limited::new(o, MAX_HELPER_ANSWER),
            &mut stdout,
        ),
        None => Ok(0),
    };
    if let Err(e) = read {
        let _ = child.kill();
        let _ = child.wait();
        return Err(err(format!("cannot read its answer: {e}")));
    }
    let status = child
        .wait()
        .map_err(|e| err(format!("cannot run {program}: {e}")))?;
    let out = std::process::Output {
        status,
        stdout,
        stderr: Vec::new(),
    };
    if !out.status.success() {
        // "credentials not found" is not an error: the registry may be public.
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("not found") {
            return Ok(None);
        }
        return Err(err(format!("it exited with {}", out.status)));
    }
    let a: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|_| err("its answer is not {\"Username\", \"Secret\"} JSON".into()))?;
    if a.username == "<token>" {
        return Err(err(
            "it returned an identity token, which kios-build cannot use; store a user and password or token instead".into(),
        ));
    }
    Ok(Some(Credential::new(a.username, a.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn auths_entries_are_read_and_never_printed() {
        let dir = tempfile::TempDir::new().unwrap();
        // base64("alice:s3cret")
        let p = write(
            dir.path(),
            r#"{"auths":{"127.0.0.1:5443":{"auth":"YWxpY2U6czNjcmV0"},"https://index.docker.io/v1/":{"username":"bob","password":"hunter2"}}}"#,
        );
        let c = credential_in(&p, "127.0.0.1:5443").unwrap().unwrap();
        assert_eq!(c, Credential::new("alice", "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = credential_in(&p, "docker.io").unwrap().unwrap();
        assert_eq!(c.username, "bob");
        assert_eq!(credential_in(&p, "ghcr.io").unwrap(), None);
        let p = write(dir.path(), r#"{"auths":{"r":{"auth":"!!"}}}"#);
        let e = credential_in(&p, "r").unwrap_err().to_string();
        assert!(e.contains("base64") && !e.contains("!!"), "{e}");
    }

    #[test]
    fn credential_helpers_are_run_with_the_registry_on_stdin() {
        let dir = tempfile::TempDir::new().unwrap();
        let helper = dir.path().join("docker-credential-kiostest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread reg\n[ \"$reg\" = ghcr.io ] || { echo 'credentials not found'; exit 1; }\necho '{\"ServerURL\":\"ghcr.io\",\"Username\":\"u\",\"Secret\":\"tok\"}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // The helper is found on PATH; run it through a PATH that has it.
        let p = write(
            dir.path(),
            r#"{"credHelpers":{"ghcr.io":"kiostest"},"credsStore":"kiostest"}"#,
        );
        std::env::set_var("PATH", &path);
        let c = credential_in(&p, "ghcr.io").unwrap().unwrap();
        assert_eq!(c, Credential::new("u", "tok"));
        // credsStore, with the helper knowing nothing of this registry: anonymous.
        assert_eq!(credential_in(&p, "quay.io").unwrap(), None);
    }
}
