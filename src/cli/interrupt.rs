//! SIGINT and SIGTERM during a command that creates objects in a cluster. Ctrl-C at a terminal,
//! and SIGTERM when a node drains or evicts the CronJob's pod, must not leave snapshots, claims
//! and Jobs behind, nor end without a word: the command stops its work, cleans up what this run
//! created, says what was committed, and exits 130 (SIGINT) or 143 (SIGTERM), as a shell does.

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::Exit;

/// Which signal stopped the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (eviction, drain, `kubectl delete pod`, `timeout`).
    Terminate,
}

impl Stop {
    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }

    /// The exit code a shell reports for a process killed by it.
    pub fn exit(self) -> Exit {
        match self {
            Stop::Interrupt => Exit::Interrupted,
            Stop::Terminate => Exit::Terminated,
        }
    }
}

/// Handlers for both signals, installed from now on (a signal before this kills the process
/// the default way: nothing was created yet).
pub struct Signals {
    int: Option<Signal>,
    term: Option<Signal>,
}

impl Signals {
    /// Installs the handlers. One that cannot be installed is logged and never fires.
    pub fn install() -> Self {
        let install = |kind| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle a signal; it kills the process as usual");
                None
            }
        };
        Self {
            int: install(SignalKind::interrupt()),
            term: install(SignalKind::terminate()),
        }
    }

    /// Resolves once either signal arrives.
    pub async fn received(&mut self) -> Stop {
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.int) => Stop::Interrupt,
            _ = next(&mut self.term) => Stop::Terminate,
        }
    }
}
