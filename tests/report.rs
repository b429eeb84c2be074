//! The build report (`build --report`, `build --json`; docs/report.md): real builds of
//! `examples/*.yaml` checked against docs/report.schema.json with Python's
//! `jsonschema`, every digest checked against `sha256sum` of the artifact, of each
//! partition cut out with `dd` at the offsets `sfdisk --json` reads, of the UKI on
//! the ESP (`mcopy`) and of its `.initrd` section (`objcopy`); two builds give the
//! same report but for `timing`; the system tree digest recomputed by an independent
//! implementation of its definition; registry images from the cache or fetched.

mod common;
#[path = "common/registry.rs"]
mod fixture;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{build_command, inputs, repo, require_tool, run, run_tool, text};
use serde_json::Value;

/// `sha256:` + the hex `sha256sum` prints for `path`.
fn sha256sum(path: &Path) -> String {
    let out = run_tool("sha256sum", "coreutils", &[path.to_str().unwrap()]);
    let text = String::from_utf8(out).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// Builds `profile` to `out` with `--report` (and `args`), asserting success; the
/// report file and the `--json` document, which must be the same.
fn build_with_report(profile: &Path, out: &Path, args: &[&str]) -> Value {
    let report = out.with_extension("report.json");
    let o = run(build_command(profile, out)
        .arg("--report")
        .arg(&report)
        .arg("--json")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(o.status.success(), "build failed:\n{}", text(&o));
    let written: Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    let printed: Value = serde_json::from_slice(&o.stdout).expect("--json prints JSON");
    assert_eq!(
        without_timing(&written),
        without_timing(&printed),
        "--json and --report differ"
    );
    // It reads back into the library's type unchanged (what `verify` will read).
    let back: kios_build::report::Report = serde_json::from_value(written.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), written);
    written
}

fn without_timing(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("timing");
    v
}

/// Validates `report` (a file) against docs/report.schema.json with `jsonschema`.
fn validate(report: &Path) {
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1]))\n\
        jsonschema.Draft202012Validator.check_schema(s)\n\
        jsonschema.Draft202012Validator(s).validate(json.load(open(sys.argv[2])))\n";
    let o = run(Command::new("python3")
        .args(["-c", script])
        .arg(repo().join("docs/report.schema.json"))
        .arg(report));
    assert!(
        o.status.success(),
        "{} does not follow the schema (pip install jsonschema; scripts/install-deps):\n{}",
        report.display(),
        text(&o)
    );
}

/// `(first byte, size)` of each partition of the raw disk `img`, from `sfdisk --json`.
fn sfdisk_partitions(img: &Path) -> Vec<(u64, u64)> {
    let out = run_tool("sfdisk", "fdisk", &["--json", img.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&out).unwrap();
    let table = &v["partitiontable"];
    assert_eq!(table["sectorsize"].as_u64().unwrap_or(512), 512, "{v}");
    table["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
            )
        })
        .collect()
}

/// The sha256 of `size` bytes at `offset` of `img`, cut out by `dd`.
fn dd_sha256(img: &Path, offset: u64, size: u64, dir: &Path) -> String {
    let cut = dir.join("partition.bin");
    run_tool(
        "dd",
        "coreutils",
        &[
            &format!("if={}", img.display()),
            &format!("of={}", cut.display()),
            "bs=1M",
            &format!("skip={offset}"),
            &format!("count={size}"),
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ],
    );
    assert_eq!(fs::metadata(&cut).unwrap().len(), size);
    let d = sha256sum(&cut);
    fs::remove_file(&cut).unwrap();
    d
}

/// The report's partitions equal the table `sfdisk` reads and `dd` cuts.
fn assert_partitions_match(report: &Value, raw: &Path, dir: &Path) {
    let parts = report["artifacts"]["disk"]["partitions"]
        .as_array()
        .unwrap();
    let table = sfdisk_partitions(raw);
    assert_eq!(parts.len(), table.len(), "{parts:?} vs {table:?}");
    for (p, (offset, size)) in parts.iter().zip(table) {
        assert_eq!(p["offset"].as_u64().unwrap(), offset, "{p}");
        assert_eq!(p["size"].as_u64().unwrap(), size, "{p}");
        assert_eq!(p["sha256"], dd_sha256(raw, offset, size, dir), "{p}");
    }
    assert_eq!(report["artifacts"]["disk"]["sha256"], sha256sum(raw));
    assert_eq!(
        report["artifacts"]["disk"]["size"].as_u64().unwrap(),
        fs::metadata(raw).unwrap().len()
    );
}

