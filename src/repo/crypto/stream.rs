//! Reading a byte range of an age file without the rest of it (ranged pack reads).
//!
//! An age file is a header (recipient stanzas and a MAC), a 16-byte nonce, then the payload in
//! STREAM segments: 64 KiB of plaintext each, ChaCha20-Poly1305 with a 12-byte nonce made of an
//! 11-byte big-endian segment counter and a last-segment flag (c2sp.org/age). Segment `i` of the
//! plaintext therefore sits at a fixed ciphertext offset, and a range decrypts on its own once
//! the header has given the payload key. This follows the spec; the age crate keeps its payload
//! key private, so the header is parsed and checked here (its MAC included).

use std::ops::Range;

use age::secrecy::ExposeSecret;
use age_core::format::Stanza;
use age_core::primitives::hkdf;
use base64::Engine;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ReaderKey;

const SEGMENT: u64 = 64 * 1024;
const TAG: u64 = 16;
const SEALED_SEGMENT: u64 = SEGMENT + TAG;
const NONCE: usize = 16;
/// A header longer than this is not one of ours (one X25519 stanza is ~150 bytes).
const MAX_HEADER: usize = 64 * 1024;
/// What to read first to find the header: enough for a few recipients.
pub const HEAD_GUESS: u64 = 4096;
const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";

/// Why a range could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The header is longer than the bytes given: read this many from the start and retry.
    #[error("the age header needs {0} bytes")]
    NeedMore(u64),
    /// The identity is none of the recipients.
    #[error(
        "the identity does not decrypt it (it was encrypted to other recipients: a wrong identity file?)"
    )]
    WrongIdentity,
    /// Damaged or tampered ciphertext, or not an age file.
    #[error("its ciphertext is damaged or was tampered with: {0}")]
    Damaged(String),
}

/// The payload key of one age file, for ranged reads of it.
pub struct PackCipher {
    aead: ChaCha20Poly1305,
    payload_start: u64,
}

impl std::fmt::Debug for PackCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackCipher")
            .field("payload_start", &self.payload_start)
            .finish_non_exhaustive()
    }
}

fn damaged(detail: &str) -> StreamError {
    StreamError::Damaged(detail.into())
}

