//! Test double for the kubelet (not the kubelet): see tests/standins/README.md.

use kios_standins::{announce, mode, say, send, shutdown, stay};

const KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";

fn main() {
    let args = announce("kubelet");
    match mode("kubelet", "stay").as_str() {
        "crash" => std::process::exit(1),
        "shutdown" => shutdown("kubelet"),
        "bootstrap" => {
            if args.iter().any(|a| a == "--kubeconfig") {
                shutdown("kubelet");
            } else if !std::path::Path::new(KUBECONFIG).exists() {
                let _ = std::fs::create_dir_all("/etc/kubernetes");
                match std::fs::write(KUBECONFIG, "# written by the kubelet test double\n") {
                    Ok(()) => say("STANDIN kubelet wrote /etc/kubernetes/kubelet.conf"),
                    Err(e) => say(&format!("STANDIN kubelet cannot write {KUBECONFIG}: {e}")),
                }
                let _ = send(0x03);
            }
        }
        _ => {}
    }
    stay()
}
