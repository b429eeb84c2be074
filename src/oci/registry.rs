//! Pulling images from registries into the blob cache ([`super::cache`]), over the
//! OCI distribution API (manifests by tag or digest, blobs by digest) spoken with
//! reqwest.
//!
//! [`pull`] takes image references and returns each as a [`LayoutImage`] opened
//! from the cache by [`super::layout::open_descriptor`], so the rest of the pipeline
//! reads a pulled image exactly like a local layout (layers verified again, and
//! their diff_ids checked, when [`super::layer`] streams them). On the way:
//! - a tag is resolved to a digest (the manifest GET's body is hashed; the cache
//!   remembers the resolution for `--offline`); an index or Docker manifest list is
//!   narrowed to linux/`arch` by [`super::layout::select_platform`];
//! - every manifest and blob that is not cached is fetched, blobs several at once,
//!   streamed to a temporary file in the cache while hashed and counted, and
//!   renamed only when digest and size match ([`super::cache::BlobWriter`]);
//! - every body is read through a bound that holds whether or not the registry
//!   sends a length: manifests and token answers [`MAX_MANIFEST`] and [`super::distribution::MAX_TOKEN`],
//!   error answers [`super::distribution::MAX_ERROR_BODY`], blobs their descriptor's size;
//! - 429, 5xx, and dropped or refused connections are retried with exponential
//!   backoff; an interrupted blob continues with an HTTP range request when the
//!   registry allows it;
//! - credentials come from [`super::auth`]; a 401 challenge is answered here, with
//!   HTTP Basic or a Bearer token fetched from the challenge's realm (distribution
//!   token spec). HTTPS uses the system roots (rustls-platform-verifier) plus the
//!   extra CA files given. Plain HTTP is allowed only for registries on this machine
//!   and those listed as insecure, and only when HTTPS does not answer.
//!
//! Async stays in here: a small tokio runtime per [`pull`] call. It does not push,
//! and it does not exchange identity tokens (OAuth2 refresh tokens).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use reqwest::StatusCode;

use super::auth::{self, AuthError};
use super::cache::{Cache, CacheError};
pub use super::distribution::DistributionError;
use super::distribution::{error_chain, probe_scheme, read_body, BodyError, Client, Failure};
use super::layout::{self, LayoutImage};
use super::reference::ImageRef;
use super::{Digest, OciError};
use crate::progress::Progress;
use crate::units::ByteSize;

/// Manifests and indexes larger than this are refused, as distribution's registry
/// does (real ones are kilobytes). Configs are blobs, bounded by their descriptor's
/// size, and opened only when it is under [`super::layout`]'s JSON limit.
const MAX_MANIFEST: u64 = 4 << 20;
/// A CA certificate file (PEM; a full system bundle is about 200 KiB).
const MAX_CA_FILE: u64 = 4 << 20;
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How to reach registries and where to cache; not from the image references.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    pub cache_dir: PathBuf,
    /// Use the cache only; fail naming what is missing.
    pub offline: bool,
    /// Registries (`host:port`) that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM files) trusted besides the system roots.
    pub ca_files: Vec<PathBuf>,
    /// Blobs downloaded at once.
    pub jobs: usize,
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Delay before the first retry; doubled for each next one.
    pub backoff: Duration,
    /// The largest layer downloaded, by its descriptor: a build passes its disk's
    /// size, which no layer it can use is larger than, so that a registry that
    /// describes a huge layer does not fill the host's disk first.
    pub max_blob: u64,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            cache_dir: Cache::default_dir(),
            offline: false,
            insecure: Vec::new(),
            ca_files: Vec::new(),
            jobs: 4,
            attempts: 4,
            backoff: Duration::from_millis(300),
            max_blob: u64::MAX,
        }
    }
}

/// One image to pull. `digest` pins it (from the lock); otherwise the reference's
/// own digest, or its tag, decides.
#[derive(Clone, Debug)]
pub struct Request {
    pub reference: ImageRef,
    pub digest: Option<Digest>,
}

