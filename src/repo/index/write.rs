//! Writes a volume index to disk as it is produced, so a 1 TB volume's millions of chunk
//! references never sit in memory.
//!
//! The index's `packs` table comes first in the object but is complete only at the end, and a
//! file's final size (it may shrink while read) only after its chunks; so entries and chunk
//! references go to two spool files and [`IndexWriter::finish`] joins them into the index,
//! byte for byte what [`VolumeIndex::to_json`](super::VolumeIndex::to_json) gives for the same
//! tree.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ChunkRef, Entry, FileNode, INDEX_FORMAT, INDEX_VERSION, PackRef};
use crate::repo::ChunkId;
use crate::repo::ChunkerParams;

/// Bytes of one spooled chunk reference: id, pack, offset, length, size.
pub(crate) const CHUNK_RECORD: usize = 48;
/// Where a record holds the chunk's pack offset.
const OFFSET_AT: u64 = 36;

/// An entry as spooled: a file's chunks are counted here and stored in the chunk spool.
#[derive(Serialize, Deserialize)]
enum Spooled {
    Entry(Entry),
    File { node: FileNode, chunks: u64 },
}

/// Builds an index on disk, entry by entry, in tree order.
#[derive(Debug)]
pub struct IndexWriter {
    dir: tempfile::TempDir,
    entries: BufWriter<File>,
    chunks: BufWriter<File>,
    /// The file being written and its chunk count so far.
    open: Option<(FileNode, u64)>,
    chunk_count: u64,
}

/// An index written to a local file, ready to upload.
#[derive(Debug)]
pub struct WrittenIndex {
    // Keeps the file until the index is dropped.
    _dir: tempfile::TempDir,
    /// The index file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// sha256 of its bytes (lowercase hex).
    pub sha256: String,
    /// Chunk references it holds.
    pub chunk_refs: u64,
}

impl IndexWriter {
    /// A writer spooling under the system's temporary directory (`TMPDIR`).
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-index-")
            .tempdir()?;
        let entries = BufWriter::with_capacity(64 << 10, File::create(dir.path().join("entries"))?);
        let chunks = BufWriter::with_capacity(64 << 10, File::create(dir.path().join("chunks"))?);
        Ok(Self {
            dir,
            entries,
            chunks,
            open: None,
            chunk_count: 0,
        })
    }

    /// Appends a whole entry (a file with its chunk list in memory, or any other kind).
    pub fn push(&mut self, entry: Entry) -> io::Result<()> {
        if let Entry::File(mut node) = entry {
            let chunks = std::mem::take(&mut node.chunks);
            self.begin_file(node)?;
            for c in &chunks {
                self.chunk(c)?;
            }
            return self.end_file(None);
        }
        self.close_check()?;
        spool_line(&mut self.entries, &Spooled::Entry(entry))
    }

    /// Starts a regular file; its chunks follow through [`IndexWriter::chunk`].
    pub fn begin_file(&mut self, mut node: FileNode) -> io::Result<()> {
        self.close_check()?;
        node.chunks.clear();
        self.open = Some((node, 0));
        Ok(())
    }

    /// Appends the next chunk of the open file; returns its number, for
    /// [`IndexWriter::move_chunks`].
    pub fn chunk(&mut self, c: &ChunkRef) -> io::Result<u64> {
        let Some((_, n)) = self.open.as_mut() else {
            return Err(io::Error::other("index writer: a chunk outside a file"));
        };
        *n += 1;
        let number = self.chunk_count;
        self.chunk_count += 1;
        self.chunks.write_all(&encode_record(c))?;
        Ok(number)
    }

    /// Sets the pack offset of chunk references already written (by their numbers): a pack
    /// whose chunks were shuffled once it was full.
    pub fn move_chunks(&mut self, moves: impl IntoIterator<Item = (u64, u32)>) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.chunks.flush()?;
        for (number, offset) in moves {
            if number >= self.chunk_count {
                return Err(io::Error::other(format!(
                    "index writer: no chunk reference {number} to move"
                )));
            }
            self.chunks.get_ref().write_all_at(
                &offset.to_le_bytes(),
                number * CHUNK_RECORD as u64 + OFFSET_AT,
            )?;
        }
        Ok(())
    }

    /// Ends the open file, with its final size if it differs from the one given at its start.
    pub fn end_file(&mut self, size: Option<u64>) -> io::Result<()> {
        let Some((mut node, chunks)) = self.open.take() else {
            return Err(io::Error::other("index writer: end of a file never begun"));
        };
        if let Some(size) = size {
            node.size = size;
        }
        spool_line(&mut self.entries, &Spooled::File { node, chunks })
    }

    fn close_check(&self) -> io::Result<()> {
        match &self.open {
            Some((node, _)) => Err(io::Error::other(format!(
                "index writer: file {} was not ended",
                node.path
            ))),
            None => Ok(()),
        }
    }

    /// Joins the spools into the index file, with `packs` as its pack table.
    pub fn finish(
        mut self,
        chunker: &ChunkerParams,
        packs: &[PackRef],
    ) -> io::Result<WrittenIndex> {
        self.close_check()?;
        self.entries.flush()?;
        self.chunks.flush()?;
        let path = self.dir.path().join("index.json");
        let out = HashingWriter {
            inner: BufWriter::with_capacity(256 << 10, File::create(&path)?),
            hash: Sha256::new(),
            len: 0,
        };
        let mut out = assemble(self.dir.path(), out, chunker, packs)?;
        out.inner.flush()?;
        // The spools are no longer needed; only the index stays until upload.
        drop(self.entries);
        drop(self.chunks);
        std::fs::remove_file(self.dir.path().join("entries"))?;
        std::fs::remove_file(self.dir.path().join("chunks"))?;
        Ok(WrittenIndex {
            _dir: self.dir,
            path,
            size: out.len,
            sha256: hex::encode(out.hash.finalize()),
            chunk_refs: self.chunk_count,
        })
    }
}

