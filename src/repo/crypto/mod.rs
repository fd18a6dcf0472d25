//! Client-side encryption of a repository (`age-x25519-v1`, see `docs/FORMAT.md`).
//!
//! Two keys, split so the cluster that writes backups cannot read them:
//! - the *writer key* ([`WriterKey`]): the public age X25519 recipients plus a secret chunk-id
//!   key. It encrypts (to the recipients) and names chunks (a keyed MAC), but decrypts nothing.
//! - the *identity* ([`ReaderKey`]): the age X25519 secret (which decrypts) plus the same
//!   chunk-id key (so a deep verify can recompute chunk ids). It lives only on the DR side.
//!
//! Every encrypted object is a standard age file (decrypts with the `age` CLI). Packs are one
//! age file each too; [`stream`] reads a byte range of one without downloading it whole.

pub mod keys;
pub mod stream;

pub use keys::{ChunkKey, KeyError, ReaderKey, WriterKey, generate};
pub use stream::{PackCipher, StreamError};

use std::io::{Read, Write};

/// The scheme name recorded in `lifeboat.json`.
pub const SCHEME: &str = "age-x25519-v1";
/// The chunk-id scheme of an encrypted repository: HMAC-SHA256 under the chunk-id key.
pub const CHUNK_ID_SCHEME: &str = "hmac-sha256";

/// Why an object could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The identity is none of the recipients the object was encrypted to.
    #[error(
        "the identity does not decrypt it (it was encrypted to other recipients: a wrong identity file?)"
    )]
    WrongIdentity,
    /// The ciphertext is damaged or was tampered with.
    #[error("its ciphertext is damaged or was tampered with (authentication failed): {0}")]
    Damaged(String),
    /// Encrypting failed (an I/O error of the sink).
    #[error("encrypting failed: {0}")]
    Encrypt(String),
}

fn map_decrypt(e: age::DecryptError) -> CryptoError {
    match e {
        age::DecryptError::NoMatchingKeys => CryptoError::WrongIdentity,
        other => CryptoError::Damaged(other.to_string()),
    }
}

/// Encrypts `plaintext` to the writer key's recipients, as one age file.
pub fn encrypt_bytes(key: &WriterKey, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plaintext.len() + plaintext.len() / 4096 + 512);
    let mut w = encrypt_to(key, &mut out)?;
    w.write_all(plaintext)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    w.finish()
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// A writer that encrypts everything written to it into `sink` (call `finish`).
pub fn encrypt_to<W: Write>(
    key: &WriterKey,
    sink: W,
) -> Result<age::stream::StreamWriter<W>, CryptoError> {
    let encryptor =
        age::Encryptor::with_recipients(key.recipients().iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    encryptor
        .wrap_output(sink)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))
}

/// Decrypts one whole age file held in memory.
pub fn decrypt_bytes(key: &ReaderKey, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut r = decrypt_from(key, ciphertext)?;
    let mut out = Vec::with_capacity(ciphertext.len());
    r.read_to_end(&mut out)
        .map_err(|e| CryptoError::Damaged(e.to_string()))?;
    Ok(out)
}

/// A reader of the plaintext of an age file read from `source`. Reads fail (as
/// [`std::io::ErrorKind::InvalidData`]) on damaged ciphertext.
pub fn decrypt_from<R: Read>(
    key: &ReaderKey,
    source: R,
) -> Result<age::stream::StreamReader<R>, CryptoError> {
    let d = age::Decryptor::new(source).map_err(map_decrypt)?;
    d.decrypt(std::iter::once(key.identity() as &dyn age::Identity))
        .map_err(map_decrypt)
}

#[cfg(test)]
mod tests;
