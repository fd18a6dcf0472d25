//! Large-object transfer: block size and parallelism, and the parallel ranged download that every
//! backend's [`ObjectRead::get_to_file`] uses unless it has something better.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::{ObjectRead, Result, StorageError};

/// Default size of one staged block (upload) or ranged read (download).
pub const DEFAULT_BLOCK_SIZE: u64 = 8 * 1024 * 1024;
/// Default number of blocks or ranges in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// How large objects move: in blocks of `block_size` bytes, `concurrency` at a time.
///
/// Memory held by one transfer is about `block_size * concurrency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferOptions {
    /// Bytes per staged block or ranged read (at least 1).
    pub block_size: u64,
    /// Blocks or ranges in flight at once (at least 1).
    pub concurrency: usize,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            block_size: DEFAULT_BLOCK_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl TransferOptions {
    /// The block size, never 0.
    pub fn block_size(&self) -> u64 {
        self.block_size.max(1)
    }

    /// The concurrency, never 0.
    pub fn concurrency(&self) -> usize {
        self.concurrency.max(1)
    }

    /// Splits `0..size` into consecutive ranges of at most one block each.
    pub fn ranges(&self, size: u64) -> impl Iterator<Item = std::ops::Range<u64>> + Send + 'static {
        let block = self.block_size();
        (0..size.div_ceil(block)).map(move |i| i * block..((i + 1) * block).min(size))
    }
}

/// Downloads `key` into `path` (created or truncated) with up to `opts.concurrency` ranged reads
/// in flight, each written at its offset. Returns the object's size.
pub(crate) async fn download_ranged<R: ObjectRead + ?Sized>(
    reader: &R,
    key: &str,
    path: &Path,
    opts: &TransferOptions,
) -> Result<u64> {
    let meta = reader
        .head(key)
        .await?
        .ok_or_else(|| StorageError::NotFound {
            location: reader.location().to_owned(),
            key: key.to_owned(),
        })?;
    let size = meta.size;
    let path_buf = path.to_path_buf();
    let file = blocking(move || {
        let f = File::create(&path_buf).map_err(io_err("create download file", &path_buf))?;
        // Pre-sizing lets ranges land in any order without the file growing piecemeal.
        f.set_len(size)
            .map_err(io_err("size download file", &path_buf))?;
        Ok(f)
    })
    .await?;
    let file = Arc::new(file);

    futures::stream::iter(opts.ranges(size))
        .map(|range| async move {
            let data = reader.get_range(key, range.clone()).await?;
            if data.len() as u64 != range.end - range.start {
                return Err(StorageError::InvalidRange {
                    key: key.to_owned(),
                    start: range.start,
                    end: range.start + data.len() as u64,
                    size,
                });
            }
            Ok((range.start, data))
        })
        .buffer_unordered(opts.concurrency())
        .try_for_each(|(offset, data)| {
            let file = file.clone();
            let path = path.to_path_buf();
            async move {
                blocking(move || {
                    file.write_all_at(&data, offset)
                        .map_err(io_err("write download file", &path))
                })
                .await
            }
        })
        .await?;

    let path_buf = path.to_path_buf();
    blocking(move || {
        file.sync_all()
            .map_err(io_err("sync download file", &path_buf))
    })
    .await?;
    Ok(size)
}

/// Runs blocking file-system work off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        // A panic in file-system code is a bug; surface it rather than inventing an error.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StorageError::Io {
            op: "run blocking file task",
            path: String::new(),
            source: std::io::Error::other(e),
        }),
    }
}

/// Builds a closure mapping an `io::Error` to [`StorageError::Io`] for `path`.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_the_object_exactly() {
        let o = TransferOptions {
            block_size: 4,
            concurrency: 2,
        };
        assert_eq!(o.ranges(10).collect::<Vec<_>>(), vec![0..4, 4..8, 8..10]);
        assert_eq!(o.ranges(8).collect::<Vec<_>>(), vec![0..4, 4..8]);
        assert_eq!(o.ranges(0).count(), 0);
    }

    #[test]
    fn zero_settings_are_clamped() {
        let o = TransferOptions {
            block_size: 0,
            concurrency: 0,
        };
        assert_eq!((o.block_size(), o.concurrency()), (1, 1));
    }
}

/// An object downloaded into a temporary file (deleted when this is dropped), with its sha256.
#[derive(Debug)]
pub struct LocalCopy {
    _dir: tempfile::TempDir,
    /// The file.
    pub path: std::path::PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// sha256 of its bytes (lowercase hex).
    pub sha256: String,
}

/// Downloads `key` into a temporary file under `TMPDIR` (parallel ranged reads) and hashes it:
/// for objects too large to hold in memory, such as a large volume's index.
pub async fn download_to_temp<R: ObjectRead + ?Sized>(reader: &R, key: &str) -> Result<LocalCopy> {
    let tmp_err = |source| StorageError::Io {
        op: "create a temporary file in",
        path: std::env::temp_dir().display().to_string(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-download-")
        .tempdir()
        .map_err(tmp_err)?;
    let path = dir.path().join("object");
    let size = reader
        .get_to_file(key, &path, &TransferOptions::default())
        .await?;
    let sha256 = tokio::task::spawn_blocking({
        let path = path.clone();
        move || sha256_file(&path)
    })
    .await
    .expect("hashing does not panic")
    .map_err(|source| StorageError::Io {
        op: "read downloaded object",
        path: path.display().to_string(),
        source,
    })?;
    Ok(LocalCopy {
        _dir: dir,
        path,
        size,
        sha256,
    })
}

/// sha256 of a local file's bytes (lowercase hex), read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}
