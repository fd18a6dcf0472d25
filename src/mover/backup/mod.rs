//! Backup of a directory into packs and a volume index.
//!
//! ```text
//! parent index ─▶ known set (sorted, spilled to disk)
//!      └──(merge-join by path)──┐
//! walker ──jobs (numbered)──▶ N workers: sha256, known?, zstd ──▶ packer: back in walk order,
//!   bounded channel              bounded channel                 packs + index spool ──▶ sealer
//!                                          (names and encrypts one pack as the next fills) ──▶ uploads
//! ```
//! Every queue is bounded and nothing grows with the volume: the parent index is read as a
//! stream from a local file ([`parent`]), the new index is spooled to disk as the packer places
//! chunks ([`crate::repo::index::IndexWriter`]), known chunks live in a sorted file with fences
//! in memory ([`crate::mover::known`]), and in-run deduplication uses a cache of fixed size
//! ([`pipeline`]). Memory stays near `workers × max chunk + (sealer + queue + uploads) × pack target`
//! plus ~80 MB of index state, whatever the volume's size.

mod messages;
mod parent;
mod pipeline;
mod walk;

pub use parent::ParentIndex;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};

use super::known::KnownChunks;
use super::{MoverError, Result};
use crate::repo::index::{PackRef, VolumeIndex, WrittenIndex};
use crate::repo::pack::FinishedPack;
use crate::repo::{ChunkerParams, Layout, ObjectEntry, RepoConfig};
use crate::storage::{PutOutcome, Writer};

/// How a backup runs.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// The chunker parameters, as the repository records them.
    pub chunker: ChunkerParams,
    /// zstd level for chunks; `None` stores chunks uncompressed.
    pub zstd_level: Option<i32>,
    /// A pack is closed once its chunk data reaches this many bytes.
    pub pack_target: usize,
    /// Hashing and compression threads.
    pub workers: usize,
    /// Pack uploads in flight.
    pub upload_concurrency: usize,
    /// When a file counts as unchanged since the parent backup (and is not read again).
    pub unchanged: UnchangedRule,
    /// Memory for remembering the chunks stored earlier in this run (a chunk forgotten is only
    /// stored twice, never lost).
    pub run_cache_bytes: usize,
    /// Counters the caller may poll to render progress.
    pub progress: Option<Arc<Progress>>,
    /// The writer key of an encrypted repository: chunk ids are keyed and packs sealed with it.
    pub seal: Option<crate::repo::crypto::WriterKey>,
}

/// When a file is taken over from the parent index without being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnchangedRule {
    /// Same size, mtime and inode number (the default; right for block-level snapshots, which
    /// keep inode numbers).
    #[default]
    SizeMtimeInode,
    /// Same size and mtime: for snapshots that copy files (new inode numbers every time).
    SizeMtime,
    /// Read every file (chunks the repository has are still not uploaded).
    Never,
}

impl BackupOptions {
    /// Defaults for a repository: its chunker, zstd level 3, 24 MiB packs (about 40 objects per
    /// GB stored), one worker per core, three uploads in flight.
    pub fn for_repo(config: &RepoConfig) -> Self {
        Self {
            chunker: config.chunker.clone(),
            zstd_level: Some(3),
            pack_target: 24 << 20,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            upload_concurrency: 3,
            unchanged: UnchangedRule::default(),
            run_cache_bytes: 64 << 20,
            progress: None,
            seal: None,
        }
    }
}

/// Live counters of a backup or restore, updated as it goes.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of file data read (backup) or written (restore).
    pub bytes: AtomicU64,
    /// Files completed.
    pub files: AtomicU64,
    /// Bytes to do in all, when known (0 otherwise).
    pub bytes_total: AtomicU64,
}

/// What a backup did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStats {
    /// Regular files (hard links excluded).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links (further names of a file).
    pub hard_links: u64,
    /// Files taken over from the parent index without reading (same size, mtime, inode).
    pub files_unchanged: u64,
    /// Apparent size of all regular files.
    pub bytes_total: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Chunks stored by this backup.
    pub new_chunks: u64,
    /// Their plaintext bytes.
    pub new_bytes: u64,
    /// Their stored (compressed) bytes.
    pub new_stored_bytes: u64,
    /// Chunk references served by chunks already stored (earlier backups, or earlier in this one).
    pub reused_chunks: u64,
    /// Their plaintext bytes.
    pub reused_bytes: u64,
    /// Packs this backup uploaded, for the manifest.
    pub packs_written: Vec<ObjectEntry>,
    /// Entries not backed up (sockets, FIFOs, devices) or taken partially (changed while read),
    /// with why.
    pub skipped: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// A backup's result: the index to store and what it cost.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The volume index, in a local file until it is uploaded.
    pub index: WrittenIndex,
    /// Its pack table: every pack the index references.
    pub packs: Vec<PackRef>,
    /// Figures.
    pub stats: BackupStats,
}

