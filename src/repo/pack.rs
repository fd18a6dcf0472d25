//! Packs: immutable objects holding many compressed chunks, built and parsed without I/O.
//!
//! ```text
//! chunk 0 (zstd frame, or raw when zstd does not shrink it) | chunk 1 | ... | trailer | footer
//! trailer: JSON of PackTrailer (lists every chunk: id, offset, stored length, plaintext length)
//! footer:  trailer length (u32 little-endian) | magic "LBPACK\0\x01" (8 bytes)
//! ```
//!
//! A chunk is stored raw exactly when its stored length equals its plaintext length: zstd output
//! is kept only when strictly shorter, so the rule is unambiguous. The pack's id is the sha256 of
//! all its bytes and its key `packs/<aa>/<id>`.

use std::cell::RefCell;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::repo::{ChunkId, PackId};

/// Last 8 bytes of every pack.
pub const MAGIC: &[u8; 8] = b"LBPACK\x00\x01";
/// Footer size: trailer length then magic.
pub const FOOTER_LEN: usize = 12;

/// One chunk as a pack's trailer lists it. Serialized as `[id, offset, length, size]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PackEntryWire", into = "PackEntryWire")]
pub struct PackEntry {
    /// sha256 of the plaintext.
    pub id: ChunkId,
    /// Offset of the stored bytes in the pack.
    pub offset: u32,
    /// Stored (possibly compressed) length.
    pub length: u32,
    /// Plaintext length.
    pub size: u32,
}

type PackEntryWire = (ChunkId, u32, u32, u32);

impl From<PackEntryWire> for PackEntry {
    fn from((id, offset, length, size): PackEntryWire) -> Self {
        Self {
            id,
            offset,
            length,
            size,
        }
    }
}

impl From<PackEntry> for PackEntryWire {
    fn from(e: PackEntry) -> Self {
        (e.id, e.offset, e.length, e.size)
    }
}

/// The trailer, tagged by format so a later layout is a new variant, not a misread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format")]
pub enum PackTrailer {
    /// Version 1: zstd or raw chunks, listed in pack order.
    #[serde(rename = "lifeboat-pack-v1")]
    V1 {
        /// Every chunk of the pack.
        chunks: Vec<PackEntry>,
    },
}

impl PackTrailer {
    /// The chunks the trailer lists.
    pub fn chunks(&self) -> &[PackEntry] {
        match self {
            PackTrailer::V1 { chunks } => chunks,
        }
    }
}

/// Why pack bytes or a chunk in them cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackFormatError {
    /// The footer is missing or its magic is wrong.
    #[error("no lifeboat pack footer")]
    BadFooter,
    /// The trailer length points outside the pack.
    #[error("trailer length {0} does not fit the pack")]
    BadTrailerLength(u32),
    /// The trailer is not valid JSON of a known version.
    #[error("unreadable pack trailer: {0}")]
    BadTrailer(String),
    /// The stored bytes do not decompress to the recorded length.
    #[error("chunk does not decompress to {size} bytes")]
    Decompress {
        /// Expected plaintext length.
        size: u32,
    },
    /// The plaintext's sha256 is not the chunk id.
    #[error("chunk content has sha256 {actual}")]
    DigestMismatch {
        /// The digest found.
        actual: ChunkId,
    },
}

