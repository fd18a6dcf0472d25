//! Backup of a directory into packs and a [`VolumeIndex`].
//!
//! ```text
//! walker (this thread) ──chunk jobs──▶ N workers: sha256, known?, zstd ──▶ packer ──packs──▶ uploads
//!   bounded channel                       bounded channel                  bounded     (async, parallel)
//! ```
//! Every queue is bounded, so memory stays near `workers × max chunk + (queue + uploads) × pack
//! target` whatever the volume's size.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::chunker::{ChunkId, ChunkIter, ChunkerConfig};
use super::index::{
    ChunkRef, DirNode, Entry, FileNode, HardLinkNode, Meta, Mtime, PackRef, SymlinkNode,
    VolumeIndex,
};
use super::known::{KnownChunks, PackTable};
use super::pack::{FinishedPack, PackBuilder, encode_chunk};
use super::{MoverError, Result};
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
    /// Counters the caller may poll to render progress.
    pub progress: Option<Arc<Progress>>,
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
            progress: None,
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
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The volume index.
    pub index: VolumeIndex,
    /// Figures.
    pub stats: BackupStats,
}

/// Backs up the tree under `source`. New chunks go into packs uploaded with put-if-absent;
/// chunks in `known` or in `parent` are referenced, not stored again; files whose size, mtime and
/// inode match `parent` reuse its chunk list without being read. The caller stores the returned
/// index (`BackupWriter::put`) and references `index.pack_entries()` in the manifest.
pub async fn backup_volume(
    source: PathBuf,
    store: Writer,
    opts: BackupOptions,
    parent: Option<VolumeIndex>,
    mut known: KnownChunks,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let chunker = ChunkerConfig::from_params(&opts.chunker)?;
    if let Some(p) = &parent {
        if p.chunker == opts.chunker {
            known.add_index(p);
        } else {
            tracing::warn!(
                "parent index used another chunker; deduplicating against it is skipped"
            );
        }
    }
    known.seal();
    if let Some(p) = &opts.progress
        && p.bytes_total.load(Ordering::Relaxed) == 0
    {
        p.bytes_total
            .store(used_bytes(&source).unwrap_or(0), Ordering::Relaxed);
    }
    let (pack_tx, mut pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);
    let walk = tokio::task::spawn_blocking({
        let opts = opts.clone();
        move || run_pipeline(&source, &opts, chunker, parent.as_ref(), &known, pack_tx)
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
    let (index, mut stats) = walked?;
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
        mb_per_s = stats.bytes_read as f64 / 1e6 / stats.seconds.max(1e-9),
        "volume backed up"
    );
    Ok(BackupOutcome { index, stats })
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
        sha256: p.id,
    })
}

struct Job {
    file: u32,
    seq: u32,
    data: Vec<u8>,
}

enum Hashed {
    /// In the repository already (known set).
    Known {
        file: u32,
        seq: u32,
        id: ChunkId,
        size: u32,
    },
    /// First sighting in this run: stored form attached.
    New {
        file: u32,
        seq: u32,
        id: ChunkId,
        size: u32,
        stored: Vec<u8>,
    },
    /// Seen earlier in this run; its location is resolved at the end.
    Dup {
        file: u32,
        seq: u32,
        id: ChunkId,
        size: u32,
    },
}

/// A file's chunk as the packer records it: (file slot, sequence, id, plaintext size).
type Placed = (u32, u32, ChunkId, u32);

struct PackerOut {
    placed: Vec<Placed>,
    /// New chunk → (pack number in this run, offset, stored length).
    run: HashMap<ChunkId, (u32, u32, u32)>,
    /// Pack number → its ref.
    finished: Vec<PackRef>,
    new_chunks: u64,
    new_bytes: u64,
    new_stored_bytes: u64,
    reused_chunks: u64,
    reused_bytes: u64,
}