/// A pulled image.
#[derive(Clone, Debug)]
pub struct Pulled {
    pub reference: ImageRef,
    /// What the reference resolved to: the index, or the manifest when there is no
    /// index. Pin this.
    pub digest: Digest,
    /// `linux/amd64`, `linux/arm64/v8`.
    pub platform: String,
    pub image: LayoutImage,
    /// True when the registry was not asked: the digest was known and every blob
    /// was in the cache.
    pub cached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{registry}: cannot read credentials")]
    Auth {
        registry: String,
        #[source]
        source: AuthError,
    },
    #[error("cannot use the CA certificate {path}: {why}\n  hint: give a PEM file (-----BEGIN CERTIFICATE-----)")]
    Ca { path: PathBuf, why: String },
    #[error("cannot start the download runtime")]
    Runtime(#[source] std::io::Error),
    /// The registry could not be reached, refused access, lacks the thing asked
    /// for, or kept failing.
    #[error(transparent)]
    Distribution(#[from] DistributionError),
    #[error("registry {registry}, repository {repository}: {what} {digest} does not match its digest ({actual}, {size} bytes); it was not cached: the registry's copy is damaged or was tampered with")]
    Digest {
        registry: String,
        repository: String,
        what: &'static str,
        digest: Digest,
        actual: Digest,
        size: u64,
    },
    #[error("registry {registry}, repository {repository}: {what} is larger than the {limit} allowed for it (real ones are kilobytes); refusing it: the registry is broken or hostile")]
    TooLarge {
        registry: String,
        repository: String,
        what: String,
        limit: ByteSize,
    },
    #[error("registry {registry}, repository {repository}: layer {digest} is {size} bytes by its descriptor, more than the whole disk ({limit}); refusing to download it\n  hint: raise the profile's disk.size if the image really is that large")]
    LayerTooLarge {
        registry: String,
        repository: String,
        digest: Digest,
        size: u64,
        limit: ByteSize,
    },
    #[error("{reference}: {what} is {media_type:?}, not an image manifest or index")]
    NotAnImage {
        reference: String,
        what: String,
        media_type: String,
    },
    #[error("offline, and the cache ({cache}) lacks what these images need:\n  {}\n  hint: run `kios-build pull PROFILE` while online (same --cache-dir)", missing.join("\n  "))]
    Offline {
        cache: PathBuf,
        missing: Vec<String>,
    },
    #[error(transparent)]
    Oci(#[from] Box<OciError>),
}

/// Pulls `requests` for linux/`arch` into the cache and opens each image.
pub fn pull(
    requests: &[Request],
    arch: &str,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<Vec<Pulled>, RegistryError> {
    let cache = Cache::open(&opts.cache_dir)?;
    // Images whose digest is known and whose blobs are all cached need no network.
    let mut from_cache = BTreeMap::new();
    let mut missing = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let known = r
            .digest
            .clone()
            .or_else(|| r.reference.digest.clone())
            .or_else(|| {
                opts.offline
                    .then(|| {
                        r.reference.tag.as_deref().and_then(|t| {
                            cache.get_ref(&r.reference.registry, &r.reference.repository, t)
                        })
                    })
                    .flatten()
            });
        match known {
            Some(d) => match walk_cached(&cache, &r.reference, &d, arch)? {
                Ok(p) => {
                    from_cache.insert(i, p);
                }
                Err(m) => missing.extend(m),
            },
            None => missing.push(format!(
                "{}: the digest of tag {:?} (never pulled)",
                r.reference,
                r.reference.tag.as_deref().unwrap_or("latest")
            )),
        }
    }
    let cached: BTreeSet<usize> = from_cache.keys().copied().collect();
    if from_cache.len() < requests.len() {
        if opts.offline {
            missing.sort();
            missing.dedup();
            return Err(RegistryError::Offline {
                cache: cache.root().to_path_buf(),
                missing,
            });
        }
        let todo: Vec<(usize, &Request)> = requests
            .iter()
            .enumerate()
            .filter(|(i, _)| !from_cache.contains_key(i))
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(RegistryError::Runtime)?;
        let fetched = rt.block_on(fetch_all(&todo, arch, opts, &cache, progress))?;
        from_cache.extend(fetched);
    }
    let mut out = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let (digest, desc) = from_cache.remove(&i).expect("every request was resolved");
        let image = layout::open_descriptor(cache.root(), &r.reference.to_string(), desc, arch)
            .map_err(Box::new)?;
        let platform = platform_of(&image);
        out.push(Pulled {
            reference: r.reference.clone(),
            digest,
            platform,
            image,
            cached: cached.contains(&i),
        });
    }
    Ok(out)
}

pub(crate) fn platform_of(image: &LayoutImage) -> String {
    let c = &image.config;
    match c.variant() {
        Some(v) => format!("{}/{}/{v}", c.os(), c.architecture()),
        None => format!("{}/{}", c.os(), c.architecture()),
    }
}

/// A top-level descriptor for `digest`, with its media type read from the JSON.
fn top_descriptor(
    reference: &ImageRef,
    digest: &Digest,
    bytes: &[u8],
) -> Result<Descriptor, RegistryError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Peek {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let peek: Peek = serde_json::from_slice(bytes).map_err(|_| RegistryError::NotAnImage {
        reference: reference.to_string(),
        what: format!("manifest {digest}"),
        media_type: "not JSON".into(),
    })?;
    let media_type = match (peek.media_type, peek.manifests) {
        (Some(m), _) => m,
        (None, Some(_)) => "application/vnd.oci.image.index.v1+json".into(),
        (None, None) => "application/vnd.oci.image.manifest.v1+json".into(),
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(RegistryError::NotAnImage {
            reference: reference.to_string(),
            what: format!("manifest {digest}"),
            // The registry's text: made safe to print, and cut short.
            media_type: crate::untrusted::shown(&media_type),
        });
    }
    let d: oci_spec::image::Digest =
        digest
            .to_string()
            .parse()
            .map_err(|_| RegistryError::NotAnImage {
                reference: reference.to_string(),
                what: format!("digest {digest}"),
                media_type: media_type.clone(),
            })?;
    Ok(Descriptor::new(
        MediaType::from(media_type.as_str()),
        bytes.len() as u64,
        d,
    ))
}

/// What an image needs beyond its top manifest: (the platform manifest, when the
/// top is an index), then config and layers. Reads only cached JSON.
enum Need {
    /// The platform manifest is not cached.
    Manifest(Box<Descriptor>),
    /// All JSON is cached; these blobs may not be.
    Blobs(Vec<Descriptor>),
}

fn needs(
    cache: &Cache,
    reference: &ImageRef,
    top: &Descriptor,
    top_bytes: &[u8],
    arch: &str,
) -> Result<Need, RegistryError> {
    let name = reference.to_string();
    let oci = |e: OciError| RegistryError::Oci(Box::new(e));
    let bad_json = |what: &str, e: serde_json::Error| {
        oci(OciError::Invalid {
            reference: name.clone(),
            what: what.to_string(),
            why: format!("not valid JSON of its kind: {e}"),
        })
    };
    let manifest_bytes = if layout::is_index_media_type(top.media_type().as_ref()) {
        let index: ImageIndex =
            serde_json::from_slice(top_bytes).map_err(|e| bad_json("image index", e))?;
        let desc = layout::select_platform(&name, &index, arch).map_err(oci)?;
        if layout::is_index_media_type(desc.media_type().as_ref()) {
            return Err(RegistryError::NotAnImage {
                reference: name,
                what: format!("the linux/{arch} entry of the index ({})", desc.digest()),
                media_type: "a nested index".into(),
            });
        }
        let digest = parse_digest(&name, desc.digest().as_ref())?;
        match cache.read_verified(&digest) {
            Some(b) => b,
            None => return Ok(Need::Manifest(Box::new(desc))),
        }
    } else {
        top_bytes.to_vec()
    };
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad_json("manifest", e))?;
    let mut blobs = vec![manifest.config().clone()];
    blobs.extend(manifest.layers().iter().cloned());
    Ok(Need::Blobs(blobs))
}

fn parse_digest(reference: &str, s: &str) -> Result<Digest, RegistryError> {
    s.parse::<Digest>().map_err(|source| {
        RegistryError::Oci(Box::new(OciError::Digest {
            reference: reference.to_string(),
            what: format!("digest {s}"),
            source,
        }))
    })
}

/// Resolves `digest` from the cache alone: `Ok(Ok(..))` when everything is there,
/// `Ok(Err(missing))` naming what is not.
#[allow(clippy::type_complexity)]
fn walk_cached(
    cache: &Cache,
    reference: &ImageRef,
    digest: &Digest,
    arch: &str,
) -> Result<Result<(Digest, Descriptor), Vec<String>>, RegistryError> {
    let Some(bytes) = cache.read_verified(digest) else {
        return Ok(Err(vec![format!("{reference}: manifest {digest}")]));
    };
    let top = top_descriptor(reference, digest, &bytes)?;
    match needs(cache, reference, &top, &bytes, arch)? {
        Need::Manifest(d) => Ok(Err(vec![format!(
            "{reference}: linux/{arch} manifest {}",
            d.digest()
        )])),
        Need::Blobs(blobs) => {
            let mut missing = Vec::new();
            for b in blobs {
                let d = parse_digest(&reference.to_string(), b.digest().as_ref())?;
                if cache.get(&d, Some(b.size())).is_none() {
                    missing.push(format!("{reference}: blob {d} ({} bytes)", b.size()));
                }
            }
            if missing.is_empty() {
                Ok(Ok((digest.clone(), top)))
            } else {
                Ok(Err(missing))
            }
        }
    }
}

/// The network side of one pull: the registries' HTTP client, and where fetched
/// documents and blobs go.
struct Session<'a> {
    client: Client,
    opts: &'a RegistryOptions,
    cache: &'a Cache,
    progress: &'a Progress,
}

