//! Bounded fuzzing of every reader of untrusted input (issue #12): the profile
//! loader, the layer (tar) reader, the OCI index/manifest parsing, and the GPT, FAT,
//! PE, cpio and EROFS readers behind `inspect`, each on mutations of real inputs
//! (the example profiles, the pause and busybox layouts' layers and manifests, a UKI
//! made from the real systemd stub, images built by kios-build).
//!
//! Each target runs in a child process of this test binary under `prlimit --as`
//! (1 GiB): a panic is caught per input (the input is saved and the test fails with
//! its path), an allocation the limit refuses aborts the child and fails the test.
//! `KIOS_FUZZ_SECS` sets the seconds per target (default 4: the file stays well under
//! a minute on 2 cores), `KIOS_FUZZ_SEED` the first random seed (default: fixed, so a
//! CI failure reproduces). Inputs that once crashed a reader are replayed first by
//! `regressions`. The cargo-fuzz targets in `fuzz/` run the same readers for longer
//! (docs/fuzzing.md).

// Lists of byte ranges (where the headers are) often hold just one.
#![allow(clippy::single_range_in_vec_init)]

mod common;

use std::fs;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// Set in the child: the name of the target it runs.
const CHILD: &str = "KIOS_FUZZ_CHILD";
/// The child's address-space limit.
const AS_LIMIT: u64 = 1 << 30;

// --- The harness -------------------------------------------------------------

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

/// Values that sit on the edges readers get wrong.
const EDGES: [u64; 16] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x1000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Up to four overwrites of `len` bytes, mostly inside `hot` (where the headers are).
fn overwrites(rng: &mut Rng, len: usize, hot: &[Range<usize>]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let at = match hot.get(rng.below(hot.len() + 1)) {
            Some(r) if r.end > r.start => r.start + rng.below(r.end - r.start),
            _ => rng.below(len),
        };
        let bytes = match rng.below(6) {
            0 => vec![1u8 << rng.below(8)], // xored below: a bit flip
            1 => vec![rng.next() as u8],
            2 => (EDGES[rng.below(EDGES.len())] as u16)
                .to_le_bytes()
                .to_vec(),
            3 => (EDGES[rng.below(EDGES.len())] as u32)
                .to_le_bytes()
                .to_vec(),
            4 => EDGES[rng.below(EDGES.len())].to_le_bytes().to_vec(),
            _ => (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect(),
        };
        out.push((at, bytes));
    }
    out
}

/// A mutated copy of a small seed: overwrites, bit flips, cuts, insertions,
/// duplicated ranges and splices with another seed.
fn mutated(rng: &mut Rng, seeds: &[Vec<u8>], hot: &[Range<usize>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(3) {
        let len = b.len();
        match rng.below(8) {
            0..=3 if len > 0 => {
                for (at, bytes) in overwrites(rng, len, hot) {
                    for (i, x) in bytes.iter().enumerate() {
                        if let Some(slot) = b.get_mut(at + i) {
                            *slot = if bytes.len() == 1 && x.count_ones() == 1 {
                                *slot ^ x
                            } else {
                                *x
                            };
                        }
                    }
                }
            }
            4 => b.truncate(rng.below(len + 1)),
            5 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(64);
                let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, fill);
            }
            6 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(256)).min(len);
                let at = rng.below(len + 1);
                let copy = b[from..to].to_vec();
                b.splice(at..at, copy);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let at = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
        }
    }
    b
}

/// One target's run: the clock, the random source and the count.
struct Session {
    name: &'static str,
    rng: Rng,
    secs: f64,
    /// Set at the first `running()`: building seeds is not fuzzing time.
    until: Option<Instant>,
    execs: u64,
}