fn run_pipeline(
    source: &Path,
    opts: &BackupOptions,
    chunker: ChunkerConfig,
    parent: Option<&VolumeIndex>,
    known: &KnownChunks,
    pack_tx: tokio::sync::mpsc::Sender<FinishedPack>,
) -> Result<(VolumeIndex, BackupStats)> {
    let workers = opts.workers.max(1);
    let (job_tx, job_rx) = sync_channel::<Job>(workers * 2);
    let (hashed_tx, hashed_rx) = sync_channel::<Hashed>(workers * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let seen: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    std::thread::scope(|s| {
        // Owned by this closure, so an early return drops it and idle workers end before the
        // scope joins them.
        let job_tx = job_tx;
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let hashed_tx = hashed_tx.clone();
            let seen = &seen;
            let level = opts.zstd_level;
            std::thread::Builder::new()
                .name("mover-hash".into())
                .spawn_scoped(s, move || {
                    hash_worker(&job_rx, hashed_tx, known, seen, level)
                })
                .map_err(|source| MoverError::Thread { source })?;
        }
        // Only workers may hold the job receiver: if they stop, the walker's send must fail.
        drop(job_rx);
        drop(hashed_tx);
        let packer = std::thread::Builder::new()
            .name("mover-pack".into())
            .spawn_scoped(s, move || packer(hashed_rx, opts.pack_target, pack_tx))
            .map_err(|source| MoverError::Thread { source })?;
        let walked = Walker::new(source, opts, chunker, parent, job_tx).walk();
        let packed = packer.join().expect("packer does not panic");
        let (mut index, mut stats, mut table, files) = walked?;
        let out = packed?;
        assemble(&mut index, &mut table, files, out, known, &mut stats)?;
        index.packs = table.packs;
        Ok((index, stats))
    })
}

fn hash_worker(
    jobs: &Mutex<Receiver<Job>>,
    out: SyncSender<Hashed>,
    known: &KnownChunks,
    seen: &Mutex<HashSet<ChunkId>>,
    level: Option<i32>,
) {
    loop {
        // The lock is held only to take one job, not while hashing.
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let id = ChunkId::of(&job.data);
        let size = job.data.len() as u32;
        let (file, seq) = (job.file, job.seq);
        let msg = if known.contains(&id) {
            Hashed::Known {
                file,
                seq,
                id,
                size,
            }
        } else if seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            let stored = match level {
                Some(l) => encode_chunk(&job.data, l),
                None => job.data,
            };
            Hashed::New {
                file,
                seq,
                id,
                size,
                stored,
            }
        } else {
            Hashed::Dup {
                file,
                seq,
                id,
                size,
            }
        };
        if out.send(msg).is_err() {
            return;
        }
    }
}

fn packer(
    rx: Receiver<Hashed>,
    target: usize,
    tx: tokio::sync::mpsc::Sender<FinishedPack>,
) -> Result<PackerOut> {
    let mut out = PackerOut {
        placed: Vec::new(),
        run: HashMap::new(),
        finished: Vec::new(),
        new_chunks: 0,
        new_bytes: 0,
        new_stored_bytes: 0,
        reused_chunks: 0,
        reused_bytes: 0,
    };
    let mut current = PackBuilder::with_capacity(target + (1 << 20));
    let ship = |b: PackBuilder, out: &mut PackerOut| -> Result<()> {
        let p = b.finish();
        out.finished.push(PackRef {
            id: p.id.clone(),
            size: p.bytes.len() as u64,
        });
        tx.blocking_send(p).map_err(|_| MoverError::UploadStopped)
    };
    for h in rx {
        match h {
            Hashed::Known {
                file,
                seq,
                id,
                size,
            }
            | Hashed::Dup {
                file,
                seq,
                id,
                size,
            } => {
                out.reused_chunks += 1;
                out.reused_bytes += u64::from(size);
                out.placed.push((file, seq, id, size));
            }
            Hashed::New {
                file,
                seq,
                id,
                size,
                stored,
            } => {
                let e = current.add(id, size, &stored);
                out.run
                    .insert(id, (out.finished.len() as u32, e.offset, e.length));
                out.new_chunks += 1;
                out.new_bytes += u64::from(size);
                out.new_stored_bytes += stored.len() as u64;
                out.placed.push((file, seq, id, size));
                if current.len() >= target {
                    let full = std::mem::replace(
                        &mut current,
                        PackBuilder::with_capacity(target + (1 << 20)),
                    );
                    ship(full, &mut out)?;
                }
            }
        }
    }
    if !current.is_empty() {
        ship(current, &mut out)?;
    }
    Ok(out)
}

