//! Content-defined chunking (FastCDC 2020) over any [`Read`], without other I/O.
//!
//! Boundaries depend only on the bytes, so an insert or an in-place page rewrite changes the
//! chunks around it and no others. [`ChunkIter`] finds the same boundaries as running
//! `fastcdc::v2020::FastCDC` over the whole buffer, while holding only a bounded window.

use std::io::{self, Read};

use fastcdc::v2020::{self, Normalization};

use crate::repo::ChunkerParams;

/// The algorithm name this module implements, as recorded in `lifeboat.json`.
pub const ALGORITHM: &str = "fastcdc-2020";

pub use crate::repo::ChunkId;

/// Chunk size bounds, checked against what FastCDC accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    /// Minimum chunk size in bytes.
    pub min: usize,
    /// Average (target) chunk size in bytes.
    pub avg: usize,
    /// Maximum chunk size in bytes.
    pub max: usize,
}

/// The repository's chunker parameters cannot be used by this build.
#[derive(Debug, thiserror::Error)]
#[error("unsupported chunker {algorithm} {min}/{avg}/{max}: {reason}")]
pub struct ChunkerParamsError {
    /// The algorithm named by the repository.
    pub algorithm: String,
    /// Minimum size.
    pub min: u32,
    /// Average size.
    pub avg: u32,
    /// Maximum size.
    pub max: u32,
    /// What is wrong.
    pub reason: &'static str,
}

impl ChunkerConfig {
    /// Takes the parameters recorded in a repository's `lifeboat.json`.
    pub fn from_params(p: &ChunkerParams) -> Result<Self, ChunkerParamsError> {
        let err = |reason| ChunkerParamsError {
            algorithm: p.algorithm.clone(),
            min: p.min_size,
            avg: p.avg_size,
            max: p.max_size,
            reason,
        };
        if p.algorithm != ALGORITHM {
            return Err(err("unknown algorithm"));
        }
        let (min, avg, max) = (
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
        );
        if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            || !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            || !(v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
        {
            return Err(err("size outside FastCDC's bounds"));
        }
        if !(min <= avg && avg <= max) || min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 {
            return Err(err("sizes must be even and ordered min <= avg <= max"));
        }
        Ok(Self { min, avg, max })
    }

    /// Cuts a whole in-memory buffer; the reference the streaming path must agree with.
    pub fn cut_slice<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        v2020::FastCDC::with_level(data, self.min, self.avg, self.max, Normalization::Level1)
            .map(move |c| &data[c.offset..c.offset + c.length])
    }
}

/// One chunk cut from a stream: its position in the stream and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChunk {
    /// Offset of the first byte in the stream.
    pub offset: u64,
    /// The plaintext.
    pub data: Vec<u8>,
}

/// Iterates over the chunks of any reader, holding a window of a few `max` sizes.
pub struct ChunkIter<R> {
    source: R,
    cfg: ChunkerConfig,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    offset: u64,
}

impl<R: Read> ChunkIter<R> {
    /// Chunks `source` with `cfg`.
    pub fn new(source: R, cfg: ChunkerConfig) -> Self {
        let (mask_s, mask_l) = v2020::select_masks(cfg.avg, Normalization::Level1);
        // Four max-size chunks per refill keeps the shifting cost below a quarter of a copy.
        let cap = (cfg.max * 4).max(1 << 20);
        Self {
            source,
            cfg,
            mask_s,
            mask_l,
            buf: vec![0; cap],
            start: 0,
            end: 0,
            eof: false,
            offset: 0,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for ChunkIter<R> {
    type Item = io::Result<RawChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        // The cut point depends on at most `max` bytes from the start, so a window holding
        // `max` bytes (or the rest of the stream) cuts exactly as the whole buffer would.
        if self.end - self.start < self.cfg.max
            && !self.eof
            && let Err(e) = self.fill()
        {
            return Some(Err(e));
        }
        let window = &self.buf[self.start..self.end];
        if window.is_empty() {
            return None;
        }
        let (_, cut) = v2020::cut(
            window,
            self.cfg.min,
            self.cfg.avg,
            self.cfg.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        let data = window[..cut].to_vec();
        let chunk = RawChunk {
            offset: self.offset,
            data,
        };
        self.start += cut;
        self.offset += cut as u64;
        Some(Ok(chunk))
    }
}
