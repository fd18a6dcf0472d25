//! The exact set of chunks the repository is known to hold, with where each lies.
//!
//! Built from volume indexes (the parent backup of the same volume, and any others the caller
//! trusts, e.g. the other volumes of the last backup), so deduplication needs no listing of the
//! repository. Exact, never probabilistic: a false "known" would drop data.
//!
//! Memory is bounded whatever the volume's size: rows (48 bytes: id, pack row, offset, stored
//! length, size) collect in a buffer of `budget` bytes; a fuller set spills sorted runs to a
//! temporary directory and [`KnownChunks::seal`] merges them into one sorted file, of which only
//! the first id of every 4 KiB block stays in memory (32 bytes per 85 rows). A lookup is then one
//! binary search in memory and one 4 KiB read. A 1 TB volume (~17 M chunks of 64 KiB) needs
//! ~6.4 MB of fences and ~800 MB of temporary disk.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use super::chunker::ChunkId;
use crate::repo::PackId;
use crate::repo::index::{
    CHUNK_RECORD, ChunkRef, PackRef, VolumeIndex, decode_record, encode_record,
};

/// Rows per block of the sealed file: one fence key each.
const BLOCK_ROWS: usize = 4096 / CHUNK_RECORD;
/// Default memory for rows before they spill to disk.
const DEFAULT_BUDGET: usize = 32 << 20;

/// Where a known chunk lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownLocation<'a> {
    /// The pack.
    pub pack: &'a PackRef,
    /// The pack's row in this set's pack table ([`KnownChunks::pack`]).
    pub pack_row: u32,
    /// Offset in the pack.
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Plaintext length.
    pub size: u32,
}

#[derive(Debug)]
enum Sealed {
    /// Not sealed yet.
    Open,
    /// Everything fit the budget: sorted rows in memory.
    Memory,
    /// Sorted rows on disk, with the first id of every block.
    Disk {
        file: File,
        fences: Vec<ChunkId>,
        rows: u64,
    },
}

/// A sorted, deduplicated table of known chunks.
#[derive(Debug)]
pub struct KnownChunks {
    packs: PackTable,
    rows: Vec<ChunkRef>,
    budget_rows: usize,
    spill: Option<tempfile::TempDir>,
    runs: Vec<std::path::PathBuf>,
    sealed: Sealed,
}

impl Default for KnownChunks {
    fn default() -> Self {
        Self::with_budget(DEFAULT_BUDGET)
    }
}

