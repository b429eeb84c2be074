use super::*;
use crate::system::record::{Call, Recorder, Step};
use crate::system::ChildExit;

const CRIO_PID: i32 = 100;
const KUBELET_PID: i32 = 101;

fn installed() -> Recorder {
    Recorder::new().with_file(CRIO, b"").with_file(KUBELET, b"")
}

/// Starts the supervisor, then runs `steps` rounds of its loop.
fn supervise(rec: Recorder, rounds: usize) -> Recorder {
    let mut rec = rec;
    let mut sup = Supervisor::new(vec!["--crio-flag".into()]);
    sup.start(&mut rec);
    for _ in 0..rounds {
        sup.step(&mut rec);
    }
    rec
}

fn socket() -> Step {
    Step::Events(vec![Event::FileAppeared(CRIO_SOCKET.into())])
}

fn programs(rec: &Recorder) -> Vec<&str> {
    rec.spawned().iter().map(|s| s.program.as_str()).collect()
}

fn signals(rec: &Recorder) -> Vec<(i32, i32)> {
    rec.calls
        .iter()
        .filter_map(|c| match c {
            Call::Signal(p, s) => Some((*p, *s)),
            _ => None,
        })
        .collect()
}

#[test]
fn crio_starts_first_and_the_kubelet_once_its_socket_appears() {
    let rec = supervise(installed().with_script(vec![socket()]), 1);
    assert_eq!(programs(&rec), [CRIO, KUBELET]);
    let crio = rec.spawned()[0];
    assert_eq!(crio.args, ["--crio-flag"]);
    assert_eq!(crio.log, "/var/log/kios/crio.log");
    assert_eq!(rec.spawned()[1].log, "/var/log/kios/kubelet.log");
    assert!(rec
        .calls
        .contains(&Call::WatchDir("/var/run/crio".into(), WatchKind::Created)));
    assert!(rec.calls.contains(&Call::StartEvents(SOCKET.into())));
    assert!(rec
        .messages()
        .iter()
        .any(|m| m.starts_with("kubelet started (pid 101)")));
}

#[test]
fn the_kubelet_waits_for_the_socket_at_most_the_bound() {
    let rec = supervise(installed(), 1);
    assert_eq!(programs(&rec), [CRIO, KUBELET]);
    assert!(rec.calls.iter().any(|c| matches!(c, Call::NextEvents(Some(d)) if *d <= SOCKET_WAIT && *d > SOCKET_WAIT - Duration::from_millis(10))));
    assert!(rec
        .messages()
        .contains(&"no CRI-O socket after 30 s; starting the kubelet anyway"));
}

#[test]
fn missing_crio_binary_is_logged_and_the_kubelet_starts_without_it() {
    let rec = supervise(Recorder::new().with_file(KUBELET, b""), 0);
    assert_eq!(programs(&rec), [KUBELET]);
    assert!(rec
        .messages()
        .contains(&"crio: /usr/bin/crio is missing; crio is not started"));
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let delays: Vec<u128> = (1..=6).map(|n| backoff(n).as_millis()).collect();
    assert_eq!(delays, [500, 1000, 2000, 4000, 4000, 4000]);
}

#[test]
fn a_crashing_kubelet_is_restarted_with_growing_delays() {
    // Each crash at once after its start.
    let mut steps = vec![socket()];
    for i in 0..4 {
        steps.push(Step::Exit(KUBELET_PID + i, 1));
        steps.push(Step::Timeout);
    }
    let rec = supervise(installed().with_script(steps), 9);
    assert_eq!(
        programs(&rec),
        [CRIO, KUBELET, KUBELET, KUBELET, KUBELET, KUBELET]
    );
    let waits: Vec<Duration> = rec
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::NextEvents(Some(d)) if *d < Duration::from_secs(10) => Some(*d),
            _ => None,
        })
        .collect();
    let ms: Vec<u128> = waits.iter().map(|d| (d.as_micros() + 500) / 1000).collect();
    // The recorder's clock moves 1.25 ms per reading, so the waits are a bit short.
    assert!(
        ms.iter()
            .zip([500, 1000, 2000, 4000])
            .all(|(got, want)| *got <= want && *got + 10 >= want),
        "{ms:?}"
    );
    let m = rec.messages();
    assert!(
        m.contains(&"restarting kubelet in 4000 ms (failure 4 in a row)"),
        "{m:?}"
    );
    assert!(m.contains(&"kubelet| STANDIN pid 101 says bye"));
}

