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
mod spool;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::backup::Progress;
use super::chunker::ChunkId;
use super::fsmeta::{apply_meta, running_as_root, set_link_mtime};
use super::{MoverError, Result};
use crate::repo::index::IndexError;
use crate::repo::index::{
    DirNode, FileNode, HardLinkNode, IndexEvent, IndexStream, Meta, SymlinkNode, VolumeIndex,
};
use crate::repo::pack::decode_chunk_into;
use crate::storage::Reader;

use check::EntryCheck;
pub use check::check_index;
use spool::{Spool, spool_io};

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
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_range: 4 << 20,
            set_owners: None,
            progress: None,
            window_chunks: 64 << 10,
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("restore task does not panic")
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MoverError + '_ {
    move |source| MoverError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// The text of the placeholder a symlink of the index stands as until all data is written. A
/// symlink too, so that nothing goes through it (a path under it is refused as going through a
/// symlink), nothing links to it (it is no regular file), and a filesystem that cannot hold
/// symlinks fails the restore early. It dangles, relative to its own directory.
const PLACEHOLDER: &str = ".lifeboat-restore-pending-symlink";

/// The directories verified (as real directories, or created) on the way to the last entry: the
/// chain of its ancestors, so memory is the depth of the tree, not its size.
#[derive(Debug, Default)]
struct VerifiedDirs {
    /// `chain[d]` is the ancestor at depth `d` (`a`, `a/b`, `a/b/c`, …).
    chain: Vec<String>,
}

impl VerifiedDirs {
    /// Creates `rel`'s missing parent directories under `target`, refusing any that exists as
    /// something other than a directory (a symlink planted in the target, or the placeholder of
    /// a symlink of the index).
    fn ensure_parent(&mut self, target: &Path, rel: &str) -> Result<()> {
        let Some((parent, _)) = rel.rsplit_once('/') else {
            return Ok(());
        };
        let mut end = 0;
        for (depth, seg) in parent.split('/').enumerate() {
            end = if depth == 0 {
                seg.len()
            } else {
                end + 1 + seg.len()
            };
            let acc = &parent[..end];
            if self.chain.get(depth).is_some_and(|v| v == acc) {
                continue;
            }
            self.chain.truncate(depth);
            let abs = target.join(acc);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(MoverError::ThroughSymlink {
                        entry: rel.to_owned(),
                        link: acc.to_owned(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&abs).map_err(io_err(&abs))?;
                }
                Err(e) => return Err(io_err(&abs)(e)),
            }
            self.chain.push(acc.to_owned());
        }
        Ok(())
    }

    /// `dir` is now a real directory (its parents were just verified).
    fn verified(&mut self, dir: &str) {
        let depth = dir.matches('/').count();
        self.chain.truncate(depth);
        if self.chain.len() == depth {
            self.chain.push(dir.to_owned());
        }
    }
}

#[derive(Debug, Default)]
struct TreeCounts {
    dirs: u64,
    files: u64,
    hard_links: u64,
}

/// A regular file data is written into.
#[derive(Debug)]
struct FileTarget {
    /// Path relative to the target.
    rel: String,
    /// Data regions of a sparse file: (file offset, length), in order. Empty for dense files.
    regions: Vec<(u64, u64)>,
}

/// The file whose chunk references are being read.
#[derive(Debug)]
struct OpenFile {
    file: Arc<FileTarget>,
    meta: Meta,
    /// Offset of the next chunk in the file's data stream (holes excluded).
    data_off: u64,
    /// Its row in the current window's `files`, once it has a chunk there.
    slot: Option<u32>,
}

/// One use of a chunk: where its plaintext goes.
#[derive(Debug, Clone, Copy)]
struct Use {
    id: ChunkId,
    pack: u32,
    offset: u32,
    length: u32,
    size: u32,
    /// Row of the window's `files`.
    file: u32,
    /// Offset in the file's data stream.
    data_off: u64,
}

impl Use {
    /// Uses with the same key are one chunk, fetched and checked once.
    fn chunk_key(&self) -> (u32, u32, u32, u32, ChunkId) {
        (self.pack, self.offset, self.length, self.size, self.id)
    }
}

