//! Retention policy: which committed backups a schedule keeps. The policy is data (parsed from a
//! schedule or from `lifeboat prune` flags); deciding what to keep is a pure function of the
//! policy, the backups' times and "now" (see [`RetentionPolicy::keep`]).

use serde::{Deserialize, Serialize};

/// How many backups to keep per period, restic-style, and/or a maximum age. A backup is kept if
/// any rule keeps it. An empty policy keeps everything (prune then only collects garbage).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicy {
    /// The newest N backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// The newest backup of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// The newest backup of each of the last N days that have one (UTC days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// The newest backup of each of the last N ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// The newest backup of each of the last N months that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Every backup younger than this (e.g. "72h", "30d"): jiff's friendly duration format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}
