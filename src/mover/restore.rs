//! Restore of a [`VolumeIndex`] into a directory, reading packs through a read-only [`Reader`].
//!
//! Order: check every entry (pure) → directories and empty files → chunk data with parallel
//! ranged reads, each chunk's sha256 checked before it is written → hard links → symlinks (last,
//! so nothing is ever written through one) → modes, owners, mtimes (directories deepest first).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::backup::Progress;
use super::chunker::ChunkId;
use super::index::{Entry, FileNode, Meta, Mtime, VolumeIndex};
use super::pack::decode_chunk_into;
use super::{MoverError, Result};
use crate::storage::Reader;

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
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_range: 4 << 20,
            set_owners: None,
            progress: None,
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
    /// Distinct chunks fetched and verified.
    pub chunks: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Checks every entry of an index before anything is written: relative paths without `.`/`..`
/// segments, no path through a symlink of the index, hard links to earlier files, chunk
/// references into the pack table, sizes that add up. Errors name the entry.
pub fn check_index(index: &VolumeIndex) -> Result<()> {
    let unsafe_path = |entry: &str, reason: &'static str| MoverError::UnsafePath {
        entry: entry.to_owned(),
        reason,
    };
    let mut seen: HashSet<&str> = HashSet::new();
    let mut files: HashSet<&str> = HashSet::new();
    let mut links: HashSet<&str> = HashSet::new();
    // Symlinks anywhere in the index count, whatever their order: a later symlink must not turn
    // an earlier directory entry into an escape either.
    for e in &index.entries {
        if let Entry::Symlink(s) = e {
            links.insert(&s.path);
        }
    }
    for e in &index.entries {
        let path = e.path();
        if path.is_empty() {
            return Err(unsafe_path(path, "empty path"));
        }
        if path.starts_with('/') {
            return Err(unsafe_path(path, "absolute path"));
        }
        if path.contains('\0') {
            return Err(unsafe_path(path, "NUL in path"));
        }
        if path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(unsafe_path(path, "empty, '.' or '..' segment"));
        }
        for (i, _) in path.match_indices('/') {
            let ancestor = &path[..i];
            if links.contains(ancestor) {
                return Err(MoverError::ThroughSymlink {
                    entry: path.to_owned(),
                    link: ancestor.to_owned(),
                });
            }
        }
        if !seen.insert(path) {
            return Err(unsafe_path(path, "listed twice"));
        }
        match e {
            Entry::File(f) => {
                check_file(index, f)?;
                files.insert(&f.path);
            }
            Entry::HardLink(h) if !files.contains(h.target.as_str()) => {
                return Err(MoverError::BadHardLink {
                    entry: h.path.clone(),
                    target: h.target.clone(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_file(index: &VolumeIndex, f: &FileNode) -> Result<()> {
    let bad = |reason: &'static str| MoverError::BadFileEntry {
        entry: f.path.clone(),
        reason,
    };
    if f.chunks
        .iter()
        .any(|c| c.pack as usize >= index.packs.len())
    {
        return Err(bad("chunk refers to a pack outside the pack table"));
    }
    let mut end = 0u64;
    let mut holes = 0u64;
    for &(off, len) in &f.holes {
        if off < end || off.checked_add(len).is_none_or(|e| e > f.size) {
            return Err(bad("holes overlap or lie outside the file"));
        }
        end = off + len;
        holes += len;
    }
    let data: u64 = f.chunks.iter().map(|c| u64::from(c.size)).sum();
    if data + holes != f.size {
        return Err(bad("chunks and holes do not add up to the file size"));
    }
    Ok(())
}

/// Restores `index` into `target` (an existing directory, normally empty). Never writes outside
/// it; fails on the first unsafe entry, missing pack or corrupted chunk, naming it.
pub async fn restore_volume(
    store: Reader,
    index: Arc<VolumeIndex>,
    target: PathBuf,
    opts: RestoreOptions,
) -> Result<RestoreStats> {
    let started = Instant::now();
    check_index(&index)?;
    let tm = fs::symlink_metadata(&target).map_err(|source| MoverError::Write {
        path: target.display().to_string(),
        source,
    })?;
    if !tm.is_dir() {
        return Err(MoverError::TargetNotDir {
            path: target.display().to_string(),
        });
    }
    let mut stats = RestoreStats::default();
    let (created, s) = blocking({
        let (index, target) = (index.clone(), target.clone());
        move || create_tree(&index, &target)
    })
    .await?;
    stats.dirs = s.dirs;
    stats.files = s.files;
    let plan = Arc::new(plan_reads(&index, opts.max_range));
    let total: u64 = index.total_file_bytes();
    if let Some(p) = &opts.progress {
        p.bytes_total.store(total, Ordering::Relaxed);
    }
    let ctx = Arc::new(WriteCtx {
        index: index.clone(),
        target: target.clone(),
        regions: created,
    });
    let per_read = futures::stream::iter(0..plan.reads.len())
        .map(|i| {
            let (store, plan, ctx, progress) = (
                store.clone(),
                plan.clone(),
                ctx.clone(),
                opts.progress.clone(),
            );
            async move {
                let r = &plan.reads[i];
                let key = index_pack_key(&ctx.index, r.pack);
                let bytes = store
                    .get_range(&key, r.start..r.end)
                    .await
                    .map_err(|source| MoverError::Fetch {
                        pack: key.clone(),
                        source,
                    })?;
                let fetched = r.end - r.start;
                let written =
                    blocking(move || write_read(&ctx, &plan.reads[i], &bytes, &key)).await?;
                if let Some(p) = progress {
                    p.bytes.fetch_add(written, Ordering::Relaxed);
                }
                Ok::<_, MoverError>((fetched, written))
            }
        })
        .buffer_unordered(opts.concurrency.max(1));
    let (mut fetched, mut written) = (0u64, 0u64);
    let mut per_read = std::pin::pin!(per_read);
    let mut last_log = Instant::now();
    while let Some((df, dw)) = per_read.try_next().await? {
        fetched += df;
        written += dw;
        if last_log.elapsed() > Duration::from_secs(5) {
            last_log = Instant::now();
            let rate = written as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let eta_s = (rate > 0.0).then(|| (total.saturating_sub(written) as f64 / rate) as u64);
            tracing::info!(
                bytes = written,
                total,
                mb_per_s = rate / 1e6,
                eta_s,
                "restore progress"
            );
        }
    }
    stats.bytes_fetched = fetched;
    stats.bytes_written = written;
    stats.reads = plan.reads.len() as u64;
    stats.chunks = plan.chunks;
    let owners = opts.set_owners.unwrap_or_else(running_as_root);
    let s = blocking({
        let (index, target) = (index.clone(), target.clone());
        move || finish_tree(&index, &target, owners)
    })
    .await?;
    stats.hard_links = s.hard_links;
    stats.symlinks = s.symlinks;
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

fn index_pack_key(index: &VolumeIndex, pack: u32) -> String {
    index.packs[pack as usize].key()
}

fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Data regions of a sparse file: (file offset, length), in order. Empty for dense files.
type Regions = HashMap<usize, Vec<(u64, u64)>>;

struct WriteCtx {
    index: Arc<VolumeIndex>,
    target: PathBuf,
    regions: Regions,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MoverError + '_ {
    move |source| MoverError::Write {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `rel`'s missing parent directories under `target`, refusing any that exists as
/// something other than a directory (a symlink planted in the target, for one).
fn ensure_parent(target: &Path, rel: &str, verified: &mut HashSet<String>) -> Result<()> {
    let Some((parent, _)) = rel.rsplit_once('/') else {
        return Ok(());
    };
    let mut acc = String::new();
    for seg in parent.split('/') {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(seg);
        if verified.contains(&acc) {
            continue;
        }
        let abs = target.join(&acc);
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(MoverError::ThroughSymlink {
                    entry: rel.to_owned(),
                    link: acc.clone(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&abs).map_err(io_err(&abs))?;
            }
            Err(e) => return Err(io_err(&abs)(e)),
        }
        verified.insert(acc.clone());
    }
    Ok(())
}

#[derive(Default)]
struct TreeCounts {
    dirs: u64,
    files: u64,
    hard_links: u64,
    symlinks: u64,
}

fn create_tree(index: &VolumeIndex, target: &Path) -> Result<(Regions, TreeCounts)> {
    let mut verified = HashSet::new();
    let mut regions = Regions::new();
    let mut n = TreeCounts::default();
    for (i, e) in index.entries.iter().enumerate() {
        match e {
            Entry::Dir(d) => {
                ensure_parent(target, &d.path, &mut verified)?;
                let abs = target.join(&d.path);
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
                verified.insert(d.path.clone());
                n.dirs += 1;
            }
            Entry::File(f) => {
                ensure_parent(target, &f.path, &mut verified)?;
                let abs = target.join(&f.path);
                // create_new (O_EXCL) never follows a symlink at the final component.
                let file = match OpenOptions::new().write(true).create_new(true).open(&abs) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(MoverError::TargetExists {
                            entry: f.path.clone(),
                        });
                    }
                    Err(e) => return Err(io_err(&abs)(e)),
                };
                // Unwritten ranges stay holes: sparse files come back sparse.
                file.set_len(f.size).map_err(io_err(&abs))?;
                if !f.holes.is_empty() {
                    regions.insert(i, data_regions(f));
                }
                n.files += 1;
            }
            Entry::Symlink(_) | Entry::HardLink(_) => {}
        }
    }
    Ok((regions, n))
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

/// One chunk a ranged read brings, and every place its plaintext goes.
struct ChunkUse {
    id: ChunkId,
    offset: u32,
    length: u32,
    size: u32,
    /// (entry position, offset in the file's data stream)
    targets: Vec<(usize, u64)>,
}

struct RangeRead {
    pack: u32,
    start: u64,
    end: u64,
    chunks: Vec<ChunkUse>,
}

struct ReadPlan {
    reads: Vec<RangeRead>,
    chunks: u64,
}

/// Groups every chunk use by pack and merges adjacent chunks into ranged reads: only the bytes
/// needed are fetched, and each distinct chunk once.
fn plan_reads(index: &VolumeIndex, max_range: u64) -> ReadPlan {
    let mut by_chunk: HashMap<(u32, u32), ChunkUse> = HashMap::new();
    for (i, e) in index.entries.iter().enumerate() {
        let Entry::File(f) = e else { continue };
        let mut data_off = 0u64;
        for c in &f.chunks {
            by_chunk
                .entry((c.pack, c.offset))
                .or_insert_with(|| ChunkUse {
                    id: c.id,
                    offset: c.offset,
                    length: c.length,
                    size: c.size,
                    targets: Vec::new(),
                })
                .targets
                .push((i, data_off));
            data_off += u64::from(c.size);
        }
    }
    let chunks = by_chunk.len() as u64;
    let mut all: Vec<(u32, ChunkUse)> = by_chunk.into_iter().map(|((p, _), u)| (p, u)).collect();
    all.sort_unstable_by_key(|(p, u)| (*p, u.offset));
    let mut reads: Vec<RangeRead> = Vec::new();
    for (pack, u) in all {
        let (start, end) = (
            u64::from(u.offset),
            u64::from(u.offset) + u64::from(u.length),
        );
        match reads.last_mut() {
            Some(r) if r.pack == pack && r.end == start && end - r.start <= max_range => {
                r.end = end;
                r.chunks.push(u);
            }
            _ => reads.push(RangeRead {
                pack,
                start,
                end,
                chunks: vec![u],
            }),
        }
    }
    ReadPlan { reads, chunks }
}

fn write_read(ctx: &WriteCtx, r: &RangeRead, bytes: &Bytes, key: &str) -> Result<u64> {
    let mut open: HashMap<usize, File> = HashMap::new();
    let mut written = 0u64;
    let mut plain = Vec::new();
    for u in &r.chunks {
        let lo = (u64::from(u.offset) - r.start) as usize;
        let stored =
            bytes
                .get(lo..lo + u.length as usize)
                .ok_or_else(|| MoverError::ShortRead {
                    pack: key.to_owned(),
                })?;
        decode_chunk_into(stored, u.size, &u.id, &mut plain).map_err(|source| {
            MoverError::CorruptChunk {
                file: ctx.index.entries[u.targets[0].0].path().to_owned(),
                chunk: u.id.to_hex(),
                pack: key.to_owned(),
                source,
            }
        })?;
        for &(entry, data_off) in &u.targets {
            let path = ctx.index.entries[entry].path();
            let abs = ctx.target.join(path);
            let file = match open.entry(entry) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    // The file was created by this restore a moment ago; nothing can have
                    // replaced it with a link, since links are made only after all data.
                    v.insert(
                        OpenOptions::new()
                            .write(true)
                            .open(&abs)
                            .map_err(io_err(&abs))?,
                    )
                }
            };
            match ctx.regions.get(&entry) {
                None => file.write_all_at(&plain, data_off).map_err(io_err(&abs))?,
                Some(regions) => {
                    write_sparse(file, regions, data_off, &plain).map_err(io_err(&abs))?
                }
            }
            written += plain.len() as u64;
        }
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

fn system_time(m: Mtime) -> SystemTime {
    let Mtime(s, ns) = m;
    if s >= 0 {
        SystemTime::UNIX_EPOCH + Duration::new(s as u64, ns)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
            + Duration::from_nanos(u64::from(ns))
    }
}

/// A symlink's own mtime (std has no call that does not follow the link).
fn set_link_mtime(abs: &Path, m: Mtime) -> io::Result<()> {
    set_mtime_nofollow(abs, m.0, m.1)
}

/// Sets the mtime of `path` itself, a symlink included (not its target); the access time is
/// left alone. Shared with the simulator's snapshotter and the demo's reference copy.
pub fn set_mtime_nofollow(path: &Path, secs: i64, nanos: u32) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as libc::c_long,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs; AT_SYMLINK_NOFOLLOW acts on a link itself.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn apply_meta(abs: &Path, meta: &Meta, owners: bool) -> Result<()> {
    let f = File::open(abs).map_err(io_err(abs))?;
    f.set_times(FileTimes::new().set_modified(system_time(meta.mtime)))
        .map_err(io_err(abs))?;
    drop(f);
    if owners {
        std::os::unix::fs::chown(abs, Some(meta.uid), Some(meta.gid)).map_err(io_err(abs))?;
    }
    // After chown, which clears setuid/setgid bits.
    fs::set_permissions(abs, fs::Permissions::from_mode(meta.mode)).map_err(io_err(abs))
}

fn finish_tree(index: &VolumeIndex, target: &Path, owners: bool) -> Result<TreeCounts> {
    let mut n = TreeCounts::default();
    let mut verified = HashSet::new();
    for e in &index.entries {
        match e {
            Entry::HardLink(h) => {
                // A symlink planted in the target must not carry the link elsewhere.
                ensure_parent(target, &h.path, &mut verified)?;
                let (abs, to) = (target.join(&h.path), target.join(&h.target));
                // Parents are real directories (checked when the tree was made); link() does
                // not follow a symlink at `to`, and `to` is a file this restore created.
                fs::hard_link(&to, &abs).map_err(io_err(&abs))?;
                n.hard_links += 1;
            }
            Entry::File(f) => apply_meta(&target.join(&f.path), &f.meta, owners)?,
            _ => {}
        }
    }
    for e in &index.entries {
        if let Entry::Symlink(s) = e {
            ensure_parent(target, &s.path, &mut verified)?;
            let abs = target.join(&s.path);
            std::os::unix::fs::symlink(&s.target, &abs).map_err(io_err(&abs))?;
            if owners {
                std::os::unix::fs::lchown(&abs, Some(s.meta.uid), Some(s.meta.gid))
                    .map_err(io_err(&abs))?;
            }
            set_link_mtime(&abs, s.meta.mtime).map_err(io_err(&abs))?;
            n.symlinks += 1;
        }
    }
    // Deepest first, so creating nothing more can bump a directory's mtime afterwards.
    for e in index.entries.iter().rev() {
        if let Entry::Dir(d) = e {
            apply_meta(&target.join(&d.path), &d.meta, owners)?;
        }
    }
    Ok(n)
}