impl KnownChunks {
    /// An empty set with the default memory budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set that holds at most `budget` bytes of rows in memory before spilling.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            packs: PackTable::default(),
            rows: Vec::new(),
            budget_rows: (budget / std::mem::size_of::<ChunkRef>()).max(BLOCK_ROWS),
            spill: None,
            runs: Vec::new(),
            sealed: Sealed::Open,
        }
    }

    /// Adds every chunk an index references.
    pub fn add_index(&mut self, index: &VolumeIndex) -> io::Result<()> {
        let map: Vec<u32> = index.packs.iter().map(|p| self.intern(p)).collect();
        for f in index.files() {
            for c in &f.chunks {
                let Some(&pack) = map.get(c.pack as usize) else {
                    continue; // a malformed reference is not knowledge
                };
                self.add(ChunkRef { pack, ..*c })?;
            }
        }
        Ok(())
    }

    /// The row of `p` in this set's pack table, added if new.
    pub fn intern(&mut self, p: &PackRef) -> u32 {
        self.packs.intern(p)
    }

    /// Adds one chunk; `c.pack` is a row of this set's pack table ([`KnownChunks::intern`]).
    pub fn add(&mut self, c: ChunkRef) -> io::Result<()> {
        debug_assert!(matches!(self.sealed, Sealed::Open), "add after seal");
        self.rows.push(c);
        if self.rows.len() >= self.budget_rows {
            self.spill_run()?;
        }
        Ok(())
    }

    fn spill_run(&mut self) -> io::Result<()> {
        sort_dedup(&mut self.rows);
        let dir = match &self.spill {
            Some(d) => d,
            None => self.spill.insert(
                tempfile::Builder::new()
                    .prefix("lifeboat-known-")
                    .tempdir()?,
            ),
        };
        let path = dir.path().join(format!("run-{}", self.runs.len()));
        let mut w = BufWriter::with_capacity(64 << 10, File::create(&path)?);
        for r in &self.rows {
            w.write_all(&encode_record(r))?;
        }
        w.flush()?;
        self.runs.push(path);
        self.rows.clear();
        Ok(())
    }

    /// Sorts and deduplicates (merging spilled runs into one file); lookups need it, so call it
    /// once after the last addition.
    pub fn seal(&mut self) -> io::Result<()> {
        if !matches!(self.sealed, Sealed::Open) {
            return Ok(());
        }
        if self.runs.is_empty() {
            sort_dedup(&mut self.rows);
            self.rows.shrink_to_fit();
            self.sealed = Sealed::Memory;
            return Ok(());
        }
        if !self.rows.is_empty() {
            self.spill_run()?;
        }
        self.rows = Vec::new();
        let dir = self
            .spill
            .as_ref()
            .expect("runs live in the spill directory");
        let path = dir.path().join("sealed");
        let (fences, rows) = merge_runs(&self.runs, &path)?;
        for r in self.runs.drain(..) {
            std::fs::remove_file(r)?;
        }
        self.sealed = Sealed::Disk {
            file: File::open(&path)?,
            fences,
            rows,
        };
        Ok(())
    }

    /// Number of distinct chunks (after [`KnownChunks::seal`]).
    pub fn len(&self) -> usize {
        match &self.sealed {
            Sealed::Disk { rows, .. } => *rows as usize,
            _ => self.rows.len(),
        }
    }

    /// Returns true if and only if no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pack at `row` of this set's pack table.
    pub fn pack(&self, row: u32) -> Option<&PackRef> {
        self.packs.packs.get(row as usize)
    }

    /// Where `id` lies, if known. Requires [`KnownChunks::seal`]; a failing read of the sealed
    /// file is an error, never a silent "unknown".
    pub fn get(&self, id: &ChunkId) -> io::Result<Option<KnownLocation<'_>>> {
        let row = match &self.sealed {
            Sealed::Open => {
                debug_assert!(self.rows.is_empty(), "seal() before lookups");
                None
            }
            Sealed::Memory => self
                .rows
                .binary_search_by(|r| r.id.cmp(id))
                .ok()
                .map(|i| self.rows[i]),
            Sealed::Disk { file, fences, rows } => lookup_disk(file, fences, *rows, id)?,
        };
        Ok(row.map(|r| KnownLocation {
            pack: &self.packs.packs[r.pack as usize],
            pack_row: r.pack,
            offset: r.offset,
            length: r.length,
            size: r.size,
        }))
    }

    /// Returns true if and only if `id` is known.
    pub fn contains(&self, id: &ChunkId) -> io::Result<bool> {
        Ok(self.get(id)?.is_some())
    }

    /// Approximate heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let fences = match &self.sealed {
            Sealed::Disk { fences, .. } => fences.capacity() * 32,
            _ => 0,
        };
        self.rows.capacity() * std::mem::size_of::<ChunkRef>()
            + fences
            + self.packs.packs.len() * (std::mem::size_of::<PackRef>() + 64 + 48)
    }
}

fn sort_dedup(rows: &mut Vec<ChunkRef>) {
    rows.sort_unstable_by_key(|r| r.id);
    rows.dedup_by(|a, b| a.id == b.id);
}

