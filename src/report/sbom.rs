//! The SBOM: a build [`Report`] -> an SPDX 2.3 JSON document (`build --sbom`).
//!
//! Written with serde from the field names of the SPDX 2.3 specification (clause 6,
//! "Document creation information"; 7, "Package information"; 11, "Relationships
//! between SPDX elements") and its JSON schema: no SPDX library is needed for a
//! document of packages and relationships, and `pyspdxtools` checks the result in
//! `tests/sbom.rs`.
//!
//! The document describes the disk image, which contains the UKI (the kernel, the
//! UEFI stub and the initramfs: kios-init, the system tree and the kernel modules)
//! and the pre-seeded container images (each with a `pkg:oci` package URL, purl-spec
//! "oci" type) and their layers. It is deterministic: `created` is
//! `SOURCE_DATE_EPOCH`, and the namespace is derived from the report's reproducible
//! part ([`Report::content_digest`]), so the same inputs give the same bytes.
//!
//! It does not know licences or suppliers: those fields say `NOASSERTION`.

use serde::Serialize;

use super::{ImageRecord, Origin, Report};
use crate::oci::Digest;

const NOASSERTION: &str = "NOASSERTION";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    primary_package_purpose: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

impl Package {
    fn new(id: &str, name: &str, purpose: &'static str, sha256: Option<&Digest>) -> Package {
        Package {
            spdx_id: format!("SPDXRef-{id}"),
            name: name.to_string(),
            version_info: None,
            download_location: NOASSERTION,
            files_analyzed: false,
            checksums: sha256
                .map(|d| Checksum {
                    algorithm: "SHA256",
                    checksum_value: d.hex().to_string(),
                })
                .into_iter()
                .collect(),
            primary_package_purpose: purpose,
            external_refs: Vec::new(),
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION,
            copyright_text: NOASSERTION,
            comment: None,
        }
    }

    fn purl(mut self, purl: Option<String>) -> Package {
        self.external_refs.extend(purl.map(|p| ExternalRef {
            reference_category: "PACKAGE-MANAGER",
            reference_type: "purl",
            reference_locator: p,
        }));
        self
    }
}

