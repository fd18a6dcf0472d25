//! The parent backup's index of the same volume, read twice as a stream from a local file: once
//! to fill the known set (and mark files touching retired packs), once alongside the walk so
//! unchanged files are taken over without being read.

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashSet;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::super::known::KnownChunks;
use super::super::{MoverError, Result};
use crate::repo::index::{
    ChunkRef, FileNode, Flow, IndexEvent, IndexHeader, IndexStream, IndexVisitor, PackRef,
    VolumeIndex, WrittenIndex, read_index,
};
use crate::repo::{ChunkerParams, IndexFile, PackId};

/// The parent index of a backup: a local file, and the packs its chunks must no longer come
/// from (retired: mostly garbage, to be stored again).
#[derive(Debug)]
pub struct ParentIndex {
    path: PathBuf,
    retired: HashSet<PackId>,
    // Whatever keeps the file alive (a temporary directory), dropped with the parent.
    _keep: Keep,
}

impl ParentIndex {
    /// An index file on the local disk.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            retired: HashSet::new(),
            _keep: Keep::Nothing,
        }
    }

    /// An index in memory (small volumes and tests), written to a temporary file.
    pub fn from_index(index: &VolumeIndex) -> Result<Self> {
        let written = index.write_file().map_err(|source| MoverError::Spool {
            what: "the parent index",
            source,
        })?;
        Ok(Self {
            path: written.path.clone(),
            retired: HashSet::new(),
            _keep: Keep::Written(written),
        })
    }

    /// An index downloaded from the repository ([`crate::repo::RepoReader::volume_index`]).
    pub fn downloaded(index: IndexFile) -> Self {
        Self {
            path: index.copy.path.clone(),
            retired: HashSet::new(),
            _keep: Keep::Downloaded(Box::new(index)),
        }
    }

    /// Files with a chunk in one of `retired` are neither taken over unread nor offer their
    /// chunks as known: their live data is stored again, so the retired pack can go.
    pub fn without_packs(mut self, retired: &HashSet<PackId>) -> Self {
        self.retired.extend(retired.iter().cloned());
        self
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whatever keeps a parent's file alive, dropped with it.
#[derive(Debug)]
enum Keep {
    Nothing,
    Written(#[allow(dead_code)] WrittenIndex),
    Downloaded(#[allow(dead_code)] Box<IndexFile>),
}

/// A parent ready for the walk: its event stream, and which of its files (by ordinal) must be
/// read again.
#[derive(Debug)]
pub(super) struct ParentCursor {
    stream: IndexStream,
    packs: Vec<PackRef>,
    tainted: Vec<u64>,
    ordinal: u64,
    _parent: ParentIndex,
}

/// Pass 1: adds the parent's chunks to `known` (all but those of retired packs), seals it, and
/// opens the parent for the walk. A parent cut by another chunker is not used at all.
pub(super) fn prepare(
    parent: Option<ParentIndex>,
    mut known: KnownChunks,
    chunker: &ChunkerParams,
) -> Result<(KnownChunks, Option<ParentCursor>)> {
    let spool = |source| MoverError::Spool {
        what: "the known-chunk set",
        source,
    };
    let Some(parent) = parent else {
        known.seal().map_err(spool)?;
        return Ok((known, None));
    };
    let file = std::fs::File::open(&parent.path).map_err(|source| MoverError::Spool {
        what: "the parent index",
        source,
    })?;
    let mut pass = Pass1 {
        chunker,
        retired: &parent.retired,
        known: &mut known,
        rows: Vec::new(),
        tainted: Vec::new(),
        ordinal: None,
        usable: false,
    };
    read_index(BufReader::with_capacity(256 << 10, file), &mut pass)?;
    let (usable, tainted) = (pass.usable, pass.tainted);
    known.seal().map_err(spool)?;
    if !usable {
        tracing::warn!("parent index used another chunker; deduplicating against it is skipped");
        return Ok((known, None));
    }
    let (header, stream) = IndexStream::open(&parent.path)?;
    Ok((
        known,
        Some(ParentCursor {
            stream,
            packs: header.packs,
            tainted,
            ordinal: 0,
            _parent: parent,
        }),
    ))
}

struct Pass1<'a> {
    chunker: &'a ChunkerParams,
    retired: &'a HashSet<PackId>,
    known: &'a mut KnownChunks,
    /// Parent pack row → known pack row, `None` for a retired pack.
    rows: Vec<Option<u32>>,
    tainted: Vec<u64>,
    ordinal: Option<u64>,
    usable: bool,
}

fn set_bit(bits: &mut Vec<u64>, i: u64) {
    let w = (i / 64) as usize;
    if bits.len() <= w {
        bits.resize(w + 1, 0);
    }
    bits[w] |= 1 << (i % 64);
}

fn bit(bits: &[u64], i: u64) -> bool {
    bits.get((i / 64) as usize)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

impl IndexVisitor for Pass1<'_> {
    type Error = MoverError;
    fn header(&mut self, h: &IndexHeader) -> Result<Flow> {
        if h.chunker != *self.chunker {
            return Ok(Flow::Stop);
        }
        self.usable = true;
        self.rows = h
            .packs
            .iter()
            .map(|p| (!self.retired.contains(&p.id)).then(|| self.known.intern(p)))
            .collect();
        Ok(Flow::Continue)
    }
    fn event(&mut self, e: IndexEvent) -> Result<()> {
        match e {
            IndexEvent::FileStart(_) => {
                self.ordinal = Some(self.ordinal.map_or(0, |o| o + 1));
            }
            IndexEvent::Chunk(c) => {
                let ordinal = self.ordinal.unwrap_or(0);
                match self.rows.get(c.pack as usize).copied().flatten() {
                    Some(pack) => self.known.add(ChunkRef { pack, ..c }).map_err(|source| {
                        MoverError::Spool {
                            what: "the known-chunk set",
                            source,
                        }
                    })?,
                    // A retired pack or a malformed reference: read the file again.
                    None => set_bit(&mut self.tainted, ordinal),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Order of the walk: component by component, names compared as bytes (a directory's entries
/// follow it directly, before its next sibling).
pub(super) fn walk_order(a: &str, b: &str) -> CmpOrdering {
    a.split('/').cmp(b.split('/'))
}

impl ParentCursor {
    /// The parent's pack table, handed over to the packer (the cursor needs only rows).
    pub(super) fn take_packs(&mut self) -> Vec<PackRef> {
        std::mem::take(&mut self.packs)
    }

    /// Moves to the parent's file at `path`, if it has one: its entry, and whether it may be
    /// taken over (none of its chunks is in a retired pack). Must be called in walk order.
    pub(super) fn find_file(&mut self, path: &str) -> Result<Option<(FileNode, bool)>> {
        loop {
            let ord = match self.stream.peek()? {
                None => return Ok(None),
                Some(IndexEvent::FileStart(f)) => walk_order(&f.path, path),
                Some(_) => CmpOrdering::Less,
            };
            match ord {
                CmpOrdering::Greater => return Ok(None),
                CmpOrdering::Less => {
                    if let Some(IndexEvent::FileStart(_)) = self.stream.next_event()? {
                        self.ordinal += 1;
                    }
                }
                CmpOrdering::Equal => {
                    let Some(IndexEvent::FileStart(f)) = self.stream.next_event()? else {
                        unreachable!("peeked a file start");
                    };
                    let ordinal = self.ordinal;
                    self.ordinal += 1;
                    return Ok(Some((f, !bit(&self.tainted, ordinal))));
                }
            }
        }
    }

    /// The next chunk of the file [`ParentCursor::find_file`] moved to; `None` at its end.
    pub(super) fn next_chunk(&mut self) -> Result<Option<ChunkRef>> {
        match self.stream.peek()? {
            Some(IndexEvent::Chunk(_)) => match self.stream.next_event()? {
                Some(IndexEvent::Chunk(c)) => Ok(Some(c)),
                _ => unreachable!("peeked a chunk"),
            },
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::walk_order;
    use std::cmp::Ordering::*;

    #[test]
    fn walk_order_is_depth_first_with_sorted_names() {
        // "a.txt" sorts before "a/b" as a string ('.' < '/'), but the walk visits a/ first.
        assert_eq!(walk_order("a", "a/b"), Less);
        assert_eq!(walk_order("a/b", "a.txt"), Less);
        assert_eq!(walk_order("a/z/y", "a/zz"), Less);
        assert_eq!(walk_order("b", "a/z"), Greater);
        assert_eq!(walk_order("a/b", "a/b"), Equal);
    }
}
