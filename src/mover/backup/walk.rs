//! The walk of the source tree: entries in a fixed order (names sorted, parents first), each
//! file either taken over from the parent index unread or cut into chunk jobs.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::sync::mpsc::SyncSender;

use super::super::chunker::{ChunkIter, ChunkerConfig};
use super::super::{MoverError, Result};
use super::messages::{Event, Job, Work};
use super::parent::ParentCursor;
use super::{BackupOptions, BackupStats, Progress, UnchangedRule};
use crate::repo::index::{DirNode, Entry, FileNode, HardLinkNode, Meta, Mtime, SymlinkNode};

/// Chunk references per message when a file is taken over from the parent.
const ADOPT_BATCH: usize = 1024;
/// Index events per job handed to the pipeline.
const EVENT_BATCH: usize = 256;

pub(super) struct Walker<'a> {
    root: &'a Path,
    chunker: ChunkerConfig,
    parent: Option<ParentCursor>,
    jobs: SyncSender<Job>,
    seq: u64,
    /// Events not yet handed on (sent before the next chunk, or when the batch is full).
    events: Vec<Event>,
    progress: Option<Arc<Progress>>,
    unchanged: UnchangedRule,
    started: Instant,
    stats: BackupStats,
    links: HashMap<(u64, u64), String>,
    last_log: Instant,
}

impl<'a> Walker<'a> {
    pub(super) fn new(
        root: &'a Path,
        opts: &BackupOptions,
        chunker: ChunkerConfig,
        parent: Option<ParentCursor>,
        jobs: SyncSender<Job>,
    ) -> Self {
        Self {
            root,
            chunker,
            parent,
            jobs,
            seq: 0,
            events: Vec::with_capacity(EVENT_BATCH),
            progress: opts.progress.clone(),
            unchanged: opts.unchanged,
            started: Instant::now(),
            stats: BackupStats::default(),
            links: HashMap::new(),
            last_log: Instant::now(),
        }
    }

    fn send(&mut self, work: Work) -> Result<()> {
        if matches!(work, Work::Chunk(_)) {
            self.flush()?;
        }
        let job = Job {
            seq: self.seq,
            work,
        };
        self.seq += 1;
        self.jobs.send(job).map_err(|_| MoverError::UploadStopped)
    }

    fn event(&mut self, e: Event) -> Result<()> {
        self.events.push(e);
        if self.events.len() >= EVENT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.events.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.events, Vec::with_capacity(EVENT_BATCH));
        self.send(Work::Events(batch))
    }

    pub(super) fn walk(mut self) -> Result<BackupStats> {
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
        self.flush()?;
        Ok(self.stats)
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
        // Sorted, so the index (and so the packs) do not depend on directory order, and the
        // parent index can be followed alongside.
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
            self.event(Event::Entry(Entry::Dir(DirNode {
                path: rel.clone(),
                meta,
            })))?;
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
            return self.event(Event::Entry(Entry::Symlink(SymlinkNode {
                path: rel,
                meta,
                target: target.to_owned(),
            })));
        }
        if !ft.is_file() {
            tracing::warn!(path = %rel, "not a file, directory or link; skipped");
            self.stats.skipped.push(format!("{rel}: special file"));
            return Ok(());
        }
        if m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                self.stats.hard_links += 1;
                let target = first.clone();
                return self.event(Event::Entry(Entry::HardLink(HardLinkNode {
                    path: rel,
                    target,
                })));
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
        if self.take_over(&mut node)? {
            self.stats.files_unchanged += 1;
            self.file_done(0);
            return Ok(());
        }
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
        let (path, size, holes) = (node.path.clone(), node.size, node.holes.clone());
        self.event(Event::FileStart(node))?;
        let reader = DataReader::new(file, holes.clone(), size);
        let mut read = 0u64;
        for chunk in ChunkIter::new(reader, self.chunker) {
            let chunk = chunk.map_err(read_err)?;
            read += chunk.data.len() as u64;
            self.send(Work::Chunk(chunk.data))?;
        }
        self.stats.bytes_read += read;
        let hole_bytes: u64 = holes.iter().map(|h| h.1).sum();
        let mut final_size = None;
        if holes.is_empty() && read != size {
            // Changed while read (a live directory, not a snapshot): record what was read, so
            // the entry stays consistent and restorable.
            tracing::warn!(%path, expected = size, read, "file changed while read");
            self.stats.skipped.push(format!(
                "{path}: changed while read ({read} of {size} bytes)"
            ));
            final_size = Some(read);
        } else if read + hole_bytes != size {
            return Err(MoverError::Read {
                path: abs.display().to_string(),
                source: io::Error::other("sparse file changed while read"),
            });
        }
        self.event(Event::FileEnd(final_size))?;
        self.file_done(read);
        Ok(())
    }

    /// Takes the file over from the parent index, unread, if the parent has it unchanged (same
    /// size, mtime and, by default, inode) and none of its chunks is in a retired pack.
    fn take_over(&mut self, node: &mut FileNode) -> Result<bool> {
        let Some(cursor) = self.parent.as_mut() else {
            return Ok(false);
        };
        let Some((p, allowed)) = cursor.find_file(&node.path)? else {
            return Ok(false);
        };
        let same = allowed
            && self.unchanged != UnchangedRule::Never
            && p.size == node.size
            && p.meta.mtime == node.meta.mtime
            && (p.inode == node.inode || self.unchanged == UnchangedRule::SizeMtime);
        if !same {
            return Ok(false);
        }
        node.holes = p.holes;
        self.event(Event::FileStart(node.clone()))?;
        let mut batch = Vec::with_capacity(ADOPT_BATCH);
        loop {
            let next = self
                .parent
                .as_mut()
                .expect("a parent cursor")
                .next_chunk()?;
            let done = next.is_none();
            if let Some(c) = next {
                batch.push(c);
            }
            if batch.len() >= ADOPT_BATCH || (done && !batch.is_empty()) {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(ADOPT_BATCH));
                self.event(Event::Adopt(full))?;
            }
            if done {
                break;
            }
        }
        self.event(Event::FileEnd(None))?;
        Ok(true)
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
pub(super) fn used_bytes(path: &Path) -> Option<u64> {
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
