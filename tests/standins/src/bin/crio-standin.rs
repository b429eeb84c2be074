//! Test double for CRI-O (not CRI-O): see tests/standins/README.md.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use kios_standins::{announce, mode, say, stay};

const SOCKET: &str = "/var/run/crio/crio.sock";

fn main() {
    announce("crio");
    let _ = std::fs::create_dir_all("/var/run/crio");
    let _ = std::fs::remove_file(SOCKET);
    let listener = match UnixListener::bind(SOCKET) {
        Ok(l) => Some(l),
        Err(e) => {
            say(&format!("STANDIN crio cannot listen on {SOCKET}: {e}"));
            None
        }
    };
    if mode("crio", "stay") == "crash" {
        std::thread::sleep(Duration::from_millis(300));
        say("STANDIN crio crashing");
        std::process::exit(1);
    }
    let _keep = listener;
    stay()
}
