//! The OCI distribution API's HTTP side (distribution spec "Pulling"; the token
//! spec for Bearer challenges), for [`super::registry`]: which scheme a registry
//! speaks, GET with one 401 challenge answered (Basic, or a Bearer token from the
//! challenge's realm), what a non-2xx answer means, and every body read through a
//! bound ([`read_body`]).
//!
//! It is spoken over reqwest rather than through oci-client, because oci-client
//! reads every manifest, token and error answer whole into memory, trusting the
//! registry to end it. It does not retry, cache or verify digests: the caller does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::auth::Credential;
use super::reference::ImageRef;
use crate::units::ByteSize;
use crate::untrusted::shown;

/// Why the HTTP side gave up on a registry: it cannot be reached, refuses access,
/// lacks what was asked for, or kept failing (`RegistryError::Distribution`).
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error("cannot reach registry {registry} over HTTPS ({https}){}\n  hint: {hint}", http.as_ref().map(|h| format!("; plain HTTP: {h}")).unwrap_or_default())]
    Connect {
        registry: String,
        https: String,
        http: Option<String>,
        hint: &'static str,
    },
    #[error("registry {registry} refused access to {repository} ({what}){}\n  hint: {}", if *.had_credentials { " with the credentials found" } else { "" }, if *.had_credentials { "check the user and password in the registry auth file" } else { "log in (skopeo login / docker login) so that ~/.docker/config.json or $REGISTRY_AUTH_FILE holds credentials for it" })]
    Unauthorized {
        registry: String,
        repository: String,
        what: String,
        had_credentials: bool,
    },
    #[error("registry {registry}, repository {repository}: {what} not found")]
    NotFound {
        registry: String,
        repository: String,
        what: String,
    },
    #[error("registry {registry}, repository {repository}: cannot fetch {what} (gave up after {attempts} attempts)")]
    Fetch {
        registry: String,
        repository: String,
        what: String,
        attempts: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A token endpoint's answer (a few KiB).
pub(super) const MAX_TOKEN: u64 = 1 << 20;
/// What is read of an error answer, for its distribution error codes.
pub(super) const MAX_ERROR_BODY: u64 = 64 << 10;

/// One HTTP client for all registries, the scheme of each host, and the
/// `Authorization` each repository was granted.
pub(super) struct Client {
    http: reqwest::Client,
    /// Hosts reached over plain HTTP (local or `insecure`, and HTTPS did not answer).
    http_hosts: BTreeSet<String>,
    /// Credentials per registry; `None` for anonymous access.
    creds: BTreeMap<String, Option<Credential>>,
    /// `(registry, repository)` -> the `Authorization` value its challenge gave.
    granted: std::sync::Mutex<BTreeMap<(String, String), HeaderValue>>,
}

impl Client {
    /// A client trusting the system roots plus `certs`, speaking plain HTTP to
    /// `http_hosts`, with `creds` for the registries that have some.
    pub(super) fn new(
        certs: &[reqwest::Certificate],
        http_hosts: BTreeSet<String>,
        creds: BTreeMap<String, Option<Credential>>,
    ) -> reqwest::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Per read, not per request: a blob of gigabytes takes long, a stalled
            // connection is given up.
            .read_timeout(Duration::from_secs(60))
            .tls_certs_merge(certs.to_vec())
            .build()?;
        Ok(Client {
            http,
            http_hosts,
            creds,
            granted: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    pub(super) fn scheme(&self, r: &ImageRef) -> &'static str {
        if self.http_hosts.contains(r.host()) {
            "http"
        } else {
            "https"
        }
    }

    fn unauthorized(&self, r: &ImageRef, what: &str) -> Failure {
        Failure::Fatal(DistributionError::Unauthorized {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            what: what.to_string(),
            had_credentials: self.creds.get(&r.registry).is_some_and(Option::is_some),
        })
    }

    fn fatal(&self, r: &ImageRef, what: &str, why: String) -> Failure {
        Failure::Fatal(DistributionError::Fetch {
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            what: what.to_string(),
            attempts: 1,
            source: why.into(),
        })
    }

    /// GET `/v2/<repository>/<path>` (distribution spec), answering one 401
    /// challenge with the registry's credentials. `from` asks for the bytes from
    /// that offset on (a range request). Returns a 2xx response, body unread.
    pub(super) async fn get(
        &self,
        r: &ImageRef,
        path: &str,
        accept: Option<&str>,
        from: u64,
        what: &str,
    ) -> Result<reqwest::Response, Failure> {
        let url = format!(
            "{}://{}/v2/{}/{path}",
            self.scheme(r),
            r.host(),
            r.repository
        );
        let key = (r.registry.clone(), r.repository.clone());
        let mut challenged = false;
        loop {
            let mut req = self.http.get(&url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if from > 0 {
                req = req.header(RANGE, format!("bytes={from}-"));
            }
            let granted = self.granted.lock().ok().and_then(|g| g.get(&key).cloned());
            if let Some(h) = granted {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(|e| Failure::Retry(Box::new(e)))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                drop(resp);
                let Some(challenge) = challenge else {
                    return Err(self.unauthorized(r, what));
                };
                let value = self.answer(r, &challenge, what).await?;
                if let Ok(mut g) = self.granted.lock() {
                    g.insert(key.clone(), value);
                }
                continue;
            }
            return Err(self.refused(r, what, resp).await);
        }
    }

    /// The `Authorization` value that answers `challenge`: Basic with the
    /// credentials, or a Bearer token fetched from the challenge's realm with them
    /// (or anonymously).
    async fn answer(
        &self,
        r: &ImageRef,
        challenge: &Challenge,
        what: &str,
    ) -> Result<HeaderValue, Failure> {
        let cred = self.creds.get(&r.registry).and_then(Option::as_ref);
        let header = |v: String| -> Result<HeaderValue, Failure> {
            let mut h = HeaderValue::from_str(&v).map_err(|_| {
                self.fatal(
                    r,
                    what,
                    "the credentials are not valid in an HTTP header".into(),
                )
            })?;
            h.set_sensitive(true);
            Ok(h)
        };
        match challenge.scheme.as_str() {
            "basic" => match cred {
                Some(c) => header(c.basic_authorization()),
                None => Err(self.unauthorized(r, what)),
            },
            "bearer" => {
                let realm = challenge.params.get("realm").ok_or_else(|| {
                    self.fatal(r, what, "its Bearer challenge names no realm".into())
                })?;
                let mut url = reqwest::Url::parse(realm).map_err(|_| {
                    self.fatal(
                        r,
                        what,
                        format!("its Bearer realm {} is not a URL", shown(realm)),
                    )
                })?;
                // Credentials go to the realm: never in clear over the network when
                // the registry itself is reached over HTTPS.
                if url.scheme() != "https" && !(url.scheme() == "http" && self.scheme(r) == "http")
                {
                    return Err(self.fatal(
                        r,
                        what,
                        format!("its Bearer realm {} is not an HTTPS URL", shown(realm)),
                    ));
                }
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(service) = challenge.params.get("service") {
                        q.append_pair("service", service);
                    }
                    q.append_pair("scope", &format!("repository:{}:pull", r.repository));
                }
                let mut req = self.http.get(url);
                if let Some(c) = cred {
                    req = req.header(AUTHORIZATION, header(c.basic_authorization())?);
                }
                let resp = req.send().await.map_err(|e| Failure::Retry(Box::new(e)))?;
                let status = resp.status();
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    return Err(self.unauthorized(r, what));
                }
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    return Err(Failure::Retry(
                        format!("the token endpoint answered HTTP {status}").into(),
                    ));
                }
                if !status.is_success() {
                    return Err(self.fatal(
                        r,
                        what,
                        format!("the token endpoint answered HTTP {status}"),
                    ));
                }
                let body = read_body(resp, MAX_TOKEN).await.map_err(|e| match e {
                    BodyError::Read(e) => Failure::Retry(Box::new(e)),
                    e => self.fatal(r, what, format!("the token endpoint: {e}")),
                })?;
                let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
                    self.fatal(r, what, "the token endpoint's answer is not JSON".into())
                })?;
                match answer.token.or(answer.access_token) {
                    Some(t) if !t.is_empty() => header(format!("Bearer {t}")),
                    _ => Err(self.fatal(
                        r,
                        what,
                        "the token endpoint's answer holds no token".into(),
                    )),
                }
            }
            other => Err(self.fatal(
                r,
                what,
                format!("it asks for {} authentication, which kios-build does not speak (Basic or Bearer)", shown(other)),
            )),
        }
    }

    /// What a non-2xx answer means: 401/403 refused, 404 or a distribution
    /// `*_UNKNOWN` code not found, 429 and 5xx worth a retry. Only the start of the
    /// error body is read, for its codes.
    async fn refused(&self, r: &ImageRef, what: &str, resp: reqwest::Response) -> Failure {
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Failure::Retry(format!("HTTP {status}").into());
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return self.unauthorized(r, what);
        }
        let not_found = || {
            Failure::Fatal(DistributionError::NotFound {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what: what.to_string(),
            })
        };
        if status == StatusCode::NOT_FOUND {
            return not_found();
        }
        // Distribution spec "Error Codes": {"errors": [{"code": "MANIFEST_UNKNOWN", …}]}.
        #[derive(serde::Deserialize)]
        struct Envelope {
            errors: Vec<Code>,
        }
        #[derive(serde::Deserialize)]
        struct Code {
            code: String,
        }
        let codes: Vec<String> = match read_body(resp, MAX_ERROR_BODY).await {
            Ok(b) => serde_json::from_slice::<Envelope>(&b)
                .map(|e| e.errors.into_iter().map(|c| c.code).collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if codes.iter().any(|c| c.ends_with("_UNKNOWN")) {
            return not_found();
        }
        if codes.iter().any(|c| c == "UNAUTHORIZED" || c == "DENIED") {
            return self.unauthorized(r, what);
        }
        let codes = if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", shown(&codes.join(", ")))
        };
        self.fatal(
            r,
            what,
            format!("the registry answered HTTP {status}{codes}"),
        )
    }
}