/// A ranged read: bytes `start..end` of a pack, bringing `uses` (rows of the window's uses).
#[derive(Debug)]
struct RangeRead {
    pack: u32,
    start: u64,
    end: u64,
    uses: Range<usize>,
}

/// A part of the index whose data is fetched together.
#[derive(Debug, Default)]
struct Window {
    files: Vec<Arc<FileTarget>>,
    /// Sorted by pack, offset and chunk once planned.
    uses: Vec<Use>,
    reads: Vec<RangeRead>,
    /// Files whose last chunk is in this window (or that have none): their metadata is applied
    /// once the window's data is written.
    finished: Vec<(Arc<FileTarget>, Meta)>,
    /// Distinct chunks.
    chunks: u64,
}

impl Window {
    /// What the window holds, counted against [`RestoreOptions::window_chunks`].
    fn items(&self) -> usize {
        self.uses.len() + self.files.len() + self.finished.len()
    }

    /// Groups the uses by chunk and merges contiguous chunks of a pack into ranged reads: only
    /// the bytes needed are fetched, and each distinct chunk of the window once.
    fn plan(&mut self, max_range: u64) {
        self.uses.sort_unstable_by_key(Use::chunk_key);
        let mut i = 0;
        while i < self.uses.len() {
            let u = self.uses[i];
            let key = u.chunk_key();
            let mut j = i + 1;
            while j < self.uses.len() && self.uses[j].chunk_key() == key {
                j += 1;
            }
            self.chunks += 1;
            let (start, end) = (
                u64::from(u.offset),
                u64::from(u.offset) + u64::from(u.length),
            );
            match self.reads.last_mut() {
                Some(r) if r.pack == u.pack && r.end == start && end - r.start <= max_range => {
                    r.end = end;
                    r.uses.end = j;
                }
                _ => self.reads.push(RangeRead {
                    pack: u.pack,
                    start,
                    end,
                    uses: i..j,
                }),
            }
            i = j;
        }
    }
}

/// Reads the index event by event and makes its tree in the target, a window at a time.
struct Tree {
    stream: IndexStream,
    /// Object keys of the index's pack table.
    keys: Arc<Vec<String>>,
    target: PathBuf,
    check: EntryCheck,
    dirs_ok: VerifiedDirs,
    open: Option<OpenFile>,
    /// Symlinks of the index, made last.
    symlinks: Spool,
    /// Directories of the index, whose metadata is applied last, in reverse.
    dirs: Spool,
    counts: TreeCounts,
    window_chunks: usize,
    max_range: u64,
    /// Set when the restore fails elsewhere: stop preparing the window.
    cancel: Arc<AtomicBool>,
    /// The index has been read to its end.
    done: bool,
}

impl Tree {
    fn open(
        index_path: &Path,
        target: PathBuf,
        opts: &RestoreOptions,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self> {
        let (header, stream) = IndexStream::open(index_path)?;
        Ok(Self {
            stream,
            keys: Arc::new(header.packs.iter().map(|p| p.key()).collect()),
            target,
            check: EntryCheck::new(header.packs.len()),
            dirs_ok: VerifiedDirs::default(),
            open: None,
            symlinks: Spool::new().map_err(spool_io)?,
            dirs: Spool::new().map_err(spool_io)?,
            counts: TreeCounts::default(),
            window_chunks: opts.window_chunks.max(1),
            max_range: opts.max_range,
            cancel,
            done: false,
        })
    }

    /// Takes the next window's entries from the index (checking each), creates what they need
    /// in the target and plans the window's reads.
    fn next_window(&mut self) -> Result<Window> {
        let mut w = Window::default();
        while w.items() < self.window_chunks {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(MoverError::Internal {
                    what: "restore cancelled".into(),
                });
            }
            let Some(e) = self.stream.next_event()? else {
                self.done = true;
                break;
            };
            self.check.event(&e)?;
            match e {
                IndexEvent::Dir(d) => self.make_dir(&d)?,
                IndexEvent::FileStart(f) => self.make_file(f)?,
                IndexEvent::Chunk(c) => {
                    let o = self
                        .open
                        .as_mut()
                        .ok_or(IndexError::Order("a chunk outside a file"))?;
                    let file = *o.slot.get_or_insert_with(|| {
                        w.files.push(o.file.clone());
                        (w.files.len() - 1) as u32
                    });
                    w.uses.push(Use {
                        id: c.id,
                        pack: c.pack,
                        offset: c.offset,
                        length: c.length,
                        size: c.size,
                        file,
                        data_off: o.data_off,
                    });
                    o.data_off += u64::from(c.size);
                }
                IndexEvent::FileEnd => {
                    let o = self
                        .open
                        .take()
                        .ok_or(IndexError::Order("the end of a file never begun"))?;
                    w.finished.push((o.file, o.meta));
                }
                IndexEvent::Symlink(s) => self.make_placeholder(&s)?,
                IndexEvent::HardLink(h) => self.make_hard_link(&h)?,
            }
        }
        if let Some(o) = self.open.as_mut() {
            // The file goes on in the next window, in a row of its own there.
            o.slot = None;
        }
        w.plan(self.max_range);
        Ok(w)
    }