impl Session {
    fn new(name: &'static str) -> Session {
        let secs: f64 = std::env::var("KIOS_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4.0);
        let seed: u64 = std::env::var("KIOS_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x6b69_4f53);
        let salt = name
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        Session {
            name,
            rng: Rng((seed ^ salt) | 1),
            secs,
            until: None,
            execs: 0,
        }
    }

    fn running(&mut self) -> bool {
        let secs = self.secs;
        let until = *self
            .until
            .get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(secs));
        Instant::now() < until
    }

    /// Runs `exec` on `input`; a panic saves the input and fails the run.
    fn exec(&mut self, input: &[u8], exec: impl FnOnce(&[u8])) {
        self.execs += 1;
        if catch_unwind(AssertUnwindSafe(|| exec(input))).is_err() {
            let dir = std::env::temp_dir().join("kios-fuzz-crashes");
            let _ = fs::create_dir_all(&dir);
            let hex = hex::encode(&Sha256::digest(input)[..8]);
            let path = dir.join(format!("{}-{hex}", self.name));
            let _ = fs::write(&path, input);
            panic!(
                "fuzz target {} panicked on an input, saved as {} (execution {})",
                self.name,
                path.display(),
                self.execs
            );
        }
    }

    /// Mutates seeds in memory and runs `exec` until the time is up.
    fn run(&mut self, seeds: &[Vec<u8>], hot: &[Range<usize>], mut exec: impl FnMut(&[u8])) {
        for s in seeds {
            self.exec(s, &mut exec);
        }
        while self.running() {
            let input = mutated(&mut self.rng, seeds, hot);
            self.exec(&input, &mut exec);
        }
    }

    /// For a seed too big to copy per input: overwrites applied in place, `exec`
    /// run, the bytes put back.
    fn run_in_place(&mut self, seed: &mut [u8], hot: &[Range<usize>], mut exec: impl FnMut(&[u8])) {
        self.exec(seed, &mut exec);
        while self.running() {
            let changes = overwrites(&mut self.rng, seed.len(), hot);
            let saved: Vec<(usize, Vec<u8>)> = changes
                .iter()
                .map(|(at, b)| {
                    let end = (at + b.len()).min(seed.len());
                    (*at, seed[*at..end].to_vec())
                })
                .collect();
            for (at, b) in &changes {
                let end = (at + b.len()).min(seed.len());
                seed[*at..end].copy_from_slice(&b[..end - at]);
            }
            // Sometimes also cut the input short (without copying it).
            let cut = if self.rng.one_in(8) {
                self.rng.below(seed.len() + 1)
            } else {
                seed.len()
            };
            let s: &[u8] = seed;
            self.exec(&s[..cut], &mut exec);
            for (at, old) in saved.into_iter().rev() {
                seed[at..at + old.len()].copy_from_slice(&old);
            }
        }
    }
}

/// Runs target `name` in a child of this test binary under `prlimit --as`, or,
/// in that child, runs `body`.
fn fuzz(name: &'static str, body: fn(&mut Session)) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        let mut s = Session::new(name);
        body(&mut s);
        println!("fuzz {name}: {} executions, 0 crashes", s.execs);
        return;
    }
    let out = Command::new("prlimit")
        .arg(format!("--as={AS_LIMIT}"))
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .output()
        .expect("prlimit (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    use std::os::unix::process::ExitStatusExt;
    let why = match (out.status.signal(), out.status.code()) {
        (Some(sig), _) => format!(
            "killed by signal {sig}: an abort is an allocation refused past {AS_LIMIT} bytes"
        ),
        (None, Some(127)) => "prlimit could not start the child".to_string(),
        _ => format!("{}", out.status),
    };
    assert!(
        out.status.success(),
        "fuzz target {name} failed ({why}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marker = format!("fuzz {name}: ");
    let line = stdout
        .lines()
        .find_map(|l| l.find(&marker).map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("the child did not run {name}:\n{stdout}"));
    eprintln!("{line}");
    let execs: u64 = line[marker.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(execs > 10, "{line}: too few executions to mean anything");
}

// --- Seeds -------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of a directory, read.
fn files_in(dir: &Path, ext: &str) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    names.sort();
    names.iter().map(|p| fs::read(p).unwrap()).collect()
}

/// The blobs of an OCI layout, by what they are.
struct LayoutSeeds {
    json: Vec<Vec<u8>>,
    tars: Vec<Vec<u8>>,
}

fn layout_seeds() -> &'static LayoutSeeds {
    static S: OnceLock<LayoutSeeds> = OnceLock::new();
    S.get_or_init(|| {
        let inputs = common::inputs();
        let mut json = Vec::new();
        let mut tars = Vec::new();
        for layout in ["pause", "busybox"] {
            let dir = inputs.join(layout);
            json.push(fs::read(dir.join("index.json")).unwrap());
            for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
                let bytes = fs::read(e.unwrap().path()).unwrap();
                if bytes.first() == Some(&b'{') {
                    json.push(bytes);
                } else {
                    let mut tar = Vec::new();
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_end(&mut tar)
                        .unwrap();
                    tars.push(tar);
                }
            }
        }
        LayoutSeeds { json, tars }
    })
}

