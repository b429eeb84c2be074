//! Test double for CRI-O (not CRI-O): see tests/standins/README.md.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use kios_standins::{announce, mode, say, started_before, stay};

const SOCKET: &str = "/var/run/crio/crio.sock";
const MARKER: &str = "/run/kios-test-crio-started";

fn main() {
    announce("crio");
    let mode = mode("crio", "stay");
    if started_before(MARKER) && mode == "slow-restart" {
        // A restarted CRI-O that takes its time: the kubelet must wait for it.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let _ = std::fs::create_dir_all("/var/run/crio");
    let _ = std::fs::remove_file(SOCKET);
    let listener = match UnixListener::bind(SOCKET) {
        Ok(l) => {
            say("STANDIN crio created its socket");
            Some(l)
        }
        Err(e) => {
            say(&format!("STANDIN crio cannot listen on {SOCKET}: {e}"));
            None
        }
    };
    if mode == "crash" {
        std::thread::sleep(Duration::from_millis(300));
        say("STANDIN crio crashing");
        std::process::exit(1);
    }
    let _keep = listener;
    stay()
}