impl BackupOutcome {
    /// Every pack the index references, as the manifest lists them (each once).
    pub fn pack_entries(&self) -> Vec<ObjectEntry> {
        let mut entries: Vec<ObjectEntry> = self.packs.iter().map(PackRef::object_entry).collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.dedup_by(|a, b| a.key == b.key);
        entries
    }

    /// Reads the whole index into memory (small volumes and tests).
    pub fn load_index(&self) -> Result<VolumeIndex> {
        let file = std::fs::File::open(&self.index.path).map_err(|source| MoverError::Spool {
            what: "the new volume index",
            source,
        })?;
        Ok(VolumeIndex::from_reader(std::io::BufReader::new(file))?)
    }
}

/// Backs up the tree under `source`. New chunks go into packs uploaded with put-if-absent;
/// chunks in `known` or in `parent` are referenced, not stored again; files whose size, mtime and
/// inode match `parent` reuse its chunk list without being read. The caller uploads the returned
/// index file and references [`BackupOutcome::pack_entries`] in the manifest.
pub async fn backup_volume(
    source: PathBuf,
    store: Writer,
    opts: BackupOptions,
    parent: Option<ParentIndex>,
    known: KnownChunks,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let chunker = super::chunker::ChunkerConfig::from_params(&opts.chunker)?;
    // Pass 1 over the parent: what is known, and which of its files may be taken over.
    let (known, parent) = tokio::task::spawn_blocking({
        let params = opts.chunker.clone();
        move || parent::prepare(parent, known, &params)
    })
    .await
    .expect("parent preparation does not panic")?;
    if let Some(p) = &opts.progress
        && p.bytes_total.load(Ordering::Relaxed) == 0
    {
        p.bytes_total
            .store(walk::used_bytes(&source).unwrap_or(0), Ordering::Relaxed);
    }
    let (pack_tx, mut pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
    let walk = tokio::task::spawn_blocking({
        let opts = opts.clone();
        move || pipeline::run(&source, &opts, chunker, parent, &known, pack_tx)
    });
    // The receiver lives inside this block, so a failed upload drops it at once and the
    // packer's next send fails instead of waiting forever.
    let concurrency = opts.upload_concurrency.max(1);
    let uploads = async move {
        futures::stream::poll_fn(move |cx| pack_rx.poll_recv(cx))
            .map(|p| upload(&store, p))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<ObjectEntry>>()
            .await
    };
    let (uploaded, walked) = tokio::join!(uploads, walk);
    let walked = walked.expect("backup pipeline does not panic");
    // An upload failure makes the pipeline stop with `UploadStopped`; report the cause.
    let mut packs_written = uploaded?;
    let (index, packs, mut stats) = walked?;
    packs_written.sort_by(|a, b| a.key.cmp(&b.key));
    stats.packs_written = packs_written;
    stats.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        files = stats.files,
        bytes_read = stats.bytes_read,
        new_bytes = stats.new_bytes,
        new_stored_bytes = stats.new_stored_bytes,
        reused_bytes = stats.reused_bytes,
        packs = stats.packs_written.len(),
        index_bytes = index.size,
        mb_per_s = stats.bytes_read as f64 / 1e6 / stats.seconds.max(1e-9),
        "volume backed up"
    );
    Ok(BackupOutcome {
        index,
        packs,
        stats,
    })
}

async fn upload(store: &Writer, p: FinishedPack) -> Result<ObjectEntry> {
    let key = Layout::pack(&p.id);
    let size = p.bytes.len() as u64;
    let outcome =
        store
            .put_if_absent(&key, p.bytes)
            .await
            .map_err(|source| MoverError::Upload {
                pack: key.clone(),
                source,
            })?;
    if outcome == PutOutcome::AlreadyExists {
        // Same id, same bytes: another backup wrote this exact pack. Nothing is lost.
        tracing::debug!(pack = %key, "pack already present");
    }
    Ok(ObjectEntry {
        key,
        size,
        sha256: p.id.to_string(),
    })
}
