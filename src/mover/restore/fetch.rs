//! Fetching a window: parallel ranged reads of packs, each chunk's id checked before its
//! plaintext is written where its uses say; file metadata once a file's data is complete.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::window::{RangeRead, Window};
use super::{MoverError, RestoreStats, Result, blocking, io_err};
use crate::mover::backup::Progress;
use crate::mover::fsmeta::apply_meta;
use crate::repo::crypto::stream::HEAD_GUESS;
use crate::repo::crypto::{PackCipher, ReaderKey, StreamError};
use crate::repo::pack::decode_chunk_keyed;
use crate::storage::Reader;

/// What every ranged read of a restore needs.
pub(super) struct Io {
    pub(super) store: Reader,
    /// Object keys of the index's pack table.
    pub(super) keys: Arc<Vec<String>>,
    pub(super) target: PathBuf,
    pub(super) progress: Option<Arc<Progress>>,
    /// Encrypted repository: the identity and each pack's payload key, opened once.
    pub(super) ciphers: Option<Ciphers>,
}

/// Payload keys of the packs of an encrypted repository, each opened from its header once.
pub(super) struct Ciphers {
    key: ReaderKey,
    sizes: Arc<Vec<u64>>,
    opened: tokio::sync::Mutex<HashMap<u32, Arc<PackCipher>>>,
}

