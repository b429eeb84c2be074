//! What CRI-O does with a pre-seeded image before it runs a container, done by the
//! kubelet double: find the image in the read-only store kios-init mounted
//! (containers/storage's overlay layout, docs/store.md), stack its layers' `diff`
//! folders as overlayfs lower layers, with a writable upper layer on `/run`, and
//! give the merged folder to the real OCI runtime as the container's root.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where the container's root is assembled; the bundle's `config.json` (written by
/// the test) names `ROOTFS` as its `root.path`.
pub const ROOTFS: &str = "/run/kios-test/rootfs";
const SCRATCH: &str = "/run/kios-test";

/// The image named by `name` (a substring of one of its `names`): its top layer
/// and the chain of layers under it, top first, as folders of the store.
pub fn layer_dirs(store: &Path, name: &str) -> Result<(String, Vec<PathBuf>), String> {
    let read = |p: PathBuf| -> Result<Value, String> {
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    let images = read(store.join("overlay-images/images.json"))?;
    let layers = read(store.join("overlay-layers/layers.json"))?;
    let image = images
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| {
            i["names"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n.as_str().is_some_and(|n| n.contains(name)))
        })
        .ok_or_else(|| format!("no image named *{name}* in the store"))?;
    let full_name = image["names"][0].as_str().unwrap_or("?").to_owned();
    let mut next = image["layer"].as_str().map(str::to_owned);
    let mut dirs = Vec::new();
    while let Some(id) = next {
        if dirs.len() > 128 {
            return Err("the layer chain does not end".into());
        }
        let layer = layers
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["id"].as_str() == Some(id.as_str()))
            .ok_or_else(|| format!("layer {id} is not in layers.json"))?;
        dirs.push(store.join("overlay").join(&id).join("diff"));
        next = layer["parent"].as_str().map(str::to_owned);
    }
    Ok((full_name, dirs))
}

/// Mounts the overlay of `lower` (top first) with a tmpfs-backed upper layer on
/// [`ROOTFS`].
pub fn mount_rootfs(lower: &[PathBuf]) -> Result<(), String> {
    for d in ["upper", "work", "rootfs"] {
        let p = Path::new(SCRATCH).join(d);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let lowerdir: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={SCRATCH}/upper,workdir={SCRATCH}/work",
        lowerdir.join(":")
    );
    let c = |s: &str| std::ffi::CString::new(s).map_err(|e| e.to_string());
    let (source, target, fstype, data) = (c("overlay")?, c(ROOTFS)?, c("overlay")?, c(&options)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "mount overlay {options} on {ROOTFS}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