/// A small tar with what layers carry: long names (pax and GNU), links, a
/// whiteout, an opaque directory, a device.
fn crafted_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, ty: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc/", tar::EntryType::Directory, None, b"");
    add("etc/hostname", tar::EntryType::Regular, None, b"node\n");
    add("etc/.wh.passwd", tar::EntryType::Regular, None, b"");
    add("var/.wh..wh..opq", tar::EntryType::Regular, None, b"");
    add("bin/sh", tar::EntryType::Symlink, Some("busybox"), b"");
    add("bin/ash", tar::EntryType::Link, Some("bin/sh"), b"");
    add(&"d/".repeat(80), tar::EntryType::Directory, None, b"");
    add("dev/null", tar::EntryType::Char, None, b"");
    b.into_inner().unwrap()
}

/// A UKI from the real systemd stub with small sections (a stand-in kernel keeps
/// it small enough to copy per input).
fn small_uki(initrd: Vec<u8>) -> Vec<u8> {
    let stub = fs::read(common::inputs().join("stub/linuxx64.efi.stub")).unwrap();
    let parts = kios_build::boot::UkiParts {
        osrel: b"ID=kios\nPRETTY_NAME=\"kiOS\"\n".to_vec(),
        cmdline: b"console=ttyS0 kios.test=1".to_vec(),
        uname: b"6.1.0-kios".to_vec(),
        linux: kios_build::tree::Content::inline(vec![0x90u8; 4096]),
        initrd: kios_build::tree::Content::inline(initrd),
    };
    let mut out = Vec::new();
    kios_build::boot::write_uki(&stub, &parts, &mut out).unwrap();
    out
}

fn small_tree() -> kios_build::tree::Tree {
    use kios_build::tree::{Entry, Kind, Tree, TreePath};
    let mut t = Tree::new(1_700_000_000);
    t.add_file("etc/hostname", "node\n", 0o644).unwrap();
    t.add_file("etc/kios/modules", "virtio_blk\nvirtio_net\n", 0o644)
        .unwrap();
    t.add_file("etc/kubernetes/manifests/p.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}\n", 0o600)
        .unwrap();
    t.add_file("init", vec![0x7f; 3000], 0o755).unwrap();
    t.insert(
        TreePath::parse("sbin/init").unwrap(),
        Entry::symlink("/init"),
    )
    .unwrap();
    let link = Entry::new(Kind::Hardlink(TreePath::parse("init").unwrap()), 0);
    t.insert(TreePath::parse("bin/init").unwrap(), link)
        .unwrap();
    t.insert(
        TreePath::parse("dev/console").unwrap(),
        Entry::new(Kind::CharDevice { major: 5, minor: 1 }, 0o600),
    )
    .unwrap();
    t
}

fn initramfs_seeds() -> Vec<Vec<u8>> {
    use kios_build::initramfs::{write_initramfs, Compression};
    [Compression::None, Compression::Gzip, Compression::Zstd]
        .into_iter()
        .map(|c| write_initramfs(&small_tree(), c, Vec::new()).unwrap())
        .collect()
}

/// A real image built by kios-build with a store partition (the pause image
/// pre-seeded), and where its headers are: GPT, the ESP's boot sector, FATs and root
/// directory, the UKI's headers, the initramfs' start, the store's superblock and
/// metadata.
struct BuiltImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The image up to the end of the last partition inspect reads (the data
    /// partition's ext4 is never read by inspect, so not kept).
    head: Vec<u8>,
    len: u64,
    hot: Vec<Range<usize>>,
}

