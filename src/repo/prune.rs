//! Retention and garbage collection (`lifeboat prune`): plan, then execute, under the pruner
//! lock.
//!
//! Order, each step safe to interrupt (see `docs/FORMAT.md`, "Prune"):
//! 1. Backups the policy no longer keeps: the manifest first (the backup stops existing for
//!    readers), then the rest of its folder. An interruption leaves a manifest-less folder,
//!    which step 2 of a later run removes.
//! 2. Leftovers of backups that never committed (a folder without a manifest) whose newest
//!    object is older than the grace period.
//! 3. Packs no committed backup references and older than the grace period. A backup in progress
//!    has no manifest yet but proves it is alive ([`super::alive`]): the packs written since its
//!    first heartbeat are spared however long it runs, and the old packs it deduplicates against
//!    belong to its parent, which this run either keeps or, if a backup is visibly in progress,
//!    keeps the packs of until a later run. Its folder is never a leftover while it beats.
//! 4. Repacking forward ([`super::retire`]): packs now mostly garbage are retired with a marker,
//!    and markers of packs that are gone are deleted. Still under the lock: this step writes
//!    and deletes too, and judges packs from a listing another pruner would be changing.
//!
//! Memory: one entry per backup folder and the set of referenced pack keys; pack listings are
//! streamed and deleted in batches.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::lock::{LockError, LockOptions, PruneLock};
use super::retention::{Candidate, Decision, RetentionError, RetentionPolicy};
use super::retire::{PhaseHook, RetireError, RetireOptions, RetireReport, retire_sparse_packs};
use super::{BackupName, Layout, Manifest, RepoError, RepoReader};
use crate::storage::{ObjectMeta, StorageError, Writer};

/// Pack keys kept in the report, so a dry run over 100k garbage packs stays readable.
pub const MAX_LISTED_PACKS: usize = 1000;
const READ_CONCURRENCY: usize = 16;

/// Which committed backups the policy applies to; the others are kept untouched (their packs
/// stay referenced). `schedule run` selects its own backups so that one schedule's retention
/// never deletes another's, or a CI backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSelector {
    /// Only backups whose name starts with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Only backups that carry every one of these labels with these values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl BackupSelector {
    /// Returns true if the manifest is one the policy applies to.
    pub fn matches(&self, m: &Manifest) -> bool {
        self.name_prefix
            .as_deref()
            .is_none_or(|p| m.name.as_str().starts_with(p))
            && self.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v))
    }
}

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Objects younger than this are never deleted as garbage (they may belong to a backup in
    /// progress). Default 24 h.
    pub grace: Duration,
    /// Plan and report only: take no lock, delete nothing.
    pub dry_run: bool,
    /// The pruner lock.
    pub lock: LockOptions,
    /// Which backups the policy applies to.
    pub select: BackupSelector,
    /// The storage's current time, against which object ages are measured; default: this
    /// machine's clock. Object times are set by the storage's clock, not by the retention
    /// clock `now` given to [`prune`] (which a schedule may fake), so they are kept apart.
    pub storage_now: Option<Timestamp>,
    /// Deletes in flight at once.
    pub concurrency: usize,
    /// Fraction of a referenced pack's bytes that are garbage at or above which it is retired.
    pub repack_threshold: f64,
    /// Called at each step of the run (tests).
    pub hook: Option<PhaseHook>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(24 * 3600),
            dry_run: false,
            lock: LockOptions::default(),
            select: BackupSelector::default(),
            storage_now: None,
            concurrency: 16,
            repack_threshold: 0.5,
            hook: None,
        }
    }
}