    fn make_dir(&mut self, d: &DirNode) -> Result<()> {
        self.dirs_ok.ensure_parent(&self.target, &d.path)?;
        let abs = self.target.join(&d.path);
        match fs::create_dir(&abs) {
            Ok(()) => {}
            // An existing real directory (e.g. `lost+found`) is fine; anything else is not.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
                if !m.is_dir() {
                    return Err(MoverError::TargetExists {
                        entry: d.path.clone(),
                    });
                }
            }
            Err(e) => return Err(io_err(&abs)(e)),
        }
        self.dirs_ok.verified(&d.path);
        self.dirs.push(d).map_err(spool_io)?;
        self.counts.dirs += 1;
        Ok(())
    }

    fn make_file(&mut self, f: FileNode) -> Result<()> {
        self.dirs_ok.ensure_parent(&self.target, &f.path)?;
        let abs = self.target.join(&f.path);
        // create_new (O_EXCL) never follows a symlink at the final component.
        let file = match OpenOptions::new().write(true).create_new(true).open(&abs) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(MoverError::TargetExists { entry: f.path });
            }
            Err(e) => return Err(io_err(&abs)(e)),
        };
        // Unwritten ranges stay holes: sparse files come back sparse.
        file.set_len(f.size).map_err(io_err(&abs))?;
        let regions = if f.holes.is_empty() {
            Vec::new()
        } else {
            data_regions(&f)
        };
        self.open = Some(OpenFile {
            file: Arc::new(FileTarget {
                rel: f.path,
                regions,
            }),
            meta: f.meta,
            data_off: 0,
            slot: None,
        });
        self.counts.files += 1;
        Ok(())
    }

    /// Holds a symlink's place until all data is written (see [`PLACEHOLDER`]).
    fn make_placeholder(&mut self, s: &SymlinkNode) -> Result<()> {
        self.dirs_ok.ensure_parent(&self.target, &s.path)?;
        let abs = self.target.join(&s.path);
        match std::os::unix::fs::symlink(PLACEHOLDER, &abs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // An earlier entry went where this symlink goes: one under it went through it.
                let under = fs::symlink_metadata(&abs)
                    .is_ok_and(|m| m.is_dir())
                    .then(|| fs::read_dir(&abs).ok()?.next()?.ok())
                    .flatten();
                return Err(match under {
                    Some(child) => MoverError::ThroughSymlink {
                        entry: format!("{}/{}", s.path, child.file_name().to_string_lossy()),
                        link: s.path.clone(),
                    },
                    None => MoverError::TargetExists {
                        entry: s.path.clone(),
                    },
                });
            }
            Err(e) => return Err(io_err(&abs)(e)),
        }
        self.symlinks.push(s).map_err(spool_io)
    }

    /// A hard link's target must be a regular file reached through real directories: a file of
    /// the index made earlier by this restore (files are created `O_EXCL`), not a later one, a
    /// directory or a symlink's placeholder.
    fn make_hard_link(&mut self, h: &HardLinkNode) -> Result<()> {
        let bad = || MoverError::BadHardLink {
            entry: h.path.clone(),
            target: h.target.clone(),
        };
        let mut to = self.target.clone();
        let mut segs = h.target.split('/').peekable();
        while let Some(seg) = segs.next() {
            to.push(seg);
            let m = fs::symlink_metadata(&to).map_err(|_| bad())?;
            let ok = if segs.peek().is_some() {
                m.is_dir()
            } else {
                m.is_file()
            };
            if !ok {
                return Err(bad());
            }
        }
        self.dirs_ok.ensure_parent(&self.target, &h.path)?;
        let abs = self.target.join(&h.path);
        // link() does not follow a symlink at `to`, nor at `abs` (it fails if anything is there).
        match fs::hard_link(&to, &abs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(MoverError::TargetExists {
                    entry: h.path.clone(),
                });
            }
            Err(e) => return Err(io_err(&abs)(e)),
        }
        self.counts.hard_links += 1;
        Ok(())
    }
}

