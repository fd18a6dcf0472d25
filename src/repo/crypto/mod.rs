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
/// The chunk-id scheme of an encrypted repository: keyed BLAKE3 (see `ChunkKey::chunk_id`).
pub const CHUNK_ID_SCHEME: &str = "blake3-keyed";

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

/// Encrypts the file `src` into `dst` (streaming); returns the size and sha256 of `dst`.
pub fn encrypt_file(
    key: &WriterKey,
    src: &std::path::Path,
    dst: &std::path::Path,
) -> Result<(u64, String), CryptoError> {
    let enc = |e: std::io::Error| CryptoError::Encrypt(e.to_string());
    let mut input =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(src).map_err(enc)?);
    let out = std::fs::File::create(dst).map_err(enc)?;
    let mut w = encrypt_to(key, std::io::BufWriter::with_capacity(1 << 20, out))?;
    std::io::copy(&mut input, &mut w).map_err(enc)?;
    w.finish()
        .map_err(enc)?
        .into_inner()
        .map_err(|e| enc(e.into_error()))?;
    digest_file(dst).map_err(enc)
}

/// Size and sha256 (lowercase hex) of a local file.
pub fn digest_file(path: &std::path::Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((n, hex::encode(h.finalize())))
}

/// Decrypts the local age file `path` into its own place (through a sibling file).
pub fn decrypt_file_in_place(key: &ReaderKey, path: &std::path::Path) -> Result<(), CryptoError> {
    let file = std::fs::File::open(path).map_err(|e| CryptoError::Damaged(e.to_string()))?;
    let r = decrypt_from(key, std::io::BufReader::with_capacity(1 << 20, file))?;
    copy_into_place(r, path)
}

fn copy_into_place(mut r: impl Read, path: &std::path::Path) -> Result<(), CryptoError> {
    let tmp = path.with_extension("plain");
    let io = |e: std::io::Error| CryptoError::Damaged(e.to_string());
    let mut out =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io)?);
    std::io::copy(&mut r, &mut out).map_err(io)?;
    out.flush().map_err(io)?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(io)
}

/// scrypt's work factor for the writer's view: the passphrase is a 256-bit key, not a
/// password, so stretching adds nothing.
const WRITER_VIEW_LOG_N: u8 = 10;

/// The passphrase of the writer's view of volume indexes, derived from the chunk-id key.
///
/// The writer needs the previous backup's index of a volume to deduplicate and to take over
/// unchanged files unread, but cannot decrypt what it encrypted to the recipients. So beside
/// each index it stores a second copy for itself, an age file under this passphrase (scrypt
/// recipient). It holds the file tree (names, sizes, times, chunk ids), never file contents
/// or resources: see `docs/FORMAT.md`, "What a writer-key holder can read".
pub fn writer_view_passphrase(key: &ChunkKey) -> String {
    key.tag("lifeboat writer view", "")
}

/// Encrypts `src` into `dst` as a writer's view; returns the size and sha256 of `dst`.
pub fn seal_writer_view(
    passphrase: &str,
    src: &std::path::Path,
    dst: &std::path::Path,
) -> Result<(u64, String), CryptoError> {
    let enc = |e: std::io::Error| CryptoError::Encrypt(e.to_string());
    let mut recipient = age::scrypt::Recipient::new(passphrase.to_owned().into());
    recipient.set_work_factor(WRITER_VIEW_LOG_N);
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let mut input =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(src).map_err(enc)?);
    let out = std::fs::File::create(dst).map_err(enc)?;
    let mut w = encryptor
        .wrap_output(std::io::BufWriter::with_capacity(1 << 20, out))
        .map_err(enc)?;
    std::io::copy(&mut input, &mut w).map_err(enc)?;
    w.finish()
        .map_err(enc)?
        .into_inner()
        .map_err(|e| enc(e.into_error()))?;
    digest_file(dst).map_err(enc)
}

/// Decrypts a writer's view in place.
pub fn open_writer_view(passphrase: &str, path: &std::path::Path) -> Result<(), CryptoError> {
    let mut identity = age::scrypt::Identity::new(passphrase.to_owned().into());
    identity.set_max_work_factor(WRITER_VIEW_LOG_N);
    let file = std::fs::File::open(path).map_err(|e| CryptoError::Damaged(e.to_string()))?;
    let d = age::Decryptor::new(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(map_decrypt)?;
    let r = d
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(map_decrypt)?;
    copy_into_place(r, path)
}

#[cfg(test)]
mod tests;
