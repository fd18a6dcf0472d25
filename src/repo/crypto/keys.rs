//! The two key files: the identity (reads) and the writer key (writes, cannot read).
//!
//! Both are text. The identity file is a valid age identity file (comments start with `#`), so
//! `age -d -i identity.txt` works on every encrypted object.

// X25519 recipients on purpose: the issue asks for them, and the age CLI 1.1 (Debian) and 1.2
// decrypt nothing newer. The age crate marks them deprecated in favour of post-quantum ones.
#![allow(deprecated)]

use std::fmt;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::super::ChunkId;

const CHUNK_KEY_COMMENT: &str = "# lifeboat-chunk-id-key: ";
const CHUNK_KEY_LINE: &str = "chunk-id-key: ";
const RECIPIENT_LINE: &str = "recipient: ";
const KEY_CHECK_LABEL: &[u8] = b"lifeboat chunk-id key check v1";

/// A key file that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not the key file it should be.
    #[error("{what}: {detail}")]
    Invalid {
        /// Which file (e.g. "the writer key from file /etc/lifeboat/writer.key").
        what: String,
        /// What is wrong.
        detail: String,
    },
}

/// The secret key that names chunks: chunk ids are a keyed hash (BLAKE3) of the plaintext under it, so
/// an id reveals nothing about the content to whoever lacks the key.
#[derive(Clone)]
pub struct ChunkKey {
    raw: [u8; 32],
    mac: Hmac<Sha256>,
    /// The BLAKE3 key of chunk ids, derived from `raw` so that no key serves two primitives.
    ids: [u8; 32],
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// BLAKE3 `derive_key` context of the chunk-id key (fixed: changing it changes every id).
const CHUNK_ID_CONTEXT: &str = "lifeboat 2026-12 keyed chunk ids";

impl ChunkKey {
    fn from_raw(raw: [u8; 32]) -> Self {
        #[allow(clippy::expect_used)]
        let mac = Hmac::<Sha256>::new_from_slice(&raw).expect("HMAC takes any key length");
        let ids = blake3::derive_key(CHUNK_ID_CONTEXT, &raw);
        Self { raw, mac, ids }
    }

    fn parse(hex_text: &str) -> Option<Self> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(hex_text.trim(), &mut raw).ok()?;
        Some(Self::from_raw(raw))
    }

    /// The keyed id of a chunk's plaintext: BLAKE3 in keyed mode (a MAC), three times as fast
    /// as HMAC-SHA256 here (4.1 against 1.4 GB/s on 64 KiB chunks), which pays for the
    /// decryption of an encrypted restore.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.ids, data).as_bytes())
    }

    /// A name that stands for `text` in object keys (e.g. a claim's `namespace/pvc`): the same
    /// text gives the same tag under the same key, and the tag reveals nothing without it.
    pub fn tag(&self, label: &str, text: &str) -> String {
        let mut m = self.mac.clone();
        m.update(label.as_bytes());
        m.update(&[0]);
        m.update(text.as_bytes());
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// A value recorded in `lifeboat.json` that tells whether a key is the repository's chunk-id
    /// key (a writer with another key would silently stop deduplicating).
    pub fn check(&self) -> String {
        let mut m = self.mac.clone();
        m.update(KEY_CHECK_LABEL);
        hex::encode(m.finalize().into_bytes())
    }
}

/// The fingerprint of a recipient recorded in `lifeboat.json`: sha256 of its `age1…` string.
pub fn fingerprint(recipient: &age::x25519::Recipient) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(recipient.to_string().as_bytes()))
    )
}

/// What a backup writer holds: public recipients and the chunk-id key. It cannot decrypt.
#[derive(Clone)]
pub struct WriterKey {
    recipients: Vec<age::x25519::Recipient>,
    chunk_key: ChunkKey,
}

impl fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriterKey")
            .field("recipients", &self.fingerprints())
            .finish_non_exhaustive()
    }
}