/// Reads the footer (the last [`FOOTER_LEN`] bytes) and returns the trailer's length.
pub fn parse_footer(footer: &[u8]) -> Result<u32, PackFormatError> {
    if footer.len() != FOOTER_LEN || &footer[4..] != MAGIC {
        return Err(PackFormatError::BadFooter);
    }
    Ok(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")))
}

/// Parses a trailer's bytes.
pub fn parse_trailer(bytes: &[u8]) -> Result<PackTrailer, PackFormatError> {
    serde_json::from_slice(bytes).map_err(|e| PackFormatError::BadTrailer(e.to_string()))
}

/// Parses the trailer of a whole pack held in memory.
pub fn read_trailer(pack: &[u8]) -> Result<PackTrailer, PackFormatError> {
    if pack.len() < FOOTER_LEN {
        return Err(PackFormatError::BadFooter);
    }
    let tlen = parse_footer(&pack[pack.len() - FOOTER_LEN..])?;
    let end = pack.len() - FOOTER_LEN;
    let start = end
        .checked_sub(tlen as usize)
        .ok_or(PackFormatError::BadTrailerLength(tlen))?;
    parse_trailer(&pack[start..end])
}

thread_local! {
    // One zstd context per thread, reused: a fresh context per 64 KiB chunk costs an
    // allocation and a table reset that show up in profiles.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// The stored form of a chunk: zstd at `level` if that is strictly shorter, else the plaintext.
pub fn encode_chunk(data: &[u8], level: i32) -> Vec<u8> {
    if data.len() < 2 {
        return data.to_vec();
    }
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            *cell = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let Some((_, c)) = cell.as_mut() else {
            return data.to_vec();
        };
        // A buffer one byte short of the plaintext: zstd fails exactly when it would not save.
        let mut out = Vec::with_capacity(data.len() - 1);
        match c.compress_to_buffer(data, &mut out) {
            Ok(_) => out,
            Err(_) => data.to_vec(),
        }
    })
}

/// Turns stored bytes back into plaintext and checks that its sha256 is `id`.
pub fn decode_chunk(stored: &[u8], size: u32, id: &ChunkId) -> Result<Vec<u8>, PackFormatError> {
    let mut out = Vec::new();
    decode_chunk_into(stored, size, id, &mut out)?;
    Ok(out)
}

/// [`decode_chunk`] into a caller's buffer (cleared first), so a loop over many chunks reuses
/// one allocation.
pub fn decode_chunk_into(
    stored: &[u8],
    size: u32,
    id: &ChunkId,
    out: &mut Vec<u8>,
) -> Result<(), PackFormatError> {
    decode_chunk_keyed(stored, size, id, out, None)
}

/// [`decode_chunk_into`] for a repository whose chunk ids are keyed (encrypted): the id is
/// checked as the keyed id under `key` when given.
pub fn decode_chunk_keyed(
    stored: &[u8],
    size: u32,
    id: &ChunkId,
    out: &mut Vec<u8>,
    key: Option<&super::crypto::ChunkKey>,
) -> Result<(), PackFormatError> {
    out.clear();
    if stored.len() == size as usize {
        out.extend_from_slice(stored);
    } else {
        out.reserve(size as usize);
        DECOMPRESSOR.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.is_none() {
                *cell = zstd::bulk::Decompressor::new().ok();
            }
            let d = cell.as_mut().ok_or(PackFormatError::Decompress { size })?;
            // Output goes only into the buffer's spare room, so a hostile frame cannot inflate
            // past it; anything but exactly `size` bytes is an error.
            match d.decompress_to_buffer(stored, out) {
                Ok(n) if n == size as usize => Ok(()),
                _ => Err(PackFormatError::Decompress { size }),
            }
        })?;
    }
    let actual = match key {
        Some(k) => k.chunk_id(out),
        None => ChunkId::of(out),
    };
    if &actual != id {
        return Err(PackFormatError::DigestMismatch { actual });
    }
    Ok(())
}

/// A pack being filled, in memory.
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    chunks: Vec<PackEntry>,
    /// Set by [`PackBuilder::shuffle`]: where each chunk of `chunks` lies in `buf` (its
    /// entry's offset is then its place in the finished pack).
    appended_at: Option<Vec<u32>>,
}

/// A chunk moved by [`PackBuilder::shuffle`]: where it was appended, where the pack holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Offset it was given by [`PackBuilder::add`].
    pub from: u32,
    /// Offset in the finished pack.
    pub to: u32,
}

