//! The messages of the backup pipeline: what the walker hands to the hashing workers and they
//! pass on to the packer. In their own module so that the walker and the pipeline both depend
//! on them instead of on each other.

use crate::repo::index::{ChunkRef, Entry, FileNode};

/// What the walker hands on, numbered in walk order.
pub(super) struct Job {
    pub(super) seq: u64,
    pub(super) work: Work,
}

pub(super) enum Work {
    /// File data to hash (and compress if new).
    Chunk(Vec<u8>),
    /// Passed through the workers untouched; batched, so a run of unchanged files costs one
    /// hand-over per batch instead of three per file.
    Events(Vec<Event>),
}

/// Index events, in walk order.
pub(super) enum Event {
    /// A directory, symlink or hard link.
    Entry(Entry),
    /// A regular file begins; its chunks follow.
    FileStart(FileNode),
    /// Chunks of an unchanged file, taken over from the parent (pack rows of the parent).
    Adopt(Vec<ChunkRef>),
    /// The file ends, with its size if it changed while read.
    FileEnd(Option<u64>),
}