/// Puts each file's chunk references, in order, into the index.
fn assemble(
    index: &mut VolumeIndex,
    table: &mut PackTable,
    files: Vec<usize>,
    mut out: PackerOut,
    known: &KnownChunks,
    stats: &mut BackupStats,
) -> Result<()> {
    out.placed.sort_unstable_by_key(|p| (p.0, p.1));
    let new_rows: Vec<u32> = out.finished.iter().map(|p| table.intern(p)).collect();
    for (file, seq, id, size) in out.placed {
        let entry_idx = files[file as usize];
        let Entry::File(node) = &mut index.entries[entry_idx] else {
            unreachable!("file slots point at file entries");
        };
        debug_assert_eq!(node.chunks.len(), seq as usize);
        let cref = if let Some(&(pack_no, offset, length)) = out.run.get(&id) {
            ChunkRef {
                id,
                pack: new_rows[pack_no as usize],
                offset,
                length,
                size,
            }
        } else if let Some(loc) = known.get(&id) {
            ChunkRef {
                id,
                pack: table.intern(loc.pack),
                offset: loc.offset,
                length: loc.length,
                size: loc.size,
            }
        } else {
            return Err(MoverError::Internal {
                what: format!("chunk {id} of {} has no location", node.path),
            });
        };
        node.chunks.push(cref);
    }
    stats.new_chunks = out.new_chunks;
    stats.new_bytes = out.new_bytes;
    stats.new_stored_bytes = out.new_stored_bytes;
    stats.reused_chunks += out.reused_chunks;
    stats.reused_bytes += out.reused_bytes;
    Ok(())
}

type Walked = (VolumeIndex, BackupStats, PackTable, Vec<usize>);

struct Walker<'a> {
    root: &'a Path,
    chunker: ChunkerConfig,
    parent: HashMap<&'a str, &'a FileNode>,
    parent_packs: &'a [PackRef],
    jobs: SyncSender<Job>,
    progress: Option<Arc<Progress>>,
    unchanged: UnchangedRule,
    started: Instant,
    index: VolumeIndex,
    stats: BackupStats,
    table: PackTable,
    /// File slot → entry position, for files whose chunks the pipeline delivers.
    slots: Vec<usize>,
    links: HashMap<(u64, u64), String>,
    last_log: Instant,
}

impl<'a> Walker<'a> {
    fn new(
        root: &'a Path,
        opts: &BackupOptions,
        chunker: ChunkerConfig,
        parent: Option<&'a VolumeIndex>,
        jobs: SyncSender<Job>,
    ) -> Self {
        let parent_map = parent
            .filter(|p| p.chunker == opts.chunker)
            .map(|p| p.files().map(|f| (f.path.as_str(), f)).collect())
            .unwrap_or_default();
        Self {
            root,
            chunker,
            parent: parent_map,
            parent_packs: parent.map_or(&[], |p| &p.packs),
            jobs,
            progress: opts.progress.clone(),
            unchanged: opts.unchanged,
            started: Instant::now(),
            index: VolumeIndex::new(opts.chunker.clone()),
            stats: BackupStats::default(),
            table: PackTable::default(),
            slots: Vec::new(),
            links: HashMap::new(),
            last_log: Instant::now(),
        }
    }