async fn fetch_all(
    todo: &[(usize, &Request)],
    arch: &str,
    opts: &RegistryOptions,
    cache: &Cache,
    progress: &Progress,
) -> Result<BTreeMap<usize, (Digest, Descriptor)>, RegistryError> {
    install_crypto_provider();
    let mut certs = Vec::new();
    for path in &opts.ca_files {
        // A regular file of a size a CA bundle can have: a FIFO or a device given
        // as --registry-ca must not hang the pull or fill memory.
        let data =
            crate::untrusted::read_regular(path, MAX_CA_FILE).map_err(|e| RegistryError::Ca {
                path: path.clone(),
                why: e.to_string(),
            })?;
        let bundle =
            reqwest::Certificate::from_pem_bundle(&data).map_err(|e| RegistryError::Ca {
                path: path.clone(),
                why: e.to_string(),
            })?;
        if bundle.is_empty() {
            return Err(RegistryError::Ca {
                path: path.clone(),
                why: "it holds no certificate".into(),
            });
        }
        certs.extend(bundle);
    }
    let registries: BTreeSet<&ImageRef> = todo.iter().map(|(_, r)| &r.reference).collect();
    let mut http_hosts = BTreeSet::new();
    let mut creds = BTreeMap::new();
    let mut probed = BTreeSet::new();
    for r in registries {
        if !probed.insert(r.host().to_string()) {
            continue;
        }
        let may_be_http = r.is_local() || opts.insecure.iter().any(|h| h == &r.registry);
        if may_be_http && probe_scheme(r, &certs).await? == "http" {
            http_hosts.insert(r.host().to_string());
        }
        let cred = auth::credential_for(&r.registry).map_err(|source| RegistryError::Auth {
            registry: r.registry.clone(),
            source,
        })?;
        creds.insert(r.registry.clone(), cred);
    }
    let client = Client::new(&certs, http_hosts, creds).map_err(|e| RegistryError::Ca {
        path: opts.ca_files.first().cloned().unwrap_or_default(),
        why: error_chain(&e),
    })?;
    let s = Session {
        client,
        opts,
        cache,
        progress,
    };

    // Manifests first (small, a few per image; they also win each repository's
    // token before the parallel blob requests), then every missing blob at once.
    let mut resolved = BTreeMap::new();
    // Configs before layers: with every JSON document cached, each image is opened
    // (platform, media types, diff_id count checked) before a layer is fetched.
    let mut configs: BTreeMap<Digest, (ImageRef, Descriptor)> = BTreeMap::new();
    let mut layers: BTreeMap<Digest, (ImageRef, Descriptor)> = BTreeMap::new();
    for (i, r) in todo {
        let (digest, top) = s.resolve(r).await?;
        let top_bytes = cache.read_verified(&digest).unwrap_or_default();
        let wanted = match needs(cache, &r.reference, &top, &top_bytes, arch)? {
            Need::Blobs(b) => b,
            Need::Manifest(m) => {
                s.manifest(&r.reference, &m).await?;
                match needs(cache, &r.reference, &top, &top_bytes, arch)? {
                    Need::Blobs(b) => b,
                    Need::Manifest(m) => {
                        return Err(RegistryError::NotAnImage {
                            reference: r.reference.to_string(),
                            what: format!(
                                "manifest {} (cannot be read back from the cache)",
                                m.digest()
                            ),
                            media_type: "unreadable".into(),
                        })
                    }
                }
            }
        };
        for (n, b) in wanted.into_iter().enumerate() {
            let d = parse_digest(&r.reference.to_string(), b.digest().as_ref())?;
            // The config is read whole once fetched: its size is bounded like a
            // manifest's before a byte of it is downloaded.
            if n == 0 && b.size() > MAX_MANIFEST {
                return Err(RegistryError::TooLarge {
                    registry: r.reference.registry.clone(),
                    repository: r.reference.repository.clone(),
                    what: format!("config {d} ({} bytes by its descriptor)", b.size()),
                    limit: ByteSize::new(MAX_MANIFEST),
                });
            }
            if n > 0 && b.size() > opts.max_blob {
                return Err(RegistryError::LayerTooLarge {
                    registry: r.reference.registry.clone(),
                    repository: r.reference.repository.clone(),
                    digest: d,
                    size: b.size(),
                    limit: ByteSize::new(opts.max_blob),
                });
            }
            if cache.get(&d, Some(b.size())).is_none() {
                let set = if n == 0 { &mut configs } else { &mut layers };
                set.entry(d).or_insert_with(|| (r.reference.clone(), b));
            }
        }
        resolved.insert(*i, (digest, top));
    }
    s.blobs(configs).await?;
    for (i, r) in todo {
        let (_, top) = &resolved[i];
        layout::open_descriptor(cache.root(), &r.reference.to_string(), top.clone(), arch)
            .map_err(Box::new)?;
    }
    s.blobs(layers).await?;
    Ok(resolved)
}

