//! The PCR 11 value `inspect --json` predicts for a UKI (`boot.pcr11`) against the
//! real thing: the image booted by OVMF with a software TPM (`swtpm`), the Debian
//! systemd stub measuring the UKI's sections, and the kernel's view of PCR 11 read
//! inside the guest by the kubelet test double (`kios.test.kubelet=pcr`). This is
//! what confirms the list and order of the sections the stub measures.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Swtpm(Child);

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TPM 2.0 emulator listening on `dir/swtpm.sock`, for one QEMU run.
fn swtpm(dir: &Path) -> Swtpm {
    require_tool("swtpm", "swtpm");
    let sock = dir.join("swtpm.sock");
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("swtpm starts (apt-get install swtpm swtpm-tools)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "swtpm made no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    Swtpm(child)
}

fn pcr11_predicted(img: &Path) -> (String, serde_json::Value) {
    let o = run(kios_build().arg("inspect").arg("--json").arg(img));
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = v["boot"]["pcr11"].clone();
    let value = p["sha256"]
        .as_str()
        .unwrap_or_else(|| panic!("no prediction for this stub: {p}"))
        .to_owned();
    (value, p)
}

#[test]
fn the_predicted_pcr11_is_what_the_stub_measures_into_a_software_tpm() {
    let dir = tempfile::tempdir().unwrap();
    let system = dir.path().join("system");
    fs::create_dir_all(system.join("usr/bin")).unwrap();
    fs::copy(standin("kubelet-standin"), system.join("usr/bin/kubelet")).unwrap();
    fs::copy(standin("crio-standin"), system.join("usr/bin/crio")).unwrap();
    let i = inputs();
    let profile = write_profile(
        dir.path(),
        "node.yaml",
        &format!(
            "apiVersion: kios.dev/v1alpha1\nkind: NodeProfile\nbase: qemu\nkernel:\n  path: {k}\n  cmdline: [kios.test.kubelet=pcr]\nboot:\n  stub: {{path: {s}}}\nsystem:\n  path: {y}\ndisk:\n  size: 256MiB\n",
            k = i.join("kernel").display(),
            s = i.join("stub/linuxx64.efi.stub").display(),
            y = system.display(),
        ),
    );
    let img = dir.path().join("node.img");
    build(&profile, &img, 1_700_000_000);
    let (predicted, detail) = pcr11_predicted(&img);
    let measured: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["measured"].as_str())
        .collect();
    assert_eq!(
        measured,
        [
            ".linux (name)",
            ".linux",
            ".osrel (name)",
            ".osrel",
            ".cmdline (name)",
            ".cmdline",
            ".initrd (name)",
            ".initrd"
        ],
        "{detail}"
    );

    let tpm_dir = tempfile::tempdir().unwrap();
    let _tpm = swtpm(tpm_dir.path());
    let sock = tpm_dir.path().join("swtpm.sock");
    let args: Vec<String> = [
        // Said after the PCR line, so that line is whole.
        "--until",
        "STANDIN kubelet got broadcast",
        "--timeout",
        "300",
        "--",
        "-chardev",
        &format!("socket,id=chrtpm,path={}", sock.display()),
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-tis,tpmdev=tpm0",
    ]
    .map(str::to_string)
    .to_vec();
    let (code, log, _) = run_image(&img, &args);
    let seen = code == Some(0);
    assert!(seen, "the double never read PCR 11; the log:\n{log}");
    let line = log
        .lines()
        .find_map(|l| l.split("STANDIN kubelet pcr11: ").nth(1))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(line.len(), 64, "{line}");
    assert_ne!(line, "0".repeat(64), "the stub measured nothing: {log}");
    assert_eq!(line, predicted, "{detail}");
}