impl PackCipher {
    /// Opens an age file from its first bytes (at least the header and the nonce; see
    /// [`StreamError::NeedMore`]), checking the header's MAC.
    pub fn open(key: &ReaderKey, head: &[u8]) -> Result<Self, StreamError> {
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        if head.len() < VERSION_LINE.len() {
            return Err(StreamError::NeedMore(HEAD_GUESS));
        }
        if !head.starts_with(VERSION_LINE) {
            return Err(damaged("not an age v1 file"));
        }
        let Some(mac_at) = find(head, b"\n---") else {
            return if head.len() >= MAX_HEADER {
                Err(damaged("no end of the age header"))
            } else {
                Err(StreamError::NeedMore(
                    (head.len() as u64 * 4).max(HEAD_GUESS),
                ))
            };
        };
        let mac_line_start = mac_at + 1;
        let Some(mac_len) = find(&head[mac_line_start..], b"\n") else {
            return Err(StreamError::NeedMore(head.len() as u64 + 128));
        };
        let header_end = mac_line_start + mac_len + 1;
        let payload_start = header_end + NONCE;
        if head.len() < payload_start {
            return Err(StreamError::NeedMore(payload_start as u64));
        }
        let mac_text = std::str::from_utf8(&head[mac_line_start..mac_line_start + mac_len])
            .map_err(|_| damaged("header MAC line is not text"))?;
        let mac = mac_text
            .strip_prefix("--- ")
            .and_then(|m| b64.decode(m).ok())
            .ok_or_else(|| damaged("header MAC line"))?;

        let stanza_text = std::str::from_utf8(&head[VERSION_LINE.len()..mac_line_start])
            .map_err(|_| damaged("header is not text"))?;
        let mut stanzas = Vec::new();
        let mut lines = stanza_text.lines().peekable();
        while let Some(line) = lines.next() {
            let mut words = line
                .strip_prefix("-> ")
                .ok_or_else(|| damaged("header stanza line"))?
                .split(' ');
            let tag = words.next().unwrap_or_default().to_owned();
            let args = words.map(str::to_owned).collect();
            let mut body = String::new();
            for body_line in lines.by_ref() {
                body.push_str(body_line);
                if body_line.len() < 64 {
                    break;
                }
            }
            let body = b64
                .decode(body)
                .map_err(|_| damaged("header stanza body"))?;
            stanzas.push(Stanza { tag, args, body });
        }
        let file_key = match age::Identity::unwrap_stanzas(key.identity(), &stanzas) {
            None => return Err(StreamError::WrongIdentity),
            Some(Err(e)) => return Err(StreamError::Damaged(e.to_string())),
            Some(Ok(k)) => k,
        };
        let fk = file_key.expose_secret();
        let mac_key = hkdf(&[], b"header", fk);
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key)
            .map_err(|_| damaged("header MAC key"))?;
        // The MAC covers the header up to and including `---`.
        m.update(&head[..mac_line_start + 3]);
        m.verify_slice(&mac)
            .map_err(|_| damaged("header MAC does not match"))?;
        let nonce = &head[header_end..payload_start];
        let payload_key = hkdf(nonce, b"payload", fk);
        Ok(Self {
            aead: ChaCha20Poly1305::new((&payload_key).into()),
            payload_start: payload_start as u64,
        })
    }

    /// The ciphertext bytes to read for the plaintext range `plain` of a file of `stored`
    /// bytes: whole segments, at most one extra segment at each end.
    pub fn ciphertext_range(&self, plain: &Range<u64>, stored: u64) -> Range<u64> {
        let first = plain.start / SEGMENT;
        let last = plain.end.saturating_sub(1).max(plain.start) / SEGMENT;
        let start = self.payload_start + first * SEALED_SEGMENT;
        let end = (self.payload_start + (last + 1) * SEALED_SEGMENT).min(stored);
        start..end
    }

    /// Decrypts the plaintext range `plain` from `ct`, the bytes
    /// [`Self::ciphertext_range`] named, of a file of `stored` bytes. Segments are decrypted in
    /// place in one buffer; the range is a slice of it (no copy).
    pub fn decrypt_range(
        &self,
        ct: &[u8],
        plain: &Range<u64>,
        stored: u64,
    ) -> Result<bytes::Bytes, StreamError> {
        let want = self.ciphertext_range(plain, stored);
        if ct.len() as u64 != want.end - want.start {
            return Err(damaged("the stored object is shorter than its index says"));
        }
        let payload = stored
            .checked_sub(self.payload_start)
            .ok_or_else(|| damaged("the stored object is shorter than its header"))?;
        let segments = payload.div_ceil(SEALED_SEGMENT).max(1);
        let first = plain.start / SEGMENT;
        let mut out = Vec::with_capacity(ct.len());
        for (n, sealed) in ct.chunks(SEALED_SEGMENT as usize).enumerate() {
            let i = first + n as u64;
            let mut nonce = [0u8; 12];
            nonce[3..11].copy_from_slice(&i.to_be_bytes());
            nonce[11] = u8::from(i + 1 == segments);
            let fail = || damaged(&format!("segment {i} fails authentication"));
            let (body, tag) = sealed
                .split_at_checked(sealed.len().wrapping_sub(TAG as usize))
                .ok_or_else(fail)?;
            let tag = chacha20poly1305::Tag::try_from(tag).map_err(|_| fail())?;
            let at = out.len();
            out.extend_from_slice(body);
            self.aead
                .decrypt_inout_detached((&nonce).into(), &[], (&mut out[at..]).into(), &tag)
                .map_err(|_| fail())?;
        }
        let from = (plain.start - first * SEGMENT) as usize;
        let to = (plain.end - first * SEGMENT) as usize;
        if to > out.len() || from > to {
            return Err(damaged("the range lies past the end of the plaintext"));
        }
        Ok(bytes::Bytes::from(out).slice(from..to))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