/// rustls needs one process-wide crypto provider; ring builds without a C toolchain
/// beyond cc, and needs no OpenSSL.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Session<'_> {
    async fn backoff(&self, attempt: u32, r: &ImageRef, what: &str, why: &str) {
        let delay = self.opts.backoff * 2u32.saturating_pow(attempt - 1);
        self.progress.say(&format!(
            "warning: {}/{}: {what}: {why}; retrying in {:.1}s (attempt {} of {})",
            r.registry,
            r.repository,
            delay.as_secs_f64(),
            attempt + 1,
            self.opts.attempts
        ));
        tokio::time::sleep(delay).await;
    }

    /// The reference's digest (fetching and caching its manifest when needed).
    async fn resolve(&self, req: &Request) -> Result<(Digest, Descriptor), RegistryError> {
        let r = &req.reference;
        let pinned = req.digest.clone().or_else(|| r.digest.clone());
        if let Some(d) = &pinned {
            if let Some(bytes) = self.cache.read_verified(d) {
                return Ok((d.clone(), top_descriptor(r, d, &bytes)?));
            }
        }
        let what = match &pinned {
            Some(d) => format!("manifest {d}"),
            None => format!("tag {}", r.tag.as_deref().unwrap_or("latest")),
        };
        let target = match &pinned {
            Some(d) => d.to_string(),
            None => r.tag.clone().unwrap_or_else(|| "latest".into()),
        };
        let bytes = self.manifest_bytes(r, &target, &what).await?;
        let digest = Digest::of_bytes(&bytes);
        if let Some(d) = &pinned {
            if *d != digest {
                return Err(RegistryError::Digest {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    what: "manifest",
                    digest: d.clone(),
                    actual: digest,
                    size: bytes.len() as u64,
                });
            }
        }
        let desc = top_descriptor(r, &digest, &bytes)?;
        self.cache.put_bytes(&bytes)?;
        if let (None, Some(tag)) = (&pinned, &r.tag) {
            self.cache
                .set_ref(&r.registry, &r.repository, tag, &digest)?;
        }
        Ok((digest, desc))
    }

    /// A platform manifest of an index, by digest, into the cache.
    async fn manifest(&self, r: &ImageRef, desc: &Descriptor) -> Result<(), RegistryError> {
        let d = parse_digest(&r.to_string(), desc.digest().as_ref())?;
        let what = format!("manifest {d}");
        let bytes = self.manifest_bytes(r, &d.to_string(), &what).await?;
        let actual = Digest::of_bytes(&bytes);
        if actual != d || bytes.len() as u64 != desc.size() {
            return Err(RegistryError::Digest {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what: "manifest",
                digest: d,
                actual,
                size: bytes.len() as u64,
            });
        }
        self.cache.put_bytes(&bytes)?;
        Ok(())
    }

    /// The body of `GET /v2/<repository>/manifests/<target>` (a tag or a digest),
    /// at most [`MAX_MANIFEST`] bytes; the caller checks it against its digest.
    async fn manifest_bytes(
        &self,
        r: &ImageRef,
        target: &str,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let path = format!("manifests/{target}");
        let accept = MANIFEST_TYPES.join(", ");
        let mut attempt = 1;
        loop {
            let failure = match self.client.get(r, &path, Some(&accept), 0, what).await {
                Ok(resp) => match read_body(resp, MAX_MANIFEST).await {
                    Ok(bytes) => return Ok(bytes),
                    Err(BodyError::TooLong(limit)) => {
                        return Err(RegistryError::TooLarge {
                            registry: r.registry.clone(),
                            repository: r.repository.clone(),
                            what: what.to_string(),
                            limit: ByteSize::new(limit),
                        })
                    }
                    Err(BodyError::Read(e)) => Failure::Retry(Box::new(e)),
                },
                Err(f) => f,
            };
            match failure {
                Failure::Fatal(f) => return Err(f.into()),
                Failure::Retry(source) if attempt >= self.opts.attempts => {
                    return Err(DistributionError::Fetch {
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                        what: what.to_string(),
                        attempts: attempt,
                        source,
                    }
                    .into())
                }
                Failure::Retry(source) => {
                    self.backoff(attempt, r, what, &error_chain(&*source)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Fetches blobs, `jobs` at a time; the first error is returned once all ended.
    async fn blobs(
        &self,
        blobs: BTreeMap<Digest, (ImageRef, Descriptor)>,
    ) -> Result<(), RegistryError> {
        let results: Vec<Result<(), RegistryError>> = futures_util::stream::iter(blobs)
            .map(|(d, (r, desc))| async move { self.blob(&r, &d, &desc).await })
            .buffer_unordered(self.opts.jobs.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Streams one blob into the cache, never past the descriptor's size; the
    /// cache's writer checks digest and size before the blob enters the cache.
    async fn blob(&self, r: &ImageRef, d: &Digest, desc: &Descriptor) -> Result<(), RegistryError> {
        let what = format!("blob {d}");
        let size = desc.size();
        let path = format!("blobs/{d}");
        let mut bar = self
            .progress
            .blob(format!("{} {}", r.repository, &d.hex()[..12]), Some(size));
        let mut writer = self.cache.writer(d, Some(size))?;
        let mut attempt = 1;
        loop {
            let written = writer.written();
            let error: Box<dyn std::error::Error + Send + Sync> =
                match self.client.get(r, &path, None, written, &what).await {
                    Err(Failure::Fatal(f)) => return Err(f.into()),
                    Err(Failure::Retry(e)) => e,
                    Ok(resp) => {
                        if written > 0 && resp.status() != StatusCode::PARTIAL_CONTENT {
                            // The registry ignored the range: start over.
                            writer = self.cache.writer(d, Some(size))?;
                            bar.restart();
                        }
                        match self.copy(resp, size, &mut writer, &mut bar).await {
                            Ok(()) => break,
                            Err(e) => e,
                        }
                    }
                };
            if writer.too_long() {
                break; // commit() reports the mismatch
            }
            if attempt >= self.opts.attempts {
                return Err(DistributionError::Fetch {
                    registry: r.registry.clone(),
                    repository: r.repository.clone(),
                    what,
                    attempts: attempt,
                    source: error,
                }
                .into());
            }
            self.backoff(attempt, r, &what, &error_chain(&*error)).await;
            attempt += 1;
        }
        match writer.commit() {
            Ok(_) => {
                bar.done();
                Ok(())
            }
            Err(CacheError::Mismatch {
                actual,
                actual_size,
                ..
            }) => Err(RegistryError::Digest {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                what: "blob",
                digest: d.clone(),
                actual,
                size: actual_size,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies a blob body into `writer`, stopping as soon as more than `size` bytes
    /// (the descriptor's) have come, whatever the body's own length says.
    async fn copy(
        &self,
        mut resp: reqwest::Response,
        size: u64,
        writer: &mut super::cache::BlobWriter,
        bar: &mut crate::progress::BlobProgress,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if resp
            .content_length()
            .is_some_and(|n| writer.written().saturating_add(n) > size)
        {
            // Read one byte past the size so that commit() reports the mismatch.
            if let Some(chunk) = resp.chunk().await? {
                let room = size.saturating_sub(writer.written()) as usize + 1;
                writer.write_all(&chunk[..chunk.len().min(room)])?;
            }
            return Err("the registry announced more bytes than the descriptor's size".into());
        }
        while let Some(chunk) = resp.chunk().await? {
            writer.write_all(&chunk)?;
            bar.add(chunk.len() as u64);
            if writer.too_long() {
                return Err("the registry sent more bytes than the descriptor's size".into());
            }
        }
        Ok(())
    }
}
