//! What PID 1 does after the host is set up: start CRI-O, then the kubelet once
//! CRI-O's socket exists, keep both running, and shut the machine down when asked.
//!
//! The kubelet is never started while CRI-O is down: at boot and after every CRI-O
//! restart (a crash or `0x04`) it waits until the CRI-O that runs has created its
//! socket, or [`SOCKET_WAIT`] has passed since CRI-O went down. A kubelet that is
//! running is left alone when CRI-O restarts (it reconnects by itself).
//!
//! Input: [`Event`]s from [`System::next_events`] (children reaped, files appearing,
//! bytes on the system socket, signals) and the clock. Output: processes started and
//! signalled, log lines, and at the end the shutdown sequence (`shutdown.rs`). The
//! loop is event driven: the only timeout is the nearest deadline (a backoff, a
//! stop grace period). This module makes no system calls of its own.
//!
//! Restarts: a service that exits is started again after a backoff of 0.5 s,
//! doubling up to [`BACKOFF_CAP`], reset once a run lasted [`STABLE_AFTER`]. The
//! kubelet is also restarted (TERM, then start at once) when its flags would change
//! because `kubelet.conf` or `bootstrap-kubelet.conf` appeared, on `0x03` and on
//! SIGUSR1; CRI-O on `0x04`.
//!
//! Shutdown: `0x01` (or SIGTERM: power off; SIGINT, ctrl-alt-del: reboot; `0x05`:
//! reboot) broadcasts `0x01` to the socket's clients and waits for `0x02` up to
//! [`SOFT_SHUTDOWN_GRACE`]; then the kubelet is stopped, then CRI-O (TERM, KILL
//! after [`STOP_GRACE`]), then every other process (TERM, KILL after
//! [`KILL_ALL_GRACE`]), then `shutdown::finish` syncs, unmounts and powers off.

use std::time::Duration;

use crate::kubelet::{self, Inputs, BOOTSTRAP_KUBECONFIG, CRIO, CRIO_SOCKET, KUBECONFIG, KUBELET};
use crate::log::BootTime;
use crate::shutdown;
use crate::system::{info, warn};
use crate::system::{ChildExit, Event, ExitStatus, PowerAction, Service, Spawn, System, WatchKind};

pub const SOCKET: &str = kios_contract::socket::PATH;
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub const BACKOFF_CAP: Duration = Duration::from_secs(4);
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
pub const SOCKET_WAIT: Duration = Duration::from_secs(30);
pub const SOFT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const STOP_GRACE: Duration = Duration::from_secs(10);
pub const KILL_ALL_GRACE: Duration = Duration::from_secs(3);
/// How often to check whether every process is gone during a shutdown.
const KILL_ALL_POLL: Duration = Duration::from_millis(50);

pub const CMD_SHUTDOWN: u8 = kios_contract::socket::SHUTDOWN;
pub const CMD_CONTINUE: u8 = kios_contract::socket::CONTINUE;
pub const CMD_RESTART_KUBELET: u8 = kios_contract::socket::RESTART_KUBELET;
pub const CMD_RESTART_CRIO: u8 = kios_contract::socket::RESTART_CRIO;
pub const CMD_REBOOT: u8 = kios_contract::socket::REBOOT;

/// The delay before restart number `failures` (1 for the first).
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST.saturating_mul(1u32 << shift).min(BACKOFF_CAP)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Run {
    /// Not started yet (the kubelet waits for CRI-O's socket) or stopped for good.
    Idle,
    /// Its program is missing: never started.
    Disabled,
    Running {
        pid: i32,
        since: BootTime,
        args: Vec<String>,
    },
    /// Sent TERM; KILL at `kill_at`; start again on exit when `restart`.
    Stopping {
        pid: i32,
        kill_at: BootTime,
        restart: bool,
    },
    Backoff {
        until: BootTime,
    },
}

struct Svc {
    program: &'static str,
    run: Run,
    failures: u32,
}

