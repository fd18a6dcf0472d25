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
/// checked as the HMAC under `key` when given.
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
        }
    }

    /// Bytes of chunk data so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Returns true if and only if no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Appends a chunk in its stored form; returns where it lies.
    pub fn add(&mut self, id: ChunkId, size: u32, stored: &[u8]) -> PackEntry {
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
        // Named by the ciphertext only: hashing the plaintext too would cost a second pass.
        let (plain, chunks) = self.assemble();
        let bytes = super::crypto::encrypt_bytes(key, &plain)?;
        Ok(FinishedPack {
            id: PackId::of(&bytes),
            bytes: Bytes::from(bytes),
            chunks,
        })
    }

    /// Appends trailer and footer, and names the pack.
    pub fn finish(self) -> FinishedPack {
        let (buf, chunks) = self.assemble();
        FinishedPack {
            id: PackId::of(&buf),
            bytes: Bytes::from(buf),
            chunks,
        }
    }

    /// The pack's bytes (chunks, trailer, footer) and what its trailer lists.
    fn assemble(mut self) -> (Vec<u8>, Vec<PackEntry>) {
        let trailer = PackTrailer::V1 {
            chunks: self.chunks,
        };
        let tbytes = serde_json::to_vec(&trailer).expect("trailer serializes");
        self.buf.extend_from_slice(&tbytes);
        self.buf
            .extend_from_slice(&(tbytes.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        let PackTrailer::V1 { chunks } = trailer;
        (self.buf, chunks)
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