#[test]
fn a_stable_run_resets_the_backoff() {
    let steps = vec![
        socket(),
        Step::Exit(KUBELET_PID, 1),
        Step::Timeout,
        Step::After(STABLE_AFTER, vec![]),
        Step::Exit(KUBELET_PID + 1, 2),
    ];
    let rec = supervise(installed().with_script(steps), 5);
    let m = rec.messages();
    assert_eq!(
        m.iter()
            .filter(|l| **l == "restarting kubelet in 500 ms (failure 1 in a row)")
            .count(),
        2,
        "{m:?}"
    );
}

#[test]
fn crio_is_restarted_too() {
    let rec = supervise(
        installed().with_script(vec![socket(), Step::Exit(CRIO_PID, 1), Step::Timeout]),
        3,
    );
    assert_eq!(programs(&rec), [CRIO, KUBELET, CRIO]);
}

#[test]
fn kubeconfig_appearing_restarts_the_kubelet_with_it() {
    let steps = vec![
        socket(),
        Step::File(KUBECONFIG.into(), b"apiVersion: v1\n".to_vec()),
        Step::Exit(KUBELET_PID, 0),
    ];
    let rec = supervise(installed().with_script(steps), 3);
    assert_eq!(signals(&rec), [(KUBELET_PID, libc::SIGTERM)]);
    let kubelets: Vec<_> = rec
        .spawned()
        .into_iter()
        .filter(|s| s.program == KUBELET)
        .collect();
    assert_eq!(kubelets.len(), 2);
    assert!(!kubelets[0].args.contains(&"--kubeconfig".to_owned()));
    assert!(kubelets[1]
        .args
        .windows(2)
        .any(|w| w == ["--kubeconfig", KUBECONFIG]));
}

#[test]
fn kubeconfig_rewritten_by_a_bootstrapping_kubelet_does_not_restart_it() {
    let steps = vec![socket(), Step::File(KUBECONFIG.into(), b"x".to_vec())];
    let rec = supervise(
        installed()
            .with_file(BOOTSTRAP_KUBECONFIG, b"x")
            .with_script(steps),
        2,
    );
    assert!(signals(&rec).is_empty());
}

#[test]
fn restart_commands_restart_the_right_service() {
    let steps = vec![
        socket(),
        Step::Events(vec![Event::Command(CMD_RESTART_KUBELET)]),
        Step::Exit(KUBELET_PID, 0),
        Step::Events(vec![Event::Command(CMD_RESTART_CRIO)]),
        Step::Exit(CRIO_PID, 0),
    ];
    let rec = supervise(installed().with_script(steps), 5);
    assert_eq!(
        signals(&rec),
        [(KUBELET_PID, libc::SIGTERM), (CRIO_PID, libc::SIGTERM)]
    );
    assert_eq!(programs(&rec), [CRIO, KUBELET, KUBELET, CRIO]);
}