impl WriterKey {
    /// Parses a writer key file; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let invalid = |detail: &str| KeyError::Invalid {
            what: what.into(),
            detail: detail.into(),
        };
        if text.contains("AGE-SECRET-KEY-") {
            return Err(invalid(
                "this is an identity (it decrypts backups), not a writer key; give the writer key (`lifeboat key generate` wrote both) and keep the identity on the DR side",
            ));
        }
        let mut recipients = Vec::new();
        let mut chunk_key = None;
        for line in text.lines().map(str::trim) {
            if let Some(r) = line.strip_prefix(RECIPIENT_LINE) {
                recipients.push(
                    age::x25519::Recipient::from_str(r.trim())
                        .map_err(|e| invalid(&format!("recipient {r:?}: {e}")))?,
                );
            } else if let Some(k) = line.strip_prefix(CHUNK_KEY_LINE) {
                chunk_key = Some(
                    ChunkKey::parse(k)
                        .ok_or_else(|| invalid("chunk-id-key is not 64 hex digits"))?,
                );
            }
        }
        if recipients.is_empty() {
            return Err(invalid(
                "no `recipient: age1…` line; is this a lifeboat writer key?",
            ));
        }
        let chunk_key = chunk_key.ok_or_else(|| invalid("no `chunk-id-key:` line"))?;
        Ok(Self {
            recipients,
            chunk_key,
        })
    }

    /// The recipients every object is encrypted to.
    pub fn recipients(&self) -> &[age::x25519::Recipient] {
        &self.recipients
    }

    /// Their fingerprints, as `lifeboat.json` records them.
    pub fn fingerprints(&self) -> Vec<String> {
        self.recipients.iter().map(fingerprint).collect()
    }

    /// The chunk-id key.
    pub fn chunk_key(&self) -> &ChunkKey {
        &self.chunk_key
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut s = String::from(
            "# lifeboat writer key: encrypts backups to the recipients below and names chunks.\n\
             # It cannot decrypt anything. Give it to the backup CronJob and CI, never the identity.\n",
        );
        for r in &self.recipients {
            s.push_str(&format!("{RECIPIENT_LINE}{r}\n"));
        }
        s.push_str(&format!(
            "{CHUNK_KEY_LINE}{}\n",
            hex::encode(self.chunk_key.raw)
        ));
        s
    }
}

/// What a restore holds: the age identity (decrypts) and the chunk-id key.
#[derive(Clone)]
pub struct ReaderKey {
    identity: age::x25519::Identity,
    chunk_key: ChunkKey,
}

impl fmt::Debug for ReaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReaderKey")
            .field("recipient", &self.identity.to_public().to_string())
            .finish_non_exhaustive()
    }
}

impl ReaderKey {
    /// Parses an identity file; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let invalid = |detail: &str| KeyError::Invalid {
            what: what.into(),
            detail: detail.into(),
        };
        let mut identity = None;
        let mut chunk_key = None;
        for line in text.lines().map(str::trim) {
            if let Some(k) = line.strip_prefix(CHUNK_KEY_COMMENT) {
                chunk_key = Some(
                    ChunkKey::parse(k)
                        .ok_or_else(|| invalid("lifeboat-chunk-id-key is not 64 hex digits"))?,
                );
            } else if line.starts_with("AGE-SECRET-KEY-") {
                identity = Some(
                    age::x25519::Identity::from_str(line)
                        .map_err(|e| invalid(&format!("the AGE-SECRET-KEY line: {e}")))?,
                );
            }
        }
        let Some(identity) = identity else {
            return Err(invalid(if text.contains(RECIPIENT_LINE) {
                "this is a writer key: it can write backups but not read them; reading needs the identity (kept on the DR side)"
            } else {
                "no AGE-SECRET-KEY-1… line; is this a lifeboat identity?"
            }));
        };
        let chunk_key = chunk_key.ok_or_else(|| invalid("no `# lifeboat-chunk-id-key:` line"))?;
        Ok(Self {
            identity,
            chunk_key,
        })
    }

    /// The age identity.
    pub fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }

    /// The chunk-id key.
    pub fn chunk_key(&self) -> &ChunkKey {
        &self.chunk_key
    }

    /// Its recipient's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.identity.to_public())
    }

    /// The file's text: a valid age identity file.
    pub fn to_text(&self) -> String {
        format!(
            "# lifeboat identity: decrypts the backups written with its writer key.\n\
             # Keep it on the DR side only (e.g. Key Vault of the secondary region).\n\
             # Decrypt any object by hand with: age -d -i THIS_FILE OBJECT\n\
             # public key: {}\n\
             {CHUNK_KEY_COMMENT}{}\n\
             {}\n",
            self.identity.to_public(),
            hex::encode(self.chunk_key.raw),
            self.identity.to_string().expose_secret()
        )
    }
}

/// A new identity and its writer key.
pub fn generate() -> Result<(ReaderKey, WriterKey), KeyError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| KeyError::Invalid {
        what: "the system's random source".into(),
        detail: e.to_string(),
    })?;
    let chunk_key = ChunkKey::from_raw(raw);
    #[allow(deprecated)] // X25519, the recipient type the age CLI 1.x decrypts; see FORMAT.md
    let identity = age::x25519::Identity::generate();
    let writer = WriterKey {
        recipients: vec![identity.to_public()],
        chunk_key: chunk_key.clone(),
    };
    Ok((
        ReaderKey {
            identity,
            chunk_key,
        },
        writer,
    ))
}
