//! What PID 1 does once the boot sequence is done, for now: reap every child
//! (orphans are re-parented to PID 1 and stay zombies until it waits for them), and
//! never return.
//!
//! Blocks in `waitpid(-1, .., 0)` while there are children; with none (`ECHILD`) it
//! sleeps a second and asks again, so an orphan adopted later is reaped within a
//! second and the loop never spins. Supervising CRI-O and the kubelet (restart with
//! backoff) will grow here; it is not done yet.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::log::{info, warn};
use crate::system::{ChildExit, Errno, System};

/// How long to wait before asking again when there are no children, or after an
/// unexpected error.
pub const IDLE_SLEEP: Duration = Duration::from_secs(1);

/// The outcome of one round of [`reap_once`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaped {
    Child(ChildExit),
    NoChildren,
    Interrupted,
    Failed(Errno),
}

/// Reaps children forever. A panic in a round (there should be none) is logged and
/// the loop goes on.
pub fn reap_forever(sys: &mut dyn System) -> ! {
    loop {
        if catch_unwind(AssertUnwindSafe(|| reap_once(sys))).is_err() {
            warn(sys, "panic while reaping children; continuing");
            sys.sleep(IDLE_SLEEP);
        }
    }
}

/// Waits for one child and logs how it ended; sleeps when there is none.
pub fn reap_once(sys: &mut dyn System) -> Reaped {
    match sys.wait_child() {
        Ok(child) => {
            info(sys, &format!("reaped pid {}: {}", child.pid, child.status));
            Reaped::Child(child)
        }
        Err(Errno(libc::ECHILD)) => {
            sys.sleep(IDLE_SLEEP);
            Reaped::NoChildren
        }
        Err(Errno(libc::EINTR)) => Reaped::Interrupted,
        Err(e) => {
            warn(sys, &format!("waitpid failed: {e}"));
            sys.sleep(IDLE_SLEEP);
            Reaped::Failed(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Call, Recorder};
    use crate::system::ExitStatus;

    #[test]
    fn exited_child_is_logged_with_its_status() {
        let child = ChildExit {
            pid: 42,
            status: ExitStatus::Exited(3),
        };
        let mut rec = Recorder::new().with_children(vec![Ok(child)]);
        assert_eq!(reap_once(&mut rec), Reaped::Child(child));
        assert_eq!(rec.messages(), ["reaped pid 42: exited with status 3"]);
    }

    #[test]
    fn no_children_sleeps_instead_of_spinning() {
        let mut rec = Recorder::new();
        assert_eq!(reap_once(&mut rec), Reaped::NoChildren);
        assert_eq!(rec.calls, [Call::WaitChild, Call::Sleep(IDLE_SLEEP)]);
        assert!(rec.messages().is_empty());
    }

    #[test]
    fn interrupted_wait_is_retried_at_once() {
        let mut rec = Recorder::new().with_children(vec![Err(Errno(libc::EINTR))]);
        assert_eq!(reap_once(&mut rec), Reaped::Interrupted);
        assert_eq!(rec.calls, [Call::WaitChild]);
    }

    #[test]
    fn other_wait_errors_are_logged_and_slept_on() {
        let mut rec = Recorder::new().with_children(vec![Err(Errno(libc::EINVAL))]);
        assert_eq!(reap_once(&mut rec), Reaped::Failed(Errno(libc::EINVAL)));
        assert_eq!(rec.messages(), ["waitpid failed: EINVAL (errno 22)"]);
        assert_eq!(rec.calls.last(), Some(&Call::Sleep(IDLE_SLEEP)));
    }
}