fn data_regions(f: &FileNode) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for &(off, len) in &f.holes {
        if off > pos {
            out.push((pos, off - pos));
        }
        pos = off + len;
    }
    if f.size > pos {
        out.push((pos, f.size - pos));
    }
    out
}

/// What every ranged read of a restore needs.
struct Io {
    store: Reader,
    /// Object keys of the index's pack table.
    keys: Arc<Vec<String>>,
    target: PathBuf,
    progress: Option<Arc<Progress>>,
}

/// Fetches read `i` of `w` and writes its chunks; returns the bytes fetched and written.
async fn fetch_read(io: Arc<Io>, w: Arc<Window>, i: usize) -> Result<(u64, u64)> {
    let r = &w.reads[i];
    let key = &io.keys[r.pack as usize];
    let bytes = io
        .store
        .get_range(key, r.start..r.end)
        .await
        .map_err(|source| MoverError::Fetch {
            pack: key.clone(),
            source,
        })?;
    let fetched = r.end - r.start;
    let written = blocking({
        let (io, w) = (io.clone(), w.clone());
        move || {
            let r = &w.reads[i];
            write_read(&io.target, &w, r, &bytes, &io.keys[r.pack as usize])
        }
    })
    .await?;
    if let Some(p) = &io.progress {
        p.bytes.fetch_add(written, Ordering::Relaxed);
    }
    Ok((fetched, written))
}

/// The fetching side of a restore: runs windows, one after the other.
struct Run {
    io: Arc<Io>,
    concurrency: usize,
    owners: bool,
    started: Instant,
    /// Bytes of the whole restore, for the log.
    total: u64,
    stats: RestoreStats,
    last_log: Instant,
}

