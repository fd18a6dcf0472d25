//! The checks an index entry must pass before a restore writes anything for it.
//!
//! [`EntryCheck`] holds no more than the current file's running sums and the previous path, so
//! a streamed index of any size is checked in constant memory: entry paths (relative, no `.`,
//! `..` or empty segments, no NUL), chunk references into the pack table, holes and chunks that
//! add up to the file size, hard-link targets that are safe paths. The checks that need the rest
//! of the tree (a path through a symlink of the index, a hard link to an earlier regular file, a
//! path listed twice) are made by [`check_index`] for an index in memory, and by the restore
//! against the target itself (see [`super`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::super::{IndexError, MoverError, Result};
use crate::repo::index::{
    ChunkRef, Entry, FileNode, Flow, HardLinkNode, IndexEvent, IndexHeader, IndexVisitor,
    VolumeIndex, read_index,
};

fn unsafe_path(entry: &str, reason: &'static str) -> MoverError {
    MoverError::UnsafePath {
        entry: entry.to_owned(),
        reason,
    }
}

/// A path that stays inside the target whatever the target holds: relative, `/`-separated, no
/// empty, `.` or `..` segment, no NUL.
pub(super) fn check_path(path: &str) -> Result<()> {
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
    Ok(())
}

/// A regular file's running checks while its chunk references go by.
#[derive(Debug)]
pub(super) struct FileCheck {
    path: String,
    size: u64,
    packs: usize,
    /// Bytes in holes, or `None` if the holes overlap or lie outside the file.
    holes: Option<u64>,
    data: u64,
}

impl FileCheck {
    /// Starts checking `f` (its `chunks` are ignored: they come through [`FileCheck::chunk`]).
    pub(super) fn start(f: &FileNode, packs: usize) -> Self {
        let mut end = 0u64;
        let mut holes = Some(0u64);
        for &(off, len) in &f.holes {
            if off < end || off.checked_add(len).is_none_or(|e| e > f.size) {
                holes = None;
                break;
            }
            end = off + len;
            holes = holes.map(|h| h + len);
        }
        Self {
            path: f.path.clone(),
            size: f.size,
            packs,
            holes,
            data: 0,
        }
    }

    fn bad(&self, reason: &'static str) -> MoverError {
        MoverError::BadFileEntry {
            entry: self.path.clone(),
            reason,
        }
    }

    /// The next chunk reference: its pack must be in the table (checked first, as before any
    /// other problem of the file).
    pub(super) fn chunk(&mut self, c: &ChunkRef) -> Result<()> {
        if c.pack as usize >= self.packs {
            return Err(self.bad("chunk refers to a pack outside the pack table"));
        }
        self.data = self.data.saturating_add(u64::from(c.size));
        Ok(())
    }

    /// The file ends: holes and chunks must add up to its size.
    pub(super) fn end(self) -> Result<u64> {
        let Some(holes) = self.holes else {
            return Err(self.bad("holes overlap or lie outside the file"));
        };
        if self.data.checked_add(holes) != Some(self.size) {
            return Err(self.bad("chunks and holes do not add up to the file size"));
        }
        Ok(self.size)
    }
}

/// The constant-memory checks of a streamed index, event by event.
#[derive(Debug)]
pub(super) struct EntryCheck {
    packs: usize,
    /// The previous entry's path: an index in tree order lists a path twice only in a row.
    prev: String,
    file: Option<FileCheck>,
}

impl EntryCheck {
    pub(super) fn new(packs: usize) -> Self {
        Self {
            packs,
            prev: String::new(),
            file: None,
        }
    }

    fn entry(&mut self, path: &str) -> Result<()> {
        if self.file.is_some() {
            return Err(IndexError::Order("an entry inside a file").into());
        }
        check_path(path)?;
        if path == self.prev {
            return Err(unsafe_path(path, "listed twice"));
        }
        self.prev.clear();
        self.prev.push_str(path);
        Ok(())
    }