fn built_image() -> BuiltImage {
    let dir = tempfile::tempdir().unwrap();
    let profile = common::write_profile(
        dir.path(),
        "node.yaml",
        &common::profile_text(&format!("{}disk:\n  size: 160MiB\n", common::pause_yaml())),
    );
    let path = dir.path().join("node.img");
    common::build(&profile, &path, 1_700_000_000);
    let mut f = fs::File::open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    let table = kios_build::disk::gpt::Table::read(&mut f).unwrap();
    let mut hot = vec![0..34 * 512];
    let mut keep = 0;
    for p in table.partitions.iter().filter(|p| p.name != "KIOS_DATA") {
        let (o, n) = (p.offset() as usize, p.size() as usize);
        keep = keep.max(o + n);
        hot.push(o..o + 64 * 1024);
    }
    let mut head = vec![0u8; keep];
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut head).unwrap();
    // The UKI's headers and its initramfs' first bytes, wherever the ESP put them.
    let esp = table
        .partitions
        .iter()
        .find(|p| p.name == "KIOS_ESP")
        .unwrap();
    let mut reader =
        kios_build::disk::esp::EspReader::open(Cursor::new(&head[..]), esp.offset()).unwrap();
    let mut uki = reader.open_file("EFI/BOOT/BOOTX64.EFI").unwrap();
    let mut first = vec![0u8; 4096];
    uki.read_exact(&mut first).unwrap();
    let info = kios_build::boot::read_uki(&mut uki).unwrap();
    drop(reader);
    let esp_at = esp.offset() as usize;
    let esp_range = esp_at..esp_at + esp.size() as usize;
    let at = head[esp_range]
        .chunks(512)
        .position(|c| c == &first[..512])
        .expect("the UKI's first sector is in the ESP");
    let uki_at = esp_at + at * 512;
    hot.push(uki_at..uki_at + 4096);
    if let Some(s) = info.sections.iter().find(|s| s.name == ".initrd") {
        let i = uki_at + s.file_offset as usize;
        hot.push(i..i + 4096);
    }
    BuiltImage {
        _dir: dir,
        path,
        head,
        len,
        hot,
    }
}

// --- Targets -----------------------------------------------------------------

