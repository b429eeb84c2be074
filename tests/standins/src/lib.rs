//! Shared pieces of the test doubles (see README.md): reading the mode from the
//! kernel command line, announcing the arguments, talking to kios-init's system
//! socket. Test code: it may stop with a message, it is never part of an image
//! outside the tests.

pub mod store;

use kios_contract::socket;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The value of `kios.test.<name>=` on the kernel command line, or `default`.
pub fn mode(name: &str, default: &str) -> String {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let key = format!("kios.test.{name}=");
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .unwrap_or(default)
        .to_owned()
}

/// Prints a line on stdout and on the console.
pub fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
    if let Ok(mut c) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "{line}");
    }
}

/// `STANDIN <name> ARGS: a b c`.
pub fn announce(name: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    say(&format!("STANDIN {name} ARGS: {}", args.join(" ")));
    args
}

/// Sleeps until killed.
pub fn stay() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Sends one byte to `/run/system.sock` and keeps the connection.
pub fn send(byte: u8) -> Option<UnixStream> {
    let mut s = UnixStream::connect(socket::PATH).ok()?;
    s.write_all(&[byte]).ok()?;
    Some(s)
}

/// Asks for a shutdown the way a drain agent would: `0x01`, wait for the shutdown
/// broadcast, `0x02`.
pub fn shutdown(name: &str) {
    let Some(mut s) = send(socket::SHUTDOWN) else {
        say(&format!("STANDIN {name} cannot reach /run/system.sock"));
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut b = [0u8; 1];
    match s.read_exact(&mut b) {
        Ok(()) => say(&format!("STANDIN {name} got broadcast {:#04x}", b[0])),
        Err(e) => say(&format!("STANDIN {name} no broadcast: {e}")),
    }
    let _ = s.write_all(&[socket::CONTINUE]);
    say(&format!("STANDIN {name} sent 0x01 then 0x02"));
}

/// Connects to `/run/system.sock` and keeps the connection, as a drain agent does
/// to hear of a shutdown.
pub fn connect() -> Option<UnixStream> {
    UnixStream::connect(socket::PATH).ok()
}

/// Waits (without a bound) for kios-init's shutdown broadcast on `s`, then answers
/// `0x02` (continue the shutdown), as a drain agent that has finished.
pub fn answer_shutdown(name: &str, mut s: UnixStream) {
    let mut b = [0u8; 1];
    match s.read_exact(&mut b) {
        Ok(()) => say(&format!("STANDIN {name} got broadcast {:#04x}", b[0])),
        Err(e) => {
            say(&format!("STANDIN {name} no broadcast: {e}"));
            return;
        }
    }
    match s.write_all(&[socket::CONTINUE]) {
        Ok(()) => say(&format!("STANDIN {name} sent 0x02")),
        Err(e) => say(&format!("STANDIN {name} cannot send 0x02: {e}")),
    }
}

/// Creates `path` and tells whether it was there already: a marker in `/run` (a
/// tmpfs, so it is gone at the next boot) that lets a double tell its first start
/// from a restart.
pub fn started_before(path: &str) -> bool {
    let before = std::path::Path::new(path).exists();
    let _ = std::fs::write(path, b"");
    before
}