/// HTTPS when it answers, else plain HTTP when a registry answers there
/// (distribution spec "API version check": `GET /v2/` gives 200 or 401). Only the
/// status and headers are looked at; the bodies are never read.
pub(super) async fn probe_scheme(
    r: &ImageRef,
    certs: &[reqwest::Certificate],
) -> Result<&'static str, DistributionError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .tls_certs_merge(certs.to_vec())
        .build()
        .map_err(|e| DistributionError::Connect {
            registry: r.registry.clone(),
            https: error_chain(&e),
            http: None,
            hint: "check the CA files given",
        })?;
    let https = match client.get(format!("https://{}/v2/", r.host())).send().await {
        Ok(_) => return Ok("https"),
        Err(e) => error_chain(&e),
    };
    let http = match client.get(format!("http://{}/v2/", r.host())).send().await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            if resp
                .headers()
                .contains_key("docker-distribution-api-version")
                || s == 200
                || s == 401
            {
                return Ok("http");
            }
            format!("answered HTTP {s}, not as a registry")
        }
        Err(e) => error_chain(&e),
    };
    let hint = if https.contains("certificate") || https.contains("UnknownIssuer") {
        "give the registry's CA certificate with --registry-ca FILE or `registries: {ca: FILE}` in the profile"
    } else {
        "is the registry running, and is the address right?"
    };
    Err(DistributionError::Connect {
        registry: r.registry.clone(),
        https,
        http: Some(http),
        hint,
    })
}