/// k-way merge of sorted runs into one sorted, deduplicated file; returns its fences and rows.
fn merge_runs(
    runs: &[std::path::PathBuf],
    out: &std::path::Path,
) -> io::Result<(Vec<ChunkId>, u64)> {
    let mut readers = runs
        .iter()
        .map(|p| Ok(BufReader::with_capacity(64 << 10, File::open(p)?)))
        .collect::<io::Result<Vec<_>>>()?;
    let next = |r: &mut BufReader<File>| -> io::Result<Option<[u8; CHUNK_RECORD]>> {
        let mut rec = [0u8; CHUNK_RECORD];
        match r.read_exact(&mut rec) {
            Ok(()) => Ok(Some(rec)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    };
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(rec) = next(r)? {
            heap.push(Reverse((rec, i)));
        }
    }
    let mut w = BufWriter::with_capacity(256 << 10, File::create(out)?);
    let mut fences = Vec::new();
    let mut rows = 0u64;
    let mut last: Option<[u8; 32]> = None;
    while let Some(Reverse((rec, i))) = heap.pop() {
        let id: [u8; 32] = rec[..32].try_into().expect("32 bytes");
        if last != Some(id) {
            if rows.is_multiple_of(BLOCK_ROWS as u64) {
                fences.push(ChunkId(id));
            }
            w.write_all(&rec)?;
            rows += 1;
            last = Some(id);
        }
        if let Some(rec) = next(&mut readers[i])? {
            heap.push(Reverse((rec, i)));
        }
    }
    w.flush()?;
    fences.shrink_to_fit();
    Ok((fences, rows))
}

fn lookup_disk(
    file: &File,
    fences: &[ChunkId],
    rows: u64,
    id: &ChunkId,
) -> io::Result<Option<ChunkRef>> {
    // The block whose first id is the last one not above `id`.
    let block = match fences.binary_search(id) {
        Ok(b) => b,
        Err(0) => return Ok(None),
        Err(b) => b - 1,
    };
    let first = (block * BLOCK_ROWS) as u64;
    let n = (rows - first).min(BLOCK_ROWS as u64) as usize;
    let mut buf = [0u8; BLOCK_ROWS * CHUNK_RECORD];
    file.read_exact_at(&mut buf[..n * CHUNK_RECORD], first * CHUNK_RECORD as u64)?;
    let recs: Vec<&[u8; CHUNK_RECORD]> = buf[..n * CHUNK_RECORD]
        .chunks_exact(CHUNK_RECORD)
        .map(|c| c.try_into().expect("record"))
        .collect();
    Ok(recs
        .binary_search_by(|r| r[..32].cmp(&id.0[..]))
        .ok()
        .map(|i| decode_record(recs[i])))
}

/// Builds a new index's `packs` table while chunk references from several sources land in it.
#[derive(Debug, Default)]
pub(crate) struct PackTable {
    pub(crate) packs: Vec<PackRef>,
    rows: HashMap<PackId, u32>,
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

    /// A row for a pack still being filled; [`PackTable::fill`] names it once it is finished.
    pub(crate) fn reserve(&mut self) -> u32 {
        self.packs.push(PackRef {
            id: PackId::default(),
            size: 0,
        });
        (self.packs.len() - 1) as u32
    }

    /// Names a reserved row.
    pub(crate) fn fill(&mut self, row: u32, p: PackRef) {
        self.rows.entry(p.id.clone()).or_insert(row);
        self.packs[row as usize] = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(&i.to_le_bytes()),
            pack: i % 3,
            offset: i,
            length: i + 1,
            size: i + 2,
        }
    }

    fn filled(budget: usize, n: u32) -> KnownChunks {
        let mut k = KnownChunks::with_budget(budget);
        for p in 0..3u8 {
            k.intern(&PackRef {
                id: PackId::from_hex(&hex::encode([p; 32])).unwrap(),
                size: 1,
            });
        }
        // Every chunk twice, out of order: the set keeps one row each.
        for i in (0..n).rev().chain(0..n) {
            k.add(chunk(i)).unwrap();
        }
        k.seal().unwrap();
        k
    }

    #[test]
    fn a_spilled_set_answers_exactly_like_one_in_memory() {
        let n = 20_000;
        let memory = filled(64 << 20, n);
        // 4096 rows per run: the 40,000 additions spill into 10 runs merged on seal.
        let disk = filled(4096 * std::mem::size_of::<ChunkRef>(), n);
        assert!(matches!(memory.sealed, Sealed::Memory));
        assert!(matches!(disk.sealed, Sealed::Disk { .. }));
        assert_eq!((memory.len(), disk.len()), (n as usize, n as usize));
        for i in (0..n + 500).step_by(7) {
            let id = ChunkId::of(&i.to_le_bytes());
            let (m, d) = (memory.get(&id).unwrap(), disk.get(&id).unwrap());
            assert_eq!(m, d, "chunk {i}");
            assert_eq!(
                d.map(|l| (l.offset, l.size, l.pack_row)),
                (i < n).then_some((i, i + 2, i % 3))
            );
        }
        assert!(disk.memory_bytes() < memory.memory_bytes() / 10);
    }
}