impl Svc {
    fn pid(&self) -> Option<i32> {
        match self.run {
            Run::Running { pid, .. } | Run::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Up,
    /// Clients were told; waiting for `0x02` until `deadline`.
    Requested {
        action: PowerAction,
        deadline: BootTime,
    },
    Stopping {
        action: PowerAction,
        which: Service,
    },
    KillingAll {
        action: PowerAction,
        kill_at: BootTime,
        killed: bool,
        check_at: BootTime,
    },
    /// `reboot(2)` failed; nothing more to do.
    Halted,
}

pub struct Supervisor {
    crio: Svc,
    kubelet: Svc,
    crio_args: Vec<String>,
    /// Why CRI-O and the kubelet must not start (a store that failed verification);
    /// PID 1 and its socket stay up.
    held: Option<&'static str>,
    /// The running CRI-O has created its socket (or CRI-O is not installed, or the
    /// wait for the socket timed out): the kubelet may start.
    socket_ready: bool,
    /// Until when the kubelet waits for the socket.
    socket_deadline: Option<BootTime>,
    phase: Phase,
}

impl Supervisor {
    pub fn new(crio_args: Vec<String>) -> Self {
        let svc = |program| Svc {
            program,
            run: Run::Idle,
            failures: 0,
        };
        Self {
            crio: svc(CRIO),
            kubelet: svc(KUBELET),
            crio_args,
            held: None,
            socket_ready: false,
            socket_deadline: None,
            phase: Phase::Up,
        }
    }

    /// CRI-O and the kubelet are never started, for `reason`: the node stays up,
    /// answers on its socket and can be shut down, but runs no containers.
    pub fn hold(&mut self, reason: &'static str) {
        self.held = Some(reason);
    }

    fn svc(&mut self, s: Service) -> &mut Svc {
        match s {
            Service::Crio => &mut self.crio,
            Service::Kubelet => &mut self.kubelet,
        }
    }

    /// Sets up the event sources and starts CRI-O (and the kubelet if it need not
    /// wait).
    pub fn start(&mut self, sys: &mut dyn System) {
        if let Err(e) = sys.start_events(SOCKET) {
            warn(
                sys,
                &format!("cannot set up signals, inotify or {SOCKET}: {e}; supervising by polling"),
            );
        } else {
            info(sys, &format!("listening on {SOCKET}"));
        }
        if !sys.exists("/var/run") {
            if let Err(e) = sys.symlink("../run", "/var/run") {
                warn(sys, &format!("cannot link /var/run -> ../run: {e}"));
            }
        }
        // Watched by the names the events are compared with.
        for (dir, kind) in [
            ("/var/run/crio", WatchKind::Created),
            ("/etc/kubernetes", WatchKind::Written),
        ] {
            if let Err(e) = sys
                .mkdir_all(dir, 0o755)
                .and_then(|()| sys.watch_dir(dir, kind))
            {
                warn(sys, &format!("cannot watch {dir}: {e}"));
            }
        }
        if self.held.is_some() {
            // Neither starts; both say why now, not when the socket wait ends.
            self.start_service(sys, Service::Crio);
            self.start_service(sys, Service::Kubelet);
            return;
        }
        let now = sys.boot_time();
        self.socket_deadline = Some(now.plus(SOCKET_WAIT));
        self.start_service(sys, Service::Crio);
        if sys.exists(CRIO_SOCKET) {
            self.socket_ready = true;
        }
        self.maybe_start_kubelet(sys);
    }

    /// One round of the loop.
    pub fn step(&mut self, sys: &mut dyn System) {
        let now = sys.boot_time();
        let timeout = self.next_deadline().map(|d| d.since(now));
        for event in sys.next_events(timeout) {
            self.handle(sys, event);
        }
        self.tick(sys);
    }

    fn next_deadline(&self) -> Option<BootTime> {
        let mut d: Vec<BootTime> = Vec::new();
        for s in [&self.crio, &self.kubelet] {
            match s.run {
                Run::Backoff { until } => d.push(until),
                Run::Stopping { kill_at, .. } => d.push(kill_at),
                _ => {}
            }
        }
        if !self.socket_ready && self.kubelet.run == Run::Idle && self.phase == Phase::Up {
            d.extend(self.socket_deadline);
        }
        match self.phase {
            Phase::Requested { deadline, .. } => d.push(deadline),
            Phase::KillingAll {
                kill_at,
                check_at,
                killed,
                ..
            } => {
                d.push(check_at);
                if !killed {
                    d.push(kill_at);
                }
            }
            _ => {}
        }
        d.into_iter().min()
    }

    pub fn handle(&mut self, sys: &mut dyn System, event: Event) {
        match event {
            Event::ChildExited { exit, last_lines } => self.child_exited(sys, exit, &last_lines),
            Event::FileAppeared(path) => self.file_appeared(sys, &path),
            Event::Command(byte) => self.command(sys, byte),
            Event::Signal(libc::SIGTERM) => {
                self.request_shutdown(sys, PowerAction::PowerOff, "SIGTERM")
            }
            Event::Signal(libc::SIGINT) => {
                self.request_shutdown(sys, PowerAction::Reboot, "SIGINT (ctrl-alt-del)")
            }
            Event::Signal(libc::SIGUSR1) => self.restart(sys, Service::Kubelet, "SIGUSR1"),
            Event::Signal(other) => info(sys, &format!("signal {other} ignored")),
        }
    }

    fn command(&mut self, sys: &mut dyn System, byte: u8) {
        match byte {
            CMD_SHUTDOWN => {
                self.request_shutdown(sys, PowerAction::PowerOff, "0x01 on the system socket")
            }
            CMD_REBOOT => {
                self.request_shutdown(sys, PowerAction::Reboot, "0x05 on the system socket")
            }
            CMD_CONTINUE => match self.phase {
                Phase::Requested { action, .. } => {
                    info(sys, "0x02: continuing the shutdown");
                    self.begin_stopping(sys, action);
                }
                _ => warn(sys, "0x02 without a shutdown in progress; ignored"),
            },
            CMD_RESTART_KUBELET => self.restart(sys, Service::Kubelet, "0x03 on the system socket"),
            CMD_RESTART_CRIO => self.restart(sys, Service::Crio, "0x04 on the system socket"),
            other => warn(
                sys,
                &format!("unknown command byte {other:#04x} on {SOCKET}; ignored"),
            ),
        }
    }

    fn start_service(&mut self, sys: &mut dyn System, s: Service) {
        if self.phase != Phase::Up {
            return;
        }
        if let Some(reason) = self.held {
            self.svc(s).run = Run::Disabled;
            warn(sys, &format!("{s} is not started: {reason}"));
            return;
        }
        if s == Service::Kubelet && !self.socket_ready {
            self.kubelet.run = Run::Idle;
            info(sys, "the kubelet waits for CRI-O's socket");
            return;
        }
        let program = self.svc(s).program;
        if !sys.exists(program) {
            self.svc(s).run = Run::Disabled;
            warn(
                sys,
                &format!("{s}: {program} is missing; {s} is not started"),
            );
            if s == Service::Crio {
                self.socket_ready = true;
                info(sys, "the kubelet starts without waiting for CRI-O");
            }
            return;
        }
        let args = match s {
            Service::Crio => self.crio_args.clone(),
            Service::Kubelet => {
                let (args, problems) = kubelet::kubelet_args(&Inputs::read(sys));
                for p in problems {
                    warn(sys, &p);
                }
                args
            }
        };
        let spawn = Spawn {
            service: s,
            program: program.to_owned(),
            args: args.clone(),
            log: format!("/var/log/kios/{s}.log"),
        };
        match sys.spawn(&spawn) {
            Ok(pid) => {
                let since = sys.boot_time();
                info(
                    sys,
                    &format!("{s} started (pid {pid}): {program} {}", args.join(" ")),
                );
                self.svc(s).run = Run::Running { pid, since, args };
            }
            Err(e) => {
                let svc = self.svc(s);
                svc.failures = svc.failures.saturating_add(1);
                let delay = backoff(svc.failures);
                self.svc(s).run = Run::Backoff {
                    until: sys.boot_time().plus(delay),
                };
                warn(
                    sys,
                    &format!(
                        "starting {s} failed: {e}; trying again in {} ms",
                        delay.as_millis()
                    ),
                );
            }
        }
    }

    /// CRI-O stops or has exited: its socket is gone with it, so the kubelet may not
    /// be started again until the next CRI-O has made one, or [`SOCKET_WAIT`] passed.
    fn crio_going_down(&mut self, sys: &mut dyn System) {
        if self.socket_ready {
            self.socket_ready = false;
            self.socket_deadline = Some(sys.boot_time().plus(SOCKET_WAIT));
        }
    }

    fn maybe_start_kubelet(&mut self, sys: &mut dyn System) {
        if self.kubelet.run == Run::Idle && self.socket_ready {
            self.start_service(sys, Service::Kubelet);
        }
    }

    fn child_exited(&mut self, sys: &mut dyn System, exit: ChildExit, last_lines: &[String]) {
        let Some(s) = Service::ALL
            .into_iter()
            .find(|s| self.svc(*s).pid() == Some(exit.pid))
        else {
            info(sys, &format!("reaped pid {}: {}", exit.pid, exit.status));
            return;
        };
        if s == Service::Crio {
            self.crio_going_down(sys);
        }
        let now = sys.boot_time();
        let run = std::mem::replace(&mut self.svc(s).run, Run::Idle);
        match run {
            Run::Stopping { restart, .. } => {
                info(
                    sys,
                    &format!("{s} stopped (pid {}, {})", exit.pid, exit.status),
                );
                if restart {
                    self.start_service(sys, s);
                }
            }
            Run::Running { since, .. } => {
                let ran = now.since(since);
                warn(
                    sys,
                    &format!(
                        "{s} (pid {}) {} after {} ms",
                        exit.pid,
                        exit.status,
                        ran.as_millis()
                    ),
                );
                if exit.status != ExitStatus::Exited(0) && !last_lines.is_empty() {
                    warn(sys, &format!("last lines of {s}:"));
                    for line in last_lines {
                        warn(sys, &format!("{s}| {line}"));
                    }
                }
                if self.phase == Phase::Up {
                    let svc = self.svc(s);
                    if ran >= STABLE_AFTER {
                        svc.failures = 0;
                    }
                    svc.failures = svc.failures.saturating_add(1);
                    let delay = backoff(svc.failures);
                    let failures = svc.failures;
                    svc.run = Run::Backoff {
                        until: now.plus(delay),
                    };
                    info(
                        sys,
                        &format!(
                            "restarting {s} in {} ms (failure {failures} in a row)",
                            delay.as_millis()
                        ),
                    );
                }
            }
            other => self.svc(s).run = other,
        }
        self.advance_shutdown(sys);
    }

    fn file_appeared(&mut self, sys: &mut dyn System, path: &str) {
        if path == CRIO_SOCKET {
            // A socket made by a CRI-O that has exited since does not count.
            let crio_runs = matches!(self.crio.run, Run::Running { .. });
            if crio_runs && !self.socket_ready {
                self.socket_ready = true;
                info(sys, &format!("CRI-O socket {CRIO_SOCKET} is ready"));
                self.maybe_start_kubelet(sys);
            }
            return;
        }
        if path != KUBECONFIG && path != BOOTSTRAP_KUBECONFIG {
            return;
        }
        let Run::Running { args, .. } = &self.kubelet.run else {
            return;
        };
        let (new_args, _) = kubelet::kubelet_args(&Inputs::read(sys));
        if &new_args != args {
            self.restart(sys, Service::Kubelet, &format!("{path} appeared"));
        } else {
            info(
                sys,
                &format!("{path} written; the kubelet's flags are unchanged"),
            );
        }
    }

    /// TERM and start again on exit; a service waiting in backoff starts at once.
    fn restart(&mut self, sys: &mut dyn System, s: Service, why: &str) {
        if self.phase != Phase::Up {
            warn(sys, &format!("{why}: not restarting {s} during a shutdown"));
            return;
        }
        let now = sys.boot_time();
        match self.svc(s).run.clone() {
            Run::Running { pid, .. } => {
                info(sys, &format!("{why}: restarting {s} (TERM to pid {pid})"));
                if s == Service::Crio {
                    self.crio_going_down(sys);
                }
                let _ = sys.signal(pid, libc::SIGTERM);
                let svc = self.svc(s);
                svc.failures = 0;
                svc.run = Run::Stopping {
                    pid,
                    kill_at: now.plus(STOP_GRACE),
                    restart: true,
                };
            }
            Run::Backoff { .. } => {
                info(sys, &format!("{why}: starting {s} now"));
                self.svc(s).failures = 0;
                self.start_service(sys, s);
            }
            Run::Stopping { .. } => info(sys, &format!("{why}: {s} is already stopping")),
            Run::Idle if s == Service::Kubelet && !self.socket_ready => info(
                sys,
                &format!("{why}: the kubelet still waits for CRI-O's socket"),
            ),
            Run::Idle => self.start_service(sys, s),
            Run::Disabled => warn(sys, &format!("{why}: {s} is not installed")),
        }
    }

    fn request_shutdown(&mut self, sys: &mut dyn System, action: PowerAction, why: &str) {
        if self.phase != Phase::Up {
            info(sys, &format!("{why}: a shutdown is already in progress"));
            return;
        }
        let deadline = sys.boot_time().plus(SOFT_SHUTDOWN_GRACE);
        self.phase = Phase::Requested { action, deadline };
        sys.broadcast(CMD_SHUTDOWN);
        info(sys, &format!("{why}: shutdown ({action}) requested; told the clients of {SOCKET}; waiting up to {} s for 0x02", SOFT_SHUTDOWN_GRACE.as_secs()));
    }

    fn begin_stopping(&mut self, sys: &mut dyn System, action: PowerAction) {
        for s in Service::ALL {
            if let Run::Backoff { .. } = self.svc(s).run {
                self.svc(s).run = Run::Idle;
            }
        }
        self.phase = Phase::Stopping {
            action,
            which: Service::Kubelet,
        };
        self.stop(sys, Service::Kubelet);
        self.advance_shutdown(sys);
    }

    fn stop(&mut self, sys: &mut dyn System, s: Service) {
        if let Run::Running { pid, .. } = self.svc(s).run {
            info(sys, &format!("stopping {s} (TERM to pid {pid})"));
            let _ = sys.signal(pid, libc::SIGTERM);
            let kill_at = sys.boot_time().plus(STOP_GRACE);
            self.svc(s).run = Run::Stopping {
                pid,
                kill_at,
                restart: false,
            };
        }
    }

    /// Moves the shutdown on when its current step is done.
    fn advance_shutdown(&mut self, sys: &mut dyn System) {
        loop {
            match self.phase {
                Phase::Stopping { action, which } => {
                    if self.svc(which).pid().is_some() {
                        return;
                    }
                    if which == Service::Kubelet {
                        self.phase = Phase::Stopping {
                            action,
                            which: Service::Crio,
                        };
                        self.stop(sys, Service::Crio);
                    } else {
                        info(sys, "stopping every other process (TERM)");
                        let _ = sys.signal(-1, libc::SIGTERM);
                        let now = sys.boot_time();
                        self.phase = Phase::KillingAll {
                            action,
                            kill_at: now.plus(KILL_ALL_GRACE),
                            killed: false,
                            check_at: now,
                        };
                    }
                }
                Phase::KillingAll {
                    action,
                    kill_at,
                    killed,
                    ..
                } => {
                    let now = sys.boot_time();
                    // Every process is a descendant of PID 1 (orphans are adopted), so
                    // with no children left, no process is left.
                    if !sys.has_children() {
                        self.finish(sys, action);
                        return;
                    }
                    if !killed && now >= kill_at {
                        warn(
                            sys,
                            &format!(
                                "processes still running after {} s; sending KILL",
                                KILL_ALL_GRACE.as_secs()
                            ),
                        );
                        let _ = sys.signal(-1, libc::SIGKILL);
                        self.phase = Phase::KillingAll {
                            action,
                            kill_at,
                            killed: true,
                            check_at: now.plus(KILL_ALL_POLL),
                        };
                    } else if killed && now >= kill_at.plus(KILL_ALL_GRACE) {
                        warn(
                            sys,
                            "processes survive KILL (blocked in the kernel); going on",
                        );
                        self.finish(sys, action);
                    } else {
                        self.phase = Phase::KillingAll {
                            action,
                            kill_at,
                            killed,
                            check_at: now.plus(KILL_ALL_POLL),
                        };
                    }
                    return;
                }
                _ => return,
            }
        }
    }

    fn finish(&mut self, sys: &mut dyn System, action: PowerAction) {
        self.phase = Phase::Halted;
        shutdown::finish(sys, action);
    }

    /// Acts on the deadlines that passed.
    fn tick(&mut self, sys: &mut dyn System) {
        let now = sys.boot_time();
        let up = self.phase == Phase::Up;
        for s in Service::ALL {
            match self.svc(s).run.clone() {
                Run::Backoff { until } if now >= until && up => {
                    self.svc(s).run = Run::Idle;
                    self.start_service(sys, s);
                }
                Run::Stopping { pid, kill_at, .. } if now >= kill_at => {
                    warn(
                        sys,
                        &format!(
                            "{s} (pid {pid}) did not stop within {} s; sending KILL",
                            STOP_GRACE.as_secs()
                        ),
                    );
                    let _ = sys.signal(pid, libc::SIGKILL);
                    if let Run::Stopping { kill_at, .. } = &mut self.svc(s).run {
                        *kill_at = now.plus(STOP_GRACE);
                    }
                }
                _ => {}
            }
        }
        if self.phase == Phase::Up && !self.socket_ready && self.kubelet.run == Run::Idle {
            if let Some(d) = self.socket_deadline {
                if now >= d {
                    self.socket_ready = true;
                    warn(
                        sys,
                        &format!(
                            "no CRI-O socket after {} s; starting the kubelet anyway",
                            SOCKET_WAIT.as_secs()
                        ),
                    );
                    self.maybe_start_kubelet(sys);
                }
            }
        }
        match self.phase {
            Phase::Requested { action, deadline } if now >= deadline => {
                warn(
                    sys,
                    &format!(
                        "no 0x02 within {} s; continuing the shutdown",
                        SOFT_SHUTDOWN_GRACE.as_secs()
                    ),
                );
                self.begin_stopping(sys, action);
            }
            Phase::KillingAll { check_at, .. } if now >= check_at => self.advance_shutdown(sys),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