#[test]
fn shutdown_broadcasts_waits_for_continue_then_stops_in_order() {
    let steps = vec![
        socket(),
        Step::Events(vec![Event::Command(CMD_SHUTDOWN)]),
        Step::Events(vec![Event::Command(CMD_CONTINUE)]),
        Step::Exit(KUBELET_PID, 0),
        Step::Exit(CRIO_PID, 0),
    ];
    let rec = supervise(
        installed()
            .with_file("/proc/self/mounts", b"x /var/lib/kios/data ext4 rw 0 0\n")
            .with_script(steps),
        5,
    );
    let order: Vec<String> = rec
        .actions()
        .into_iter()
        .filter_map(|c| match c {
            Call::Broadcast(b) => Some(format!("broadcast {b}")),
            Call::Signal(p, s) => Some(format!("kill {p} {s}")),
            Call::Umount(t, _) => Some(format!("umount {t}")),
            Call::Sync => Some("sync".into()),
            Call::Power(a) => Some(format!("{a}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        [
            "broadcast 1",
            "kill 101 15",
            "kill 100 15",
            "kill -1 15",
            "sync",
            "umount /var/lib/kios/data",
            "sync",
            "power off"
        ]
    );
}

#[test]
fn sigint_reboots_after_the_grace_period_and_kills_what_will_not_stop() {
    let steps = vec![
        socket(),
        Step::Events(vec![Event::Signal(libc::SIGINT)]),
        Step::Timeout, // the soft-shutdown grace passes: TERM to the kubelet
        Step::Timeout, // the kubelet ignores TERM: KILL
        Step::Exit(KUBELET_PID, 0),
        Step::Exit(CRIO_PID, 0),
    ];
    let rec = supervise(installed().with_script(steps), 6);
    let s = signals(&rec);
    assert_eq!(
        &s[..4],
        [
            (KUBELET_PID, libc::SIGTERM),
            (KUBELET_PID, libc::SIGKILL),
            (CRIO_PID, libc::SIGTERM),
            (-1, libc::SIGTERM)
        ]
    );
    assert_eq!(
        rec.calls.last().map(|c| matches!(c, Call::Log(_))),
        Some(true)
    );
    assert!(rec.calls.contains(&Call::Power(PowerAction::Reboot)));
}

#[test]
fn no_restart_during_a_shutdown_and_orphans_are_just_logged() {
    let steps = vec![
        socket(),
        Step::Events(vec![Event::ChildExited {
            exit: ChildExit {
                pid: 555,
                status: ExitStatus::Exited(0),
            },
            last_lines: vec![],
        }]),
        Step::Events(vec![
            Event::Signal(libc::SIGTERM),
            Event::Command(CMD_CONTINUE),
        ]),
        Step::Exit(KUBELET_PID, 1),
        Step::Timeout,
    ];
    let rec = supervise(installed().with_script(steps), 5);
    assert_eq!(programs(&rec), [CRIO, KUBELET]);
    assert!(rec
        .messages()
        .contains(&"reaped pid 555: exited with status 0"));
}

#[test]
fn unknown_command_bytes_and_a_stray_continue_are_ignored() {
    let steps = vec![
        socket(),
        Step::Events(vec![Event::Command(0x7f), Event::Command(CMD_CONTINUE)]),
    ];
    let rec = supervise(installed().with_script(steps), 2);
    let m = rec.messages();
    assert!(m.contains(&"unknown command byte 0x7f on /run/system.sock; ignored"));
    assert!(m.contains(&"0x02 without a shutdown in progress; ignored"));
    assert!(signals(&rec).is_empty());
}

/// The kubelet's starts: their index among the recorded calls.
fn kubelet_spawns(rec: &Recorder) -> Vec<usize> {
    rec.calls
        .iter()
        .enumerate()
        .filter_map(|(i, c)| matches!(c, Call::Spawn(s) if s.program == KUBELET).then_some(i))
        .collect()
}

/// Where the `n`th (from 0) CRI-O socket event was handed to the supervisor: the
/// index of the `next_events` call that returned it.
fn socket_event(rec: &Recorder, script: &[Step], n: usize) -> usize {
    let rounds: Vec<usize> = rec
        .calls
        .iter()
        .enumerate()
        .filter_map(|(i, c)| matches!(c, Call::NextEvents(_)).then_some(i))
        .collect();
    let step = script
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            matches!(s, Step::Events(e) if e.contains(&Event::FileAppeared(CRIO_SOCKET.into())))
        })
        .nth(n)
        .map(|(i, _)| i)
        .unwrap_or(usize::MAX);
    rounds.get(step).copied().unwrap_or(usize::MAX)
}

#[test]
fn after_0x04_a_kubelet_restart_waits_for_the_new_crio_socket() {
    // 0x04 and 0x03 at once: both stop; CRI-O is started again at once, and the
    // kubelet only once the new CRI-O's socket appears.
    let script = vec![
        socket(),
        Step::Events(vec![
            Event::Command(CMD_RESTART_CRIO),
            Event::Command(CMD_RESTART_KUBELET),
        ]),
        Step::Exit(CRIO_PID, 0),
        Step::Exit(KUBELET_PID, 0),
        socket(),
    ];
    let rec = supervise(installed().with_script(script.clone()), script.len());
    assert_eq!(programs(&rec), [CRIO, KUBELET, CRIO, KUBELET]);
    let starts = kubelet_spawns(&rec);
    let socket_again = socket_event(&rec, &script, 1);
    assert!(starts[1] > socket_again, "{:?}", rec.calls);
    let m = rec.messages();
    assert!(m.contains(&"the kubelet waits for CRI-O's socket"), "{m:?}");
    assert_eq!(
        m.iter()
            .filter(|l| **l == "CRI-O socket /var/run/crio/crio.sock is ready")
            .count(),
        2,
        "{m:?}"
    );
}

