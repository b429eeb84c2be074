//! Image references as users write them (`registry/repo:tag`, `registry/repo@sha256:…`,
//! `registry/repo:tag@sha256:…`), parsed once into an [`ImageRef`].
//!
//! The grammar and the Docker Hub rules are the distribution project's
//! (`reference/normalize.go`), implemented by `oci_spec::distribution::Reference`,
//! which oci-client uses: a first component without `.` or `:` (and not
//! `localhost`) is a Docker Hub repository, so `busybox` is
//! `docker.io/library/busybox`; no tag and no digest means `latest`. This module keeps
//! the parsed parts as typed values and remembers whether the tag was defaulted, so
//! that the caller can warn. It does not talk to a registry.

use std::fmt;

use super::Digest;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/busybox`, `test/system`.
    pub repository: String,
    /// `latest` when neither a tag nor a digest was written.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// True when the user wrote neither tag nor digest and `latest` was assumed.
    pub tag_defaulted: bool,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("`{input}` is not an image reference ({why}); write registry/repository:tag, registry/repository@sha256:<hex>, or registry/repository:tag@sha256:<hex>")]
pub struct ReferenceError {
    pub input: String,
    pub why: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        let err = |why: String| ReferenceError {
            input: s.to_string(),
            why,
        };
        let r: oci_client::Reference = s.parse().map_err(|e| err(format!("{e}")))?;
        // The distribution grammar's path components (lowercase); oci-spec's parser
        // lets upper case through. This also keeps `..` out of cache file names.
        let component_ok = |c: &str| {
            let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !c.is_empty()
                && c.bytes().all(|b| alnum(b) || b"._-".contains(&b))
                && alnum(c.as_bytes()[0])
                && alnum(c.as_bytes()[c.len() - 1])
        };
        if !r.repository().split('/').all(component_ok) {
            return Err(err(format!(
                "repository {:?} must be lowercase letters, digits and . _ - between /",
                r.repository()
            )));
        }
        let digest = match r.digest() {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| err(e.to_string()))?),
            None => None,
        };
        // The parser fills in `latest` itself; find out whether the user wrote a tag.
        let name_end = s.find('@').unwrap_or(s.len());
        let last = s[..name_end].rsplit('/').next().unwrap_or("");
        let tag_defaulted = digest.is_none() && !last.contains(':');
        Ok(ImageRef {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest,
            tag_defaulted,
        })
    }

    /// The same image pinned to `digest` (the tag kept for readability).
    pub fn pinned(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The registry's network address (`index.docker.io` for Docker Hub).
    pub fn host(&self) -> &str {
        if self.registry == "docker.io" {
            "index.docker.io"
        } else {
            &self.registry
        }
    }

    /// True for registries on this machine (`localhost`, `127.0.0.0/8`, `[::1]`), which
    /// may answer over plain HTTP as Docker allows.
    pub fn is_local(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_names_are_normalised_and_latest_is_assumed() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert!(r.tag_defaulted);
        assert_eq!(r.host(), "index.docker.io");
        let r = ImageRef::parse("example/app:1.2").unwrap();
        assert_eq!(r.to_string(), "docker.io/example/app:1.2");
        assert!(!r.tag_defaulted);
    }

    #[test]
    fn registries_with_ports_tags_and_digests_parse() {
        let r = ImageRef::parse("127.0.0.1:5000/test/system:1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "test/system");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert!(r.is_local() && !r.tag_defaulted);
        let r = ImageRef::parse(&format!("localhost:5000/a@sha256:{HEX}")).unwrap();
        assert_eq!(r.digest.as_ref().unwrap().hex(), HEX);
        assert!(r.tag.is_none() && !r.tag_defaulted && r.is_local());
        let r = ImageRef::parse(&format!("ghcr.io/x/y:2@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("2"));
        assert_eq!(r.to_string(), format!("ghcr.io/x/y:2@sha256:{HEX}"));
        assert!(!r.is_local());
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in ["", "UPPER/case", "a/b:", "a@sha256:abc", "a@md5:00"] {
            let e = ImageRef::parse(bad).unwrap_err();
            assert!(e.to_string().contains("registry/repository"), "{bad}: {e}");
        }
    }
}