/// `repository` and `tag` of a store name (`host/repo:tag`, `host/repo@sha256:...`).
fn split_name(name: &str) -> (&str, Option<&str>) {
    if let Some((repo, _)) = name.split_once('@') {
        return (repo, None);
    }
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// The purl of an image (purl-spec, "oci"): the repository's last component as the
/// name, the manifest digest as the version (`:` percent-encoded), the repository,
/// architecture and tag as qualifiers, sorted by key.
pub fn oci_purl(repository: &str, tag: Option<&str>, digest: &Digest, arch: &str) -> String {
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let mut s = format!(
        "pkg:oci/{}@sha256%3A{}?arch={arch}&repository_url={}",
        name.to_ascii_lowercase(),
        digest.hex(),
        repository.to_ascii_lowercase()
    );
    if let Some(t) = tag {
        s.push_str(&format!("&tag={}", percent(t)));
    }
    s
}

/// Percent-encodes what is not unreserved (RFC 3986, 2.3).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The purl of an input that came from an image.
fn origin_purl(o: &Origin, arch: &str) -> Option<String> {
    let digest = o.manifest_digest.as_ref()?;
    match o.kind.as_str() {
        "registry" => {
            let (repo, tag) = split_name(&o.source);
            Some(oci_purl(repo, tag, digest, arch))
        }
        "oci-layout" => {
            // oci:DIR[:TAG]: named as the store names a layout's image.
            // Read as the profile reads it (one reading of oci:DIR[:TAG]).
            let (dir, tag) = crate::profile::split_oci(o.source.strip_prefix("oci:")?);
            let repo = crate::seed::layout_repository(std::path::Path::new(dir));
            Some(oci_purl(&repo, tag.as_deref(), digest, arch))
        }
        _ => None,
    }
}

/// The SPDX 2.3 JSON document of `report`.
pub fn document(report: &Report) -> String {
    let image_name = report
        .artifacts
        .output
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut parts = Parts::default();
    parts.relationships.push(Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: "SPDXRef-Disk".into(),
    });
    boot_chain(&mut parts, report, &image_name);
    images(&mut parts, report);
    let doc = Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("kiOS image {image_name}"),
        document_namespace: format!("https://kios.dev/spdx/{}", report.content_digest().hex()),
        creation_info: CreationInfo {
            created: crate::store::cstorage::records::go_time(report.source_date_epoch),
            creators: vec![format!("Tool: kios-build-{}", report.kios_build)],
        },
        packages: parts.packages,
        relationships: parts.relationships,
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// The packages and relationships, as they are added.
#[derive(Default)]
struct Parts {
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

impl Parts {
    /// Adds `package`, which the package `SPDXRef-{within}` contains.
    fn add(&mut self, within: &str, package: Package) {
        self.contains(within, &package.spdx_id.clone());
        self.packages.push(package);
    }

    fn contains(&mut self, within: &str, id: &str) {
        self.relationships.push(Relationship {
            spdx_element_id: format!("SPDXRef-{within}"),
            relationship_type: "CONTAINS",
            related_spdx_element: id.to_string(),
        });
    }
}

/// The disk, the UKI and what it holds: kernel, stub, initramfs (kios-init, the
/// system tree, the modules).
fn boot_chain(parts: &mut Parts, report: &Report, image_name: &str) {
    let arch = report.architecture.as_str();
    let (a, i) = (&report.artifacts, &report.inputs);
    let mut disk = Package::new(
        "Disk",
        image_name,
        "OPERATING-SYSTEM",
        Some(&a.output.sha256),
    );
    disk.comment = Some(format!(
        "kiOS disk image, format {}, {} bytes, built by kios-build {} from {}",
        a.output.format,
        a.output.size,
        report.kios_build,
        report.profile.path.display()
    ));
    parts.packages.push(disk);
    let uki = Package::new(
        "UKI",
        "unified-kernel-image",
        "APPLICATION",
        Some(&a.uki.sha256),
    );
    parts.add("Disk", uki);
    let mut kernel = Package::new(
        "Kernel",
        "linux",
        "OPERATING-SYSTEM",
        Some(&i.kernel.image.sha256),
    )
    .purl(origin_purl(&i.kernel.origin, arch));
    kernel.version_info = Some(i.kernel.version.clone());
    parts.add("UKI", kernel);
    let stub = Package::new("Stub", "uefi-stub", "APPLICATION", Some(&i.stub.sha256))
        .purl(origin_purl(&i.stub.origin, arch));
    parts.add("UKI", stub);
    let initramfs = Package::new(
        "Initramfs",
        "initramfs",
        "ARCHIVE",
        Some(&a.initramfs.sha256),
    );
    parts.add("UKI", initramfs);
    let mut init = Package::new(
        "KiosInit",
        "kios-init",
        "APPLICATION",
        Some(&i.kios_init.sha256),
    );
    init.comment = Some("PID 1 of the node".into());
    parts.add("Initramfs", init);
    if let Some(s) = &i.system {
        let mut system =
            Package::new("System", "system-tree", "OTHER", None).purl(origin_purl(&s.origin, arch));
        system.comment = Some(format!(
            "tree digest {} ({} entries, {} files, {} bytes; docs/report.md)",
            s.tree.digest, s.tree.entries, s.tree.files, s.tree.bytes
        ));
        parts.add("Initramfs", system);
    }
    for (n, m) in i.kernel.modules.iter().enumerate() {
        let mut p = Package::new(
            &format!("Module-{}", n + 1),
            &m.name,
            "LIBRARY",
            Some(&m.sha256),
        );
        p.version_info = Some(i.kernel.version.clone());
        p.comment = Some(format!(
            "kernel module lib/modules/{}/{}",
            i.kernel.version, m.path
        ));
        parts.add("Initramfs", p);
    }
}

/// The pre-seeded images, once per manifest, and their layers, once per blob.
fn images(parts: &mut Parts, report: &Report) {
    let mut seen: Vec<&Digest> = Vec::new();
    for img in &report.inputs.images {
        if seen.contains(&&img.manifest_digest) {
            continue;
        }
        seen.push(&img.manifest_digest);
        let id = format!("Image-{}", img.manifest_digest.hex());
        parts.add("Disk", image_package(&id, img, &report.architecture));
        for l in &img.layers {
            let lid = format!("Layer-{}", l.digest.hex());
            if seen.contains(&&l.digest) {
                parts.contains(&id, &format!("SPDXRef-{lid}"));
                continue;
            }
            seen.push(&l.digest);
            let mut p = Package::new(
                &lid,
                &format!("layer {}", l.digest),
                "ARCHIVE",
                Some(&l.digest),
            );
            p.comment = Some(format!(
                "{}, {} bytes, diff_id {}",
                l.media_type, l.size, l.diff_id
            ));
            parts.add(&id, p);
        }
    }
}

fn image_package(id: &str, img: &ImageRecord, arch: &str) -> Package {
    let (repo, tag) = split_name(&img.name);
    let mut p = Package::new(id, repo, "CONTAINER", Some(&img.manifest_digest))
        .purl(Some(oci_purl(repo, tag, &img.manifest_digest, arch)));
    p.version_info = Some(img.manifest_digest.to_string());
    p.comment = Some(format!(
        "pre-seeded as {} ({}), platform {}, config {}",
        img.name, img.reference, img.platform, img.config.sha256
    ));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("localhost/kios/busybox:1"),
            ("localhost/kios/busybox", Some("1"))
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", None)
        );
        assert_eq!(
            split_name("127.0.0.1:5000/a/b:2"),
            ("127.0.0.1:5000/a/b", Some("2"))
        );
        let d = Digest::of_bytes(b"x");
        assert_eq!(
            split_name(&format!("docker.io/library/busybox@{d}")),
            ("docker.io/library/busybox", None)
        );
    }

    #[test]
    fn an_oci_purl_follows_the_purl_spec() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(
            oci_purl("docker.io/library/Debian", Some("1.0+x"), &d, "amd64"),
            format!(
                "pkg:oci/debian@sha256%3A{}?arch=amd64&repository_url=docker.io/library/debian&tag=1.0%2Bx",
                d.hex()
            )
        );
    }
}
