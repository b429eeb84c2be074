//! The build: a node profile -> a disk image file, as a list of stages. Each stage is
//! a function of the module that owns it, taking values and returning values; this
//! module only calls them in order and keeps what one hands the next:
//!
//! | stage | function | gives |
//! |---|---|---|
//! | load | `profile::load` | the merged, checked [`Profile`] |
//! | plan, pull | `plan::resolve` | registry images pinned in `kios.lock`, in the cache |
//! | inputs | `inputs::{kernel, stub, system, kios_init}`, `initramfs::modules` | kernel files, modules, stub bytes, system tree, kios-init |
//! | seed | `seed::collect` | the images to pre-seed, with names and digests |
//! | pods | `pods::generate` | static pods, kubelet configuration, extra `/etc` files |
//! | store | `store::write_partition` | the store partition's EROFS image |
//! | verity | `store::verity::write_hash_tree` | its dm-verity hash tree and root hash (when `store.verity`) |
//! | initramfs | `initramfs::contents::{tree, write_file}` | the compressed cpio |
//! | UKI | `boot::write_uki_file`, `sign::Signer::sign_uki` | the unified kernel image, signed when asked |
//! | ESP | `boot::esp_tree` | the ESP's files |
//! | disk | `disk::write_disk` | the raw GPT disk, in a partial file beside the output |
//! | format | `format::convert` | the provider's format, in a second partial file |
//! | persist | `output::{check, Partial::persist}` | the image at `-o` |
//! | report | `report::{hash_disk, gather}`, `report::sbom` | the [`Report`]; `--report`, `--sbom` files |
//!
//! [`prepare`] runs the stages up to pods (`validate` stops there); [`build`] runs them
//! all. Errors are split in two ([`BuildError::is_input_error`]): what the user must
//! fix in the profile or its inputs (exit code 2), and what failed while building
//! (exit code 1).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::boot::{self, UkiParts};
use crate::disk::{self, DiskSpec};
use crate::initramfs::{self, contents::Contents, modules::KernelModules};
use crate::inputs::{self, KernelFiles, WorkDir};
use crate::output::Partial;
use crate::profile::{self, Profile};
use crate::progress::Progress;
use crate::reuse::Kind;
use crate::tree::{Content, Tree};

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
    #[error("{origin}: the system tree fails its check (--strict):\n{report}")]
    SystemCheck { origin: String, report: String },
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
    Sign(#[from] crate::sign::SignError),
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
    #[error("cannot make the build report")]
    Report(#[from] crate::report::ReportError),
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

impl From<crate::store::PartitionError> for BuildError {
    fn from(e: crate::store::PartitionError) -> Self {
        use crate::store::PartitionError as P;
        match e {
            P::Store(e) => BuildError::Store(e),
            P::Filesystem(e) => BuildError::StoreFilesystem(e),
            P::Io { path, source } => BuildError::Io {
                what: "cannot write",
                path,
                source,
            },
        }
    }
}

impl From<initramfs::contents::ContentsError> for BuildError {
    fn from(e: initramfs::contents::ContentsError) -> Self {
        use initramfs::contents::ContentsError as C;
        match e {
            C::Tree(e) => BuildError::Tree(e),
            C::Modules { version, source } => BuildError::Modules { version, source },
            C::Pods(e) => BuildError::Pods(e),
            C::Init { path, source } => BuildError::Io {
                what: "cannot read kios-init",
                path,
                source,
            },
        }
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
            BuildError::Sign(s) => return s.is_input_error(),
            _ => {}
        }
        matches!(
            self,
            BuildError::Profile(_)
                | BuildError::Input(_)
                | BuildError::ModuleNotFound { .. }
                | BuildError::Stub { .. }
                | BuildError::SystemCheck { .. }
                | BuildError::Pods(_)
        )
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

/// Options that do not come from the profile.
#[derive(Clone, Default)]
pub struct Options {
    /// The kios-init binary; found by [`inputs::find_init`] when `None`.
    pub init: Option<PathBuf>,
    /// SOURCE_DATE_EPOCH: every timestamp written. 0 when unset, so that a build is
    /// reproducible unless asked otherwise.
    pub epoch: u64,
    /// How the run is reported (made by the binary; quiet by default).
    pub progress: Progress,
    /// The output format, overriding the profile's `disk.format`.
    pub format: Option<crate::format::Format>,
    /// Registry pulls, the cache and the lock.
    pub pull: crate::plan::PullOptions,
    /// The system tree's check findings are errors (exit 2), not warnings.
    pub strict: bool,
    /// Where to write the build report (`--report`), and the SPDX SBOM (`--sbom`).
    pub report: Option<PathBuf>,
    pub sbom: Option<PathBuf>,
    /// Gather the report even when no file is asked for (`build --json`).
    pub record: bool,
    /// Secure Boot signing of the UKI (`--signing-key`, `--signing-cert`, `--signer`).
    pub signing: crate::sign::Request,
    /// Take the store partition, initramfs and UKI an earlier build kept in the
    /// cache's `artifacts/` folder when their inputs are the same, and keep this
    /// build's ones there (`crate::reuse`; `build --no-reuse` turns it off).
    pub reuse: bool,
}

impl Options {
    /// Whether the store gets a dm-verity hash tree: `store.verity` when the profile
    /// says, else when the UKI is signed (a signed UKI over an unverified store
    /// would leave the images outside the boot chain).
    pub fn store_verity(&self, profile: &Profile) -> bool {
        match &profile.store_verity {
            Some(v) => v.value,
            None => self.signing.key.is_some(),
        }
    }
}

/// Everything the profile names, found and checked: what [`prepare`] gives.
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
    /// The pre-seeded images as the profile names them (for the report).
    pub(crate) seed: crate::seed::Seed,
    /// `kios.lock`, when the profile names a registry image.
    pub lock: Option<PathBuf>,
    /// The registry images this run asked the registry for (the others came from
    /// the cache alone).
    pub fetched: Vec<crate::oci::reference::ImageRef>,
}

/// Loads the profile and resolves and checks every input it names.
pub fn prepare(profile_path: &Path, opts: &Options) -> Result<Prepared, BuildError> {
    prepare_loaded(profile::load(profile_path)?, opts, &mut Stopwatch::start())
}

/// [`prepare`] for a profile already loaded: the stages plan to pods.
fn prepare_loaded(
    profile: Profile,
    opts: &Options,
    watch: &mut Stopwatch,
) -> Result<Prepared, BuildError> {
    let progress = &opts.progress;
    progress.step(&format!("loaded {}", profile.chain.join(" <- ")));
    let folder = crate::work::WorkFolder::new().map_err(io_err(
        "cannot make a work folder in",
        &std::env::temp_dir(),
    ))?;
    let mut work = WorkDir::new(folder.path().to_path_buf());

    let plan = crate::plan::resolve(&profile, &opts.pull, progress)?;
    if let Some(lock) = &plan.lock_path {
        progress.step(&format!(
            "{} registry images pinned in {}",
            plan.images.len(),
            lock.display()
        ));
    }
    work.pulled = plan.images;
    watch.lap("plan");

    let kernel = inputs::kernel(&profile.kernel.source, profile.arch, &work)?;
    progress.step(&format!(
        "kernel {} ({})",
        kernel.version,
        kernel.vmlinuz.display()
    ));
    if progress.is_shown() {
        let config = kernel.config.as_deref();
        for line in crate::kernel::warnings(config, &kernel.vmlinuz, &kernel.version, profile.arch)
        {
            progress.say(&format!("warning: {line}"));
        }
    }
    let modules = resolve_modules(&profile, &kernel, opts.store_verity(&profile))?;
    progress.step(&format!(
        "{} modules to load ({} asked for, {} built in)",
        modules.load_order.len(),
        profile.kernel.modules.len(),
        modules.builtin.len()
    ));
    let stub = inputs::stub(&profile.stub, profile.arch, &work)?;
    boot::check_stub(&stub, profile.arch).map_err(|source| BuildError::Stub {
        origin: profile.stub.source.origin.to_string(),
        source,
    })?;
    let system = match &profile.system {
        Some(s) => {
            let tree = inputs::system(s, profile.arch, &work, opts.epoch)?;
            // Said by `validate` too; the initramfs stage checks it where the trees meet.
            crate::pods::owned::check_system_tree(&tree, &s.origin)?;
            check_system(&tree, &s.origin, profile.arch, opts)?;
            Some(tree)
        }
        None => None,
    };
    let init = inputs::kios_init(opts.init.as_deref(), profile.arch)?;
    watch.lap("inputs");

    let seed = crate::seed::collect(&profile.node, profile.arch, &work.pulled)?;
    let pods = crate::pods::generate(&profile.node, &seed.resolver())?;
    progress.step(&format!(
        "{} static pods ({} base daemons without an image not run)",
        pods.pods.len(),
        pods.skipped.len()
    ));
    for w in &pods.warnings {
        progress.say(&w.to_string());
    }
    watch.lap("pods");
    Ok(Prepared {
        store_images: seed.store_images(),
        seed,
        lock: plan.lock_path,
        fetched: plan.fetched,
        profile,
        work,
        _work_folder: folder,
        kernel,
        modules,
        stub,
        system,
        init,
        pods,
    })
}

/// The system tree against what a node needs (`system::check`): its findings are
/// warnings, or with `--strict` an error before anything is written.
fn check_system(
    tree: &Tree,
    origin: &profile::Origin,
    arch: profile::Arch,
    opts: &Options,
) -> Result<(), BuildError> {
    let report = crate::system::check(tree, arch);
    if report.findings.is_empty() {
        return Ok(());
    }
    if opts.strict && report.errors() > 0 {
        return Err(BuildError::SystemCheck {
            origin: origin.to_string(),
            report: report.to_string(),
        });
    }
    opts.progress.say(&format!(
        "warning: the system tree ({origin}) lacks what a node needs (kios-build system check; --strict makes this an error):"
    ));
    for f in &report.findings {
        opts.progress.say(&format!("  {f}"));
    }
    Ok(())
}

/// The profile's `kernel.modules` and what they depend on, in load order; a module
/// the kernel lacks is named at the profile line that asks for it.
fn resolve_modules(
    profile: &Profile,
    kernel: &KernelFiles,
    verity: bool,
) -> Result<initramfs::modules::ModuleSet, BuildError> {
    let modules_error = |source| BuildError::Modules {
        version: kernel.version.clone(),
        source,
    };
    let km = KernelModules::open(&kernel.root).map_err(modules_error)?;
    let asked = &profile.kernel.modules;
    let mut names: Vec<String> = asked.iter().map(|m| m.value.clone()).collect();
    // A verified store needs the device-mapper target before the store is mounted.
    if verity && !names.iter().any(|n| n == "dm_verity") {
        names.push("dm_verity".into());
    }
    km.resolve(&names).map_err(|e| match e {
        initramfs::modules::ModuleError::NotFound {
            name,
            version,
            suggestion,
        } => {
            let origin = asked
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
        source => modules_error(source),
    })
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
    let init = opts
        .init
        .clone()
        .or_else(|| inputs::find_init(profile.arch).ok());
    if let Some(init) = init {
        inputs.file("kios-init", &init);
    }
    inputs.file("the lock file", &crate::plan::lock_path(profile));
    if let Some(crate::sign::KeySource::File(key)) = &opts.signing.key {
        inputs.file("the signing key", key);
    }
    let profile_cert = profile.secure_boot.as_ref().map(|s| &s.certificate.value);
    if let Some(cert) = opts.signing.certificate.as_ref().or(profile_cert) {
        inputs.file("the signing certificate", cert);
    }
    inputs.folder("the blob cache", &opts.pull.registry.cache_dir);
    inputs
}

pub use crate::report::Report;
use crate::report::Stopwatch;

/// What a build made: the image, and its report when one was asked for.
pub struct Finished {
    pub output: PathBuf,
    pub disk_size: u64,
    pub kernel_version: String,
    pub seconds: f64,
    /// `Some` when `opts` asked for a report, an SBOM or `record`: hashing the disk
    /// and every input costs about as much as the rest of a small build.
    pub report: Option<Report>,
}

/// Builds the image described by `profile_path` into `output`, and the report and
/// the SBOM where `opts` asks.
pub fn build(profile_path: &Path, output: &Path, opts: &Options) -> Result<Finished, BuildError> {
    let mut watch = Stopwatch::start();
    disk::check_host_tools()?;
    let profile = profile::load(profile_path)?;
    watch.lap("load");
    // The outputs are checked before the pulls and the assembly, which take minutes,
    // and again before they are put in place.
    let inputs = input_paths(&profile, opts);
    crate::output::check(output, &inputs)?;
    crate::report::files::check(
        input_paths(&profile, opts),
        output,
        opts.report.as_deref(),
        opts.sbom.as_deref(),
    )?;
    // The key and certificate are checked before the pulls and the assembly.
    let profile_cert = profile.secure_boot.as_ref();
    let signer = crate::sign::Signer::from_request(
        &opts.signing,
        profile_cert.map(|s| s.certificate.value.as_path()),
    )?;
    for w in signer.iter().flat_map(|s| &s.warnings) {
        opts.progress.say(&format!("warning: {w}"));
    }
    let p = prepare_loaded(profile, opts, &mut watch)?;
    let os_release = initramfs::contents::os_release(&p.profile.hash);
    // The initramfs is compressed while the store is written (it only needs to
    // know there is one); its lap is then part of the store's.
    let store = store_and_initramfs(&p, &os_release, opts)?;
    watch.lap("store");
    let verity = match &store {
        Some(store) if opts.store_verity(&p.profile) => Some(verity_stage(&p, store, opts)?),
        _ => None,
    };
    watch.lap("verity");
    watch.lap("initramfs");
    let mut cmdline = p.profile.cmdline();
    if let Some(v) = &verity {
        cmdline = format!("{cmdline} {}", v.cmdline())
            .trim_start()
            .to_string();
    }
    let uki_len = uki_stage(&p, os_release, &cmdline, signer.as_ref(), opts)?;
    watch.lap("uki");
    let esp = boot::esp_tree(&p.work.uki(), uki_len, p.profile.arch, opts.epoch)?;
    watch.lap("esp");
    let verity_path = verity.as_ref().map(|_| p.work.store_verity());
    let (raw, table) = disk_stage(
        &p,
        &esp,
        store.as_ref().map(|s| s.path.as_path()),
        verity_path.as_deref(),
        output,
        opts,
    )?;
    watch.lap("disk");
    let record = opts.record || opts.report.is_some() || opts.sbom.is_some();
    let disk = match record {
        true => Some(
            crate::report::hash_disk(raw.path(), &table)
                .map_err(io_err("cannot hash the disk", raw.path()))?,
        ),
        false => None,
    };
    watch.lap("hash disk");
    let format = opts.format.unwrap_or(p.profile.format);
    let finished = format_stage(raw, format, output, &p, opts)?;
    let output_digest = match &disk {
        Some(d) if format == crate::format::Format::Raw => Some((d.sha256.clone(), d.size)),
        Some(_) => Some(
            crate::report::hash_image(finished.path())
                .map_err(io_err("cannot hash the image", finished.path()))?,
        ),
        None => None,
    };
    watch.lap("format");
    crate::output::check(output, &inputs)?;
    finished.persist()?;
    watch.lap("persist");
    opts.progress.step(&format!(
        "wrote {} ({})",
        output.display(),
        p.profile.disk_size.value
    ));
    let mut finished = Finished {
        output: output.to_path_buf(),
        disk_size: p.profile.disk_size.value.bytes(),
        kernel_version: p.kernel.version.clone(),
        seconds: watch.seconds(),
        report: None,
    };
    if let (Some(disk), Some(output_digest)) = (&disk, output_digest) {
        let built = crate::report::Built {
            prepared: &p,
            epoch: opts.epoch,
            output,
            format,
            output_digest,
            table: &table,
            disk,
            cmdline: &cmdline,
            compression: initramfs::Compression::from(p.profile.compression),
        };
        let report = crate::report::gather(&built, watch)?;
        crate::report::files::write(
            &report,
            opts.report.as_deref(),
            opts.sbom.as_deref(),
            &opts.progress,
        )?;
        finished.report = Some(report);
    }
    Ok(finished)
}

/// The store partition's image: where it is, and the hash of its inputs, which its
/// ids and its hash tree's are derived from.
struct StoreImage {
    path: PathBuf,
    key: crate::reuse::Key,
}

/// [`store_stage`] and [`initramfs_stage`], on two threads unless `KIOS_BUILD_JOBS=1`
/// (the initramfs does not depend on the store). A store error is reported first,
/// as in a serial build.
fn store_and_initramfs(
    p: &Prepared,
    os_release: &str,
    opts: &Options,
) -> Result<Option<StoreImage>, BuildError> {
    let has_store = !p.store_images.is_empty();
    if crate::store::cstorage::workers() < 2 {
        let store = store_stage(p, opts)?;
        initramfs_stage(p, os_release, has_store, opts)?;
        return Ok(store);
    }
    std::thread::scope(|s| {
        let initramfs = s.spawn(|| initramfs_stage(p, os_release, has_store, opts));
        let store = store_stage(p, opts);
        let initramfs = initramfs
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let store = store?;
        initramfs?;
        Ok(store)
    })
}

/// The kept artifacts folder, when `opts` asks for reuse.
fn artifacts(opts: &Options) -> Option<crate::reuse::Artifacts> {
    opts.reuse
        .then(|| crate::reuse::Artifacts::in_cache(&opts.pull.registry.cache_dir))
}

/// Whether the kept artifact of `kind` under `key` is sound and now at `dest`; a
/// kept file that changed on disk is said and removed (the caller builds it again).
fn reused(
    arts: Option<&crate::reuse::Artifacts>,
    kind: Kind,
    key: &crate::reuse::Key,
    dest: &Path,
    opts: &Options,
) -> bool {
    let Some(arts) = arts else { return false };
    match arts.get(kind, key, dest) {
        crate::reuse::Found::Hit(_) => true,
        crate::reuse::Found::Miss => false,
        crate::reuse::Found::Corrupt(path) => {
            opts.progress.say(&format!(
                "warning: the kept artifact {} does not match its sha256; removed, building it again",
                path.display()
            ));
            false
        }
    }
}

/// Keeps `path` as the artifact of `kind` under `key`; a cache that cannot take it
/// is a warning, not a failed build.
fn keep(
    arts: Option<&crate::reuse::Artifacts>,
    kind: Kind,
    key: &crate::reuse::Key,
    path: &Path,
    opts: &Options,
) {
    if let Some(Err(e)) = arts.map(|a| a.put(kind, key, path)) {
        opts.progress.say(&format!("warning: {e}"));
    }
}

/// The store partition's image, when anything is pre-seeded: kept from an earlier
/// build with the same images, else written. Writing reads every layer of every
/// image, so a hostile or broken one fails the build before anything else is
/// written.
fn store_stage(p: &Prepared, opts: &Options) -> Result<Option<StoreImage>, BuildError> {
    if p.store_images.is_empty() {
        return Ok(None);
    }
    let key = crate::store::key(&p.store_images, opts.epoch, p.profile.store_compression);
    let arts = artifacts(opts);
    let path = p.work.store_image();
    if reused(arts.as_ref(), Kind::Store, &key, &path, opts) {
        opts.progress.step(&format!(
            "image store: reused (key {}), {} images",
            key.short(),
            p.store_images.len()
        ));
        return Ok(Some(StoreImage { path, key }));
    }
    let busy = opts.progress.busy("image store");
    let size = crate::store::write_partition(&crate::store::Partition {
        images: &p.store_images,
        spool: &p.work.store_spool(),
        out: &p.work.store_image(),
        uuid: disk::gpt::Guid::derive(&key.0, "store:erofs-uuid").disk_bytes(),
        epoch: opts.epoch,
        budget: p.profile.disk_size.value.bytes(),
        compression: p.profile.store_compression,
        busy: busy.clone(),
    })?;
    drop(busy);
    keep(
        arts.as_ref(),
        Kind::Store,
        &key,
        &p.work.store_image(),
        opts,
    );
    opts.progress.step(&format!(
        "image store: {} images, {size} bytes (EROFS, key {})",
        p.store_images.len(),
        key.short()
    ));
    Ok(Some(StoreImage {
        path: p.work.store_image(),
        key,
    }))
}

/// The store's dm-verity hash tree in the work folder (the store image padded to
/// whole 4 KiB blocks first); its root hash goes on the kernel command line.
///
/// The salt and UUID are derived from the store's key, like the store's own ids:
/// a profile change leaves the hash tree and the root hash as they were.
fn verity_stage(
    p: &Prepared,
    store: &StoreImage,
    opts: &Options,
) -> Result<crate::store::verity::Verity, BuildError> {
    use crate::store::verity::{self, BLOCK};
    let (key, store) = (&store.key, store.path.as_path());
    let err = io_err("cannot write the store's hash tree from", store);
    let verity = (|| {
        // EROFS images are whole blocks already; a kept store is never written to.
        let len = std::fs::metadata(store)?.len();
        if len % BLOCK != 0 {
            let f = std::fs::OpenOptions::new().write(true).open(store)?;
            f.set_len(len.div_ceil(BLOCK) * BLOCK)?;
        }
        let mut salt = [0u8; 32];
        salt.copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(
            [&key.0[..], b"store:verity-salt"].concat(),
        ));
        let uuid = disk::gpt::Guid::derive(&key.0, "store:verity-uuid").disk_bytes();
        let busy = opts.progress.busy("store: dm-verity hash tree");
        let v = verity::write_hash_tree(store, &p.work.store_verity(), salt, uuid);
        drop(busy);
        v
    })()
    .map_err(err)?;
    opts.progress.step(&format!(
        "store dm-verity: {} data blocks, hash tree {} bytes, root {}",
        verity.data_blocks, verity.hash_bytes, verity.root_hash
    ));
    Ok(verity)
}

/// The compressed initramfs in the work folder; returns its size.
fn initramfs_stage(
    p: &Prepared,
    os_release: &str,
    store: bool,
    opts: &Options,
) -> Result<u64, BuildError> {
    let (tree, _) = initramfs::contents::tree(&Contents {
        system: p
            .system
            .as_ref()
            .zip(p.profile.system.as_ref().map(|s| &s.origin)),
        init: &p.init,
        modules: &p.modules,
        kernel_version: &p.kernel.version,
        os_release,
        hostname: p.profile.hostname.as_ref().map(|h| h.value.as_str()),
        pods: &p.pods,
        store,
        epoch: opts.epoch,
    })?;
    let compression = initramfs::Compression::from(p.profile.compression);
    let arts = artifacts(opts);
    let key = match &arts {
        // The uncompressed cpio is every input (files, modes, times) as written;
        // hashing it costs a small part of compressing it.
        Some(_) => {
            let cpio = initramfs::write_initramfs(
                &tree,
                initramfs::Compression::None,
                crate::reuse::HashWriter::default(),
            )
            .map_err(BuildError::Initramfs)?;
            let mut k = crate::reuse::Key::builder(Kind::Initramfs);
            Some(
                k.text(&format!("{compression:?}"))
                    .field(&cpio.finish())
                    .finish(),
            )
        }
        None => None,
    };
    let path = p.work.initrd();
    if let Some(k) = key.filter(|k| reused(arts.as_ref(), Kind::Initramfs, k, &path, opts)) {
        let len = std::fs::metadata(&path)
            .map_err(io_err("cannot read", &path))?
            .len();
        opts.progress.step(&format!(
            "initramfs: reused (key {}), {len} bytes ({compression:?})",
            k.short()
        ));
        return Ok(len);
    }
    let busy = opts.progress.busy(&format!("initramfs: {compression:?}"));
    let len = initramfs::contents::write_file(&tree, compression, &p.work.initrd())
        .map_err(BuildError::Initramfs)?;
    drop(busy);
    if let Some(k) = &key {
        keep(arts.as_ref(), Kind::Initramfs, k, &p.work.initrd(), opts);
    }
    opts.progress.step(&format!(
        "initramfs: {} entries, {len} bytes ({compression:?})",
        tree.len()
    ));
    Ok(len)
}

/// The unified kernel image in the work folder, signed by `signer` if given; returns
/// its size. Everything the signature covers (the `.cmdline` included) is written
/// before it is signed.
fn uki_stage(
    p: &Prepared,
    os_release: String,
    cmdline: &str,
    signer: Option<&crate::sign::Signer>,
    opts: &Options,
) -> Result<u64, BuildError> {
    let parts = UkiParts {
        osrel: os_release.into_bytes(),
        cmdline: cmdline.as_bytes().to_vec(),
        uname: p.kernel.version.clone().into_bytes(),
        linux: host_file(&p.kernel.vmlinuz)?,
        initrd: host_file(&p.work.initrd())?,
    };
    let arts = artifacts(opts);
    let key = match &arts {
        Some(_) => Some(uki_key(p, &parts)?),
        None => None,
    };
    let path = p.work.uki();
    let len = match key.filter(|k| reused(arts.as_ref(), Kind::Uki, k, &path, opts)) {
        Some(k) => {
            let len = std::fs::metadata(&path)
                .map_err(io_err("cannot read", &path))?
                .len();
            opts.progress.step(&format!(
                "unified kernel image: reused (key {}), {len} bytes, cmdline `{cmdline}`",
                k.short()
            ));
            len
        }
        None => {
            let len = boot::write_uki_file(&p.stub, &parts, &path).map_err(BuildError::Uki)?;
            if let Some(k) = &key {
                keep(arts.as_ref(), Kind::Uki, k, &path, opts);
            }
            opts.progress.step(&format!(
                "unified kernel image: {len} bytes, cmdline `{cmdline}`"
            ));
            len
        }
    };
    // The unsigned UKI is what is kept and reused; the signature is added to this
    // build's own copy (never to a hard link into the cache).
    let Some(signer) = signer else {
        return Ok(len);
    };
    own_file(&path).map_err(io_err("cannot copy", &path))?;
    let signed = signer.sign_uki(&path)?;
    opts.progress.step(&format!(
        "signed the UKI for Secure Boot: {} (serial {})",
        crate::untrusted::shown(&signed.subject),
        signed.serial
    ));
    Ok(signed.len)
}

/// Makes `path` a file of its own before it is changed in place: a reused or kept
/// artifact is a hard link to the cache's copy, which must not change.
fn own_file(path: &Path) -> io::Result<()> {
    let tmp = path.with_extension("own");
    std::fs::copy(path, &tmp)?;
    std::fs::rename(&tmp, path)
}

/// The hash of a UKI's inputs: the stub, every section's bytes, the kernel's and
/// the initramfs's sha256.
fn uki_key(p: &Prepared, parts: &UkiParts) -> Result<crate::reuse::Key, BuildError> {
    let mut k = crate::reuse::Key::builder(Kind::Uki);
    k.field(&p.stub)
        .field(&parts.osrel)
        .field(&parts.cmdline)
        .field(&parts.uname);
    for file in [&p.kernel.vmlinuz, &p.work.initrd()] {
        k.file(file).map_err(io_err("cannot read", file))?;
    }
    Ok(k.finish())
}

/// The raw GPT disk, in a partial file beside `output`, and its partition table.
fn disk_stage(
    p: &Prepared,
    esp: &Tree,
    store: Option<&Path>,
    store_verity: Option<&Path>,
    output: &Path,
    opts: &Options,
) -> Result<(Partial, disk::gpt::Table), BuildError> {
    let mut raw = Partial::create(output)?;
    let raw_path = raw.path().to_path_buf();
    let spec = DiskSpec {
        size: p.profile.disk_size.value.bytes(),
        seed: p.profile.hash,
        esp,
        mtime: opts.epoch,
        store,
        store_verity,
        work: &p.work.path,
    };
    let busy = opts
        .progress
        .busy("disk: GPT, ESP, store, data (mkfs.ext4)");
    let table = disk::write_disk(&spec, raw.file_mut(), &raw_path)?;
    drop(busy);
    Ok((raw, table))
}

/// The raw disk converted to `format`, in a second partial file (the raw one is
/// removed when it drops); the raw disk itself for `raw`.
fn format_stage(
    raw: Partial,
    format: crate::format::Format,
    output: &Path,
    p: &Prepared,
    opts: &Options,
) -> Result<Partial, BuildError> {
    if format == crate::format::Format::Raw {
        return Ok(raw);
    }
    let mut converted = Partial::create(output)?;
    let copts = crate::format::ConvertOptions {
        qcow2_compress: false,
        mtime: opts.epoch,
        seed: p.profile.hash,
    };
    let busy = opts.progress.busy(&format!("converting to {format}"));
    let report = crate::format::convert(raw.path(), format, converted.file_mut(), &copts)
        .map_err(BuildError::Format)?;
    drop(busy);
    for note in &report.notes {
        opts.progress.step(&format!("note: {note}"));
    }
    opts.progress.step(&format!("converted to {format}"));
    Ok(converted)
}

/// A whole host file as a tree content (its length taken now).
fn host_file(path: &Path) -> Result<Content, BuildError> {
    let len = std::fs::metadata(path)
        .map_err(io_err("cannot read", path))?
        .len();
    Ok(Content::Host {
        path: Arc::new(path.to_path_buf()),
        offset: 0,
        len,
    })
}