/// Errors of prune.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The policy is invalid.
    #[error("invalid retention policy: {0}")]
    Policy(#[from] RetentionError),
    /// The lock is held by another pruner, or was lost.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The repository could not be read (including a manifest that does not parse: prune then
    /// cannot know which packs it needs, so it deletes nothing).
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A storage operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Retiring sparse packs (the run's last step) failed.
    #[error(transparent)]
    Retire(#[from] RetireError),
}

/// A committed backup to delete (or deleted), with its folder's size.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupDeletion {
    /// The policy's decision and reasons.
    #[serde(flatten)]
    pub decision: Decision,
    /// Objects in its folder, manifest included.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A folder without a manifest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uncommitted {
    /// The folder's backup name.
    pub name: String,
    /// Objects in it.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Its newest object's time (`None`: unknown, treated as young).
    pub newest: Option<Timestamp>,
}

/// Pack figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackStats {
    /// Packs listed.
    pub total: u64,
    /// Packs a remaining backup references.
    pub referenced: u64,
    /// Their bytes.
    pub referenced_bytes: u64,
    /// Unreferenced packs older than the grace period: deleted (or, in a dry run, to delete).
    pub deleted: u64,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Up to [`MAX_LISTED_PACKS`] of their keys.
    pub deleted_keys: Vec<String>,
    /// Unreferenced packs younger than the grace period: left for a backup in progress.
    pub young: u64,
    /// Their bytes.
    pub young_bytes: u64,
    /// Packs only backups deleted in this run referenced, kept because a backup is in progress
    /// (it may be deduplicating against them); a later prune collects them.
    pub deferred: u64,
    /// Their bytes.
    pub deferred_bytes: u64,
}

/// What prune did (or, with `dryRun`, would do).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// The location.
    pub location: String,
    /// Returns true if nothing was deleted (plan only).
    pub dry_run: bool,
    /// The retention clock.
    pub now: Timestamp,
    /// The grace period, in seconds.
    pub grace_seconds: u64,
    /// Backups the policy keeps.
    pub kept: Vec<Decision>,
    /// Committed backups the selector left out (kept).
    pub not_selected: Vec<String>,
    /// Backups deleted (or to delete).
    pub deleted: Vec<BackupDeletion>,
    /// Leftovers of backups that never committed, older than the grace period: deleted.
    pub leftovers_deleted: Vec<Uncommitted>,
    /// Folders without a manifest younger than the grace period: backups in progress, kept.
    pub in_progress: Vec<Uncommitted>,
    /// Packs.
    pub packs: PackStats,
    /// Objects deleted (or to delete), all kinds.
    pub objects_deleted: u64,
    /// Bytes freed (or to free).
    pub bytes_freed: u64,
    /// Repacking forward: packs retired (or, in a dry run, to retire) as mostly garbage. Packs
    /// are never rewritten in format v1 (see `docs/FORMAT.md`).
    pub repack: RetireReport,
}

#[derive(Debug, Default)]
struct Folder {
    manifest: bool,
    objects: u64,
    bytes: u64,
    newest: Option<Timestamp>,
    unknown_time: bool,
    /// The backup's newest heartbeat (storage time) and the interval it declares.
    beat: Option<(Timestamp, Duration)>,
    /// Its first heartbeat: written before any of its packs.
    first_beat: Option<Timestamp>,
}

impl Folder {
    /// A backup in progress that proves it is alive (`alive`): its newest heartbeat is younger
    /// than the intervals it may miss, whatever the grace period.
    fn alive(&self, storage_now: Timestamp) -> bool {
        self.beat.is_some_and(|(t, interval)| {
            let window = SignedDuration::try_from(interval * super::alive::MISSED)
                .unwrap_or(SignedDuration::MAX);
            t.checked_add(window).is_ok_and(|until| until > storage_now)
        })
    }
}

struct Committed {
    candidate: Candidate,
    selected: bool,
}

/// Applies `policy` to the location behind `store` and collects garbage, under the pruner lock
/// (none in a dry run). `now` is the retention clock (backup times and expiries are compared
/// with it); object ages are measured on `opts.storage_now`.
pub async fn prune(
    store: &Writer,
    policy: &RetentionPolicy,
    opts: &PruneOptions,
    now: Timestamp,
) -> Result<PruneReport, PruneError> {
    policy.validate()?;
    let repo = RepoReader::open(store.reader()).await?;
    let location = store.location().to_owned();
    let lock = if opts.dry_run {
        None
    } else {
        Some(PruneLock::acquire(store, &opts.lock).await?)
    };
    let result = run(store, &repo, policy, opts, now, lock.as_ref()).await;
    if let Some(lock) = lock
        && let Err(e) = lock.release().await
    {
        // The lease lapses by itself; the prune's own outcome matters more.
        tracing::warn!(location, error = %e, "could not release the prune lock");
    }
    result
}

