//! Exit codes: the contract with scripts, CronJobs and CI.

/// What `lifeboat` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Everything asked for was done.
    Ok = 0,
    /// The command failed; nothing (or nothing usable) was done.
    Failed = 1,
    /// The command line or the config file is wrong; nothing was done.
    Usage = 2,
    /// Done in part: warnings, or some items failed (the report says which).
    Partial = 3,
    /// Stopped by SIGINT (Ctrl-C) after cleaning up what the run created (128 + 2).
    Interrupted = 130,
    /// Stopped by SIGTERM (eviction, drain) after cleaning up what the run created (128 + 15).
    Terminated = 143,
}

/// Text for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  failed
  2  usage or config error (nothing was done)
  3  partially failed: warnings, or some items failed (see the report)
  130, 143  stopped by SIGINT / SIGTERM (backup, schedule run): the run's temporary objects
            were deleted; the message (or the JSON document) says whether it had committed";

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
