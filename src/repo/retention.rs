//! Retention policy: which committed backups a schedule keeps. The policy is data (parsed from a
//! schedule or from `lifeboat prune` flags); deciding what to keep is a pure function of the
//! policy, the backups' times and "now" (see [`RetentionPolicy::keep`] and
//! [`RetentionPolicy::decide`]).
//!
//! The rules are restic's `forget` rules: walking the backups newest first, `keepLast` keeps the
//! first N; `keepHourly`/`Daily`/`Weekly`/`Monthly` keep the newest backup of each of the last N
//! periods (UTC hours, UTC days, ISO weeks, months) that have a backup; `ttl` keeps every backup
//! younger than it. A backup kept by any rule is kept. A backup that carries its own expiry
//! (`backup --ttl`, the manifest's `expiresAt`) is decided by that expiry alone: kept until then,
//! deleted after, whatever the rules say. An empty policy keeps every backup without an expiry.

use std::collections::{BTreeSet, HashSet};

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

use super::BackupName;
use crate::units::DurationError;

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

/// A policy that cannot be applied. The message starts with the field's name as written in a
/// schedule (`keepDaily: must be at least 1`), so config errors can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// A `keep*` count of 0: it would keep nothing by that rule, which is never what was meant
    /// (leave the field out instead).
    #[error("{field}: must be at least 1 (leave it out to not use this rule)")]
    ZeroCount {
        /// `keepLast`, `keepHourly`, ...
        field: &'static str,
    },
    /// `ttl` is not a positive duration (the message is the duration's own, after `ttl: `, so
    /// config errors can point at the field; hence no `#[source]`, which would print it twice).
    #[error("ttl: {0}")]
    Ttl(DurationError),
}

/// Why a backup is kept or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Reason {
    /// Kept: one of the newest `keepLast`.
    KeepLast,
    /// Kept: newest of its hour.
    KeepHourly,
    /// Kept: newest of its day.
    KeepDaily,
    /// Kept: newest of its ISO week.
    KeepWeekly,
    /// Kept: newest of its month.
    KeepMonthly,
    /// Kept: younger than `ttl`.
    Ttl,
    /// Kept: the policy has no rule at all.
    EmptyPolicy,
    /// Kept: its own `expiresAt` is in the future.
    NotExpired,
    /// Deleted: its own `expiresAt` has passed.
    Expired,
    /// Deleted: no rule keeps it.
    NoRuleKeeps,
}

/// One committed backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The backup.
    pub name: BackupName,
    /// The time it captures (the manifest's `startedAt`).
    pub time: Timestamp,
    /// Its own expiry (`backup --ttl`), if any.
    pub expires_at: Option<Timestamp>,
}

/// What the policy decided for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The backup.
    pub name: BackupName,
    /// The time it captures.
    pub time: Timestamp,
    /// Kept (true) or to be deleted.
    pub keep: bool,
    /// Every rule that keeps it, or the one reason it goes.
    pub reasons: Vec<Reason>,
}