/// The raw disk inside an output of any format, written to `dir/raw.img`.
fn raw_disk_of(out: &Path, format: &str, disk_size: u64, dir: &Path) -> PathBuf {
    let raw = dir.join("raw.img");
    match format {
        "raw" => return out.to_path_buf(),
        // VHD fixed: the disk, then a 512-byte footer.
        "vhd" => common::extract(out, 0, disk_size, &raw),
        "gce" => {
            run_tool(
                "tar",
                "tar",
                &["-xzf", out.to_str().unwrap(), "-C", dir.to_str().unwrap()],
            );
            fs::rename(dir.join("disk.raw"), &raw).unwrap();
        }
        _ => {
            run_tool(
                "qemu-img",
                "qemu-utils",
                &[
                    "convert",
                    "-O",
                    "raw",
                    out.to_str().unwrap(),
                    raw.to_str().unwrap(),
                ],
            );
        }
    }
    raw
}

#[test]
fn example_reports_follow_the_schema_and_their_digests_are_the_artifacts() {
    inputs();
    common::init_binary_arm64();
    let dir = tempfile::tempdir().unwrap();
    let mut built = 0;
    for e in fs::read_dir(repo().join("examples")).unwrap() {
        let profile = e.unwrap().path();
        if profile.extension().map(|x| x != "yaml").unwrap_or(true) {
            continue;
        }
        let name = profile.file_stem().unwrap().to_string_lossy().into_owned();
        let out = dir.path().join(format!("{name}.out"));
        let report = build_with_report(&profile, &out, &[]);
        validate(&out.with_extension("report.json"));
        let a = &report["artifacts"];
        assert_eq!(a["output"]["sha256"], sha256sum(&out), "{name}");
        assert_eq!(
            a["output"]["size"].as_u64().unwrap(),
            fs::metadata(&out).unwrap().len(),
            "{name}"
        );
        assert_eq!(report["profile"]["sha256"], sha256sum(&profile), "{name}");
        let format = a["output"]["format"].as_str().unwrap();
        let raw = raw_disk_of(
            &out,
            format,
            a["disk"]["size"].as_u64().unwrap(),
            dir.path(),
        );
        assert_partitions_match(&report, &raw, dir.path());
        let roles: Vec<&str> = a["disk"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles.first(), Some(&"esp"), "{name}");
        assert_eq!(roles.last(), Some(&"data"), "{name}");
        for f in [&out, &raw, &out.with_extension("report.json")] {
            let _ = fs::remove_file(f);
        }
        built += 1;
    }
    assert!(
        built >= 5,
        "qemu, aws, gcp, azure and arm64 examples: {built}"
    );
}

