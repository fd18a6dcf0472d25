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
}

/// Text for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  failed
  2  usage or config error (nothing was done)
  3  partially failed: warnings, or some items failed (see the report)";

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