async fn run(
    store: &Writer,
    repo: &RepoReader,
    policy: &RetentionPolicy,
    opts: &PruneOptions,
    now: Timestamp,
    lock: Option<&PruneLock>,
) -> Result<PruneReport, PruneError> {
    let location = store.location().to_owned();
    let storage_now = opts.storage_now.unwrap_or_else(Timestamp::now);
    let grace = SignedDuration::try_from(opts.grace).unwrap_or(SignedDuration::MAX);
    let cutoff = storage_now.checked_sub(grace).unwrap_or(Timestamp::MIN);

    // Plan: one pass over backups/, then every manifest.
    let folders = scan_backups(store).await?;
    let committed_names: Vec<BackupName> = folders
        .iter()
        .filter(|(_, f)| f.manifest)
        .filter_map(|(n, _)| BackupName::new(n.as_str()).ok())
        .collect();
    // Owned values in the futures keep `prune`'s future `Send` for callers that spawn it.
    let committed: Vec<Committed> = futures::stream::iter(committed_names.clone())
        .map(|name| {
            let (repo, select) = (repo.clone(), opts.select.clone());
            async move {
                let m = repo.manifest(&name).await?;
                Ok::<_, RepoError>(Committed {
                    selected: select.matches(&m),
                    candidate: Candidate {
                        name: m.name.clone(),
                        time: m.started_at,
                        expires_at: m.expires_at,
                    },
                })
            }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let selected: Vec<Candidate> = committed
        .iter()
        .filter(|c| c.selected)
        .map(|c| c.candidate.clone())
        .collect();
    let not_selected: Vec<String> = committed
        .iter()
        .filter(|c| !c.selected)
        .map(|c| c.candidate.name.to_string())
        .collect();
    let decisions = policy.decide(&selected, now)?;
    let (kept, dropped): (Vec<Decision>, Vec<Decision>) =
        decisions.into_iter().partition(|d| d.keep);
    let deleted: Vec<BackupDeletion> = dropped
        .into_iter()
        .map(|d| {
            let f = &folders[d.name.as_str()];
            BackupDeletion {
                objects: f.objects,
                bytes: f.bytes,
                decision: d,
            }
        })
        .collect();
    // Packs a live backup in progress may have written (since its first heartbeat) are its own,
    // not garbage, however long ago that was.
    let pack_cutoff = folders
        .values()
        .filter(|f| !f.manifest && f.alive(storage_now))
        .filter_map(|f| f.first_beat)
        .min()
        .map_or(cutoff, |first| first.min(cutoff));
    let (mut leftovers, mut in_progress) = (Vec::new(), Vec::new());
    for (name, f) in &folders {
        if f.manifest {
            continue;
        }
        let u = Uncommitted {
            name: name.clone(),
            objects: f.objects,
            bytes: f.bytes,
            newest: f.newest,
        };
        if !f.alive(storage_now) && !f.unknown_time && f.newest.is_some_and(|t| t < cutoff) {
            leftovers.push(u);
        } else {
            in_progress.push(u);
        }
    }

    // References: every backup that stays, and, while a backup is in progress, the ones deleted
    // now too (the in-progress one may deduplicate against them).
    let deleted_names: HashSet<&str> = deleted.iter().map(|d| d.decision.name.as_str()).collect();
    let staying: Vec<BackupName> = committed_names
        .iter()
        .filter(|n| !deleted_names.contains(n.as_str()))
        .cloned()
        .collect();
    drop(deleted_names);
    let mut referenced = pack_refs(repo, staying).await?;
    let deferred: HashSet<String> = if in_progress.is_empty() {
        HashSet::new()
    } else {
        let names = deleted.iter().map(|d| d.decision.name.clone()).collect();
        let mut d = pack_refs(repo, names).await?;
        d.retain(|k| !referenced.contains(k));
        d
    };
    tracing::info!(
        location,
        committed = committed_names.len(),
        deleting = deleted.len(),
        leftovers = leftovers.len(),
        in_progress = in_progress.len(),
        referenced_packs = referenced.len(),
        "prune plan"
    );

    let mut report = PruneReport {
        location: location.clone(),
        dry_run: opts.dry_run,
        now,
        grace_seconds: opts.grace.as_secs(),
        kept,
        not_selected,
        deleted,
        leftovers_deleted: Vec::new(),
        in_progress,
        packs: PackStats::default(),
        objects_deleted: 0,
        bytes_freed: 0,
        repack: RetireReport::default(),
    };

    // 1. Backups the policy drops: manifest first.
    for d in &report.deleted {
        report.objects_deleted += d.objects;
        report.bytes_freed += d.bytes;
        if opts.dry_run {
            continue;
        }
        check(lock)?;
        let name = &d.decision.name;
        store.delete(&Layout::manifest(name)).await?;
        tracing::info!(location, backup = %name, "deleted backup manifest");
        delete_folder(store, name.as_str(), opts.concurrency, lock).await?;
    }

    // 2. Leftovers of uncommitted backups older than the grace period.
    for u in leftovers {
        if !opts.dry_run {
            check(lock)?;
            // A backup that ran longer than the grace period may have committed since the scan.
            let committed = match BackupName::new(u.name.as_str()) {
                Ok(name) => store.head(&Layout::manifest(&name)).await?.is_some(),
                Err(_) => false,
            };
            if committed {
                tracing::info!(location, backup = u.name, "committed during prune; kept");
                continue;
            }
            delete_folder(store, &u.name, opts.concurrency, lock).await?;
            tracing::info!(
                location,
                backup = u.name,
                "deleted leftovers of an uncommitted backup"
            );
        }
        report.objects_deleted += u.objects;
        report.bytes_freed += u.bytes;
        report.leftovers_deleted.push(u);
    }

    // Backups committed since the scan reference packs too (old ones, by deduplication).
    if !opts.dry_run {
        let known: HashSet<&str> = committed_names.iter().map(BackupName::as_str).collect();
        let fresh: Vec<BackupName> = scan_backups(store)
            .await?
            .into_iter()
            .filter(|(n, f)| f.manifest && !known.contains(n.as_str()))
            .filter_map(|(n, _)| BackupName::new(n).ok())
            .collect();
        referenced.extend(pack_refs(repo, fresh).await?);
    }

    // 3. Packs.
    sweep_packs(
        store,
        &referenced,
        &deferred,
        pack_cutoff,
        opts,
        lock,
        &mut report,
    )
    .await?;
    report.objects_deleted += report.packs.deleted;
    report.bytes_freed += report.packs.deleted_bytes;

    // 4. Repacking forward, under the same lock (released only when `prune` returns).
    let retire = RetireOptions {
        garbage_threshold: opts.repack_threshold,
        cutoff: pack_cutoff,
        dry_run: opts.dry_run,
    };
    report.repack = retire_sparse_packs(store, &retire, lock, opts.hook.as_ref()).await?;
    tracing::info!(
        location,
        backups_deleted = report.deleted.len(),
        packs_deleted = report.packs.deleted,
        bytes_freed = report.bytes_freed,
        dry_run = opts.dry_run,
        "prune done"
    );
    Ok(report)
}

/// One entry per folder under `backups/`, from a single streamed listing.
async fn scan_backups(store: &Writer) -> Result<BTreeMap<String, Folder>, StorageError> {
    let mut folders: BTreeMap<String, Folder> = BTreeMap::new();
    let mut list = store.list(Layout::BACKUPS);
    while let Some(meta) = list.try_next().await? {
        let Some(rest) = meta.key.strip_prefix(Layout::BACKUPS) else {
            continue;
        };
        let Some((name, file)) = rest.split_once('/') else {
            continue; // a stray object directly under backups/ is not a backup's
        };
        if BackupName::new(name).is_err() {
            tracing::warn!(key = meta.key, "not a backup folder; left alone");
            continue;
        }
        let f = folders.entry(name.to_owned()).or_default();
        f.manifest |= file == Layout::MANIFEST_FILE;
        f.objects += 1;
        f.bytes += meta.size;
        match meta.last_modified {
            Some(t) => f.newest = Some(f.newest.map_or(t, |n| n.max(t))),
            None => f.unknown_time = true,
        }
        if let (Some(interval), Some(t)) = (super::alive::interval_of(file), meta.last_modified) {
            if f.beat.is_none_or(|(newest, _)| newest < t) {
                f.beat = Some((t, interval));
            }
            f.first_beat = Some(f.first_beat.map_or(t, |first| first.min(t)));
        }
    }
    Ok(folders)
}

/// The pack keys the manifests of `names` reference.
async fn pack_refs(
    repo: &RepoReader,
    names: Vec<BackupName>,
) -> Result<HashSet<String>, RepoError> {
    let mut out = HashSet::new();
    let mut manifests = futures::stream::iter(names)
        .map(|n| {
            let repo = repo.clone();
            async move { repo.manifest(&n).await }
        })
        .buffer_unordered(READ_CONCURRENCY);
    while let Some(m) = manifests.next().await {
        match m {
            Ok(m) => out.extend(m.packs.into_iter().map(|p| p.key)),
            // Deleted by someone else since the scan: it references nothing any more.
            Err(RepoError::NoSuchBackup { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Deletes every object under `backups/<name>/`, in batches.
async fn delete_folder(
    store: &Writer,
    name: &str,
    concurrency: usize,
    lock: Option<&PruneLock>,
) -> Result<(), PruneError> {
    let prefix = format!("{}{name}/", Layout::BACKUPS);
    let keys: Vec<String> = store.list(&prefix).map_ok(|m| m.key).try_collect().await?;
    for batch in keys.chunks(256) {
        check(lock)?;
        delete_all(store, batch.to_vec(), concurrency).await?;
    }
    Ok(())
}

/// Fails once the lock has been lost (never in a dry run, which holds none).
fn check(lock: Option<&PruneLock>) -> Result<(), LockError> {
    lock.map_or(Ok(()), PruneLock::check)
}

async fn delete_all(
    store: &Writer,
    keys: Vec<String>,
    concurrency: usize,
) -> Result<(), StorageError> {
    futures::stream::iter(keys)
        .map(|k| {
            let store = store.clone();
            async move { store.delete(&k).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

#[allow(clippy::too_many_arguments)]
async fn sweep_packs(
    store: &Writer,
    referenced: &HashSet<String>,
    deferred: &HashSet<String>,
    cutoff: Timestamp,
    opts: &PruneOptions,
    lock: Option<&PruneLock>,
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let stats = &mut report.packs;
    let mut batch: Vec<String> = Vec::new();
    let mut list = store.list(Layout::PACKS);
    while let Some(ObjectMeta {
        key,
        size,
        last_modified,
    }) = list.try_next().await?
    {
        stats.total += 1;
        if referenced.contains(&key) {
            stats.referenced += 1;
            stats.referenced_bytes += size;
        } else if deferred.contains(&key) {
            stats.deferred += 1;
            stats.deferred_bytes += size;
        } else if last_modified.is_some_and(|t| t < cutoff) {
            stats.deleted += 1;
            stats.deleted_bytes += size;
            if stats.deleted_keys.len() < MAX_LISTED_PACKS {
                stats.deleted_keys.push(key.clone());
            }
            if !opts.dry_run {
                batch.push(key);
                if batch.len() >= 256 {
                    check(lock)?;
                    delete_all(store, std::mem::take(&mut batch), opts.concurrency).await?;
                }
            }
        } else {
            // Young, or of unknown age: possibly a backup in progress.
            stats.young += 1;
            stats.young_bytes += size;
        }
    }
    if !batch.is_empty() {
        check(lock)?;
        delete_all(store, batch, opts.concurrency).await?;
    }
    if stats.deleted > 0 {
        tracing::info!(
            location = store.location(),
            packs = stats.deleted,
            bytes = stats.deleted_bytes,
            dry_run = opts.dry_run,
            "unreferenced packs"
        );
    }
    Ok(())
}