/// A finished pack: its bytes, id and listing.
#[derive(Debug, Clone)]
pub struct FinishedPack {
    /// sha256 of `bytes`: the pack's id.
    pub id: PackId,
    /// The whole object.
    pub bytes: Bytes,
    /// What the trailer lists.
    pub chunks: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack with room reserved for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            chunks: Vec::new(),
            appended_at: None,
        }
    }

    /// Bytes of chunk data so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The chunks added, where they lie (in the finished pack, once shuffled).
    pub fn entries(&self) -> &[PackEntry] {
        &self.chunks
    }

    /// Returns true if and only if no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Appends a chunk in its stored form; returns where it lies (until a shuffle).
    pub fn add(&mut self, id: ChunkId, size: u32, stored: &[u8]) -> PackEntry {
        debug_assert!(
            self.appended_at.is_none(),
            "no chunk is added after a shuffle"
        );
        let entry = PackEntry {
            id,
            offset: self.buf.len() as u32,
            length: stored.len() as u32,
            size,
        };
        self.buf.extend_from_slice(stored);
        self.chunks.push(entry);
        entry
    }

    /// Lays the chunks out in an order drawn from `seed` (a Fisher–Yates shuffle), for an
    /// encrypted repository (issue 17): returns every chunk's move, in the order they were
    /// added. Only offsets are decided here; the bytes move when the pack is finished, on the
    /// thread that seals it.
    pub fn shuffle(&mut self, seed: u64) -> Vec<Moved> {
        let n = self.chunks.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut state = seed | 1;
        for i in (1..n).rev() {
            // xorshift64*: enough to scatter a few hundred chunks, and reproducible.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            order.swap(i, (r % (i as u64 + 1)) as usize);
        }
        let appended_at: Vec<u32> = self.chunks.iter().map(|e| e.offset).collect();
        let mut at = 0u32;
        for &i in &order {
            self.chunks[i].offset = at;
            at += self.chunks[i].length;
        }
        let moved = self
            .chunks
            .iter()
            .zip(&appended_at)
            .map(|(e, &from)| Moved { from, to: e.offset })
            .collect();
        self.appended_at = Some(appended_at);
        moved
    }

    /// [`PackBuilder::finish`], then, in an encrypted repository, the whole pack (trailer
    /// included) encrypted as one age file, named by the sha256 of the ciphertext. Offsets in
    /// the trailer and indexes stay plaintext offsets; see [`super::crypto::PackCipher`].
    pub fn finish_sealed(
        self,
        key: Option<&super::crypto::WriterKey>,
    ) -> Result<FinishedPack, super::crypto::CryptoError> {
        let Some(key) = key else {
            return Ok(self.finish());
        };
        // Chunks go to the cipher straight from where they were appended, in the pack's
        // order: a shuffle costs no copy of its own.
        let (layout, trailer) = self.layout();
        let len = self.buf.len() + trailer.len();
        let parts = layout
            .iter()
            .map(|&(from, len)| &self.buf[from..from + len])
            .chain(std::iter::once(&trailer[..]));
        let out = super::crypto::stream::seal_parts(key, len, parts)?;
        // Named by the ciphertext only: hashing the plaintext too would cost a second pass.
        Ok(FinishedPack {
            id: PackId::of(&out),
            bytes: Bytes::from(out),
            chunks: self.in_pack_order(),
        })
    }

    /// Appends trailer and footer, and names the pack.
    pub fn finish(mut self) -> FinishedPack {
        let (layout, trailer) = self.layout();
        let mut buf = match self.appended_at.is_some() {
            true => {
                let mut b = Vec::with_capacity(self.buf.len() + trailer.len());
                for (from, len) in layout {
                    b.extend_from_slice(&self.buf[from..from + len]);
                }
                b
            }
            false => std::mem::take(&mut self.buf),
        };
        buf.extend_from_slice(&trailer);
        FinishedPack {
            id: PackId::of(&buf),
            bytes: Bytes::from(buf),
            chunks: self.in_pack_order(),
        }
    }

    /// Where each chunk's bytes are in `buf` and how long, in the pack's order; then the
    /// trailer and footer's bytes.
    fn layout(&self) -> (Vec<(usize, usize)>, Vec<u8>) {
        let chunks = self.in_pack_order();
        let layout = match &self.appended_at {
            None => vec![(0, self.buf.len())],
            Some(at) => {
                let mut by_place: Vec<(u32, usize)> = self
                    .chunks
                    .iter()
                    .zip(at)
                    .map(|(e, &from)| (e.offset, from as usize))
                    .collect();
                by_place.sort_unstable();
                by_place
                    .into_iter()
                    .zip(&chunks)
                    .map(|((_, from), e)| (from, e.length as usize))
                    .collect()
            }
        };
        let trailer = PackTrailer::V1 { chunks };
        let mut tbytes = serde_json::to_vec(&trailer).expect("trailer serializes");
        let tlen = tbytes.len() as u32;
        tbytes.extend_from_slice(&tlen.to_le_bytes());
        tbytes.extend_from_slice(MAGIC);
        (layout, tbytes)
    }

    /// The entries as the trailer lists them: by offset.
    fn in_pack_order(&self) -> Vec<PackEntry> {
        let mut chunks = self.chunks.clone();
        if self.appended_at.is_some() {
            chunks.sort_unstable_by_key(|e| e.offset);
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn pack_round_trips_compressed_and_raw_chunks() {
        let text = b"abcabcabc".repeat(1000);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut b = PackBuilder::with_capacity(1 << 16);
        for data in [&text[..], &noise[..]] {
            let id = ChunkId::of(data);
            b.add(id, data.len() as u32, &encode_chunk(data, 3));
        }
        let p = b.finish();
        assert_eq!(p.id.as_str(), hex::encode(Sha256::digest(&p.bytes)));
        let t = read_trailer(&p.bytes).unwrap();
        assert_eq!(t.chunks(), &p.chunks[..]);
        assert!(
            t.chunks()[0].length < t.chunks()[0].size,
            "text is compressed"
        );
        for (e, data) in t.chunks().iter().zip([&text[..], &noise[..]]) {
            let stored = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(decode_chunk(stored, e.size, &e.id).unwrap(), data);
        }
    }

    #[test]
    fn a_shuffled_pack_holds_every_chunk_where_its_move_says() {
        let chunks: Vec<Vec<u8>> = (0..40u32)
            .map(|i| (0..(100 + i * 37)).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let mut b = PackBuilder::with_capacity(1 << 16);
        for data in &chunks {
            b.add(ChunkId::of(data), data.len() as u32, data);
        }
        let moved = b.shuffle(0x5eed);
        assert_eq!(moved.len(), chunks.len());
        assert!(
            moved.windows(2).any(|w| w[1].to < w[0].to),
            "the order changed: {moved:?}"
        );
        let p = b.finish();
        let t = read_trailer(&p.bytes).unwrap();
        assert!(
            t.chunks()
                .windows(2)
                .all(|w| w[0].offset + w[0].length == w[1].offset),
            "the trailer lists the chunks in pack order, back to back"
        );
        for (m, data) in moved.iter().zip(&chunks) {
            let at = m.to as usize;
            assert_eq!(&p.bytes[at..at + data.len()], &data[..]);
            let e = t.chunks().iter().find(|e| e.offset == m.to).unwrap();
            assert_eq!(e.id, ChunkId::of(data));
        }
    }

    #[test]
    fn decode_rejects_a_flipped_byte() {
        let data = b"hello world".repeat(100);
        let id = ChunkId::of(&data);
        let mut stored = encode_chunk(&data, 3);
        let last = stored.len() - 1;
        stored[last / 2] ^= 0x40;
        assert!(decode_chunk(&stored, data.len() as u32, &id).is_err());
    }

    #[test]
    fn footer_with_wrong_magic_is_refused() {
        assert_eq!(
            parse_footer(b"\x01\x00\x00\x00LBPACK\x00\x02"),
            Err(PackFormatError::BadFooter)
        );
    }
}