    /// Checks one event; at the end of a file, returns its size.
    pub(super) fn event(&mut self, e: &IndexEvent) -> Result<Option<u64>> {
        match e {
            IndexEvent::Dir(d) => self.entry(&d.path)?,
            IndexEvent::Symlink(s) => self.entry(&s.path)?,
            IndexEvent::HardLink(h) => {
                self.entry(&h.path)?;
                hard_link_target(h)?;
            }
            IndexEvent::FileStart(f) => {
                self.entry(&f.path)?;
                self.file = Some(FileCheck::start(f, self.packs));
            }
            IndexEvent::Chunk(c) => match self.file.as_mut() {
                Some(f) => f.chunk(c)?,
                None => return Err(IndexError::Order("a chunk outside a file").into()),
            },
            IndexEvent::FileEnd => match self.file.take() {
                Some(f) => return f.end().map(Some),
                None => return Err(IndexError::Order("the end of a file never begun").into()),
            },
        }
        Ok(None)
    }
}

/// A hard link's target must at least be a safe path (whether it is an earlier regular file is
/// decided with the rest of the tree).
fn hard_link_target(h: &HardLinkNode) -> Result<()> {
    if check_path(&h.target).is_err() || h.target == h.path {
        return Err(MoverError::BadHardLink {
            entry: h.path.clone(),
            target: h.target.clone(),
        });
    }
    Ok(())
}

/// What a checking pass over an index file counted.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Totals {
    /// Apparent bytes of the regular files.
    pub(super) file_bytes: u64,
    /// Chunk references.
    pub(super) chunk_refs: u64,
}

/// Reads the index file at `path` once and runs [`EntryCheck`] over every event, so a malformed
/// entry anywhere is refused before anything is written. Memory: constant.
pub(super) fn check_index_file(path: &Path) -> Result<(IndexHeader, Totals)> {
    struct Visit {
        check: Option<EntryCheck>,
        totals: Totals,
    }
    impl IndexVisitor for Visit {
        type Error = MoverError;
        fn header(&mut self, h: &IndexHeader) -> Result<Flow> {
            self.check = Some(EntryCheck::new(h.packs.len()));
            Ok(Flow::Continue)
        }
        fn event(&mut self, e: IndexEvent) -> Result<()> {
            let check = self.check.as_mut().expect("header comes first");
            if let Some(size) = check.event(&e)? {
                self.totals.file_bytes += size;
            }
            if matches!(e, IndexEvent::Chunk(_)) {
                self.totals.chunk_refs += 1;
            }
            Ok(())
        }
    }
    let file = File::open(path).map_err(|e| MoverError::Index(IndexError::Io(e)))?;
    let mut v = Visit {
        check: None,
        totals: Totals::default(),
    };
    let header = read_index(BufReader::with_capacity(256 << 10, file), &mut v)?;
    Ok((header, v.totals))
}

/// Checks every entry of an index before anything is written: relative paths without `.`/`..`
/// segments, no path through a symlink of the index, hard links to earlier files, chunk
/// references into the pack table, sizes that add up. Errors name the entry.
///
/// The index is in memory already, so this also keeps sets of its paths (a streamed restore
/// makes the same decisions against the target instead).
pub fn check_index(index: &VolumeIndex) -> Result<()> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut files: HashSet<&str> = HashSet::new();
    // Symlinks anywhere in the index count, whatever their order: a later symlink must not turn
    // an earlier directory entry into an escape either.
    let links: HashSet<&str> = index
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Symlink(s) => Some(s.path.as_str()),
            _ => None,
        })
        .collect();
    for e in &index.entries {
        let path = e.path();
        check_path(path)?;
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
                let mut check = FileCheck::start(f, index.packs.len());
                for c in &f.chunks {
                    check.chunk(c)?;
                }
                check.end()?;
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