impl Ciphers {
    pub(super) fn new(key: ReaderKey, sizes: Arc<Vec<u64>>) -> Self {
        Self {
            key,
            sizes,
            opened: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The payload key of pack `row`, reading its header (a few hundred bytes) the first time.
    async fn cipher(&self, store: &Reader, row: u32, key: &str) -> Result<Arc<PackCipher>> {
        if let Some(c) = self.opened.lock().await.get(&row) {
            return Ok(c.clone());
        }
        let size = self.sizes.get(row as usize).copied().unwrap_or(0);
        let mut want = HEAD_GUESS.min(size);
        let cipher = loop {
            let head = store
                .get_range(key, 0..want)
                .await
                .map_err(|source| MoverError::Fetch {
                    pack: key.to_owned(),
                    source,
                })?;
            match PackCipher::open(&self.key, &head) {
                Ok(c) => break c,
                Err(StreamError::NeedMore(n)) if n.min(size) > want => want = n.min(size),
                Err(source) => {
                    return Err(MoverError::Decrypt {
                        pack: key.to_owned(),
                        source,
                    });
                }
            }
        };
        let c = Arc::new(cipher);
        self.opened.lock().await.insert(row, c.clone());
        Ok(c)
    }
}

/// Fetches read `i` of `w` and writes its chunks; returns the bytes fetched and written.
pub(super) async fn fetch_read(io: Arc<Io>, w: Arc<Window>, i: usize) -> Result<(u64, u64)> {
    let r = &w.reads[i];
    let key = &io.keys[r.pack as usize];
    // An encrypted pack: the whole STREAM segments around the range (at most 64 KiB more at
    // each end), decrypted on the thread that then writes the chunks, while still in cache.
    let cipher = match &io.ciphers {
        None => None,
        Some(c) => Some((
            c.cipher(&io.store, r.pack, key).await?,
            c.sizes.get(r.pack as usize).copied().unwrap_or(0),
        )),
    };
    let want = match &cipher {
        None => r.start..r.end,
        Some((cipher, size)) => cipher.ciphertext_range(&(r.start..r.end), *size),
    };
    let fetched = want.end - want.start;
    let bytes = io
        .store
        .get_range(key, want)
        .await
        .map_err(|source| MoverError::Fetch {
            pack: key.clone(),
            source,
        })?;
    let written = blocking({
        let (io, w) = (io.clone(), w.clone());
        move || {
            let r = &w.reads[i];
            let key = &io.keys[r.pack as usize];
            let chunk_key = io.ciphers.as_ref().map(|c| c.key.chunk_key());
            let bytes = match cipher {
                None => bytes,
                Some((cipher, size)) => cipher
                    .decrypt_range(bytes, &(r.start..r.end), size)
                    .map_err(|source| MoverError::Decrypt {
                        pack: key.clone(),
                        source,
                    })?,
            };
            write_read(&io.target, &w, r, &bytes, key, chunk_key)
        }
    })
    .await?;
    if let Some(p) = &io.progress {
        p.bytes.fetch_add(written, Ordering::Relaxed);
    }
    Ok((fetched, written))
}

/// The fetching side of a restore: runs windows, one after the other.
pub(super) struct Run {
    pub(super) io: Arc<Io>,
    pub(super) concurrency: usize,
    pub(super) owners: bool,
    pub(super) started: Instant,
    /// Bytes of the whole restore, for the log.
    pub(super) total: u64,
    pub(super) stats: RestoreStats,
    pub(super) last_log: Instant,
}

impl Run {
    /// Fetches and writes a window's data, then applies the metadata of its finished files.
    pub(super) async fn window(&mut self, w: Window) -> Result<()> {
        let w = Arc::new(w);
        {
            let per_read = futures::stream::iter(0..w.reads.len())
                .map({
                    let io = self.io.clone();
                    let w = w.clone();
                    move |i| fetch_read(io.clone(), w.clone(), i)
                })
                .buffer_unordered(self.concurrency);
            let mut per_read = std::pin::pin!(per_read);
            while let Some((fetched, written)) = per_read.try_next().await? {
                self.stats.bytes_fetched += fetched;
                self.stats.bytes_written += written;
                self.log_progress();
            }
        }
        self.stats.reads += w.reads.len() as u64;
        self.stats.chunks += w.chunks;
        if !w.finished.is_empty() {
            let (io, owners) = (self.io.clone(), self.owners);
            blocking(move || {
                for (f, meta) in &w.finished {
                    let abs = io.target.join(&f.rel);
                    apply_meta(&abs, meta, owners).map_err(io_err(&abs))?;
                    if let Some(p) = &io.progress {
                        p.files.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    pub(super) fn log_progress(&mut self) {
        if self.last_log.elapsed() <= Duration::from_secs(5) {
            return;
        }
        self.last_log = Instant::now();
        let done = self.stats.bytes_written;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let eta_s = (rate > 0.0).then(|| (self.total.saturating_sub(done) as f64 / rate) as u64);
        tracing::info!(
            bytes = done,
            total = self.total,
            mb_per_s = rate / 1e6,
            eta_s,
            "restore progress"
        );
    }
}

pub(super) fn write_read(
    target: &Path,
    w: &Window,
    r: &RangeRead,
    bytes: &[u8],
    key: &str,
    chunk_key: Option<&crate::repo::crypto::ChunkKey>,
) -> Result<u64> {
    let mut open: HashMap<u32, File> = HashMap::new();
    let mut written = 0u64;
    let mut plain = Vec::new();
    let uses = &w.uses[r.uses.clone()];
    let mut i = 0;
    while i < uses.len() {
        let u = &uses[i];
        let mut j = i + 1;
        while j < uses.len() && uses[j].chunk_key() == u.chunk_key() {
            j += 1;
        }
        let lo = (u64::from(u.offset) - r.start) as usize;
        let stored =
            bytes
                .get(lo..lo + u.length as usize)
                .ok_or_else(|| MoverError::ShortRead {
                    pack: key.to_owned(),
                })?;
        decode_chunk_keyed(stored, u.size, &u.id, &mut plain, chunk_key).map_err(|source| {
            MoverError::CorruptChunk {
                file: w.files[u.file as usize].rel.clone(),
                chunk: u.id.to_hex(),
                pack: key.to_owned(),
                source,
            }
        })?;
        for t in &uses[i..j] {
            let f = &w.files[t.file as usize];
            let abs = target.join(&f.rel);
            let file = match open.entry(t.file) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    // The file was created by this restore; nothing can have replaced it with a
                    // link, since symlinks are made only after all data.
                    v.insert(
                        OpenOptions::new()
                            .write(true)
                            .open(&abs)
                            .map_err(io_err(&abs))?,
                    )
                }
            };
            if f.regions.is_empty() {
                file.write_all_at(&plain, t.data_off)
                    .map_err(io_err(&abs))?;
            } else {
                write_sparse(file, &f.regions, t.data_off, &plain).map_err(io_err(&abs))?;
            }
            written += plain.len() as u64;
        }
        i = j;
    }
    Ok(written)
}

/// Writes bytes at data-stream offset `data_off` of a file whose data regions are `regions`.
pub(super) fn write_sparse(
    file: &File,
    regions: &[(u64, u64)],
    data_off: u64,
    mut buf: &[u8],
) -> io::Result<()> {
    let mut cursor = data_off;
    let mut region_data_start = 0u64;
    for &(file_off, len) in regions {
        let region_data_end = region_data_start + len;
        if buf.is_empty() {
            break;
        }
        if cursor < region_data_end && cursor >= region_data_start {
            let within = cursor - region_data_start;
            let n = ((len - within) as usize).min(buf.len());
            file.write_all_at(&buf[..n], file_off + within)?;
            buf = &buf[n..];
            cursor += n as u64;
        }
        region_data_start = region_data_end;
    }
    if buf.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(
            "chunk data beyond the file's data regions",
        ))
    }
}