    fn walk(mut self) -> Result<Walked> {
        let meta = fs::symlink_metadata(self.root).map_err(|source| MoverError::Walk {
            path: self.root.display().to_string(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(MoverError::SourceNotDir {
                path: self.root.display().to_string(),
            });
        }
        self.dir("")?;
        drop(self.jobs);
        Ok((self.index, self.stats, self.table, self.slots))
    }

    fn dir(&mut self, rel: &str) -> Result<()> {
        let abs = self.root.join(rel);
        let walk_err = |source| MoverError::Walk {
            path: abs.display().to_string(),
            source,
        };
        let mut names: Vec<_> = fs::read_dir(&abs)
            .map_err(walk_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(walk_err)?;
        // Sorted, so the index (and so the packs) do not depend on directory order.
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else {
                return Err(MoverError::NonUtf8Name {
                    path: abs.join(&name).display().to_string(),
                });
            };
            let rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            self.entry(rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: String) -> Result<()> {
        let abs = self.root.join(&rel);
        let walk_err = |source| MoverError::Walk {
            path: abs.display().to_string(),
            source,
        };
        let m = fs::symlink_metadata(&abs).map_err(walk_err)?;
        let meta = Meta {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: Mtime(m.mtime(), m.mtime_nsec() as u32),
        };
        let ft = m.file_type();
        if ft.is_dir() {
            self.stats.dirs += 1;
            self.index.entries.push(Entry::Dir(DirNode {
                path: rel.clone(),
                meta,
            }));
            return self.dir(&rel);
        }
        if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(walk_err)?;
            let Some(target) = target.to_str() else {
                return Err(MoverError::NonUtf8Name {
                    path: abs.display().to_string(),
                });
            };
            self.stats.symlinks += 1;
            self.index.entries.push(Entry::Symlink(SymlinkNode {
                path: rel,
                meta,
                target: target.to_owned(),
            }));
            return Ok(());
        }
        if !ft.is_file() {
            tracing::warn!(path = %rel, "not a file, directory or link; skipped");
            self.stats.skipped.push(format!("{rel}: special file"));
            return Ok(());
        }
        if m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                self.stats.hard_links += 1;
                self.index.entries.push(Entry::HardLink(HardLinkNode {
                    path: rel,
                    target: first.clone(),
                }));
                return Ok(());
            }
            self.links.insert((m.dev(), m.ino()), rel.clone());
        }
        self.stats.files += 1;
        self.stats.bytes_total += m.size();
        let mut node = FileNode {
            path: rel,
            meta,
            size: m.size(),
            inode: m.ino(),
            holes: Vec::new(),
            chunks: Vec::new(),
        };
        if let Some(p) = self.parent.get(node.path.as_str()).copied()
            && self.unchanged != UnchangedRule::Never
            && p.size == node.size
            && p.meta.mtime == node.meta.mtime
            && (p.inode == node.inode || self.unchanged == UnchangedRule::SizeMtime)
            && let Some(chunks) = p
                .chunks
                .iter()
                .map(|c| self.table.adopt(self.parent_packs, c))
                .collect::<Option<Vec<_>>>()
        {
            self.stats.files_unchanged += 1;
            self.stats.reused_chunks += chunks.len() as u64;
            self.stats.reused_bytes += chunks.iter().map(|c| u64::from(c.size)).sum::<u64>();
            node.chunks = chunks;
            node.holes = p.holes.clone();
            self.index.entries.push(Entry::File(node));
            self.file_done(0);
            return Ok(());
        }
        let slot = self.slots.len() as u32;
        self.slots.push(self.index.entries.len());
        // Fewer allocated blocks than the size says: the file has holes worth keeping.
        let sparse = m.blocks() * 512 < m.size();
        let file = File::open(&abs).map_err(walk_err)?;
        let read_err = |source| MoverError::Read {
            path: abs.display().to_string(),
            source,
        };
        if sparse {
            node.holes = find_holes(&file, m.size()).map_err(read_err)?;
        }
        let reader = DataReader::new(file, node.holes.clone(), m.size());
        let mut read = 0u64;
        for (seq, chunk) in ChunkIter::new(reader, self.chunker).enumerate() {
            let chunk = chunk.map_err(read_err)?;
            read += chunk.data.len() as u64;
            let job = Job {
                file: slot,
                seq: seq as u32,
                data: chunk.data,
            };
            self.jobs.send(job).map_err(|_| MoverError::UploadStopped)?;
        }
        self.stats.bytes_read += read;
        let holes: u64 = node.holes.iter().map(|h| h.1).sum();
        if node.holes.is_empty() && read != node.size {
            // Shrunk while read (a live directory, not a snapshot): record what was read, so
            // the entry stays consistent and restorable.
            tracing::warn!(path = %node.path, expected = node.size, read, "file changed while read");
            self.stats.skipped.push(format!(
                "{}: changed while read ({read} of {} bytes)",
                node.path, node.size
            ));
            node.size = read;
        } else if read + holes != node.size {
            return Err(MoverError::Read {
                path: abs.display().to_string(),
                source: io::Error::other("sparse file changed while read"),
            });
        }
        self.index.entries.push(Entry::File(node));
        self.file_done(read);
        Ok(())
    }

    fn file_done(&mut self, read: u64) {
        if let Some(p) = &self.progress {
            p.bytes.fetch_add(read, Ordering::Relaxed);
            p.files.fetch_add(1, Ordering::Relaxed);
        }
        if self.last_log.elapsed() > Duration::from_secs(5) {
            self.last_log = Instant::now();
            let secs = self.started.elapsed().as_secs_f64();
            let rate = self.stats.bytes_read as f64 / secs.max(1e-9);
            let total = self
                .progress
                .as_ref()
                .map_or(0, |p| p.bytes_total.load(Ordering::Relaxed));
            // The total is the file system's used bytes, an estimate: the ETA is a guide.
            let eta_s = (total > self.stats.bytes_total && rate > 0.0)
                .then(|| ((total - self.stats.bytes_total) as f64 / rate) as u64);
            tracing::info!(
                files = self.stats.files,
                bytes_read = self.stats.bytes_read,
                mb_per_s = rate / 1e6,
                eta_s,
                "backup progress"
            );
        }
    }
}

/// Bytes in use on the file system holding `path` (a volume is its own file system, so this is
/// the data to back up, give or take metadata): the total behind the ETA.
/// The bytes used on the file system of `path` when `path` is its mount point (a volume mounted
/// into a mover pod); None for a plain directory, whose file system holds other data too.
fn used_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let parent = std::fs::metadata(path.join("..")).ok()?.dev();
    if dev == parent {
        return None;
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64)
}

