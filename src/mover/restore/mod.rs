//! Restore of a volume index into a directory, reading packs through a read-only [`Reader`].
//!
//! The index is read from a local file as a stream of events ([`restore_index_file`]); memory
//! does not grow with the number of files or chunk references:
//!
//! 1. A checking pass over the index file: every entry's path, chunk references into the pack
//!    table, sizes that add up. A malformed entry anywhere is refused, naming it, before anything
//!    is written. It also counts the bytes to restore, for progress.
//! 2. The tree and data, in *windows* of at most [`RestoreOptions::window_chunks`] chunk
//!    references (files and their chunks, a window may end inside a file): the window's
//!    directories and files are created, its hard links made and a placeholder put where each
//!    symlink goes; then its chunks are fetched with parallel ranged reads (contiguous chunks of
//!    a pack merged, each distinct chunk of the window once), each chunk's sha256 checked before
//!    it is written; then the mode, owner and mtime of each file whose data is complete. The next
//!    window is prepared while one is fetched.
//! 3. Symlinks replace their placeholders: last, so nothing is ever written through one.
//! 4. Directories' modes, owners and mtimes, deepest first (the index's reverse order).
//!
//! Symlinks and directories for steps 3 and 4 are spooled to unnamed temporary files.
//!
//! The parts: `check` (step 1), `tree` (making the tree, steps 2 to 4), `window` (a window's
//! chunk uses and its ranged reads), `fetch` (the reads, checks and writes of a window),
//! [`crate::mover::fsmeta`] (modes, owners, mtimes).
//!
//! What needs the whole tree is decided against the target, which this restore fills, rather
//! than with sets of paths in memory:
//! - every directory on an entry's way must be a real directory (a symlink placeholder is not,
//!   so an entry under a symlink of the index listed earlier is refused as going through it, and
//!   so is one under a symlink planted in the target); a symlink listed after entries under it
//!   finds a directory where it goes and is refused, naming one of them;
//! - files, links and placeholders are created exclusively (`O_EXCL`, `link`, `symlink`): a
//!   path listed twice is refused as already existing (directories listed twice are merged;
//!   a path listed twice in a row is refused by the checking pass);
//! - a hard link's target must be a regular file reached through real directories only: a file
//!   this restore created earlier. A later or missing file, a directory, a symlink's placeholder
//!   are refused. (Unlike [`check_index`], a link to an earlier hard link is accepted, as is one
//!   to a regular file the target held before the restore: both stay inside the target.)
//!
//! [`restore_volume`] takes an index in memory: it runs [`check_index`] (the same decisions,
//! with sets of paths) before it writes the index to a file and streams it.

mod check;
mod fetch;
mod spool;
#[cfg(test)]
mod tests;
mod tree;
mod window;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::backup::Progress;
use super::fsmeta::running_as_root;
use super::{MoverError, Result};
use crate::repo::index::{IndexError, VolumeIndex};
use crate::storage::Reader;

pub use check::check_index;
use fetch::{Io, Run};
use tree::{Tree, finish_tree};

/// How a restore runs.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Ranged reads in flight (each up to `max_range` bytes held in memory).
    pub concurrency: usize,
    /// Contiguous chunks of one pack are fetched in reads of at most this many bytes.
    pub max_range: u64,
    /// Set owners: `None` does it exactly when running as root.
    pub set_owners: Option<bool>,
    /// Counters the caller may poll to render progress.
    pub progress: Option<Arc<Progress>>,
    /// Chunk references (plus files) one window of the restore takes from the index. A window's
    /// read plan costs about 100 bytes per reference, and two windows are held at once (one
    /// fetched, the next prepared): ~13 MB at the default of 64 Ki. A chunk used in two windows
    /// is fetched twice, and reads do not merge across windows.
    pub window_chunks: usize,
    /// The identity of an encrypted repository: packs are decrypted range by range, and chunk
    /// ids checked as keyed.
    pub identity: Option<crate::repo::crypto::ReaderKey>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_range: 4 << 20,
            set_owners: None,
            progress: None,
            window_chunks: 64 << 10,
            identity: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hard_links: u64,
    /// File data bytes written.
    pub bytes_written: u64,
    /// Bytes read from packs.
    pub bytes_fetched: u64,
    /// Ranged reads made.
    pub reads: u64,
    /// Distinct chunks fetched and verified (per window: a chunk used in two windows counts
    /// twice).
    pub chunks: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Restores `index` into `target` (an existing directory, normally empty). Never writes outside