#[test]
fn a_crio_restart_alone_leaves_a_running_kubelet_alone() {
    let script = vec![
        socket(),
        Step::Events(vec![Event::Command(CMD_RESTART_CRIO)]),
        Step::Exit(CRIO_PID, 0),
        socket(),
    ];
    let rec = supervise(installed().with_script(script.clone()), script.len());
    assert_eq!(programs(&rec), [CRIO, KUBELET, CRIO]);
    assert_eq!(signals(&rec), [(CRIO_PID, libc::SIGTERM)]);
}

#[test]
fn a_kubelet_crashing_while_crio_is_down_is_restarted_only_after_the_socket() {
    // CRI-O crashes (restart in 500 ms); the kubelet crashes too; both backoffs
    // pass: CRI-O is started again, the kubelet waits for its socket.
    let script = vec![
        socket(),
        Step::Exit(CRIO_PID, 1),
        Step::Exit(KUBELET_PID, 1),
        Step::Timeout,
        Step::Timeout,
        socket(),
    ];
    let rec = supervise(installed().with_script(script.clone()), script.len());
    assert_eq!(programs(&rec), [CRIO, KUBELET, CRIO, KUBELET]);
    let starts = kubelet_spawns(&rec);
    assert!(
        starts[1] > socket_event(&rec, &script, 1),
        "{:?}",
        rec.calls
    );
}

#[test]
fn a_socket_event_of_a_crio_that_has_exited_does_not_count() {
    // CRI-O creates its socket and dies in the same round: the event is stale, so
    // the crashed kubelet is not started before the next CRI-O's socket.
    let script = vec![
        socket(),
        Step::Exit(KUBELET_PID, 1),
        Step::Events(vec![
            Event::ChildExited {
                exit: ChildExit {
                    pid: CRIO_PID,
                    status: ExitStatus::Exited(1),
                },
                last_lines: vec![],
            },
            Event::FileAppeared(CRIO_SOCKET.into()),
        ]),
        Step::Timeout,
        Step::Timeout,
    ];
    let rec = supervise(installed().with_script(script.clone()), script.len());
    assert_eq!(programs(&rec), [CRIO, KUBELET, CRIO]);
    assert!(rec
        .messages()
        .contains(&"the kubelet waits for CRI-O's socket"));
}

#[test]
fn a_restarted_crio_that_never_makes_its_socket_holds_the_kubelet_at_most_the_bound() {
    let script = vec![
        socket(),
        Step::Events(vec![
            Event::Command(CMD_RESTART_CRIO),
            Event::Command(CMD_RESTART_KUBELET),
        ]),
        Step::Exit(CRIO_PID, 0),
        Step::Exit(KUBELET_PID, 0),
    ];
    // Then every round times out: the next deadline is the socket bound.
    let rec = supervise(installed().with_script(script), 6);
    assert_eq!(programs(&rec), [CRIO, KUBELET, CRIO, KUBELET]);
    let m = rec.messages();
    assert!(
        m.contains(&"no CRI-O socket after 30 s; starting the kubelet anyway"),
        "{m:?}"
    );
    let waited = rec.calls.iter().any(
        |c| matches!(c, Call::NextEvents(Some(d)) if *d > SOCKET_WAIT - Duration::from_millis(50)),
    );
    assert!(waited, "{:?}", rec.calls);
}

#[test]
fn held_for_a_refused_store_neither_service_starts_even_when_asked_but_the_socket_listens() {
    let mut rec = installed().with_script(vec![
        socket(),
        Step::Timeout,
        Step::Timeout,
        Step::Events(vec![Event::Command(kios_contract::socket::RESTART_CRIO)]),
    ]);
    let mut sup = Supervisor::new(vec![]);
    sup.hold("the store failed verification");
    sup.start(&mut rec);
    for _ in 0..4 {
        sup.step(&mut rec);
    }
    assert!(programs(&rec).is_empty(), "{:?}", programs(&rec));
    assert!(rec.calls.contains(&Call::StartEvents(SOCKET.into())));
    assert!(rec
        .messages()
        .contains(&"crio is not started: the store failed verification"));
    assert!(rec
        .messages()
        .contains(&"kubelet is not started: the store failed verification"));
}
