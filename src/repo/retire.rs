//! Repacking forward, within the write-once format: a pack mostly made of garbage (chunks no
//! remaining backup uses) is *retired* with a marker `retired/<pack id>`. Backups taken after
//! that do not reference it: the mover drops files touching it from the parent index, so their
//! live chunks are read and stored again in new packs. Once the last backup that references the
//! retired pack expires, prune deletes the pack (and this pass its marker). No object is ever
//! rewritten, and a backup in progress that still references a retired pack stays valid.
//!
//! This pass runs only as the last step of a garbage-collection run ([`super::prune()`]), under
//! the same prune lock: it writes and deletes markers, and a second pruner judging packs from
//! a listing the first one is changing would retire or clear the wrong ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use serde::Serialize;

use super::index::{Flow, IndexError, IndexEvent, IndexHeader, IndexVisitor, read_index};
use super::lock::{LockError, PruneLock};
use super::{Layout, PackId, RepoError, RepoReader};
use crate::storage::{StorageError, Writer};

type Result<T, E = RetireError> = std::result::Result<T, E>;

/// Why retiring sparse packs failed.
#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    /// The prune lock was lost: no marker is written or deleted after that.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The repository could not be read.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A volume index read to judge the packs does not parse.
    #[error("judging packs for repacking: the volume index {key} does not parse")]
    Index {
        /// The index.
        key: String,
        /// Why.
        #[source]
        source: IndexError,
    },
}

/// The steps of a garbage-collection run at which [`super::PruneOptions::hook`] is called, each with
/// the prune lock held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcPhase {
    /// Sparse packs are about to be retired (markers written).
    Retiring,
    /// Markers of packs that are gone are about to be deleted.
    ClearingMarkers,
}

/// Called at each [`GcPhase`] and awaited before the run goes on: a seam for tests that must
/// observe the lock while a step runs, without sleeping.
#[derive(Clone)]
pub struct PhaseHook(Arc<dyn Fn(GcPhase) -> BoxFuture<'static, ()> + Send + Sync>);

impl PhaseHook {
    /// A hook calling `f`.
    pub fn new(f: impl Fn(GcPhase) -> BoxFuture<'static, ()> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) async fn call(&self, phase: GcPhase) {
        (self.0)(phase).await
    }
}

impl std::fmt::Debug for PhaseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhaseHook")
    }
}

/// How sparse a pack must be to be retired.
#[derive(Debug, Clone)]
pub struct RetireOptions {
    /// Fraction of a pack's bytes that are garbage at or above which it is retired.
    pub garbage_threshold: f64,
    /// Only packs last modified before this (older than prune's grace period) are judged: a
    /// young pack may belong to a backup in progress whose manifest does not list it yet.
    pub cutoff: jiff::Timestamp,
    /// Report only.
    pub dry_run: bool,
}

/// What a pass found.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetireReport {
    /// Referenced packs judged.
    pub packs_judged: u64,
    /// Packs retired now (or, in a dry run, to retire).
    pub retired: u64,
    /// Their garbage bytes: what is freed once their backups expire.
    pub garbage_bytes: u64,
    /// Packs retired earlier, still referenced.
    pub already_retired: u64,
    /// Markers deleted because their pack is gone.
    pub markers_cleared: u64,
}

/// Judges every referenced pack older than the cutoff and retires the sparse ones; clears
/// markers of packs that are gone. Reads every committed backup's volume indexes. Every write
/// and delete first checks that `lock` is still held (none in a dry run, which writes nothing).
pub(crate) async fn retire_sparse_packs(
    store: &Writer,
    opts: &RetireOptions,
    lock: Option<&PruneLock>,
    hook: Option<&PhaseHook>,
) -> Result<RetireReport> {
    let repo = RepoReader::open(store.reader()).await?;
    let listings = repo.list_backups().await?;
    // Pack key → (offsets of distinct live chunks, their stored bytes).
    let mut live: HashMap<String, (HashSet<u32>, u64)> = HashMap::new();
    for l in &listings {
        let m = &l.manifest;
        for v in m.volumes() {
            if v.index.is_none() {
                continue;
            }
            // Streamed from a local copy: an index of a large volume is gigabytes.
            let local = match repo.volume_index(m, &v.namespace, &v.pvc).await {
                Ok(l) => l,
                // Not (or no longer) there: it keeps no pack alive.
                Err(RepoError::MissingObject { .. } | RepoError::NoSuchVolume { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let index_err = |source| RetireError::Index {
                key: local.entry.key.clone(),
                source,
            };
            let file =
                std::fs::File::open(local.path()).map_err(|e| index_err(IndexError::Io(e)))?;
            let mut tally = Tally {
                keys: Vec::new(),
                live: &mut live,
            };
            read_index(std::io::BufReader::new(file), &mut tally).map_err(index_err)?;
        }
    }
    let retired = repo.retired_packs().await?;
    if let Some(hook) = hook {
        hook.call(GcPhase::Retiring).await;
    }
    let mut report = RetireReport::default();
    let mut present: HashSet<PackId> = HashSet::new();
    let mut packs = store.list(Layout::PACKS);
    while let Some(meta) = packs.try_next().await? {
        let Some(id) = Layout::pack_of(&meta.key) else {
            continue; // not a pack of this format: nothing to judge
        };
        present.insert(id.clone());
        let Some((_, live_bytes)) = live.get(&meta.key) else {
            continue; // unreferenced: prune's business
        };
        if meta.last_modified.is_none_or(|t| t >= opts.cutoff) || meta.size == 0 {
            continue;
        }
        report.packs_judged += 1;
        if retired.contains(&id) {
            report.already_retired += 1;
            continue;
        }
        let garbage = meta.size.saturating_sub(*live_bytes);
        if garbage as f64 / meta.size as f64 >= opts.garbage_threshold {
            report.retired += 1;
            report.garbage_bytes += garbage;
            if !opts.dry_run {
                check(lock)?;
                let body = serde_json::json!({"size": meta.size, "liveBytes": live_bytes, "at": jiff::Timestamp::now()});
                store
                    .put_if_absent(&Layout::retired(&id), bytes::Bytes::from(body.to_string()))
                    .await?;
                tracing::info!(pack = %meta.key, garbage, size = meta.size, "pack retired");
            }
        }
    }
    if let Some(hook) = hook {
        hook.call(GcPhase::ClearingMarkers).await;
    }
    for id in retired.difference(&present) {
        report.markers_cleared += 1;
        if !opts.dry_run {
            check(lock)?;
            store.delete(&Layout::retired(id)).await?;
        }
    }
    Ok(report)
}

/// Adds each chunk reference of an index to its pack's live bytes (each stored chunk once).
struct Tally<'a> {
    keys: Vec<String>,
    live: &'a mut HashMap<String, (HashSet<u32>, u64)>,
}

fn check(lock: Option<&PruneLock>) -> Result<(), LockError> {
    lock.map_or(Ok(()), PruneLock::check)
}

impl IndexVisitor for Tally<'_> {
    type Error = IndexError;
    fn header(&mut self, h: &IndexHeader) -> Result<Flow, IndexError> {
        self.keys = h.packs.iter().map(|p| p.key()).collect();
        Ok(Flow::Continue)
    }
    fn event(&mut self, e: IndexEvent) -> Result<(), IndexError> {
        if let IndexEvent::Chunk(c) = e
            && let Some(key) = self.keys.get(c.pack as usize)
        {
            let slot = self.live.entry(key.clone()).or_default();
            if slot.0.insert(c.offset) {
                slot.1 += u64::from(c.length);
            }
        }
        Ok(())
    }
}