/// The holes of a sparse file as `(offset, length)`, from `SEEK_DATA`/`SEEK_HOLE`: the zeros are
/// never read. A file system without the calls reports one data region, so nothing is lost.
fn find_holes(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let seek = |off: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor we own; it only moves the file offset.
        let r = unsafe { libc::lseek(fd, off as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        let e = io::Error::last_os_error();
        // ENXIO: no data at or after `off`.
        if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        }
    };
    let mut holes = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = seek(pos, libc::SEEK_DATA)?.unwrap_or(size).min(size);
        if data > pos {
            holes.push((pos, data - pos));
        }
        if data >= size {
            break;
        }
        pos = seek(data, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
    }
    seek(0, libc::SEEK_SET)?;
    Ok(holes)
}

/// Reads a file's bytes with its holes left out.
struct DataReader {
    file: File,
    holes: std::vec::IntoIter<(u64, u64)>,
    next_hole: Option<(u64, u64)>,
    pos: u64,
    size: u64,
}

impl DataReader {
    fn new(file: File, holes: Vec<(u64, u64)>, size: u64) -> Self {
        let mut holes = holes.into_iter();
        let next_hole = holes.next();
        Self {
            file,
            holes,
            next_hole,
            pos: 0,
            size,
        }
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((off, len)) = self.next_hole
                && self.pos == off
            {
                self.pos += len;
                self.file.seek(SeekFrom::Start(self.pos))?;
                self.next_hole = self.holes.next();
                continue;
            }
            break;
        }
        let limit = self.next_hole.map_or(self.size, |(o, _)| o).min(self.size);
        if self.pos >= limit {
            return Ok(0);
        }
        let want = buf.len().min((limit - self.pos) as usize);
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}