/// An error and its causes on one line (a retry's or a connection's reason).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    crate::error_chain(e, ": ")
}

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("the answer is longer than the {} allowed", ByteSize::new(*.0))]
    TooLong(u64),
    #[error("the answer was cut off")]
    Read(#[source] reqwest::Error),
}

/// Reads a response body, refusing it as soon as it passes `limit` bytes: a
/// `Content-Length` over the limit is refused before reading, and a body without
/// one (chunked), or longer than it claimed, is cut off at the limit. A registry
/// that streams without end costs at most `limit` bytes of memory.
pub(super) async fn read_body(
    mut resp: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLong(limit));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Read)? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLong(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Whether a failed request is worth another attempt, and whether it was refused
/// for lack of access.
pub(super) enum Failure {
    Retry(Box<dyn std::error::Error + Send + Sync>),
    Fatal(DistributionError),
}

/// A `WWW-Authenticate` challenge (RFC 7235; the distribution token spec for
/// Bearer): the scheme and its parameters.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Bearer realm="https://auth/token",service="registry",scope="…"` or
    /// `Basic realm="…"`. Only the first challenge of the header is read.
    fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = BTreeMap::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            let Some((key, after)) = rest.split_once('=') else {
                break;
            };
            let key = key.trim().to_ascii_lowercase();
            let (value, next) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => {
                    let end = after.find(',').unwrap_or(after.len());
                    (after[..end].trim(), &after[end..])
                }
            };
            params.insert(key, value.to_string());
            rest = next;
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

/// A token endpoint's answer (distribution token spec: `token`, or OAuth2's
/// `access_token`).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_challenges_are_parsed() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
        let c = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
        let c = Challenge::parse("Bearer realm=https://a/t, service=s").unwrap();
        assert_eq!(c.params["realm"], "https://a/t");
        assert_eq!(c.params["service"], "s");
        // An unterminated quote is not a challenge.
        assert!(Challenge::parse(r#"Bearer realm="https://a"#).is_none());
    }
}
