//! The exact set of chunks the repository is known to hold, with where each lies.
//!
//! Built from volume indexes (the parent backup of the same volume, and any others the caller
//! trusts, e.g. the other volumes of the last backup), so deduplication needs no listing of the
//! repository. Exact, never probabilistic: a false "known" would drop data.
//!
//! Memory: one sorted row per distinct chunk, 32 (id) + 4 (pack row) + 4 + 4 + 4 bytes = 48
//! bytes, plus one pack id string per pack (about 130 bytes for ~24 MiB of data).

use std::collections::HashMap;

use super::chunker::ChunkId;
use super::index::{ChunkRef, PackRef, VolumeIndex};

#[derive(Debug, Clone, Copy)]
struct Row {
    id: ChunkId,
    pack: u32,
    offset: u32,
    length: u32,
    size: u32,
}

/// Where a known chunk lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownLocation<'a> {
    /// The pack.
    pub pack: &'a PackRef,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Plaintext length.
    pub size: u32,
}

/// A sorted, deduplicated table of known chunks.
#[derive(Debug, Default, Clone)]
pub struct KnownChunks {
    packs: Vec<PackRef>,
    pack_rows: HashMap<String, u32>,
    rows: Vec<Row>,
    sorted: bool,
}

impl KnownChunks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every chunk an index references.
    pub fn add_index(&mut self, index: &VolumeIndex) {
        let map: Vec<u32> = index.packs.iter().map(|p| self.intern(p)).collect();
        for f in index.files() {
            for c in &f.chunks {
                let Some(&pack) = map.get(c.pack as usize) else {
                    continue; // a malformed reference is not knowledge
                };
                self.rows.push(Row {
                    id: c.id,
                    pack,
                    offset: c.offset,
                    length: c.length,
                    size: c.size,
                });
            }
        }
        self.sorted = false;
    }

    fn intern(&mut self, p: &PackRef) -> u32 {
        if let Some(&row) = self.pack_rows.get(&p.id) {
            return row;
        }
        let row = self.packs.len() as u32;
        self.packs.push(p.clone());
        self.pack_rows.insert(p.id.clone(), row);
        row
    }

    /// Sorts and deduplicates; lookups need it, so call it once after the last `add_index`.
    pub fn seal(&mut self) {
        self.rows.sort_unstable_by_key(|r| r.id);
        self.rows.dedup_by(|a, b| a.id == b.id);
        self.rows.shrink_to_fit();
        self.sorted = true;
    }

    /// Number of distinct chunks (after [`KnownChunks::seal`]).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Returns true if and only if no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Where `id` lies, if known. Requires [`KnownChunks::seal`].
    pub fn get(&self, id: &ChunkId) -> Option<KnownLocation<'_>> {
        debug_assert!(self.sorted || self.rows.is_empty(), "seal() before lookups");
        let i = self.rows.binary_search_by(|r| r.id.cmp(id)).ok()?;
        let r = &self.rows[i];
        Some(KnownLocation {
            pack: &self.packs[r.pack as usize],
            offset: r.offset,
            length: r.length,
            size: r.size,
        })
    }

    /// Returns true if and only if `id` is known.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.get(id).is_some()
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.packs.len() * (std::mem::size_of::<PackRef>() + 64 + 48)
    }
}

/// Builds a new index's `packs` table while chunk references from several sources land in it.
#[derive(Debug, Default)]
pub(crate) struct PackTable {
    pub(crate) packs: Vec<PackRef>,
    rows: HashMap<String, u32>,
}

impl PackTable {
    pub(crate) fn intern(&mut self, p: &PackRef) -> u32 {
        if let Some(&row) = self.rows.get(&p.id) {
            return row;
        }
        let row = self.packs.len() as u32;
        self.packs.push(p.clone());
        self.rows.insert(p.id.clone(), row);
        row
    }

    /// Copies a chunk reference of another index into this table's numbering.
    pub(crate) fn adopt(&mut self, from: &[PackRef], c: &ChunkRef) -> Option<ChunkRef> {
        let pack = self.intern(from.get(c.pack as usize)?);
        Some(ChunkRef { pack, ..*c })
    }
}
