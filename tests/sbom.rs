//! The SBOM (`build --sbom`, src/report/sbom.rs): SPDX 2.3 JSON that `pyspdxtools`
//! (PyPI `spdx-tools`) accepts, naming every image `inspect --json` finds in the
//! store with a `pkg:oci` package URL and its layers, and the same bytes for the
//! same inputs.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{build_command, inputs, repo, require_tool, run, text};
use serde_json::Value;

/// Builds `profile` with `--sbom` and `--report`; the SBOM's bytes and the report.
fn build_sbom(profile: &Path, out: &Path, epoch: u64) -> (Vec<u8>, Value) {
    let sbom = out.with_extension("spdx.json");
    let report = out.with_extension("report.json");
    let o = run(build_command(profile, out)
        .arg("--quiet")
        .arg("--sbom")
        .arg(&sbom)
        .arg("--report")
        .arg(&report)
        .env("SOURCE_DATE_EPOCH", epoch.to_string()));
    assert!(o.status.success(), "build failed:\n{}", text(&o));
    let r = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    (fs::read(&sbom).unwrap(), r)
}

/// `pyspdxtools -i FILE` must accept it.
fn pyspdxtools(sbom: &Path) {
    require_tool(
        "pyspdxtools",
        "spdx-tools (pip install spdx-tools; scripts/install-deps)",
    );
    let o = run(Command::new("pyspdxtools").arg("-i").arg(sbom));
    let t = text(&o);
    assert!(
        o.status.success(),
        "pyspdxtools refuses {}:\n{t}",
        sbom.display()
    );
    // It reports problems on stdout and may still exit 0.
    assert!(
        !t.to_lowercase().contains("invalid") && !t.contains("ValidationMessage"),
        "pyspdxtools found problems:\n{t}"
    );
}

fn packages(doc: &Value) -> &Vec<Value> {
    doc["packages"].as_array().unwrap()
}

fn has_relationship(doc: &Value, from: &str, kind: &str, to: &str) -> bool {
    doc["relationships"].as_array().unwrap().iter().any(|r| {
        r["spdxElementId"] == from && r["relationshipType"] == kind && r["relatedSpdxElement"] == to
    })
}

#[test]
fn the_sbom_passes_pyspdxtools_and_names_every_image_inspect_lists() {
    inputs();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let (bytes, report) = build_sbom(&repo().join("examples/qemu.yaml"), &img, 0);
    let sbom = img.with_extension("spdx.json");
    pyspdxtools(&sbom);
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert!(has_relationship(
        &doc,
        "SPDXRef-DOCUMENT",
        "DESCRIBES",
        "SPDXRef-Disk"
    ));
    let store = common::store_images(&common::inspect(&img));
    assert!(!store.is_empty());
    for (name, digest) in &store {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let p = packages(&doc)
            .iter()
            .find(|p| p["checksums"][0]["checksumValue"] == hex)
            .unwrap_or_else(|| panic!("no package for {name} {digest}"));
        assert_eq!(p["primaryPackagePurpose"], "CONTAINER");
        let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        assert!(
            purl.starts_with("pkg:oci/") && purl.contains(&format!("@sha256%3A{hex}?")),
            "{purl}"
        );
        let id = p["SPDXID"].as_str().unwrap();
        assert!(
            has_relationship(&doc, "SPDXRef-Disk", "CONTAINS", id),
            "{id}"
        );
        // Its layers, as the report lists them, are packages it contains.
        let record = report["inputs"]["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["manifest_digest"] == digest.as_str())
            .unwrap();
        for l in record["layers"].as_array().unwrap() {
            let lhex = l["digest"]
                .as_str()
                .unwrap()
                .strip_prefix("sha256:")
                .unwrap();
            let lid = format!("SPDXRef-Layer-{lhex}");
            assert!(packages(&doc).iter().any(|p| p["SPDXID"] == lid.as_str()));
            assert!(has_relationship(&doc, id, "CONTAINS", &lid), "{lid}");
        }
    }
    // The boot chain, with the report's digests.
    let checksum = |id: &str| {
        packages(&doc)
            .iter()
            .find(|p| p["SPDXID"] == id)
            .map(|p| {
                format!(
                    "sha256:{}",
                    p["checksums"][0]["checksumValue"].as_str().unwrap()
                )
            })
            .unwrap_or_else(|| panic!("no {id}"))
    };
    let i = &report["inputs"];
    assert_eq!(checksum("SPDXRef-Kernel"), i["kernel"]["image"]["sha256"]);
    assert_eq!(checksum("SPDXRef-Stub"), i["stub"]["sha256"]);
    assert_eq!(checksum("SPDXRef-KiosInit"), i["kios_init"]["sha256"]);
    assert_eq!(
        checksum("SPDXRef-Disk"),
        report["artifacts"]["output"]["sha256"]
    );
    assert!(packages(&doc)
        .iter()
        .any(|p| p["SPDXID"] == "SPDXRef-System"));
    for (from, to) in [
        ("SPDXRef-Disk", "SPDXRef-UKI"),
        ("SPDXRef-UKI", "SPDXRef-Kernel"),
        ("SPDXRef-UKI", "SPDXRef-Stub"),
        ("SPDXRef-UKI", "SPDXRef-Initramfs"),
        ("SPDXRef-Initramfs", "SPDXRef-KiosInit"),
        ("SPDXRef-Initramfs", "SPDXRef-System"),
    ] {
        assert!(
            has_relationship(&doc, from, "CONTAINS", to),
            "{from} CONTAINS {to}"
        );
    }
}

#[test]
fn the_sbom_is_the_same_for_the_same_inputs_and_dated_by_source_date_epoch() {
    inputs();
    let dir = tempfile::tempdir().unwrap();
    let profile = repo().join("examples/qemu.yaml");
    let img = dir.path().join("node.img");
    let (first, _) = build_sbom(&profile, &img, 1_700_000_000);
    pyspdxtools(&img.with_extension("spdx.json"));
    let (second, report) = build_sbom(&profile, &img, 1_700_000_000);
    assert_eq!(first, second, "two builds, two SBOMs");
    let doc: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let ns = doc["documentNamespace"].as_str().unwrap();
    assert!(ns.starts_with("https://kios.dev/spdx/"), "{ns}");
    // Another epoch changes the image, so the content-derived namespace.
    let (third, _) = build_sbom(&profile, &img, 1_600_000_000);
    let other: Value = serde_json::from_slice(&third).unwrap();
    assert_eq!(other["creationInfo"]["created"], "2020-09-13T12:26:40Z");
    assert_ne!(other["documentNamespace"], doc["documentNamespace"]);
    assert_eq!(report["source_date_epoch"], 1_700_000_000);
}