#[test]
fn profile_loader() {
    fuzz("profile_loader", |s| {
        let mut seeds = files_in(&repo().join("examples"), "yaml");
        seeds.extend(files_in(&repo().join("profiles"), "yaml"));
        // Hostile YAML: an alias bomb, deep nesting, a huge number, odd tags.
        let mut bomb = String::from("apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        bomb.push_str("hostname: *a11\n");
        seeds.push(bomb.into_bytes());
        seeds.push(
            format!("hostname: {}x{}\n", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        );
        seeds.push(b"kind: NodeProfile\ndisk: {size: 99999999999999999999999999TiB}\nhostname: !!binary aGk=\n<<: {a: 1}\n".to_vec());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.yaml");
        // Profiles name their base by path relative to themselves: keep the real
        // base profiles beside the mutated one.
        let _ = fs::create_dir_all(dir.path().join("profiles"));
        s.run(&seeds, &[], |input| {
            fs::write(&path, input).unwrap();
            if let Err(e) = kios_build::profile::load(&path) {
                let _ = e.to_string();
            }
        });
    });
}

#[test]
fn layer_tar_reader() {
    fuzz("layer_tar_reader", |s| {
        let mut seeds = layout_seeds().tars.clone();
        seeds.push(crafted_tar());
        // The headers of the first members are where the structure is.
        let hot = [0..4096];
        let dir = tempfile::tempdir().unwrap();
        let blob_path = dir.path().join("blob");
        let spool = dir.path().join("spool");
        fs::create_dir_all(&spool).unwrap();
        s.run(&seeds, &hot, |input| {
            fs::write(&blob_path, input).unwrap();
            let digest: kios_build::oci::Digest =
                format!("sha256:{}", hex::encode(Sha256::digest(input)))
                    .parse()
                    .unwrap();
            let blob = kios_build::oci::LayerBlob {
                digest: digest.clone(),
                diff_id: digest,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                compression: kios_build::oci::Compression::None,
                size: input.len() as u64,
                path: blob_path.clone(),
            };
            let limits = kios_build::oci::Limits::default();
            if let Err(e) = kios_build::oci::read_layer_tree("fuzz", 0, &blob, &spool, &limits) {
                let _ = e.to_string();
            }
        });
    });
}

/// Mutates JSON as JSON: a random node replaced by an edge value.
fn json_mutated(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    use serde_json::Value;
    let Ok(mut v) = serde_json::from_slice::<Value>(&seeds[rng.below(seeds.len())]) else {
        return mutated(rng, seeds, &[]);
    };
    fn nodes(v: &mut Value, out: &mut Vec<*mut Value>) {
        out.push(v as *mut Value);
        match v {
            Value::Array(a) => a.iter_mut().for_each(|x| nodes(x, out)),
            Value::Object(o) => o.values_mut().for_each(|x| nodes(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    nodes(&mut v, &mut all);
    let pick = all[rng.below(all.len())];
    let edge = match rng.below(9) {
        0 => Value::Null,
        1 => serde_json::json!(-1),
        2 => serde_json::json!(u64::MAX),
        3 => serde_json::json!(1e308),
        4 => Value::String("x".repeat(1 << 16)),
        5 => Value::String("sha256:".to_string() + &"0".repeat(64)),
        6 => serde_json::json!([[[[[[[[[[]]]]]]]]]]),
        7 => serde_json::json!({}),
        _ => Value::String("\u{1b}[2J../../etc/passwd".into()),
    };
    // SAFETY: `pick` points into `v`, which is alive and not otherwise borrowed
    // (`all` holds only raw pointers); only one node is written.
    unsafe { *pick = edge };
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn oci_manifest_and_index_parsers() {
    fuzz("oci_manifest_and_index_parsers", |s| {
        use oci_spec::image::{ImageIndex, ImageManifest};
        let seeds = layout_seeds().json.clone();
        let parse = |input: &[u8]| {
            if let Ok(index) = serde_json::from_slice::<ImageIndex>(input) {
                let _ = kios_build::oci::layout::select_platform("fuzz", &index, "amd64");
                let _ = kios_build::oci::layout::select_platform("fuzz", &index, "arm/v7");
            }
            let _ = serde_json::from_slice::<ImageManifest>(input);
        };
        // A copy of the pause layout whose index.json (not digest-checked) and
        // manifest (re-homed under its new digest) are mutated.
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let st = Command::new("cp")
            .arg("-a")
            .arg(common::inputs().join("pause"))
            .arg(&layout)
            .status()
            .unwrap();
        assert!(st.success());
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let open = |input: &[u8], as_manifest: bool| {
            if as_manifest {
                let hex = hex::encode(Sha256::digest(input));
                fs::write(layout.join("blobs/sha256").join(&hex), input).unwrap();
                let mut i = index.clone();
                i["manifests"][0]["digest"] = format!("sha256:{hex}").into();
                i["manifests"][0]["size"] = input.len().into();
                fs::write(layout.join("index.json"), serde_json::to_vec(&i).unwrap()).unwrap();
            } else {
                fs::write(layout.join("index.json"), input).unwrap();
            }
            if let Err(e) = kios_build::oci::open_layout(&layout, Some("kios"), "amd64") {
                let _ = e.to_string();
            }
        };
        for seed in &seeds {
            s.exec(seed, parse);
        }
        while s.running() {
            let input = if s.rng.one_in(2) {
                json_mutated(&mut s.rng, &seeds)
            } else {
                mutated(&mut s.rng, &seeds, &[])
            };
            let as_manifest = s.rng.one_in(2);
            s.exec(&input, |i| {
                parse(i);
                open(i, as_manifest);
            });
        }
    });
}

#[test]
fn cpio_initramfs_reader() {
    fuzz("cpio_initramfs_reader", |s| {
        let seeds = initramfs_seeds();
        s.run(&seeds, &[0..512], |input| {
            if let Err(e) = kios_build::initramfs::read_initramfs(input, 1 << 16) {
                let _ = e.to_string();
            }
        });
    });
}

#[test]
fn pe_uki_reader() {
    fuzz("pe_uki_reader", |s| {
        let uki = small_uki(initramfs_seeds().remove(1));
        let stub = fs::read(common::inputs().join("stub/linuxx64.efi.stub")).unwrap();
        let seeds = vec![uki, stub];
        s.run(&seeds, &[0..1024], |input| {
            match kios_build::boot::read_uki(&mut Cursor::new(input)) {
                Ok(info) => {
                    let _ = kios_build::boot::arch_of_machine(info.machine);
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
            let _ = kios_build::boot::check_stub(input, kios_build::profile::Arch::Amd64);
        });
    });
}

#[test]
fn fat_esp_reader() {
    fuzz("fat_esp_reader", |s| {
        use kios_build::disk::esp::{min_size, write_fat32, EspOptions, EspReader};
        // FAT holds directories and regular files only.
        let mut t = kios_build::tree::Tree::new(1_700_000_000);
        t.add_file("etc/hostname", "node\n", 0o644).unwrap();
        t.add_file("EFI/BOOT/BOOTX64.EFI", vec![0x4d; 100_000], 0o644)
            .unwrap();
        for i in 0..40 {
            t.add_file(
                &format!("loader/entries/a-long-file-name-{i}.conf"),
                "x",
                0o644,
            )
            .unwrap();
        }
        let size = min_size(&t).div_ceil(1 << 20) * (1 << 20);
        let mut vol = Cursor::new(vec![0u8; size as usize]);
        write_fat32(&t, &mut vol, 0, size, &EspOptions::default()).unwrap();
        let mut seed = vol.into_inner();
        // Boot sector, FSInfo and backup, the FATs' first sectors, the root
        // directory and the first data clusters.
        let hot = [0..16 * 512, 32 * 512..40 * 512];
        let reserved = u16::from_le_bytes([seed[14], seed[15]]) as usize * 512;
        let fat_size = u32::from_le_bytes(seed[36..40].try_into().unwrap()) as usize * 512;
        let data = reserved + 2 * fat_size;
        let hot = [
            hot[0].clone(),
            hot[1].clone(),
            reserved..reserved + 4096,
            reserved + fat_size..reserved + fat_size + 4096,
            data..data + 64 * 1024,
        ];
        s.run_in_place(&mut seed, &hot, |input| {
            let len = input.len() as u64;
            let Ok(mut esp) = EspReader::open_within(Cursor::new(input), 0, len) else {
                return;
            };
            let _ = esp.label();
            let Ok(files) = esp.list() else { return };
            for f in files.iter().filter(|f| !f.is_dir).take(50) {
                if let Ok(mut r) = esp.open_file(&f.path) {
                    // A stream: read a bounded part, as inspect does.
                    let _ = std::io::copy(&mut (&mut r).take(1 << 20), &mut std::io::sink());
                    let _ = r.seek(SeekFrom::End(-10));
                    let _ = r.read(&mut [0u8; 64]);
                }
            }
        });
    });
}

#[test]
fn erofs_store_reader() {
    fuzz("erofs_store_reader", |s| {
        use kios_build::store::erofs::{write_erofs, ErofsOptions, ErofsReader};
        let mut t = small_tree();
        t.add_file(
            "overlay-images/images.json",
            r#"[{"id":"abc","names":["localhost/kios/pause:kios"],"digest":"sha256:00"}]"#,
            0o600,
        )
        .unwrap();
        for i in 0..300 {
            t.add_file(
                &format!("overlay-layers/{i:064x}/diff/f"),
                vec![1u8; i],
                0o644,
            )
            .unwrap();
        }
        let mut img = Cursor::new(Vec::new());
        let opts = ErofsOptions {
            uuid: [7; 16],
            volume_name: "KIOS_STORE".into(),
            mtime: 0,
            ..Default::default()
        };
        write_erofs(&t, &mut img, &opts).unwrap();
        // The same tree with a compressible file, compressed (cluster indexes and
        // LZ4 pclusters to damage).
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("{} ", i % 97).into_bytes())
            .collect();
        t.add_file("overlay-layers/big", text, 0o644).unwrap();
        let mut zimg = Cursor::new(Vec::new());
        let zopts = ErofsOptions {
            compression: Some(kios_build::store::erofs::Compression::Lz4),
            ..opts
        };
        write_erofs(&t, &mut zimg, &zopts).unwrap();
        let seeds = vec![img.into_inner(), zimg.into_inner()];
        s.run(&seeds, &[1024..1024 + 128, 4096..16384], |input| {
            let len = input.len() as u64;
            let Ok(mut r) = ErofsReader::open(Cursor::new(input), 0, len) else {
                return;
            };
            let _ = r.read_file("overlay-images/images.json", 1 << 20);
            let _ = r.read_file("etc/kios/modules", 1 << 20);
            let _ = r.read_file(&format!("overlay-layers/{:064x}/diff/f", 299), 1 << 20);
            let _ = r.read_file("overlay-layers/big", 1 << 20);
            let _ = r.walk(1000);
        });
    });
}

#[test]
fn inspect_on_a_built_image() {
    fuzz("inspect_on_a_built_image", |s| {
        let built = built_image();
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&built.path)
            .unwrap();
        let inspect = |path: &Path| match kios_build::inspect::inspect(path) {
            Ok(i) => {
                let _ = kios_build::inspect::render_text(&i);
                let _ = kios_build::inspect::render_json(&i);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        };
        s.exec(b"the image as built", |_| inspect(&built.path));
        // Each input is patched into the image file and out again: the input saved
        // on a crash is the list of patches.
        while s.running() {
            let changes = overwrites(&mut s.rng, built.head.len(), &built.hot);
            let cut = s.rng.one_in(8).then(|| s.rng.next() % built.len);
            let mut told = String::new();
            for (at, b) in &changes {
                f.seek(SeekFrom::Start(*at as u64)).unwrap();
                f.write_all(&b[..b.len().min(built.head.len() - at)])
                    .unwrap();
                told.push_str(&format!("write {at} {}\n", hex::encode(b)));
            }
            if let Some(c) = cut {
                f.set_len(c).unwrap();
                told.push_str(&format!("truncate {c}\n"));
            }
            s.exec(told.as_bytes(), |_| inspect(&built.path));
            for (at, b) in &changes {
                let end = (at + b.len()).min(built.head.len());
                f.seek(SeekFrom::Start(*at as u64)).unwrap();
                f.write_all(&built.head[*at..end]).unwrap();
            }
            if let Some(c) = cut {
                f.set_len(built.len).unwrap();
                if (c as usize) < built.head.len() {
                    f.seek(SeekFrom::Start(c)).unwrap();
                    f.write_all(&built.head[c as usize..]).unwrap();
                }
            }
        }
    });
}

// --- Regressions ---------------------------------------------------------------

/// Inputs that once made a reader panic, replayed on every run.
#[test]
fn regressions() {
    use kios_build::disk::esp::{write_fat32, EspOptions, EspReader};
    // A directory on the way to a file whose entry points at cluster 0: open_file
    // read it unchecked, and `cluster - 2` overflowed (found reading the FAT reader
    // while writing the fat_esp_reader target).
    let mut t = kios_build::tree::Tree::new(0);
    t.add_file("EFI/BOOT/BOOTX64.EFI", "uki", 0o644).unwrap();
    let size = kios_build::disk::esp::min_size(&t).div_ceil(1 << 20) * (1 << 20);
    let mut vol = Cursor::new(vec![0u8; size as usize]);
    write_fat32(&t, &mut vol, 0, size, &EspOptions::default()).unwrap();
    let mut vol = vol.into_inner();
    let reserved = u16::from_le_bytes([vol[14], vol[15]]) as usize * 512;
    let fat_size = u32::from_le_bytes(vol[36..40].try_into().unwrap()) as usize * 512;
    let root = reserved + usize::from(vol[16]) * fat_size;
    let entry = (root..root + 4096)
        .step_by(32)
        .find(|&at| &vol[at..at + 11] == b"EFI        ")
        .expect("the EFI directory's entry in the root directory");
    vol[entry + 20..entry + 22].fill(0);
    vol[entry + 26..entry + 28].fill(0);
    let mut esp = EspReader::open(Cursor::new(&vol[..]), 0).unwrap();
    let err = esp
        .open_file("EFI/BOOT/BOOTX64.EFI")
        .err()
        .expect("a directory at cluster 0 is an error");
    assert!(err.to_string().contains("outside the volume"), "{err}");
}
