//! The demo's report: what happened, the measured RPO and RTO, and the checks, as JSON for
//! scripts and as text for people.

use std::fmt::Write as _;

use serde::Serialize;

/// One verified property of the restored application.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Stable identifier, e.g. `volume-data`.
    pub id: &'static str,
    /// What was checked, in words.
    pub title: String,
    /// Whether it held.
    pub passed: bool,
    /// What was observed.
    pub detail: String,
}

impl Check {
    /// A check from its outcome.
    pub fn new(
        id: &'static str,
        title: impl Into<String>,
        passed: bool,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            id,
            title: title.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// A backup the demo took.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    /// Its name.
    pub name: String,
    /// `Completed` or `PartiallyFailed`, as `lifeboat backup` reports it.
    pub status: String,
    /// The command's exit code.
    pub exit_code: i32,
    /// Kubernetes objects in it.
    pub objects: u64,
    /// Bytes stored.
    pub size: u64,
    /// When its snapshot began.
    pub started_at: String,
    /// Seconds the command took.
    pub seconds: f64,
    /// Its warnings.
    pub warnings: Vec<String>,
}

/// How the secondary location came to hold the backups.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// `simulated` (a copy between two directories) or `azurite-geo` (Azurite's `-secondary`
    /// endpoint reads the primary's data: replication is immediate).
    pub mode: &'static str,
    /// Objects copied.
    pub objects_copied: usize,
    /// Objects held back, simulating replication lag.
    pub held_back: Vec<String>,
    /// What `lifeboat verify` said per backup on the secondary location.
    pub on_secondary: Vec<OnSecondary>,
    /// In words.
    pub note: String,
}

/// One backup as `lifeboat verify` sees it on the secondary location.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OnSecondary {
    /// The backup.
    pub backup: String,
    /// Every object its manifest names is there: usable as a restore point.
    pub complete: bool,
    /// Objects not (yet) there.
    pub missing: usize,
}

/// The restore.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSummary {
    /// The backup restored.
    pub backup: String,
    /// Newer backups passed over, as the restore reported them.
    pub passed_over: Vec<String>,
    /// The command's exit code.
    pub exit_code: i32,
    /// Objects created.
    pub created: u64,
    /// Objects that failed.
    pub failed: u64,
    /// Seconds the command took.
    pub seconds: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// True if and only if every check passed.
    pub ok: bool,
    /// `local` or `azurite`.
    pub storage: &'static str,
    /// Where the clusters, locations and config live.
    pub workdir: String,
    /// Whether the workdir is left in place (`--keep`, `--workdir`).
    pub kept: bool,
    /// The config file the commands used.
    pub config: String,
    /// `name (zones, service CIDR)` of the primary region.
    pub primary: String,
    /// The same of the secondary region.
    pub secondary: String,
    /// The lifeboat commands run, as a user would type them (in the workdir).
    pub commands: Vec<String>,
    /// The backups.
    pub backups: Vec<BackupSummary>,
    /// The replication step.
    pub replication: Replication,
    /// The restore.
    pub restore: RestoreSummary,
    /// Data lost: from the restored backup's snapshot to the loss of the primary, seconds.
    pub rpo_seconds: f64,
    /// What the RPO cost in this drill: the changes made after the restored backup.
    pub lost: String,
    /// Recovery time: from the start of the restore command until every check passed (or
    /// the checks ended), seconds.
    pub rto_seconds: f64,
    /// Kubernetes objects the restore created.
    pub objects_restored: u64,
    /// Volume bytes in the secondary's restored volume.
    pub bytes_restored: u64,
    /// The checks.
    pub checks: Vec<Check>,
    /// Wall time of the whole demo, seconds.
    pub duration_seconds: f64,
}

pub use crate::units::human_bytes;

impl Report {
    /// The report for people.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nlifeboat demo: region-loss drill ({} storage)",
            self.storage
        );
        let _ = writeln!(s, "  primary   {}  (lost during the drill)", self.primary);
        let _ = writeln!(s, "  secondary {}", self.secondary);
        let _ = writeln!(s, "\nBackups taken in the primary region:");
        for b in &self.backups {
            let _ = writeln!(
                s,
                "  {:<10} {:<16} {:>4} objects  {:>9}  {:.1}s",
                b.name,
                b.status,
                b.objects,
                human_bytes(b.size),
                b.seconds
            );
            for w in &b.warnings {
                let _ = writeln!(s, "             warning: {w}");
            }
        }
        let r = &self.replication;
        let _ = writeln!(
            s,
            "\nReplication to the secondary location ({}): {}",
            r.mode, r.note
        );
        for b in &r.on_secondary {
            let what = if b.complete {
                "complete: a restore point".to_owned()
            } else {
                format!("INCOMPLETE: {} object(s) not yet replicated", b.missing)
            };
            let _ = writeln!(s, "  {:<10} {what}", b.backup);
        }
        let x = &self.restore;
        let _ = writeln!(
            s,
            "\nRestore into {}: backup {} ({} objects created, {} failed, exit {})",
            self.secondary.split(' ').next().unwrap_or_default(),
            x.backup,
            x.created,
            x.failed,
            x.exit_code
        );
        for p in &x.passed_over {
            let _ = writeln!(s, "  passed over {p}");
        }
        let _ = writeln!(
            s,
            "\n  RPO (data lost: restored backup's snapshot → loss of the primary): {:.1}s",
            self.rpo_seconds
        );
        let _ = writeln!(s, "      lost: {}", self.lost);
        let _ = writeln!(
            s,
            "  RTO (restore command → application verified in the secondary):  {:.1}s",
            self.rto_seconds
        );
        let _ = writeln!(
            s,
            "  restored: {} objects, {} of volume data",
            self.objects_restored,
            human_bytes(self.bytes_restored)
        );
        let _ = writeln!(s, "\nChecks:");
        for c in &self.checks {
            let mark = if c.passed { "✔" } else { "✘" };
            let _ = writeln!(s, "  {mark} {}", c.title);
            if !c.passed || c.detail.len() < 100 {
                for line in c.detail.lines() {
                    let _ = writeln!(s, "      {line}");
                }
            }
        }
        let passed = self.checks.iter().filter(|c| c.passed).count();
        let _ = writeln!(
            s,
            "\n{} {passed} of {} checks passed in {:.1}s.",
            if self.ok { "OK:" } else { "FAILED:" },
            self.checks.len(),
            self.duration_seconds,
        );
        if self.kept {
            let _ = writeln!(
                s,
                "The config and the commands' files are in {}",
                self.workdir
            );
        } else {
            let _ = writeln!(
                s,
                "The workdir was removed; `lifeboat demo --workdir DIR` keeps the config it wrote."
            );
        }
        s
    }
}
