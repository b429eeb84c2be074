//! The pause container: the first process of every pod sandbox. It holds the pod's
//! namespaces open, reaps the children it adopts (it is PID 1 of the pod when the
//! pod shares a PID namespace), and exits 0 on SIGTERM or SIGINT, so that stopping
//! a pod takes no kill timeout.
//!
//! Signals are taken synchronously (blocked, then `sigwaitinfo`): no handler runs
//! at an arbitrary point, and nothing allocates. `-v` prints the version.
//!
//! `scripts/make-pause-image` wraps the static binary into an OCI layout, the image
//! a profile names with `kubernetes.pauseImage` to build without a registry.

use std::io::Write;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("-v") {
        println!("kios-pause {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    // SAFETY: plain libc calls on a sigset we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            let _ = writeln!(std::io::stderr(), "pause: cannot block signals");
            std::process::exit(1);
        }
        loop {
            let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
            match sig {
                libc::SIGTERM | libc::SIGINT => std::process::exit(0),
                libc::SIGCHLD => {
                    while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
                }
                _ => {} // EINTR
            }
        }
    }
}