impl Run {
    /// Fetches and writes a window's data, then applies the metadata of its finished files.
    async fn window(&mut self, w: Window) -> Result<()> {
        let w = Arc::new(w);
        {
            let per_read = futures::stream::iter(0..w.reads.len())
                .map({
                    let io = self.io.clone();
                    let w = w.clone();
                    move |i| fetch_read(io.clone(), w.clone(), i)
                })
                .buffer_unordered(self.concurrency);
            let mut per_read = std::pin::pin!(per_read);
            while let Some((fetched, written)) = per_read.try_next().await? {
                self.stats.bytes_fetched += fetched;
                self.stats.bytes_written += written;
                self.log_progress();
            }
        }
        self.stats.reads += w.reads.len() as u64;
        self.stats.chunks += w.chunks;
        if !w.finished.is_empty() {
            let (io, owners) = (self.io.clone(), self.owners);
            blocking(move || {
                for (f, meta) in &w.finished {
                    let abs = io.target.join(&f.rel);
                    apply_meta(&abs, meta, owners).map_err(io_err(&abs))?;
                    if let Some(p) = &io.progress {
                        p.files.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    fn log_progress(&mut self) {
        if self.last_log.elapsed() <= Duration::from_secs(5) {
            return;
        }
        self.last_log = Instant::now();
        let done = self.stats.bytes_written;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta_s = (rate > 0.0).then(|| (self.total.saturating_sub(done) as f64 / rate) as u64);
        tracing::info!(
            bytes = done,
            total = self.total,
            mb_per_s = rate / 1e6,
            eta_s,
            "restore progress"
        );
    }
}

fn write_read(target: &Path, w: &Window, r: &RangeRead, bytes: &Bytes, key: &str) -> Result<u64> {
    let mut open: HashMap<u32, File> = HashMap::new();
    let mut written = 0u64;
    let mut plain = Vec::new();
    let uses = &w.uses[r.uses.clone()];
    let mut i = 0;
    while i < uses.len() {
        let u = &uses[i];
        let mut j = i + 1;
        while j < uses.len() && uses[j].chunk_key() == u.chunk_key() {
            j += 1;
        }
        let lo = (u64::from(u.offset) - r.start) as usize;
        let stored =
            bytes
                .get(lo..lo + u.length as usize)
                .ok_or_else(|| MoverError::ShortRead {
                    pack: key.to_owned(),
                })?;
        decode_chunk_into(stored, u.size, &u.id, &mut plain).map_err(|source| {
            MoverError::CorruptChunk {
                file: w.files[u.file as usize].rel.clone(),
                chunk: u.id.to_hex(),
                pack: key.to_owned(),
                source,
            }
        })?;
        for t in &uses[i..j] {
            let f = &w.files[t.file as usize];
            let abs = target.join(&f.rel);
            let file = match open.entry(t.file) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    // The file was created by this restore; nothing can have replaced it with a
                    // link, since symlinks are made only after all data.
                    v.insert(
                        OpenOptions::new()
                            .write(true)
                            .open(&abs)
                            .map_err(io_err(&abs))?,
                    )
                }
            };
            if f.regions.is_empty() {
                file.write_all_at(&plain, t.data_off)
                    .map_err(io_err(&abs))?;
            } else {
                write_sparse(file, &f.regions, t.data_off, &plain).map_err(io_err(&abs))?;
            }
            written += plain.len() as u64;
        }
        i = j;
    }
    Ok(written)
}

/// Writes bytes at data-stream offset `data_off` of a file whose data regions are `regions`.
fn write_sparse(
    file: &File,
    regions: &[(u64, u64)],
    data_off: u64,
    mut buf: &[u8],
) -> io::Result<()> {
    let mut cursor = data_off;
    let mut region_data_start = 0u64;
    for &(file_off, len) in regions {
        let region_data_end = region_data_start + len;
        if buf.is_empty() {
            break;
        }
        if cursor < region_data_end && cursor >= region_data_start {
            let within = cursor - region_data_start;
            let n = ((len - within) as usize).min(buf.len());
            file.write_all_at(&buf[..n], file_off + within)?;
            buf = &buf[n..];
            cursor += n as u64;
        }
        region_data_start = region_data_end;
    }
    if buf.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(
            "chunk data beyond the file's data regions",
        ))
    }
}

/// Once all data is written: symlinks replace their placeholders, then directories get their
/// metadata, deepest first (so creating nothing more can bump a directory's mtime afterwards).
/// Returns the number of symlinks made.
fn finish_tree(target: &Path, symlinks: Spool, dirs: Spool, owners: bool) -> Result<u64> {
    let mut n = 0u64;
    let mut verified = VerifiedDirs::default();
    symlinks.forward(|s: SymlinkNode| {
        verified.ensure_parent(target, &s.path)?;
        let abs = target.join(&s.path);
        // Only the placeholder this restore made is replaced.
        if !fs::read_link(&abs).is_ok_and(|t| t == Path::new(PLACEHOLDER)) {
            return Err(MoverError::TargetExists { entry: s.path });
        }
        fs::remove_file(&abs).map_err(io_err(&abs))?;
        std::os::unix::fs::symlink(&s.target, &abs).map_err(io_err(&abs))?;
        if owners {
            std::os::unix::fs::lchown(&abs, Some(s.meta.uid), Some(s.meta.gid))
                .map_err(io_err(&abs))?;
        }
        set_link_mtime(&abs, s.meta.mtime).map_err(io_err(&abs))?;
        n += 1;
        Ok(())
    })?;
    dirs.backward(|d: DirNode| {
        let abs = target.join(&d.path);
        apply_meta(&abs, &d.meta, owners).map_err(io_err(&abs))
    })?;
    Ok(n)
}
