//! The volume index `backups/<name>/volumes/<ns>/<pvc>.json`: a volume's file tree with tar
//! semantics and, per regular file, where each of its chunks lies, so a restore needs nothing
//! else.
//!
//! Entries are externally tagged (`{"file": {...}}`) so serde streams them without buffering, and
//! a chunk reference is the compact array `[chunk id, pack, offset, length, size]` where `pack`
//! indexes the index's own `packs` table (one pack key per table row instead of per chunk).

mod read;
mod write;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::repo::{ChunkId, ChunkerParams, Layout, ObjectEntry, PackId};

pub use read::{Flow, IndexEvent, IndexHeader, IndexStream, IndexVisitor, read_header, read_index};
pub(crate) use write::{CHUNK_RECORD, decode_record, encode_record};
pub use write::{IndexWriter, WrittenIndex};

/// Format tag of a volume index.
pub const INDEX_FORMAT: &str = "lifeboat-volume-index";
/// The index version this build writes and reads.
pub const INDEX_VERSION: u32 = 1;

/// A volume's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeIndex {
    /// Always [`INDEX_FORMAT`].
    pub format: String,
    /// [`INDEX_VERSION`]; readers refuse higher versions.
    pub version: u32,
    /// The chunker the data was cut with (reuse across chunkers would not deduplicate).
    pub chunker: ChunkerParams,
    /// Every pack a chunk of this index lies in.
    pub packs: Vec<PackRef>,
    /// The tree, parents before children.
    pub entries: Vec<Entry>,
}

/// A pack, as listed in an index's pack table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PackRef {
    /// sha256 of the pack's bytes (lowercase hex); its key is `packs/<aa>/<id>`.
    pub id: PackId,
    /// The pack's size in bytes.
    pub size: u64,
}

impl PackRef {
    /// The pack's object key.
    pub fn key(&self) -> String {
        Layout::pack(&self.id)
    }

    /// The pack as a manifest lists it (the sha256 of a pack is its id).
    pub fn object_entry(&self) -> ObjectEntry {
        ObjectEntry {
            key: self.key(),
            size: self.size,
            sha256: self.id.to_string(),
        }
    }
}

/// Modification time: seconds and nanoseconds since the Unix epoch, serialized `[s, ns]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mtime(pub i64, pub u32);

/// What tar records of every entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Mtime,
}

/// One chunk of a file, serialized `[id, pack, offset, length, size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ChunkRefWire", into = "ChunkRefWire")]
pub struct ChunkRef {
    /// sha256 of the plaintext.
    pub id: ChunkId,
    /// Row of the index's `packs` table.
    pub pack: u32,
    /// Offset of the stored bytes in the pack.
    pub offset: u32,
    /// Stored length in the pack.
    pub length: u32,
    /// Plaintext length.
    pub size: u32,
}

type ChunkRefWire = (ChunkId, u32, u32, u32, u32);

impl From<ChunkRefWire> for ChunkRef {
    fn from((id, pack, offset, length, size): ChunkRefWire) -> Self {
        Self {
            id,
            pack,
            offset,
            length,
            size,
        }
    }
}

impl From<ChunkRef> for ChunkRefWire {
    fn from(c: ChunkRef) -> Self {
        (c.id, c.pack, c.offset, c.length, c.size)
    }
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileNode {
    /// Path relative to the volume root, `/`-separated.
    pub path: String,
    /// Mode, owner, mtime.
    pub meta: Meta,
    /// Apparent size in bytes.
    pub size: u64,
    /// Inode number at backup time: with size and mtime it tells an unchanged file.
    pub inode: u64,
    /// Holes of a sparse file as `[offset, length]`, sorted; the chunks cover the rest in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<(u64, u64)>,
    /// The data, in file order (holes excluded).
    pub chunks: Vec<ChunkRef>,
}

/// A directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirNode {
    /// Path relative to the volume root.
    pub path: String,
    /// Mode, owner, mtime.
    pub meta: Meta,
}

/// A symbolic link (never followed by backup or restore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymlinkNode {
    /// Path relative to the volume root.
    pub path: String,
    /// Owner and mtime (the mode of a link is meaningless on Linux).
    pub meta: Meta,
    /// The link's text, as stored.
    pub target: String,
}

/// A further name of a regular file listed earlier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardLinkNode {
    /// Path relative to the volume root.
    pub path: String,
    /// Path of the [`FileNode`] it shares an inode with.
    pub target: String,
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entry {
    /// A directory.
    Dir(DirNode),
    /// A regular file.
    File(FileNode),
    /// A symbolic link.
    Symlink(SymlinkNode),
    /// A hard link to an earlier file.
    HardLink(HardLinkNode),
}

