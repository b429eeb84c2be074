//! The build: a loaded profile -> a disk image file, one stage after another.
//!
//! [`prepare`] resolves everything the profile names (kernel, modules, stub, system
//! tree, kios-init) and checks it; `validate` stops there. [`build`] then assembles
//! the initramfs, the unified kernel image, the ESP and the disk, writing the image
//! to a temporary file beside the output and renaming it only when it is complete.
//!
//! Errors are split in two ([`BuildError::is_input_error`]): what the user must fix
//! in the profile or its inputs (exit code 2), and what failed while building
//! (exit code 1).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::boot::{self, UkiParts};
use crate::disk::{self, DiskSpec};
use crate::initramfs::{self, modules::KernelModules};
use crate::inputs::{self, KernelFiles, WorkDir};
use crate::profile::owned;
use crate::profile::{self, Arch, Compression, Profile};
use crate::tree::{Content, Entry, Kind, Tree, TreePath};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    #[error(transparent)]
    Input(Box<inputs::InputError>),
    #[error(transparent)]
    Plan(Box<crate::plan::PlanError>),
    #[error("{origin}: kernel module `{name}` is not in kernel {version}{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    ModuleNotFound {
        origin: String,
        name: String,
        version: String,
        suggestion: Option<String>,
    },
    #[error("kernel modules of {version}")]
    Modules {
        version: String,
        #[source]
        source: initramfs::modules::ModuleError,
    },
    #[error("{0}")]
    Init(String),
    #[error("{origin}: the UEFI stub cannot be used")]
    Stub {
        origin: String,
        #[source]
        source: boot::BootError,
    },
    #[error("cannot write the initramfs")]
    Initramfs(#[source] initramfs::InitramfsError),
    #[error("cannot write the unified kernel image")]
    Uki(#[source] boot::BootError),
    #[error(transparent)]
    Pods(#[from] crate::pods::PodsError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("cannot write the image store")]
    Store(#[source] crate::store::cstorage::StoreError),
    #[error("cannot write the image store's filesystem")]
    StoreFilesystem(#[source] crate::store::erofs::ErofsError),
    #[error("cannot convert the disk")]
    Format(#[source] crate::format::FormatError),
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<inputs::InputError> for BuildError {
    fn from(e: inputs::InputError) -> Self {
        BuildError::Input(Box::new(e))
    }
}

impl From<crate::plan::PlanError> for BuildError {
    fn from(e: crate::plan::PlanError) -> Self {
        BuildError::Plan(Box::new(e))
    }
}

impl BuildError {
    /// True for errors the user fixes in the profile or its inputs (exit code 2).
    pub fn is_input_error(&self) -> bool {
        match self {
            BuildError::Plan(p) => return p.is_input_error(),
            BuildError::Store(s) => return s.is_input_error(),
            BuildError::Output(o) => return o.is_input_error(),
            _ => {}
        }
        matches!(
            self,
            BuildError::Profile(_)
                | BuildError::Input(_)
                | BuildError::ModuleNotFound { .. }
                | BuildError::Init(_)
                | BuildError::Stub { .. }
                | BuildError::Pods(_)
        )
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

/// Options that do not come from the profile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The kios-init binary; found by [`find_init`] when `None`.
    pub init: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: every timestamp written. 0 when unset, so that a build is
    /// reproducible unless asked otherwise.
    pub epoch: u64,
    /// Print a line per stage on stderr.
    pub verbose: bool,
    /// The output format, overriding the profile's `disk.format`.
    pub format: Option<crate::format::Format>,
    /// Registry pulls, the cache and the lock.
    pub pull: crate::plan::PullOptions,
}

/// Everything the profile names, found and checked.
pub struct Prepared {
    pub profile: Profile,
    pub work: WorkDir,
    /// The private folder `work` writes in, removed when this is dropped.
    _work_folder: crate::work::WorkFolder,
    pub kernel: KernelFiles,
    pub modules: initramfs::modules::ModuleSet,
    pub stub: Vec<u8>,
    pub system: Option<Tree>,
    pub init: PathBuf,
    /// Static pods, kubelet configuration and extra /etc files.
    pub pods: crate::pods::Generated,
    /// The images the static pods run, to pre-seed into the store partition.
    pub store_images: Vec<crate::store::cstorage::StoreImage>,
}

struct Steps {
    verbose: bool,
    start: Instant,
}

impl Steps {
    fn say(&self, msg: &str) {
        if self.verbose {
            eprintln!("[{:>6.2}s] {msg}", self.start.elapsed().as_secs_f64());
        }
    }
}

/// Loads the profile and resolves and checks every input it names.
pub fn prepare(profile_path: &Path, opts: &Options) -> Result<Prepared, BuildError> {
    prepare_loaded(profile::load(profile_path)?, opts)
}

/// [`prepare`] for a profile already loaded.
fn prepare_loaded(profile: Profile, opts: &Options) -> Result<Prepared, BuildError> {
    let steps = Steps {
        verbose: opts.verbose,
        start: Instant::now(),
    };
    steps.say(&format!("loaded {}", profile.chain.join(" <- ")));
    let folder = crate::work::WorkFolder::new().map_err(io_err(
        "cannot make a work folder in",
        &std::env::temp_dir(),
    ))?;
    let mut work = WorkDir::new(folder.path().to_path_buf());
    let plan = crate::plan::resolve(
        &profile,
        &opts.pull,
        &crate::oci::progress::Progress::new(opts.verbose),
    )?;
    if let Some(lock) = &plan.lock_path {
        steps.say(&format!(
            "{} registry images pinned in {}",
            plan.images.len(),
            lock.display()
        ));
    }
    work.pulled = plan.images;
    let kernel = inputs::kernel(&profile.kernel.source, profile.arch, &work)?;
    steps.say(&format!(
        "kernel {} ({})",
        kernel.version,
        kernel.vmlinuz.display()
    ));
    if opts.verbose {
        for line in kernel_warnings(&kernel, profile.arch) {
            eprintln!("warning: {line}");
        }
    }
    let km = KernelModules::open(&kernel.root).map_err(|source| BuildError::Modules {
        version: kernel.version.clone(),
        source,
    })?;
    let names: Vec<String> = profile
        .kernel
        .modules
        .iter()
        .map(|m| m.value.clone())
        .collect();
    let modules = km.resolve(&names).map_err(|e| match e {
        initramfs::modules::ModuleError::NotFound {
            name,
            version,
            suggestion,
        } => {
            let origin = profile
                .kernel
                .modules
                .iter()
                .find(|m| m.value.replace('-', "_") == name.replace('-', "_"))
                .map(|m| m.origin.to_string())
                .unwrap_or_else(|| profile.file.display().to_string());
            BuildError::ModuleNotFound {
                origin,
                name,
                version,
                suggestion,
            }
        }
        source => BuildError::Modules {
            version: kernel.version.clone(),
            source,
        },
    })?;
    steps.say(&format!(
        "{} modules to load ({} asked for, {} built in)",
        modules.load_order.len(),
        names.len(),
        modules.builtin.len()
    ));
    let stub = inputs::stub(&profile.stub, profile.arch, &work)?;
    boot::check_stub(&stub, profile.arch).map_err(|source| BuildError::Stub {
        origin: profile.stub.source.origin.to_string(),
        source,
    })?;
    let system = match &profile.system {
        Some(s) => Some(inputs::system(s, profile.arch, &work, opts.epoch)?),
        None => None,
    };
    if let (Some(t), Some(s)) = (&system, &profile.system) {
        // Said by `validate` too; `initramfs_tree` checks it where the trees meet.
        crate::pods::owned::check_system_tree(t, &s.origin)?;
    }
    let init = match &opts.init {
        Some(p) => p.clone(),
        None => find_init(profile.arch)?,
    };
    check_static_elf(&init, profile.arch)?;
    let seed = crate::seed::collect(&profile.node, profile.arch, &work.pulled)?;
    let resolver = seed.resolver();
    let pods = crate::pods::generate(&profile.node, &resolver)?;
    steps.say(&format!(
        "{} static pods ({} base daemons without an image not run)",
        pods.pods.len(),
        pods.skipped.len()
    ));
    if opts.verbose {
        for w in &pods.warnings {
            eprintln!("{w}");
        }
    }
    let store_images = seed.store_images();
    Ok(Prepared {
        profile,
        work,
        _work_folder: folder,
        kernel,
        modules,
        stub,
        system,
        init,
        pods,
        store_images,
    })
}

/// The kernel checked against `kernel-config/required.txt`: from its `boot/config`
/// when the input has one, else from the image's embedded configuration. A kernel
/// whose configuration cannot be read gets one line saying so; the build goes on.
fn kernel_warnings(kernel: &KernelFiles, arch: crate::profile::Arch) -> Vec<String> {
    let source = kernel.config.as_ref().unwrap_or(&kernel.vmlinuz);
    match crate::kernel::load_config(source) {
        Ok(config) => {
            let report = crate::kernel::check(&config, arch);
            if report.is_ok() {
                Vec::new()
            } else {
                let mut v = vec![format!(
                    "kernel {} lacks options kiOS needs (kernel-config/required.txt):",
                    kernel.version
                )];
                v.extend(report.to_string().lines().map(|l| format!("  {l}")));
                v
            }
        }
        Err(e) => vec![format!(
            "kernel {}: its configuration was not checked: {e}",
            kernel.version
        )],
    }
}

/// What kios-init is looked for and checked as, per architecture.
struct InitTarget {
    /// The environment variable that names it, used as given.
    env: &'static str,
    /// The Rust target triple `scripts/build-init` builds it for.
    triple: &'static str,
    /// ELF `e_machine` (System V gABI; EM_X86_64 = 62, EM_AARCH64 = 183).
    e_machine: u16,
    /// What an error calls the architecture.
    name: &'static str,
}

fn init_target(arch: Arch) -> InitTarget {
    match arch {
        Arch::Amd64 => InitTarget {
            env: "KIOS_INIT",
            triple: "x86_64-unknown-linux-gnu",
            e_machine: 62,
            name: "x86_64",
        },
        Arch::Arm64 => InitTarget {
            env: "KIOS_INIT_ARM64",
            triple: "aarch64-unknown-linux-gnu",
            e_machine: 183,
            name: "aarch64",
        },
    }
}

/// Where kios-init for `arch` is looked for: `$KIOS_INIT` (amd64) or
/// `$KIOS_INIT_ARM64` (arm64), taken as given; else the first static binary for
/// `arch` among `$KIOS_INIT` (arm64 only: one variable may name an aarch64 build),
/// `kios-init` beside this executable, and the static build's place in a cargo
/// target folder (`<target>/<triple>/{release,debug}/kios-init`).
pub fn find_init(arch: Arch) -> Result<PathBuf, BuildError> {
    let t = init_target(arch);
    if let Some(p) = std::env::var_os(t.env) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("KIOS_INIT") {
        candidates.push(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io_err("cannot find this program", Path::new("")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    candidates.push(dir.join("kios-init"));
    if let Some(target) = dir.parent() {
        for profile in ["release", "debug"] {
            candidates.push(target.join(t.triple).join(profile).join("kios-init"));
        }
    }
    // A `cargo build` of the workspace leaves a dynamically linked kios-init beside
    // kios-build: skip it for the static one further down the list.
    candidates
        .into_iter()
        .find(|p| p.is_file() && check_static_elf(p, arch).is_ok())
        .ok_or_else(|| {
            BuildError::Init(format!(
                "no static {} kios-init was found beside kios-build or in target/{}/release\n  hint: build it with `scripts/build-init {}`, or point --init or {} at it",
                t.name,
                t.triple,
                arch.as_str(),
                t.env
            ))
        })
}

/// The largest kios-init accepted; the static release build is a few MiB.
const MAX_INIT: u64 = 64 << 20;
/// The largest ELF program header table read (real ones are a few hundred bytes).
const MAX_PROGRAM_HEADERS: u64 = 64 << 10;

/// kios-init runs before any library exists: it must be a static ELF for `arch`.
/// Only the ELF header and the program header table are read, from a regular file
/// (`--init /dev/zero` or a FIFO is refused, not read until memory runs out).
fn check_static_elf(path: &Path, arch: Arch) -> Result<(), BuildError> {
    use std::os::unix::fs::FileExt;
    let t = init_target(arch);
    let cannot_read = |e: io::Error| {
        BuildError::Init(format!(
            "cannot read kios-init at {}: {e}\n  hint: give the kios-init binary (a regular file) with --init or {}",
            path.display(),
            t.env
        ))
    };
    let file = crate::untrusted::open_regular(path).map_err(cannot_read)?;
    let size = file.metadata().map_err(cannot_read)?.len();
    let bad = |why: &str| {
        BuildError::Init(format!(
            "kios-init at {}: {why}\n  hint: build it with `scripts/build-init {}`",
            path.display(),
            arch.as_str()
        ))
    };
    if size > MAX_INIT {
        return Err(bad(&format!(
            "it is {size} bytes, larger than the {} MiB a kios-init can be",
            MAX_INIT >> 20
        )));
    }
    let mut header = [0u8; 64];
    if size < 64 {
        return Err(bad("not a 64-bit ELF executable"));
    }
    file.read_exact_at(&mut header, 0).map_err(cannot_read)?;
    if &header[0..4] != b"\x7fELF" || header[4] != 2 {
        return Err(bad("not a 64-bit ELF executable"));
    }
    let u16at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&header[32..40]);
    // ELF header (gABI, "ELF Header"): e_machine is the u16 at offset 18, e_phoff the
    // u64 at 32, e_phentsize and e_phnum the u16s at 54 and 56.
    let machine = u16at(&header, 18);
    if machine != t.e_machine {
        let found = match machine {
            62 => "x86_64".to_string(),
            183 => "aarch64".to_string(),
            other => format!("ELF machine {other}"),
        };
        return Err(bad(&format!(
            "it is built for {found}; arch {} needs a static {} binary",
            arch.as_str(),
            t.name
        )));
    }
    let phoff = u64::from_le_bytes(b8);
    let (phentsize, phnum) = (u16at(&header, 54) as u64, u16at(&header, 56) as u64);
    let table = phentsize * phnum;
    if phentsize < 4 || table > MAX_PROGRAM_HEADERS || phoff.saturating_add(table) > size {
        return Err(bad("truncated or damaged program headers"));
    }
    let mut headers = vec![0u8; table as usize];
    file.read_exact_at(&mut headers, phoff)
        .map_err(cannot_read)?;
    for entry in headers.chunks_exact(phentsize as usize) {
        // PT_INTERP (3): the binary needs a dynamic loader, which the initramfs lacks.
        if u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) == 3 {
            return Err(bad("dynamically linked (it has an ELF interpreter)"));
        }
    }
    Ok(())
}

/// Where kios-init mounts the store partition (docs/boot-flow.md).
pub const STORE_MOUNT: &str = kios_contract::mount::STORE;

/// The text of `/etc/os-release` (also the UKI's `.osrel`).
pub fn os_release(profile: &Profile) -> String {
    let ver = env!("CARGO_PKG_VERSION");
    let id = hex::encode(&profile.hash[..6]);
    format!(
        "NAME=\"kiOS\"\nID=kios\nPRETTY_NAME=\"kiOS (kios-build {ver})\"\nVERSION_ID={ver}\nBUILD_ID={id}\nHOME_URL=\"https://kios.dev/\"\n"
    )
}

/// The initramfs tree: the system files, kios-init as /init, the kernel modules and
/// the generated /etc. The system tree may not carry a path kios-build writes
/// (`profile::owned`): it would be silently replaced, or, in the static pod folder,
/// put a pod on the node that no lint has seen.
pub fn initramfs_tree(p: &Prepared, epoch: u64) -> Result<(Tree, String), BuildError> {
    let mut tree = match &p.system {
        Some(t) => {
            if let Some(s) = &p.profile.system {
                crate::pods::owned::check_system_tree(t, &s.origin)?;
            }
            t.clone()
        }
        None => Tree::new(epoch),
    };
    tree.default_mtime = epoch;
    for (dir, mode) in [
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("etc/kios", 0o755),
        (owned::MANIFESTS, 0o755),
    ] {
        tree.mkdir_p(&TreePath::parse(dir)?, mode)?;
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs exists.
    for (path, major, minor, mode) in [("dev/console", 5, 1, 0o600), ("dev/null", 1, 3, 0o666)] {
        let mut e = Entry::new(Kind::CharDevice { major, minor }, mode);
        e.mtime = epoch;
        tree.insert(TreePath::parse(path)?, e)?;
    }
    let init_len = fs::metadata(&p.init)
        .map_err(io_err("cannot read kios-init", &p.init))?
        .len();
    let mut init = Entry::file(
        Content::Host {
            path: Arc::new(p.init.clone()),
            offset: 0,
            len: init_len,
        },
        0o755,
    );
    init.mtime = epoch;
    tree.insert(TreePath::parse("init")?, init)?;
    let modules_list = p
        .modules
        .add_to_tree(&mut tree)
        .map_err(|source| BuildError::Modules {
            version: p.kernel.version.clone(),
            source,
        })?;
    tree.add_file(owned::MODULES, modules_list.clone(), 0o644)?;
    tree.add_file(owned::OS_RELEASE, os_release(&p.profile), 0o644)?;
    if let Some(h) = &p.profile.hostname {
        tree.add_file(owned::HOSTNAME, format!("{}\n", h.value), 0o644)?;
    }
    crate::pods::add_to_tree(&p.pods, &mut tree)?;
    if !p.store_images.is_empty() {
        // CRI-O (and podman) read the store partition as an additional image store.
        tree.add_file(
            owned::STORAGE_CONF,
            crate::store::cstorage::storage_conf(
                STORE_MOUNT,
                "/var/lib/containers/storage",
                "/run/containers/storage",
            ),
            0o644,
        )?;
    }
    tree.clamp_mtimes(epoch);
    Ok((tree, modules_list))
}

/// The paths a build reads, which `-o` must not name ([`crate::output::check`]):
/// the profile and its bases, every local file and folder the profile names, the
/// kios-init binary, the lock and the blob cache.
pub fn input_paths(profile: &Profile, opts: &Options) -> crate::output::Inputs {
    use crate::profile::spec::{ExtraContent, SecretSource};
    use crate::profile::Source;
    let mut inputs = crate::output::Inputs::default();
    inputs.file("the profile", &profile.file);
    for base in profile.chain.iter().filter(|c| !c.starts_with("builtin:")) {
        inputs.file("a base profile", Path::new(base));
    }
    let mut source = |what: &str, s: &Source, is_file: bool| match s {
        Source::Path(p) if is_file => inputs.file(what, p),
        Source::Path(p) => inputs.folder(format!("the {what} folder"), p),
        Source::OciLayout { dir, .. } => inputs.folder(format!("the {what} OCI layout"), dir),
        Source::Registry(_) => {}
    };
    source("kernel", &profile.kernel.source.value, false);
    source("UEFI stub", &profile.stub.source.value, true);
    if let Some(s) = &profile.system {
        source("system", &s.value, false);
    }
    for i in profile.node.seed_images() {
        source("image", &i.value, false);
    }
    for pod in &profile.node.pods {
        inputs.file("a `pods:` file", &pod.value);
    }
    for f in &profile.node.files {
        if let ExtraContent::Source(p) = &f.content {
            inputs.file("a `files:` source", p);
        }
    }
    let k = &profile.node.kubelet;
    for secret in [
        &k.kubeconfig,
        &k.bootstrap_kubeconfig,
        &k.cluster_ca,
        &k.credential_provider,
    ]
    .into_iter()
    .flatten()
    {
        if let SecretSource::File(p) = &secret.value {
            inputs.file("a kubelet secret file", p);
        }
    }
    for ca in profile.registries.ca.iter().map(|c| &c.value) {
        inputs.file("a registry CA file", ca);
    }
    for ca in &opts.pull.registry.ca_files {
        inputs.file("a registry CA file", ca);
    }
    let init = opts.init.clone().or_else(|| find_init(profile.arch).ok());
    if let Some(init) = init {
        inputs.file("kios-init", &init);
    }
    inputs.file("the lock file", &crate::plan::lock_path(profile));
    inputs.folder("the blob cache", &opts.pull.registry.cache_dir);
    inputs
}

/// What a build made.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub output: PathBuf,
    pub format: String,
    pub size: u64,
    pub kernel_version: String,
    pub cmdline: String,
    pub modules: usize,
    pub initramfs_bytes: u64,
    pub uki_bytes: u64,
    pub seconds: f64,
}

/// Builds the image described by `profile_path` into `output`.
pub fn build(profile_path: &Path, output: &Path, opts: &Options) -> Result<Report, BuildError> {
    let start = Instant::now();
    let steps = Steps {
        verbose: opts.verbose,
        start,
    };
    disk::check_host_tools()?;
    let profile = profile::load(profile_path)?;
    // The output is checked before the pulls and the assembly, which take minutes,
    // and again before it is put in place.
    let inputs = input_paths(&profile, opts);
    crate::output::check(output, &inputs)?;
    let p = prepare_loaded(profile, opts)?;
    let epoch = opts.epoch;

    // The pre-seeded image store first: the containers/storage layout as an EROFS
    // image. It reads every layer of every image, so a hostile or broken one fails
    // the build before anything else is written.
    let store_path = p.work.path.join("store.erofs");
    let store = if p.store_images.is_empty() {
        None
    } else {
        let spool = p.work.path.join("store-spool");
        fs::create_dir_all(&spool).map_err(io_err("cannot make", &spool))?;
        let tree = crate::store::cstorage::build_store(
            &p.store_images,
            &spool,
            // The store cannot hold more than the disk: a layer that decompresses
            // past it fails while it is spooled.
            &crate::store::cstorage::StoreOptions::new(epoch)
                .with_budget(p.profile.disk_size.value.bytes()),
        )
        .map_err(BuildError::Store)?;
        let mut f = File::create(&store_path).map_err(io_err("cannot write", &store_path))?;
        let vol = disk::gpt::Guid::derive(&p.profile.hash, "store:erofs-uuid").disk_bytes();
        let size = crate::store::erofs::write_erofs(
            &tree,
            &mut f,
            &crate::store::erofs::ErofsOptions {
                uuid: vol,
                volume_name: disk::STORE_NAME.into(),
                mtime: epoch,
            },
        )
        .map_err(BuildError::StoreFilesystem)?;
        steps.say(&format!(
            "image store: {} images, {} bytes (EROFS)",
            p.store_images.len(),
            size
        ));
        Some(store_path.as_path())
    };

    // initramfs
    let (tree, _) = initramfs_tree(&p, epoch)?;
    let initrd_path = p.work.path.join("initrd.img");
    let compression = match p.profile.compression {
        Compression::Gzip => initramfs::Compression::Gzip,
        Compression::Zstd => initramfs::Compression::Zstd,
    };
    {
        let f = File::create(&initrd_path).map_err(io_err("cannot write", &initrd_path))?;
        let w = initramfs::write_initramfs(&tree, compression, BufWriter::new(f))
            .map_err(BuildError::Initramfs)?;
        let f = w.into_inner().map_err(|e| BuildError::Io {
            what: "cannot write",
            path: initrd_path.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io_err("cannot write", &initrd_path))?;
    }
    let initrd_len = fs::metadata(&initrd_path)
        .map_err(io_err("cannot read", &initrd_path))?
        .len();
    steps.say(&format!(
        "initramfs: {} entries, {} bytes ({compression:?})",
        tree.len(),
        initrd_len
    ));

    // unified kernel image
    let cmdline = p
        .profile
        .kernel
        .cmdline
        .iter()
        .map(|c| c.value.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let vmlinuz_len = fs::metadata(&p.kernel.vmlinuz)
        .map_err(io_err("cannot read", &p.kernel.vmlinuz))?
        .len();
    let parts = UkiParts {
        osrel: os_release(&p.profile).into_bytes(),
        cmdline: cmdline.clone().into_bytes(),
        uname: p.kernel.version.clone().into_bytes(),
        linux: Content::Host {
            path: Arc::new(p.kernel.vmlinuz.clone()),
            offset: 0,
            len: vmlinuz_len,
        },
        initrd: Content::Host {
            path: Arc::new(initrd_path.clone()),
            offset: 0,
            len: initrd_len,
        },
    };
    let uki_path = p.work.path.join("uki.efi");
    {
        let f = File::create(&uki_path).map_err(io_err("cannot write", &uki_path))?;
        let mut w = BufWriter::new(f);
        boot::write_uki(&p.stub, &parts, &mut w).map_err(BuildError::Uki)?;
        w.flush().map_err(io_err("cannot write", &uki_path))?;
    }
    let uki_len = fs::metadata(&uki_path)
        .map_err(io_err("cannot read", &uki_path))?
        .len();
    steps.say(&format!(
        "unified kernel image: {uki_len} bytes, cmdline `{cmdline}`"
    ));

    // ESP tree
    let mut esp = Tree::new(epoch);
    let mut uki = Entry::file(
        Content::Host {
            path: Arc::new(uki_path.clone()),
            offset: 0,
            len: uki_len,
        },
        0o644,
    );
    uki.mtime = epoch;
    esp.insert(TreePath::parse(boot::esp_path(p.profile.arch))?, uki)?;

    // disk, into a temporary file beside the output, renamed when complete
    let mut raw = crate::output::Partial::create(output)?;
    let spec = DiskSpec {
        size: p.profile.disk_size.value.bytes(),
        seed: p.profile.hash,
        esp: &esp,
        mtime: epoch,
        store,
        work: &p.work.path,
    };
    let raw_path = raw.path().to_path_buf();
    disk::write_disk(&spec, raw.file_mut(), &raw_path)?;
    let format = opts.format.unwrap_or(p.profile.format);
    let finished = if format == crate::format::Format::Raw {
        raw
    } else {
        // Converted from the raw disk into a second partial file; the raw one is
        // removed when `raw` drops.
        let mut converted = crate::output::Partial::create(output)?;
        let copts = crate::format::ConvertOptions {
            qcow2_compress: false,
            mtime: epoch,
            seed: p.profile.hash,
        };
        let report = crate::format::convert(&raw_path, format, converted.file_mut(), &copts)
            .map_err(BuildError::Format)?;
        for note in &report.notes {
            steps.say(&format!("note: {note}"));
        }
        steps.say(&format!("converted to {format}"));
        converted
    };
    crate::output::check(output, &inputs)?;
    finished.persist()?;
    steps.say(&format!(
        "wrote {} ({})",
        output.display(),
        p.profile.disk_size.value
    ));
    Ok(Report {
        output: output.to_path_buf(),
        format: format.to_string(),
        size: spec.size,
        kernel_version: p.kernel.version.clone(),
        cmdline,
        modules: p.modules.load_order.len(),
        initramfs_bytes: initrd_len,
        uki_bytes: uki_len,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit little-endian ELF header for `e_machine`, with one program header of
    /// type `p_type` right after it.
    fn elf(e_machine: u16, p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little-endian
        b[18..20].copy_from_slice(&e_machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        b[64..68].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    fn check(bytes: &[u8], arch: Arch) -> Result<(), String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kios-init");
        fs::write(&p, bytes).unwrap();
        check_static_elf(&p, arch).map_err(|e| e.to_string())
    }

    #[test]
    fn kios_init_must_be_static_and_built_for_the_profiles_arch() {
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        check(&elf(62, PT_LOAD), Arch::Amd64).unwrap();
        check(&elf(183, PT_LOAD), Arch::Arm64).unwrap();
        let e = check(&elf(62, PT_LOAD), Arch::Arm64).unwrap_err();
        assert!(
            e.contains("it is built for x86_64; arch arm64 needs a static aarch64 binary"),
            "{e}"
        );
        assert!(e.contains("scripts/build-init arm64"), "{e}");
        let e = check(&elf(183, PT_LOAD), Arch::Amd64).unwrap_err();
        assert!(e.contains("built for aarch64; arch amd64"), "{e}");
        let e = check(&elf(183, PT_INTERP), Arch::Arm64).unwrap_err();
        assert!(e.contains("dynamically linked"), "{e}");
    }
}
