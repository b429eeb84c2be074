//! The pre-seeded images: what the node has without pulling ([`NodeSpec::seed_images`]:
//! the daemons' images, the profile's `images:`, the pause image), each opened
//! (a local OCI layout, or a registry image the plan pulled into the cache),
//! pinned to its platform manifest digest and given the name the store records.
//!
//! Names, as `docs/store.md` says:
//! - a registry image keeps its normalised reference: `docker.io/library/busybox:1.36`
//!   (an image written by digest only is named `repo@sha256:...`);
//! - a local layout `oci:DIR[:TAG]` is `localhost/kios/<DIR's name>:<TAG or latest>`,
//!   as podman names an `oci:DIR` pull (the tag alone is no name, and two layouts may
//!   share one).
//!
//! Pods are written with `repo@sha256:<manifest digest>`; CRI-O finds the image in the
//! store by that repository and digest, and by the tag name for `pods:` files that
//! write a tag.

use std::collections::BTreeMap;

use crate::inputs::InputError;
use crate::oci::layout::LayoutImage;
use crate::oci::reference::ImageRef;
use crate::pods::{MapResolver, NodeSpec, PinnedImage};
use crate::profile::{Arch, Input, Source};
use crate::store::cstorage::StoreImage;

/// One pre-seeded image.
#[derive(Clone, Debug)]
pub struct SeedImage {
    /// As the profile wrote it, and where.
    pub source: Input,
    /// Its names: what pods are written with (`repo@sha256:<platform manifest
    /// digest>`), what the store records and CRI-O looks up by tag (`repo:tag`),
    /// and `repo@sha256:<index digest>` when it was reached through an index.
    pub pinned: PinnedImage,
    pub image: LayoutImage,
}

/// The images of the store, in [`NodeSpec::seed_images`] order.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    pub images: Vec<SeedImage>,
    /// The store name of the pause image, when it is pre-seeded.
    pub pause: Option<String>,
}

/// Opens every image the node needs without pulling. Registry images must be in
/// `pulled` (the plan pulls [`NodeSpec::seed_images`]).
pub fn collect(
    spec: &NodeSpec,
    arch: Arch,
    pulled: &BTreeMap<ImageRef, LayoutImage>,
) -> Result<Seed, InputError> {
    let pause = spec.pause_image();
    let mut seed = Seed::default();
    for source in spec.seed_images() {
        let what = if source.value == pause.value {
            "the pause image".to_string()
        } else {
            "a pre-seeded image".to_string()
        };
        let (repo, name, image) = match &source.value {
            Source::OciLayout { dir, tag } => {
                let image = crate::oci::layout::open_layout(dir, tag.as_deref(), arch.as_str())
                    .map_err(|e| InputError::Oci {
                        origin: source.origin.to_string(),
                        what: what.clone(),
                        reference: crate::untrusted::shown_max(
                            &source.value.to_string(),
                            crate::profile::PATH_CHARS,
                        ),
                        source: Box::new(e),
                    })?;
                let repo = layout_repository(dir);
                let name = format!("{repo}:{}", tag.as_deref().unwrap_or("latest"));
                (repo, name, image)
            }
            Source::Registry(r) => {
                let image = pulled.get(r).cloned().ok_or_else(|| {
                    InputError::bad(&source, &what, format!("{r} was not pulled (no plan)"))
                })?;
                let repo = r.name();
                // As containers/image names a pull: the tag, else the digest as
                // written (an index's, for a multi-arch image).
                let name = match (&r.tag, &r.digest) {
                    (Some(t), _) => format!("{repo}:{t}"),
                    (None, Some(d)) => format!("{repo}@{d}"),
                    (None, None) => format!("{repo}@{}", image.manifest_digest),
                };
                (repo, name, image)
            }
            Source::Path(_) => {
                return Err(InputError::bad(
                    &source,
                    &what,
                    "a path is not an image: write oci:DIR:TAG or a registry reference",
                ))
            }
        };
        if source.value == pause.value {
            seed.pause = Some(name.clone());
        }
        seed.images.push(SeedImage {
            pinned: PinnedImage {
                reference_with_digest: format!("{repo}@{}", image.manifest_digest),
                index: image.index_digest.as_ref().map(|d| format!("{repo}@{d}")),
                name,
            },
            image,
            source,
        });
    }
    Ok(seed)
}

/// `localhost/kios/<DIR's name>`: the repository of a local layout's image.
pub fn layout_repository(dir: &std::path::Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean = sanitize_repo(&name);
    format!(
        "localhost/kios/{}",
        if clean.is_empty() { "image" } else { &clean }
    )
}

/// A repository path component: lower-case letters, digits and separators.
fn sanitize_repo(s: &str) -> String {
    let out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

impl Seed {
    /// Pins each image as the profile wrote it (`Source`'s `Display`).
    pub fn resolver(&self) -> MapResolver {
        MapResolver(
            self.images
                .iter()
                .map(|s| (s.source.value.to_string(), s.pinned.clone()))
                .collect(),
        )
    }

    /// The images to write, one per manifest: two references to the same image
    /// (a tag and a digest, two tags) give one image with both names.
    pub fn store_images(&self) -> Vec<StoreImage> {
        let mut out: Vec<StoreImage> = Vec::new();
        for s in &self.images {
            match out
                .iter_mut()
                .find(|x| x.image.manifest_digest == s.image.manifest_digest)
            {
                Some(x) => {
                    if !x.names.contains(&s.pinned.name) {
                        x.names.push(s.pinned.name.clone());
                    }
                }
                None => out.push(StoreImage {
                    image: s.image.clone(),
                    names: vec![s.pinned.name.clone()],
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_repositories_are_valid_names() {
        use std::path::Path;
        assert_eq!(
            layout_repository(Path::new("/x/Busy Box")),
            "localhost/kios/busy-box"
        );
        assert_eq!(
            layout_repository(Path::new("/x/pause")),
            "localhost/kios/pause"
        );
        assert_eq!(
            layout_repository(Path::new("/x/__")),
            "localhost/kios/image"
        );
        for dir in ["/x/Busy Box", "/x/pause", "/x/__", "/x/a.b_c-d"] {
            let r = layout_repository(Path::new(dir));
            ImageRef::parse(&format!("{r}:1")).unwrap_or_else(|e| panic!("{dir}: {e}"));
        }
    }
}
