//! The store's dm-verity hash tree as kios-build writes it (`store: {verity: true}`),
//! checked by the real `veritysetup` (cryptsetup) on the partitions cut out of the
//! image with `dd`, with the root hash read from the UKI's command line: accepted as
//! built, refused after one byte of the store changes. Booting it is in
//! `tests/init_qemu.rs`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn verity_profile(dir: &Path, verity: &str) -> PathBuf {
    let i = inputs();
    write_profile(
        dir,
        "node.yaml",
        &profile_text(&format!(
            "kubernetes:\n  pauseImage: oci:{}:kios\ndaemons:\n  - name: dhcp\n    image: oci:{}:1\n{verity}disk:\n  size: 256MiB\n",
            i.join("pause").display(),
            i.join("busybox").display()
        )),
    )
}

/// Partition `name` of `img` as its own file, cut out with `dd`.
fn cut(img: &Path, name: &str, to: &Path) {
    let (offset, size) = partition(img, name);
    assert_eq!(offset % 512, 0);
    let o = run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", to.display()))
        .args(["bs=512", "status=none"])
        .arg(format!("skip={}", offset / 512))
        .arg(format!("count={}", size / 512)));
    assert!(o.status.success(), "dd: {}", text(&o));
}

/// The command line in the UKI, as `inspect --json` reads it.
fn cmdline(img: &Path) -> String {
    let o = run(kios_build().arg("inspect").arg("--json").arg(img));
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["boot"]["cmdline"]
        .as_str()
        .unwrap_or_else(|| panic!("no boot.cmdline in {v}"))
        .to_owned()
}

fn arg<'a>(cmdline: &'a str, key: &str) -> &'a str {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in `{cmdline}`"))
}

fn veritysetup(args: &[&Path], root: &str) -> std::process::Output {
    require_tool("veritysetup", "cryptsetup-bin");
    run(Command::new("veritysetup")
        .arg("verify")
        .args(args)
        .arg(root))
}

#[test]
fn veritysetup_verifies_the_store_with_the_root_hash_of_the_command_line_and_not_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let profile = verity_profile(dir.path(), "store:\n  verity: true\n");
    let img = dir.path().join("node.img");
    build(&profile, &img, 1_700_000_000);
    let line = cmdline(&img);
    let root = arg(&line, "kios.store.verity").to_owned();
    let blocks: u64 = arg(&line, "kios.store.verity.blocks").parse().unwrap();
    assert_eq!(root.len(), 64, "{line}");

    let (store, hash) = (dir.path().join("store"), dir.path().join("hash"));
    cut(&img, "KIOS_STORE", &store);
    cut(&img, "KIOS_STORE_VERITY", &hash);
    let o = veritysetup(&[&store, &hash], &root);
    assert!(o.status.success(), "veritysetup verify: {}", text(&o));

    // The superblock says what the command line says.
    let dump = run(Command::new("veritysetup").arg("dump").arg(&hash));
    assert!(dump.status.success(), "{}", text(&dump));
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    for want in [
        format!("Data blocks:     \t{blocks}"),
        "Hash algorithm:  \tsha256".into(),
        "Data block size: \t4096".into(),
        "Hash type:       \t1".into(),
    ] {
        assert!(dump.contains(&want), "{want:?} not in:\n{dump}");
    }
    assert!(
        blocks * 4096 <= fs::metadata(&store).unwrap().len(),
        "{blocks} blocks fit the partition"
    );

    // One byte of the store changed, deep inside: refused.
    let mut bytes = fs::read(&store).unwrap();
    let at = (blocks as usize * 4096) / 2 + 17;
    bytes[at] ^= 0x01;
    fs::write(&store, &bytes).unwrap();
    let o = veritysetup(&[&store, &hash], &root);
    assert!(
        !o.status.success(),
        "a changed store verified: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("corrupted") || text(&o).contains("Verification failed"),
        "{}",
        text(&o)
    );

    // Another root hash: refused too.
    bytes[at] ^= 0x01;
    fs::write(&store, &bytes).unwrap();
    let other = format!(
        "{}{}",
        &root[..63],
        if root.ends_with('0') { "1" } else { "0" }
    );
    assert!(!veritysetup(&[&store, &hash], &other).status.success());
}

/// The hash partition is entry 4 (between the store and the data partition on the
/// disk), so the data partition stays number 3, which the base profiles' resize
/// daemon names; the same inputs give the same bytes; without `store.verity` there
/// is neither the partition nor the arguments.
#[test]
fn the_data_partition_keeps_its_number_builds_are_reproducible_and_verity_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let profile = verity_profile(dir.path(), "store:\n  verity: true\n");
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    build(&profile, &a, 1_700_000_000);
    build(&profile, &b, 1_700_000_000);
    assert_eq!(sha256_file(&a), sha256_file(&b));

    let o = run(Command::new("sgdisk").arg("-p").arg(&a));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    let number = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name}:\n{table}"))
            .to_owned()
    };
    assert_eq!(number("KIOS_DATA"), "3", "{table}");
    assert_eq!(number("KIOS_STORE_VERITY"), "4", "{table}");
    let (store_at, store_len) = partition(&a, "KIOS_STORE");
    let (hash_at, _) = partition(&a, "KIOS_STORE_VERITY");
    let (data_at, _) = partition(&a, "KIOS_DATA");
    assert!(store_at + store_len <= hash_at && hash_at < data_at);
    let o = run(Command::new("sgdisk").arg("-v").arg(&a));
    assert!(text(&o).contains("No problems found"), "{}", text(&o));

    let o = run(kios_build().arg("inspect").arg("--json").arg(&a));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let roles: Vec<&str> = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["role"].as_str())
        .collect();
    assert_eq!(roles, ["esp", "store", "data", "store-verity"], "{v}");

    let plain = verity_profile(dir.path(), "");
    let c = dir.path().join("c.img");
    build(&plain, &c, 1_700_000_000);
    assert!(!cmdline(&c).contains("kios.store.verity"));
    let o = run(Command::new("sgdisk").arg("-p").arg(&c));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("KIOS_STORE_VERITY"));
}