/// The inputs' digests are those of the files, the UKI's that of the ESP's
/// `EFI/BOOT/BOOTX64.EFI`, the initramfs' that of the UKI's `.initrd`, and the
/// pods' privileges those the profile gives.
#[test]
fn input_uki_initramfs_and_pod_records_match_what_is_in_the_image() {
    let i = inputs();
    require_tool("mcopy", "mtools");
    require_tool("objcopy", "binutils");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let r = build_with_report(&repo().join("examples/qemu.yaml"), &img, &[]);
    validate(&img.with_extension("report.json"));
    let inp = &r["inputs"];
    assert_eq!(
        inp["kernel"]["image"]["sha256"],
        sha256sum(&i.join("kernel/boot/vmlinuz"))
    );
    assert_eq!(inp["kernel"]["origin"]["kind"], "path");
    assert_eq!(
        inp["stub"]["sha256"],
        sha256sum(&i.join("stub/linuxx64.efi.stub"))
    );
    assert_eq!(
        inp["kios_init"]["sha256"],
        sha256sum(&common::init_binary())
    );
    let version = inp["kernel"]["version"].as_str().unwrap();
    let modules = inp["kernel"]["modules"].as_array().unwrap();
    assert!(
        modules.iter().any(|m| m["name"] == "virtio_blk"),
        "{modules:?}"
    );
    for m in modules {
        let host = i
            .join("kernel/lib/modules")
            .join(version)
            .join(m["path"].as_str().unwrap());
        // The report names the module as in the image (.ko); the input may be compressed.
        let host = [
            host.clone(),
            host.with_extension("ko.xz"),
            host.with_extension("ko.zst"),
        ]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{m} is not in the kernel input"));
        assert_eq!(m["sha256"], sha256sum(&host), "{m}");
    }

    let (esp, _) = common::partition(&img, "KIOS_ESP");
    let uki = dir.path().join("uki.efi");
    run_tool(
        "mcopy",
        "mtools",
        &[
            "-i",
            &format!("{}@@{esp}", img.display()),
            "::EFI/BOOT/BOOTX64.EFI",
            uki.to_str().unwrap(),
        ],
    );
    assert_eq!(r["artifacts"]["uki"]["sha256"], sha256sum(&uki));
    let initrd = dir.path().join("initrd");
    run_tool(
        "objcopy",
        "binutils",
        &[
            "--dump-section",
            &format!(".initrd={}", initrd.display()),
            uki.to_str().unwrap(),
            dir.path().join("scratch.efi").to_str().unwrap(),
        ],
    );
    assert_eq!(r["artifacts"]["initramfs"]["sha256"], sha256sum(&initrd));
    assert_eq!(r["artifacts"]["initramfs"]["compression"], "zstd");

    let pods = r["pods"].as_array().unwrap();
    let dhcp = pods
        .iter()
        .find(|p| p["name"] == "dhcp")
        .expect("the dhcp pod");
    assert_eq!(
        dhcp["capabilities"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(dhcp["privileged"], false);
    assert_eq!(dhcp["host_network"], true);
    // Pinned to the image the report lists, which is what `inspect` finds in the store.
    let store: Vec<String> = common::store_images(&common::inspect(&img))
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let images = inp["images"].as_array().unwrap();
    assert!(!images.is_empty());
    for img in images {
        let d = img["manifest_digest"].as_str().unwrap();
        assert!(
            store.iter().any(|s| s == d),
            "{d} not in the store {store:?}"
        );
        assert_eq!(img["platform"], "linux/amd64");
        assert!(!img["layers"].as_array().unwrap().is_empty(), "{img}");
    }
    let dhcp_image = dhcp["images"][0].as_str().unwrap();
    assert!(
        images
            .iter()
            .any(|i| dhcp_image.ends_with(i["manifest_digest"].as_str().unwrap())),
        "{dhcp_image}"
    );
}

#[test]
fn two_builds_give_the_same_report_but_for_timing() {
    inputs();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let profile = repo().join("examples/qemu.yaml");
    let first = build_with_report(&profile, &img, &[]);
    fs::rename(&img, dir.path().join("first.img")).unwrap();
    let second = build_with_report(&profile, &img, &[]);
    assert_eq!(without_timing(&first), without_timing(&second));
    assert_eq!(
        sha256sum(&dir.path().join("first.img")),
        sha256sum(&img),
        "the image itself is reproducible"
    );
    let stages: Vec<&str> = second["timing"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    for s in [
        "load",
        "plan",
        "inputs",
        "pods",
        "store",
        "initramfs",
        "uki",
        "disk",
        "persist",
        "report",
    ] {
        assert!(stages.contains(&s), "no stage {s} in {stages:?}");
    }
    assert!(second["timing"]["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(second["timing"]["total_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(first["source_date_epoch"], 1_700_000_000);
}

/// The system tree's digest, computed here from docs/report.md's definition over the
/// folder the profile names (a local folder is taken as root-owned).
#[test]
fn the_system_tree_digest_follows_its_documented_definition() {
    let i = inputs();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let r = build_with_report(&repo().join("examples/qemu.yaml"), &img, &[]);
    let script = r#"
import hashlib, os, stat, sys
root = sys.argv[1]
paths = [""]
for d, dirs, files in os.walk(root):
    rel = os.path.relpath(d, root)
    for n in dirs + files:
        paths.append(n if rel == "." else rel + "/" + n)
h = hashlib.sha256()
for p in sorted(paths, key=lambda s: s.encode()):
    st = os.lstat(os.path.join(root, p))
    if stat.S_ISDIR(st.st_mode): kind, detail = "dir", ""
    elif stat.S_ISLNK(st.st_mode): kind, detail = "symlink", os.readlink(os.path.join(root, p))
    else: kind, detail = "file", hashlib.sha256(open(os.path.join(root, p), "rb").read()).hexdigest()
    for f in ["/" + p, kind, "%04o" % stat.S_IMODE(st.st_mode), "0", "0", detail, "0"]:
        h.update(f.encode() + b"\0")
print("sha256:" + h.hexdigest())
"#;
    let system = i.join("system");
    let out = run(Command::new("python3").args(["-c", script]).arg(&system));
    assert!(out.status.success(), "{}", text(&out));
    let expected = String::from_utf8(out.stdout).unwrap();
    let tree = &r["inputs"]["system"]["tree"];
    assert_eq!(tree["digest"], expected.trim(), "{tree}");
    assert_eq!(r["inputs"]["system"]["origin"]["kind"], "path");
}

/// The report and the SBOM are outputs like `-o`: one that names the image, a
/// folder or an input is refused before anything is built.
#[test]
fn a_report_path_that_is_the_image_a_folder_or_an_input_is_refused() {
    inputs();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let profile = repo().join("examples/qemu.yaml");
    let report = dir.path().join("r.json");
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let cases: [(Vec<String>, &str); 4] = [
        (vec!["--report".into(), arg(&img)], "the image (-o)"),
        (vec!["--report".into(), arg(dir.path())], "a folder"),
        (vec!["--sbom".into(), arg(&profile)], "the profile"),
        (
            vec![
                "--report".into(),
                arg(&report),
                "--sbom".into(),
                arg(&report),
            ],
            "the report (--report)",
        ),
    ];
    for (args, says) in cases {
        let o = run(build_command(&profile, &img).args(&args));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(says), "{args:?}: expected `{says}`:\n{t}");
        assert!(!img.exists() && !report.exists(), "{t}");
    }
}

/// A registry image: the lock is named with its digest, the image's layers listed,
/// and `timing.pulls` says the first build asked the registry and the second
/// (`--locked --offline`, the registry gone) took it from the cache, while the rest
/// of the report stays the same.
#[test]
fn registry_images_are_named_with_the_lock_and_come_from_the_registry_then_the_cache() {
    let mut reg = fixture::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let dhcp = w.join("dhcp");
    let d = fixture::image(
        &dhcp,
        "amd64",
        &[(fixture::OCI_GZIP, fixture::busybox_tar())],
    );
    fixture::tag(&dhcp, &[("1", d.clone())]);
    reg.push(&dhcp, "1", "test/dhcp", "1", &[]);
    let h = reg.host();
    let profile = common::write_profile(
        w,
        "node.yaml",
        &common::profile_text(&format!(
            "kubernetes:\n  pauseImage: oci:{}:kios\ndaemons:\n  - name: dhcp\n    image: {h}/test/dhcp:1\ndisk:\n  size: 320MiB\n",
            common::pause_layout().display()
        )),
    );
    let cache = w.join("cache");
    let args = ["--cache-dir", cache.to_str().unwrap()];
    let img = w.join("node.img");
    let first = build_with_report(&profile, &img, &args);
    validate(&img.with_extension("report.json"));
    reg.stop();
    let offline = [&args[..], &["--locked", "--offline"]].concat();
    let second = build_with_report(&profile, &img, &offline);
    assert_eq!(without_timing(&first), without_timing(&second));
    let reference = format!("{h}/test/dhcp:1");
    let pulls = |r: &Value| r["timing"]["pulls"].clone();
    assert_eq!(
        pulls(&first),
        serde_json::json!([{"reference": reference, "from": "registry"}])
    );
    assert_eq!(
        pulls(&second),
        serde_json::json!([{"reference": reference, "from": "cache"}])
    );
    assert_eq!(first["lock"]["sha256"], sha256sum(&w.join("kios.lock")));
    let image = first["inputs"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == reference)
        .expect("the registry image is listed");
    assert_eq!(image["manifest_digest"], d["digest"]);
    let layers = image["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(image["layers"][0]["media_type"], fixture::OCI_GZIP);
    assert_eq!(
        image["size"].as_u64().unwrap(),
        image["config"]["size"].as_u64().unwrap() + layers[0]["size"].as_u64().unwrap()
    );
}

/// The privilege report: a daemon the profile allows `privileged` is reported so, a
/// device given without privilege is listed, and a plain daemon has neither.
#[test]
fn pods_are_reported_with_their_privileges_devices_and_host_paths() {
    let i = inputs();
    let dir = tempfile::tempdir().unwrap();
    let busybox = format!("oci:{}:1", i.join("busybox").display());
    let profile = common::write_profile(
        dir.path(),
        "node.yaml",
        &common::profile_text(&format!(
            "{pause}daemons:\n  - name: admin\n    image: {busybox}\n    privileged: true\n  - name: tun\n    image: {busybox}\n    devices: [/dev/net/tun]\n    hostPaths: [{{path: /var/lib/kios/tun}}]\nallow: {{privileged: [admin]}}\ndisk:\n  size: 320MiB\n",
            pause = common::pause_yaml()
        )),
    );
    let img = dir.path().join("node.img");
    let r = build_with_report(&profile, &img, &[]);
    validate(&img.with_extension("report.json"));
    let pod = |name: &str| {
        r["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no pod {name} in {}", r["pods"]))
            .clone()
    };
    let (admin, tun) = (pod("admin"), pod("tun"));
    assert_eq!(admin["privileged"], true, "{admin}");
    assert_eq!(admin["from"], "daemon");
    assert_eq!(tun["privileged"], false, "{tun}");
    assert_eq!(tun["devices"], serde_json::json!(["/dev/net/tun"]), "{tun}");
    assert!(
        tun["host_paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "/var/lib/kios/tun"),
        "{tun}"
    );
    assert_eq!(admin["devices"], serde_json::json!([]), "{admin}");
}
