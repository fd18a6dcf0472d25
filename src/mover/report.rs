//! What a mover Job reports: one JSON line on stdout at its end. The orchestrator (`backup`,
//! `restore`) reads it back from the pod's log, so the mover needs no API access of its own.

use serde::{Deserialize, Serialize};

use super::{BackupStats, RestoreStats};
use crate::repo::{ObjectEntry, VolumeFigures};

/// The report's version marker: lines without it are log lines, not reports.
const MARKER: u32 = 1;

/// A mover's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReport {
    /// Always 1; distinguishes the report from log lines.
    pub lifeboat_mover: u32,
    /// `backup` or `restore`.
    pub direction: String,
    /// The backup.
    pub backup: String,
    /// `<namespace>/<pvc>` in the backup.
    pub volume: String,
    /// The index written (backup) or read (restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<ObjectEntry>,
    /// Files, bytes and chunks.
    #[serde(flatten)]
    pub figures: VolumeFigures,
    /// Packs uploaded (backup) or bytes fetched from packs (restore: `fetchedBytes`).
    #[serde(default)]
    pub packs_written: u64,
    /// Bytes read from packs (restore).
    #[serde(default)]
    pub fetched_bytes: u64,
    /// Entries not backed up, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

impl JobReport {
    /// The report of a volume backup whose index was stored as `index`.
    pub fn of_backup(backup: &str, volume: &str, index: ObjectEntry, s: &BackupStats) -> Self {
        Self {
            lifeboat_mover: MARKER,
            direction: "backup".into(),
            backup: backup.into(),
            volume: volume.into(),
            index: Some(index),
            figures: VolumeFigures {
                files: s.files,
                bytes: s.bytes_total,
                files_unchanged: s.files_unchanged,
                new_chunks: s.new_chunks,
                new_bytes: s.new_bytes,
                stored_bytes: s.new_stored_bytes,
                reused_chunks: s.reused_chunks,
            },
            packs_written: s.packs_written.len() as u64,
            skipped: s.skipped.clone(),
            seconds: s.seconds,
            ..Self::default()
        }
    }

    /// The report of a volume restore.
    pub fn of_restore(backup: &str, volume: &str, index: ObjectEntry, s: &RestoreStats) -> Self {
        Self {
            lifeboat_mover: MARKER,
            direction: "restore".into(),
            backup: backup.into(),
            volume: volume.into(),
            index: Some(index),
            figures: VolumeFigures {
                files: s.files,
                bytes: s.bytes_written,
                ..VolumeFigures::default()
            },
            fetched_bytes: s.bytes_fetched,
            seconds: s.seconds,
            ..Self::default()
        }
    }

    /// The last report line in a pod's log, if any.
    pub fn find_in_log(log: &str) -> Option<Self> {
        log.lines()
            .rev()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<JobReport>(l).ok())
            .find(|r| r.lifeboat_mover == MARKER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_found_among_log_lines() {
        let r = JobReport::of_restore(
            "b1",
            "shop/data",
            ObjectEntry {
                key: "k".into(),
                size: 1,
                sha256: "00".into(),
            },
            &RestoreStats {
                files: 3,
                ..Default::default()
            },
        );
        let log = format!(
            "restore shop/data: 1 MiB of 2 MiB\n{{\"not\":\"it\"}}\n{}\n",
            serde_json::to_string(&r).unwrap()
        );
        assert_eq!(JobReport::find_in_log(&log), Some(r));
        assert_eq!(
            JobReport::find_in_log("{\"lifeboatMover\":2}\nno report"),
            None
        );
    }
}
