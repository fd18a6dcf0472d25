//! Simulated replication between two local locations, as Azure replicates (RA-GRS, object
//! replication): object by object, in no particular order, and lagging, so that a newer backup
//! can be visible on the secondary side (its manifest arrived) but not complete.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use futures::TryStreamExt;

use super::DemoError;
use super::report::Replication;
use crate::repo::{BackupName, RepoReader};
use crate::storage::local::LocalBackend;
use crate::storage::{Reader, Writer};

/// A small deterministic shuffle (xorshift), so a run can be replayed.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Copies every object of `from` for which `keep` holds to `to`, in a random order (seeded, so
/// an order can be replayed), as Azure replicates: no ordering guarantee. Returns how many; an
/// error names the key.
pub async fn copy_shuffled(
    from: &Reader,
    to: &Writer,
    seed: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<usize, (String, crate::storage::StorageError)> {
    let mut keys: Vec<String> = from
        .list("")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .map_err(|e| (String::new(), e))?;
    keys.retain(|k| keep(k));
    shuffle(&mut keys, seed | 1);
    for k in &keys {
        let bytes = from.get(k).await.map_err(|e| (k.clone(), e))?;
        to.put_if_absent(k, bytes)
            .await
            .map_err(|e| (k.clone(), e))?;
    }
    Ok(keys.len())
}

/// Copies every object of `from` to `to` except about half of the objects only `newer` needs
/// (never its manifest, which arrives first here to show that a manifest alone does not make
/// a restore point).
pub(super) async fn lagging(
    from: &Path,
    to: &Path,
    older: &str,
    newer: &str,
) -> Result<Replication, DemoError> {
    let reader = Reader::new(Arc::new(LocalBackend::new(from)));
    let writer = Writer::new(Arc::new(LocalBackend::new(to)));
    let repo = RepoReader::open(reader.clone())
        .await
        .map_err(DemoError::Repo)?;
    let name = |n: &str| BackupName::new(n).map_err(|e| DemoError::Unexpected(e.to_string()));
    let m_old = repo
        .manifest(&name(older)?)
        .await
        .map_err(DemoError::Repo)?;
    let m_new = repo
        .manifest(&name(newer)?)
        .await
        .map_err(DemoError::Repo)?;
    let needed_by_older: BTreeSet<&str> = m_old
        .objects
        .iter()
        .chain(&m_old.packs)
        .map(|o| o.key.as_str())
        .collect();
    let only_newer: BTreeSet<&str> = m_new
        .objects
        .iter()
        .chain(&m_new.packs)
        .map(|o| o.key.as_str())
        .filter(|k| !needed_by_older.contains(k))
        .collect();
    // Every other one, starting with the first: at least one is held back.
    let held: BTreeSet<String> = only_newer
        .iter()
        .step_by(2)
        .map(|k| (*k).to_owned())
        .collect();

    let copied = copy_shuffled(&reader, &writer, 0x5eed_1a66, |k| !held.contains(k))
        .await
        .map_err(|(key, source)| DemoError::Replicate { key, source })?;
    Ok(Replication {
        mode: "simulated",
        objects_copied: copied,
        note: format!(
            "{} objects copied in random order; {} of the {} objects only {newer} needs held back (its manifest arrived), as RA-GRS lag would",
            copied,
            held.len(),
            only_newer.len()
        ),
        held_back: held.into_iter().collect(),
        on_secondary: Vec::new(),
    })
}