impl RetentionPolicy {
    /// Returns true if and only if no rule is set (every backup without an expiry is kept).
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.ttl.is_none()
    }

    /// Checks every field; errors name the field as a schedule writes it.
    pub fn validate(&self) -> Result<(), RetentionError> {
        for (field, v) in [
            ("keepLast", self.keep_last),
            ("keepHourly", self.keep_hourly),
            ("keepDaily", self.keep_daily),
            ("keepWeekly", self.keep_weekly),
            ("keepMonthly", self.keep_monthly),
        ] {
            if v == Some(0) {
                return Err(RetentionError::ZeroCount { field });
            }
        }
        self.ttl_duration().map(drop)
    }

    /// `ttl` as a duration (days count as 24 hours), `None` if not set.
    pub fn ttl_duration(&self) -> Result<Option<SignedDuration>, RetentionError> {
        self.ttl.as_deref().map(parse_duration).transpose()
    }

    /// The names of the backups kept, ignoring any per-backup expiry (see [`Self::decide`]).
    pub fn keep(
        &self,
        backups: &[(BackupName, Timestamp)],
        now: Timestamp,
    ) -> Result<BTreeSet<BackupName>, RetentionError> {
        let candidates: Vec<Candidate> = backups
            .iter()
            .map(|(name, time)| Candidate {
                name: name.clone(),
                time: *time,
                expires_at: None,
            })
            .collect();
        Ok(self
            .decide(&candidates, now)?
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.name)
            .collect())
    }

    /// Decides every backup, newest first, with the reasons. Pure: the same input and `now`
    /// give the same answer.
    pub fn decide(
        &self,
        backups: &[Candidate],
        now: Timestamp,
    ) -> Result<Vec<Decision>, RetentionError> {
        self.validate()?;
        let ttl = self.ttl_duration()?;
        let mut sorted: Vec<&Candidate> = backups.iter().collect();
        // Newest first; the name breaks ties so the answer never depends on input order.
        sorted.sort_by(|a, b| (b.time, &b.name).cmp(&(a.time, &a.name)));

        let mut rules: Vec<Bucketed> = [
            (Reason::KeepLast, self.keep_last, Period::Each),
            (Reason::KeepHourly, self.keep_hourly, Period::Hour),
            (Reason::KeepDaily, self.keep_daily, Period::Day),
            (Reason::KeepWeekly, self.keep_weekly, Period::Week),
            (Reason::KeepMonthly, self.keep_monthly, Period::Month),
        ]
        .into_iter()
        .filter_map(|(reason, n, period)| {
            n.map(|n| Bucketed {
                reason,
                left: n,
                period,
                seen: HashSet::new(),
            })
        })
        .collect();

        let mut out = Vec::with_capacity(sorted.len());
        for (i, c) in sorted.into_iter().enumerate() {
            let (keep, reasons) = if let Some(exp) = c.expires_at {
                if exp > now {
                    (true, vec![Reason::NotExpired])
                } else {
                    (false, vec![Reason::Expired])
                }
            } else if self.is_empty() {
                (true, vec![Reason::EmptyPolicy])
            } else {
                let mut reasons = Vec::new();
                for rule in &mut rules {
                    if rule.left == 0 {
                        continue;
                    }
                    // `Each` gives every backup its own bucket (keepLast).
                    let bucket = rule.period.bucket(c.time, i);
                    if rule.seen.insert(bucket) {
                        rule.left -= 1;
                        reasons.push(rule.reason);
                    }
                }
                if ttl.is_some_and(|ttl| now.duration_since(c.time) < ttl) {
                    reasons.push(Reason::Ttl);
                }
                if reasons.is_empty() {
                    (false, vec![Reason::NoRuleKeeps])
                } else {
                    (true, reasons)
                }
            };
            out.push(Decision {
                name: c.name.clone(),
                time: c.time,
                keep,
                reasons,
            });
        }
        Ok(out)
    }
}

/// Parses a duration in the one grammar of [`crate::units::parse_duration`].
pub fn parse_duration(s: &str) -> Result<SignedDuration, RetentionError> {
    crate::units::parse_duration(s).map_err(RetentionError::Ttl)
}

struct Bucketed {
    reason: Reason,
    left: u32,
    period: Period,
    seen: HashSet<(i64, i64)>,
}

