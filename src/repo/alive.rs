//! Proof of life of a backup in progress. A backup has no manifest until it commits, and prune
//! collects what no manifest names once it is older than `--grace`; a backup that runs longer
//! than that without writing (a long volume copy that deduplicates everything, say) would lose
//! its own archive and packs under itself. So the writer stores a small heartbeat object in its
//! folder when it starts and then every `interval`, each a new key (the repository is
//! write-once): `backups/<name>/alive/<interval>s-<seq>`. Prune reads only the keys and their
//! storage times: a folder whose newest heartbeat is younger than three intervals is a backup
//! in progress, whatever `--grace` says, and every pack written since its first heartbeat is
//! spared. A writer that dies stops beating, and its leftovers age out as before.

use std::time::Duration;

use bytes::Bytes;

use super::{BackupName, Layout};
use crate::storage::Writer;

/// How often a running backup proves it is alive.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Heartbeats missed before a backup counts as dead.
pub const MISSED: u32 = 3;

/// The folder of heartbeats inside a backup's folder.
const DIR: &str = "alive/";

/// `backups/<name>/alive/<interval>s-<seq>`
pub fn key(name: &BackupName, interval: Duration, seq: u64) -> String {
    format!(
        "{}{DIR}{}s-{seq:06}",
        Layout::backup_dir(name),
        interval.as_secs().max(1)
    )
}

/// The interval a heartbeat's file name (relative to its backup's folder) declares.
pub fn interval_of(file: &str) -> Option<Duration> {
    let rest = file.strip_prefix(DIR)?;
    let (secs, _) = rest.split_once("s-")?;
    secs.parse().ok().map(Duration::from_secs)
}

/// Beats while it lives; dropping it stops the beating.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes the first heartbeat of backup `name` (before anything else of it), then one every
/// `interval` in the background. A failed beat is logged; the commit's check of every named
/// object stays the safety net.
pub async fn start(
    store: &Writer,
    name: &BackupName,
    interval: Duration,
) -> Result<Heartbeat, crate::storage::StorageError> {
    async fn beat(
        store: &Writer,
        name: &BackupName,
        interval: Duration,
        seq: u64,
    ) -> Result<(), crate::storage::StorageError> {
        let body = Bytes::from(format!(
            "{{\"at\":\"{}\",\"intervalSeconds\":{}}}",
            jiff::Timestamp::now(),
            interval.as_secs()
        ));
        // A beat left by an earlier, killed run of the same name is as good as a new one.
        store
            .put_if_absent(&key(name, interval, seq), body)
            .await
            .map(|_| ())
    }
    beat(store, name, interval, 0).await?;
    let (store, name) = (store.clone(), name.clone());
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await; // immediate: the first beat is written
        for seq in 1.. {
            tick.tick().await;
            if let Err(e) = beat(&store, &name, interval, seq).await {
                tracing::warn!(backup = %name, error = %e, "could not write a heartbeat of the backup in progress");
            }
        }
    });
    Ok(Heartbeat { task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_key_declares_its_interval() {
        let name = BackupName::new("nightly-1").unwrap();
        let k = key(&name, Duration::from_secs(60), 3);
        assert_eq!(k, "backups/nightly-1/alive/60s-000003");
        let file = k.strip_prefix("backups/nightly-1/").unwrap();
        assert_eq!(interval_of(file), Some(Duration::from_secs(60)));
        assert_eq!(interval_of("resources.tar.zst"), None);
        assert_eq!(interval_of("alive/xs-1"), None);
    }
}