impl Entry {
    /// The entry's path relative to the volume root.
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir(d) => &d.path,
            Entry::File(f) => &f.path,
            Entry::Symlink(s) => &s.path,
            Entry::HardLink(h) => &h.path,
        }
    }
}

/// An index that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Not JSON of a volume index.
    #[error("not a volume index")]
    Parse(#[source] serde_json::Error),
    /// Not in the order lifeboat writes, so it cannot be streamed.
    #[error("volume index is not in the order lifeboat writes: {0}")]
    Order(&'static str),
    /// The index file cannot be read.
    #[error("cannot read the volume index file")]
    Io(#[source] std::io::Error),
    /// Written by a newer lifeboat.
    #[error(
        "volume index {format} v{version} is not supported (this build reads v{INDEX_VERSION}); upgrade lifeboat"
    )]
    Unsupported {
        /// The format tag found.
        format: String,
        /// The version found.
        version: u32,
    },
}

impl VolumeIndex {
    /// An empty index for data cut with `chunker`.
    pub fn new(chunker: ChunkerParams) -> Self {
        Self {
            format: INDEX_FORMAT.into(),
            version: INDEX_VERSION,
            chunker,
            packs: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Serializes the index (compact: a large volume has millions of chunk references).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("VolumeIndex serializes")
    }

    /// Parses and checks the version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, IndexError> {
        let index: Self = serde_json::from_slice(bytes).map_err(IndexError::Parse)?;
        if index.format != INDEX_FORMAT || index.version > INDEX_VERSION {
            return Err(IndexError::Unsupported {
                format: index.format,
                version: index.version,
            });
        }
        Ok(index)
    }

    /// Reads an index from a stream of JSON (the whole index ends up in memory: for small
    /// indexes and tests; large ones are taken event by event with [`read_index`]).
    pub fn from_reader(reader: impl std::io::Read) -> Result<Self, IndexError> {
        struct Collect {
            entries: Vec<Entry>,
        }
        impl IndexVisitor for Collect {
            type Error = IndexError;
            fn header(&mut self, _: &IndexHeader) -> Result<Flow, IndexError> {
                Ok(Flow::Continue)
            }
            fn event(&mut self, e: IndexEvent) -> Result<(), IndexError> {
                match e {
                    IndexEvent::Dir(d) => self.entries.push(Entry::Dir(d)),
                    IndexEvent::Symlink(s) => self.entries.push(Entry::Symlink(s)),
                    IndexEvent::HardLink(h) => self.entries.push(Entry::HardLink(h)),
                    IndexEvent::FileStart(f) => self.entries.push(Entry::File(f)),
                    IndexEvent::Chunk(c) => match self.entries.last_mut() {
                        Some(Entry::File(f)) => f.chunks.push(c),
                        _ => return Err(IndexError::Order("a chunk outside a file")),
                    },
                    IndexEvent::FileEnd => {}
                }
                Ok(())
            }
        }
        let mut c = Collect {
            entries: Vec::new(),
        };
        let header = read_index(reader, &mut c)?;
        Ok(Self {
            format: INDEX_FORMAT.into(),
            version: INDEX_VERSION,
            chunker: header.chunker,
            packs: header.packs,
            entries: c.entries,
        })
    }

    /// Writes the index to a local file through an [`IndexWriter`].
    pub fn write_file(&self) -> std::io::Result<WrittenIndex> {
        let mut w = IndexWriter::new()?;
        for e in &self.entries {
            w.push(e.clone())?;
        }
        w.finish(&self.chunker, &self.packs)
    }

    /// The regular files.
    pub fn files(&self) -> impl Iterator<Item = &FileNode> {
        self.entries.iter().filter_map(|e| match e {
            Entry::File(f) => Some(f),
            _ => None,
        })
    }

    /// Every pack the index references, as the manifest lists them (the sha256 of a pack is
    /// its id).
    pub fn pack_entries(&self) -> Vec<ObjectEntry> {
        self.packs.iter().map(PackRef::object_entry).collect()
    }

    /// Files (and their hard links) that contain any of `chunks`, sorted.
    pub fn files_containing(&self, chunks: &BTreeSet<ChunkId>) -> Vec<String> {
        let mut hit: BTreeSet<&str> = self
            .files()
            .filter(|f| f.chunks.iter().any(|c| chunks.contains(&c.id)))
            .map(|f| f.path.as_str())
            .collect();
        let links: Vec<&str> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::HardLink(h) if hit.contains(h.target.as_str()) => Some(h.path.as_str()),
                _ => None,
            })
            .collect();
        hit.extend(links);
        hit.into_iter().map(str::to_owned).collect()
    }

    /// Total apparent size of the regular files.
    pub fn total_file_bytes(&self) -> u64 {
        self.files().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests;
