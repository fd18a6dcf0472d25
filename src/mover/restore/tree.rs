//! The tree of a restore: reading the index event by event, making its directories, files, hard
//! links and symlink placeholders in the target a window at a time, and finishing symlinks and
//! directory metadata last.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::check::EntryCheck;
use super::spool::{Spool, spool_io};
use super::window::{FileTarget, Use, Window};
use super::{MoverError, RestoreOptions, Result, io_err};
use crate::mover::fsmeta::{apply_meta, set_link_mtime};
use crate::repo::index::{
    DirNode, FileNode, HardLinkNode, IndexError, IndexEvent, IndexStream, Meta, SymlinkNode,
};

/// The text of the placeholder a symlink of the index stands as until all data is written. A
/// symlink too, so that nothing goes through it (a path under it is refused as going through a
/// symlink), nothing links to it (it is no regular file), and a filesystem that cannot hold
/// symlinks fails the restore early. It dangles, relative to its own directory.
pub(super) const PLACEHOLDER: &str = ".lifeboat-restore-pending-symlink";

/// The directories verified (as real directories, or created) on the way to the last entry: the
/// chain of its ancestors, so memory is the depth of the tree, not its size.
#[derive(Debug, Default)]
pub(super) struct VerifiedDirs {
    /// `chain[d]` is the ancestor at depth `d` (`a`, `a/b`, `a/b/c`, …).
    pub(super) chain: Vec<String>,
}

impl VerifiedDirs {
    /// Creates `rel`'s missing parent directories under `target`, refusing any that exists as
    /// something other than a directory (a symlink planted in the target, or the placeholder of
    /// a symlink of the index).
    pub(super) fn ensure_parent(&mut self, target: &Path, rel: &str) -> Result<()> {
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
    pub(super) fn verified(&mut self, dir: &str) {
        let depth = dir.matches('/').count();
        self.chain.truncate(depth);
        if self.chain.len() == depth {
            self.chain.push(dir.to_owned());
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct TreeCounts {
    pub(super) dirs: u64,
    pub(super) files: u64,
    pub(super) hard_links: u64,
}

/// The file whose chunk references are being read.
#[derive(Debug)]
pub(super) struct OpenFile {
    pub(super) file: Arc<FileTarget>,
    pub(super) meta: Meta,
    /// Offset of the next chunk in the file's data stream (holes excluded).
    pub(super) data_off: u64,
    /// Its row in the current window's `files`, once it has a chunk there.
    pub(super) slot: Option<u32>,
}

/// Reads the index event by event and makes its tree in the target, a window at a time.
pub(super) struct Tree {
    pub(super) stream: IndexStream,
    /// Object keys of the index's pack table.
    pub(super) keys: Arc<Vec<String>>,
    /// Stored sizes of the index's packs (encrypted packs are read by segment).
    pub(super) sizes: Arc<Vec<u64>>,
    pub(super) target: PathBuf,
    pub(super) check: EntryCheck,
    pub(super) dirs_ok: VerifiedDirs,
    pub(super) open: Option<OpenFile>,
    /// Symlinks of the index, made last.
    pub(super) symlinks: Spool,
    /// Directories of the index, whose metadata is applied last, in reverse.
    pub(super) dirs: Spool,
    pub(super) counts: TreeCounts,
    pub(super) window_chunks: usize,
    pub(super) max_range: u64,
    /// Gaps between chunks of a pack this short are read through (see [`Window::plan`]).
    pub(super) bridge: u64,
    /// Set when the restore fails elsewhere: stop preparing the window.
    pub(super) cancel: Arc<AtomicBool>,
    /// The index has been read to its end.
    pub(super) done: bool,
}

impl Tree {
    pub(super) fn open(
        index_path: &Path,
        target: PathBuf,
        opts: &RestoreOptions,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self> {
        let (header, stream) = IndexStream::open(index_path)?;
        Ok(Self {
            stream,
            keys: Arc::new(header.packs.iter().map(|p| p.key()).collect()),
            sizes: Arc::new(header.packs.iter().map(|p| p.size).collect()),
            target,
            check: EntryCheck::new(header.packs.len()),
            dirs_ok: VerifiedDirs::default(),
            open: None,
            symlinks: Spool::new().map_err(spool_io)?,
            dirs: Spool::new().map_err(spool_io)?,
            counts: TreeCounts::default(),
            window_chunks: opts.window_chunks.max(1),
            max_range: opts.max_range,
            // Encrypted packs are read in whole 64 KiB segments: a gap shorter than two costs
            // less read through than the partial segments at both ends of a second read.
            bridge: if opts.identity.is_some() {
                crate::repo::crypto::stream::SEGMENT_BYTES * 2
            } else {
                0
            },
            cancel,
            done: false,
        })
    }

    /// Takes the next window's entries from the index (checking each), creates what they need
    /// in the target and plans the window's reads.
    pub(super) fn next_window(&mut self) -> Result<Window> {
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
        w.plan(self.max_range, self.bridge);
        Ok(w)
    }

    pub(super) fn make_dir(&mut self, d: &DirNode) -> Result<()> {
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

    pub(super) fn make_file(&mut self, f: FileNode) -> Result<()> {
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
    pub(super) fn make_placeholder(&mut self, s: &SymlinkNode) -> Result<()> {
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
    pub(super) fn make_hard_link(&mut self, h: &HardLinkNode) -> Result<()> {
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

pub(super) fn data_regions(f: &FileNode) -> Vec<(u64, u64)> {
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

/// Once all data is written: symlinks replace their placeholders, then directories get their
/// metadata, deepest first (so creating nothing more can bump a directory's mtime afterwards).
/// Returns the number of symlinks made.
pub(super) fn finish_tree(
    target: &Path,
    symlinks: Spool,
    dirs: Spool,
    owners: bool,
) -> Result<u64> {
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