#[derive(Clone, Copy)]
enum Period {
    Each,
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    /// The bucket a backup time falls in (UTC calendar); `index` makes each backup its own
    /// bucket for `keepLast`.
    fn bucket(self, t: Timestamp, index: usize) -> (i64, i64) {
        let dt = t.to_zoned(TimeZone::UTC).datetime();
        let date: Date = dt.date();
        let days = i64::from(date.day_of_year()) + i64::from(date.year()) * 1000;
        match self {
            Period::Each => (-1, index as i64),
            Period::Hour => (days, i64::from(dt.hour())),
            Period::Day => (days, 0),
            Period::Week => {
                let w = date.iso_week_date();
                (i64::from(w.year()), i64::from(w.week()))
            }
            Period::Month => (i64::from(date.year()), i64::from(date.month())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn name(s: &str) -> BackupName {
        BackupName::new(s).unwrap()
    }

    /// Backups every 6 hours from 2026-10-01T00:00Z to 2026-11-20T18:00Z (204 of them).
    fn six_hourly() -> Vec<(BackupName, Timestamp)> {
        let mut out = Vec::new();
        let mut t = ts("2026-10-01T00:00:00Z");
        let end = ts("2026-11-20T18:00:00Z");
        while t <= end {
            out.push((name(&format!("b-{}", t.as_second())), t));
            t += SignedDuration::from_hours(6);
        }
        out
    }

    fn kept_times(
        policy: &RetentionPolicy,
        backups: &[(BackupName, Timestamp)],
        now: &str,
    ) -> Vec<String> {
        let kept = policy.keep(backups, ts(now)).unwrap();
        let mut times: Vec<Timestamp> = backups
            .iter()
            .filter(|(n, _)| kept.contains(n))
            .map(|(_, t)| *t)
            .collect();
        times.sort();
        times.into_iter().map(|t| t.to_string()).collect()
    }

    const NOW: &str = "2026-11-20T20:00:00Z";

    #[test]
    fn empty_policy_keeps_everything() {
        let backups = six_hourly();
        let kept = RetentionPolicy::default().keep(&backups, ts(NOW)).unwrap();
        assert_eq!(kept.len(), backups.len());
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let p = RetentionPolicy {
            keep_last: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept_times(&p, &six_hourly(), NOW),
            [
                "2026-11-20T06:00:00Z",
                "2026-11-20T12:00:00Z",
                "2026-11-20T18:00:00Z"
            ]
        );
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_of_the_last_n_days() {
        let p = RetentionPolicy {
            keep_daily: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept_times(&p, &six_hourly(), NOW),
            [
                "2026-11-18T18:00:00Z",
                "2026-11-19T18:00:00Z",
                "2026-11-20T18:00:00Z"
            ]
        );
    }

    #[test]
    fn keep_hourly_counts_only_hours_that_have_a_backup() {
        let p = RetentionPolicy {
            keep_hourly: Some(2),
            ..Default::default()
        };
        // The two newest hours with a backup are 6 hours apart, not the last two clock hours.
        assert_eq!(
            kept_times(&p, &six_hourly(), NOW),
            ["2026-11-20T12:00:00Z", "2026-11-20T18:00:00Z"]
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_and_monthly_calendar_months() {
        let p = RetentionPolicy {
            keep_weekly: Some(2),
            keep_monthly: Some(2),
            ..Default::default()
        };
        // 2026-11-20 is a Friday (ISO week 47); week 46 ends Sunday 2026-11-15. October's
        // newest backup is 2026-10-31T18:00Z.
        assert_eq!(
            kept_times(&p, &six_hourly(), NOW),
            [
                "2026-10-31T18:00:00Z",
                "2026-11-15T18:00:00Z",
                "2026-11-20T18:00:00Z"
            ]
        );
    }

    #[test]
    fn rules_combine_as_a_union() {
        let p = RetentionPolicy {
            keep_last: Some(2),
            keep_daily: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept_times(&p, &six_hourly(), NOW),
            [
                "2026-11-19T18:00:00Z",
                "2026-11-20T12:00:00Z",
                "2026-11-20T18:00:00Z"
            ]
        );
    }

    #[test]
    fn ttl_keeps_backups_younger_than_it() {
        let p = RetentionPolicy {
            ttl: Some("1d".into()),
            ..Default::default()
        };
        // Younger than 24h at 20:00: from 2026-11-19T20:00Z (exclusive of older).
        assert_eq!(
            kept_times(&p, &six_hourly(), NOW),
            [
                "2026-11-20T00:00:00Z",
                "2026-11-20T06:00:00Z",
                "2026-11-20T12:00:00Z",
                "2026-11-20T18:00:00Z"
            ]
        );
    }

    #[test]
    fn own_expiry_decides_whatever_the_rules_say() {
        let p = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let c = |n: &str, t: &str, exp: Option<&str>| Candidate {
            name: name(n),
            time: ts(t),
            expires_at: exp.map(ts),
        };
        let decisions = p
            .decide(
                &[
                    c(
                        "old-pinned",
                        "2026-01-01T00:00:00Z",
                        Some("2027-01-01T00:00:00Z"),
                    ),
                    c(
                        "newest-expired",
                        "2026-11-20T19:00:00Z",
                        Some("2026-11-20T19:30:00Z"),
                    ),
                    c("plain-new", "2026-11-20T18:00:00Z", None),
                    c("plain-old", "2026-11-20T17:00:00Z", None),
                ],
                ts(NOW),
            )
            .unwrap();
        let got: Vec<(&str, bool, Vec<Reason>)> = decisions
            .iter()
            .map(|d| (d.name.as_str(), d.keep, d.reasons.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("newest-expired", false, vec![Reason::Expired]),
                ("plain-new", true, vec![Reason::KeepLast]),
                ("plain-old", false, vec![Reason::NoRuleKeeps]),
                ("old-pinned", true, vec![Reason::NotExpired]),
            ]
        );
        // An empty policy still deletes what has expired.
        let d = RetentionPolicy::default()
            .decide(
                &[c("x", "2026-11-20T19:00:00Z", Some("2026-11-20T19:30:00Z"))],
                ts(NOW),
            )
            .unwrap();
        assert!(!d[0].keep);
    }

    #[test]
    fn decision_does_not_depend_on_input_order() {
        let p = RetentionPolicy {
            keep_daily: Some(5),
            keep_last: Some(4),
            ..Default::default()
        };
        let mut backups = six_hourly();
        let a = p.keep(&backups, ts(NOW)).unwrap();
        backups.reverse();
        backups.swap(3, 70);
        assert_eq!(a, p.keep(&backups, ts(NOW)).unwrap());
    }

    #[test]
    fn validation_names_the_field() {
        let p = RetentionPolicy {
            keep_daily: Some(0),
            ..Default::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "keepDaily: must be at least 1 (leave it out to not use this rule)"
        );
        let p = RetentionPolicy {
            ttl: Some("3x".into()),
            ..Default::default()
        };
        let msg = p.validate().unwrap_err().to_string();
        assert!(msg.starts_with("ttl: \"3x\" is not a duration"), "{msg}");
        let p = RetentionPolicy {
            ttl: Some("1mo".into()),
            ..Default::default()
        };
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .starts_with("ttl: \"1mo\"")
        );
        let p = RetentionPolicy {
            ttl: Some("0s".into()),
            ..Default::default()
        };
        assert_eq!(
            p.validate().unwrap_err().to_string(),
            "ttl: \"0s\" must be positive"
        );
        for ok in ["72h", "30d", "1h30m", "2 weeks", "90m"] {
            let p = RetentionPolicy {
                ttl: Some(ok.into()),
                ..Default::default()
            };
            assert!(p.validate().is_ok(), "{ok}");
        }
        assert_eq!(
            parse_duration("30d").unwrap(),
            SignedDuration::from_hours(720)
        );
    }

    #[test]
    fn serde_shape_is_camel_case() {
        let p: RetentionPolicy =
            serde_json::from_str(r#"{"keepLast":3,"keepDaily":7,"ttl":"30d"}"#).unwrap();
        assert_eq!(p.keep_last, Some(3));
        assert_eq!(p.keep_daily, Some(7));
        assert!(serde_json::from_str::<RetentionPolicy>(r#"{"keep_last":3}"#).is_err());
    }
}