impl WrittenIndex {
    /// The index's bytes (for small indexes and tests).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn spool_line(w: &mut impl Write, s: &Spooled) -> io::Result<()> {
    serde_json::to_writer(&mut *w, s)?;
    w.write_all(b"\n")
}

pub(crate) fn encode_record(c: &ChunkRef) -> [u8; CHUNK_RECORD] {
    let mut r = [0u8; CHUNK_RECORD];
    r[..32].copy_from_slice(&c.id.0);
    r[32..36].copy_from_slice(&c.pack.to_le_bytes());
    r[36..40].copy_from_slice(&c.offset.to_le_bytes());
    r[40..44].copy_from_slice(&c.length.to_le_bytes());
    r[44..48].copy_from_slice(&c.size.to_le_bytes());
    r
}

pub(crate) fn decode_record(r: &[u8; CHUNK_RECORD]) -> ChunkRef {
    let u = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4 bytes"));
    ChunkRef {
        id: ChunkId(r[..32].try_into().expect("32 bytes")),
        pack: u(32),
        offset: u(36),
        length: u(40),
        size: u(44),
    }
}

/// Writes `{"format":…,"version":…,"chunker":…,"packs":[…],"entries":[…]}` exactly as serde
/// derives it for [`super::VolumeIndex`].
fn assemble<W: Write>(
    dir: &Path,
    mut out: W,
    chunker: &ChunkerParams,
    packs: &[PackRef],
) -> io::Result<W> {
    out.write_all(b"{\"format\":")?;
    serde_json::to_writer(&mut out, INDEX_FORMAT)?;
    write!(out, ",\"version\":{INDEX_VERSION},\"chunker\":")?;
    serde_json::to_writer(&mut out, chunker)?;
    out.write_all(b",\"packs\":")?;
    serde_json::to_writer(&mut out, packs)?;
    out.write_all(b",\"entries\":[")?;
    let entries = BufReader::with_capacity(64 << 10, File::open(dir.join("entries"))?);
    let mut chunks = BufReader::with_capacity(64 << 10, File::open(dir.join("chunks"))?);
    let mut first = true;
    for line in entries.lines() {
        let line = line?;
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        match serde_json::from_str::<Spooled>(&line)? {
            Spooled::Entry(e) => serde_json::to_writer(&mut out, &e)?,
            Spooled::File { node, chunks: n } => {
                out.write_all(b"{\"file\":{\"path\":")?;
                serde_json::to_writer(&mut out, &node.path)?;
                out.write_all(b",\"meta\":")?;
                serde_json::to_writer(&mut out, &node.meta)?;
                write!(out, ",\"size\":{},\"inode\":{}", node.size, node.inode)?;
                if !node.holes.is_empty() {
                    out.write_all(b",\"holes\":")?;
                    serde_json::to_writer(&mut out, &node.holes)?;
                }
                out.write_all(b",\"chunks\":[")?;
                let mut rec = [0u8; CHUNK_RECORD];
                for i in 0..n {
                    chunks.read_exact(&mut rec)?;
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut out, &decode_record(&rec))?;
                }
                out.write_all(b"]}}")?;
            }
        }
    }
    out.write_all(b"]}")?;
    Ok(out)
}
