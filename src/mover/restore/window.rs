//! A window of a restore: the chunk uses of a part of the index, grouped by chunk and merged into
//! ranged reads of packs.

use std::ops::Range;
use std::sync::Arc;

use crate::repo::ChunkId;
use crate::repo::index::Meta;

/// A regular file data is written into.
#[derive(Debug)]
pub(super) struct FileTarget {
    /// Path relative to the target.
    pub(super) rel: String,
    /// Data regions of a sparse file: (file offset, length), in order. Empty for dense files.
    pub(super) regions: Vec<(u64, u64)>,
}

/// One use of a chunk: where its plaintext goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Use {
    pub(super) id: ChunkId,
    pub(super) pack: u32,
    pub(super) offset: u32,
    pub(super) length: u32,
    pub(super) size: u32,
    /// Row of the window's `files`.
    pub(super) file: u32,
    /// Offset in the file's data stream.
    pub(super) data_off: u64,
}

impl Use {
    /// Uses with the same key are one chunk, fetched and checked once.
    pub(super) fn chunk_key(&self) -> (u32, u32, u32, u32, ChunkId) {
        (self.pack, self.offset, self.length, self.size, self.id)
    }
}

/// A ranged read: bytes `start..end` of a pack, bringing `uses` (rows of the window's uses).
#[derive(Debug)]
pub(super) struct RangeRead {
    pub(super) pack: u32,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) uses: Range<usize>,
}

/// A part of the index whose data is fetched together.
#[derive(Debug, Default)]
pub(super) struct Window {
    pub(super) files: Vec<Arc<FileTarget>>,
    /// Sorted by pack, offset and chunk once planned.
    pub(super) uses: Vec<Use>,
    pub(super) reads: Vec<RangeRead>,
    /// Files whose last chunk is in this window (or that have none): their metadata is applied
    /// once the window's data is written.
    pub(super) finished: Vec<(Arc<FileTarget>, Meta)>,
    /// Distinct chunks.
    pub(super) chunks: u64,
}

impl Window {
    /// What the window holds, counted against [`RestoreOptions::window_chunks`].
    pub(super) fn items(&self) -> usize {
        self.uses.len() + self.files.len() + self.finished.len()
    }

    /// Groups the uses by chunk and merges contiguous chunks of a pack into ranged reads: only
    /// the bytes needed are fetched (and gaps of up to `bridge` bytes between chunks), and each
    /// distinct chunk of the window once.
    pub(super) fn plan(&mut self, max_range: u64, bridge: u64) {
        self.uses.sort_unstable_by_key(Use::chunk_key);
        let mut i = 0;
        while i < self.uses.len() {
            let u = self.uses[i];
            let key = u.chunk_key();
            let mut j = i + 1;
            while j < self.uses.len() && self.uses[j].chunk_key() == key {
                j += 1;
            }
            self.chunks += 1;
            let (start, end) = (
                u64::from(u.offset),
                u64::from(u.offset) + u64::from(u.length),
            );
            match self.reads.last_mut() {
                Some(r)
                    if r.pack == u.pack
                        && (r.end..=r.end + bridge).contains(&start)
                        && end - r.start <= max_range =>
                {
                    r.end = end;
                    r.uses.end = j;
                }
                _ => self.reads.push(RangeRead {
                    pack: u.pack,
                    start,
                    end,
                    uses: i..j,
                }),
            }
            i = j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_at(n: u8, offset: u32, length: u32) -> Use {
        Use {
            id: ChunkId([n; 32]),
            pack: 0,
            offset,
            length,
            size: length,
            file: 0,
            data_off: 0,
        }
    }

    /// Chunks at 0, 1000 (a gap of 500 before it) and 100 000 (a gap of ~98 KB).
    fn window() -> Window {
        Window {
            uses: vec![
                use_at(3, 100_000, 10),
                use_at(1, 0, 500),
                use_at(2, 1000, 500),
            ],
            ..Window::default()
        }
    }

    #[test]
    fn gaps_are_read_through_only_up_to_the_bridge_and_the_range_limit() {
        let spans = |w: &Window| w.reads.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
        let mut w = window();
        w.plan(1 << 20, 0);
        assert_eq!(spans(&w), [(0, 500), (1000, 1500), (100_000, 100_010)]);
        let mut w = window();
        w.plan(1 << 20, 1000);
        assert_eq!(spans(&w), [(0, 1500), (100_000, 100_010)]);
        let mut w = window();
        w.plan(1 << 20, 128 << 10);
        assert_eq!(spans(&w), [(0, 100_010)]);
        assert_eq!(w.reads[0].uses, 0..3);
        let mut w = window();
        w.plan(50_000, 128 << 10);
        assert_eq!(spans(&w), [(0, 1500), (100_000, 100_010)]);
    }
}