/// it; fails on the first unsafe entry, missing pack or corrupted chunk, naming it.
///
/// The index is checked whole first ([`check_index`]), then written to a temporary file and
/// restored by [`restore_index_file`].
pub async fn restore_volume(
    store: Reader,
    index: Arc<VolumeIndex>,
    target: PathBuf,
    opts: RestoreOptions,
) -> Result<RestoreStats> {
    let started = Instant::now();
    check_index(&index)?;
    let totals = check::Totals {
        file_bytes: index.total_file_bytes(),
        chunk_refs: index.files().map(|f| f.chunks.len() as u64).sum(),
    };
    let written = blocking(move || {
        index
            .write_file()
            .map_err(|e| MoverError::Index(IndexError::Io(e)))
    })
    .await?;
    let result = restore_checked(store, &written.path, target, opts, totals, started).await;
    drop(written);
    result
}

/// Restores the volume index in the local file `index_path` into `target` (an existing
/// directory, normally empty), streaming the index: memory is bounded by
/// [`RestoreOptions::window_chunks`], whatever the number of files and chunks. Never writes
/// outside `target`; fails on the first unsafe entry, missing pack or corrupted chunk, naming
/// it. See the module's documentation for the order of the work.
pub async fn restore_index_file(
    store: Reader,
    index_path: PathBuf,
    target: PathBuf,
    opts: RestoreOptions,
) -> Result<RestoreStats> {
    let started = Instant::now();
    let (_, totals) = blocking({
        let path = index_path.clone();
        move || check::check_index_file(&path)
    })
    .await?;
    restore_checked(store, &index_path, target, opts, totals, started).await
}

/// [`restore_index_file`] once every entry passed [`check::EntryCheck`].
async fn restore_checked(
    store: Reader,
    index_path: &Path,
    target: PathBuf,
    opts: RestoreOptions,
    totals: check::Totals,
    started: Instant,
) -> Result<RestoreStats> {
    let tm = fs::symlink_metadata(&target).map_err(io_err(&target))?;
    if !tm.is_dir() {
        return Err(MoverError::TargetNotDir {
            path: target.display().to_string(),
        });
    }
    if let Some(p) = &opts.progress {
        p.bytes_total.store(totals.file_bytes, Ordering::Relaxed);
    }
    tracing::debug!(
        chunk_refs = totals.chunk_refs,
        bytes = totals.file_bytes,
        "volume index checked"
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let (mut tree, mut window) = blocking({
        let (path, target, opts, cancel) = (
            index_path.to_owned(),
            target.clone(),
            opts.clone(),
            cancel.clone(),
        );
        move || {
            let mut tree = Tree::open(&path, target, &opts, cancel)?;
            let w = tree.next_window()?;
            Ok((tree, w))
        }
    })
    .await?;
    let mut run = Run {
        io: Arc::new(Io {
            store,
            keys: tree.keys.clone(),
            target: target.clone(),
            progress: opts.progress.clone(),
            ciphers: opts
                .identity
                .clone()
                .map(|k| fetch::Ciphers::new(k, tree.sizes.clone())),
        }),
        concurrency: opts.concurrency.max(1),
        owners: opts.set_owners.unwrap_or_else(running_as_root),
        started,
        total: totals.file_bytes,
        stats: RestoreStats::default(),
        last_log: Instant::now(),
    };
    // Window n is fetched while window n + 1 is prepared.
    loop {
        if tree.done {
            run.window(window).await?;
            break;
        }
        let next = tokio::task::spawn_blocking(move || {
            let w = tree.next_window();
            (tree, w)
        });
        let ran = run.window(window).await;
        if ran.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        let (t, built) = next.await.expect("restore task does not panic");
        ran?;
        tree = t;
        window = built?;
    }
    let mut stats = run.stats;
    stats.dirs = tree.counts.dirs;
    stats.files = tree.counts.files;
    stats.hard_links = tree.counts.hard_links;
    let (symlinks, dirs) = (tree.symlinks, tree.dirs);
    drop(tree.stream);
    stats.symlinks = blocking(move || finish_tree(&target, symlinks, dirs, run.owners)).await?;
    stats.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        files = stats.files,
        bytes = stats.bytes_written,
        mb_per_s = stats.bytes_written as f64 / 1e6 / stats.seconds.max(1e-9),
        "volume restored"
    );
    Ok(stats)
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("restore task does not panic")
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MoverError + '_ {
    move |source| MoverError::Write {
        path: path.display().to_string(),
        source,
    }
}
