//! The resource archive `backups/<name>/resources.tar.zst`, both ways: every object of the
//! cluster as JSON at `<group>/<version>/<resource>/[<ns>/]<name>.json` (`core` for the core
//! group).
//!
//! Writing: objects stream in, a compressed tar is spooled to a temporary file (so memory stays
//! flat however large the cluster), then uploaded in staged blocks. Reading
//! ([`super::RepoReader::resources`]): downloaded, checked against the manifest's sha256 and
//! decoded into [`BackupObject`]s.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::RepoError;

/// The path of an object in the archive.
pub fn entry_path(group: &str, version: &str, plural: &str, namespace: &str, name: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    if namespace.is_empty() {
        format!("{group}/{version}/{plural}/{name}.json")
    } else {
        format!("{group}/{version}/{plural}/{namespace}/{name}.json")
    }
}

/// One object on its way into the archive.
pub struct Entry {
    /// Path inside the archive.
    pub path: String,
    /// The object's JSON.
    pub data: Vec<u8>,
}

/// Tar-encoded entries (headers, data, padding; no end-of-archive marker), ready to be
/// appended to the archive stream. Encoding happens in the listing tasks, in parallel; the
/// spooling thread only compresses.
pub struct Batch {
    /// The tar bytes.
    pub bytes: Vec<u8>,
    /// Objects in it.
    pub entries: u64,
    /// JSON bytes in it.
    pub raw_bytes: u64,
}

/// Size of tar's end-of-archive marker: two zero blocks.
const TAR_END: usize = 1024;

/// Encodes entries as a piece of a tar stream.
pub fn encode(entries: &[Entry], mtime: u64) -> std::io::Result<Batch> {
    let capacity = entries.iter().map(|e| e.data.len() + 1024).sum();
    let mut tar = tar::Builder::new(Vec::with_capacity(capacity));
    let mut raw_bytes = 0;
    for e in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(e.data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        // append_data writes a GNU long-name entry first when the path exceeds ustar's limits.
        tar.append_data(&mut header, &e.path, e.data.as_slice())?;
        raw_bytes += e.data.len() as u64;
    }
    // into_inner ends the archive; this piece is not the end, so the marker is cut off again.
    let mut bytes = tar.into_inner()?;
    bytes.truncate(bytes.len() - TAR_END);
    Ok(Batch {
        bytes,
        entries: entries.len() as u64,
        raw_bytes,
    })
}

/// Where the archive was spooled, and what it holds.
#[derive(Debug)]
pub struct Spooled {
    /// The temporary file (deleted when this is dropped).
    pub file: TempFile,
    /// Objects written.
    pub entries: u64,
    /// Uncompressed JSON bytes.
    pub raw_bytes: u64,
    /// Compressed size.
    pub size: u64,
    /// sha256 of the compressed file, lowercase hex.
    pub sha256: String,
}

/// A file deleted on drop.
#[derive(Debug)]
pub struct TempFile(PathBuf);

impl TempFile {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Hashes what passes through, so the archive's digest needs no second read.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// zstd level 1: measured on 100k objects of JSON it compresses as well as level 3 (7.1x) and
/// costs less CPU, which on a busy node is what the backup competes for.
const ZSTD_LEVEL: i32 = 1;

/// Writes batches from `rx` into a tar.zst file in `dir` until the channel closes, then ends
/// the archive. Runs on a blocking thread; zstd compresses on its own worker threads meanwhile.
pub fn spool(dir: &Path, name: &str, mut rx: mpsc::Receiver<Batch>) -> std::io::Result<Spooled> {
    let path = dir.join(format!(".lifeboat-{name}-{}.tar.zst", std::process::id()));
    let file = TempFile(path);
    let out = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, File::create(file.path())?),
        hasher: Sha256::new(),
    };
    let mut zstd = zstd::Encoder::new(out, ZSTD_LEVEL)?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    if workers > 1 {
        zstd.multithread(workers)?;
    }
    let (mut entries, mut raw_bytes) = (0u64, 0u64);
    while let Some(b) = rx.blocking_recv() {
        zstd.write_all(&b.bytes)?;
        entries += b.entries;
        raw_bytes += b.raw_bytes;
    }
    zstd.write_all(&[0u8; TAR_END])?;
    let out = zstd.finish()?;
    let sha256 = hex::encode(out.hasher.finalize());
    let file_handle = out.inner.into_inner().map_err(|e| e.into_error())?;
    file_handle.sync_all()?;
    let size = file_handle.metadata()?.len();
    Ok(Spooled {
        file,
        entries,
        raw_bytes,
        size,
        sha256,
    })
}

/// One backed-up object and where it came from.
#[derive(Debug, Clone)]
pub struct BackupObject {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace (`""` for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The object as backed up.
    pub object: Value,
}

/// Decodes every object of an archive.
pub(super) fn decode(bytes: &[u8], backup: &str) -> Result<Vec<BackupObject>, RepoError> {
    let bad = |detail: String| RepoError::Archive {
        backup: backup.to_owned(),
        detail,
    };
    let zstd = zstd::Decoder::new(bytes).map_err(|e| bad(format!("zstd: {e}")))?;
    let mut archive = tar::Archive::new(zstd);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(|e| bad(format!("tar: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("tar path: {e}")))?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("{path}: {e}")))?;
        let parts: Vec<&str> = path.split('/').collect();
        let (namespace, file) = match parts.len() {
            4 => ("", parts[3]),
            5 => (parts[3], parts[4]),
            _ => return Err(bad(format!("unexpected entry {path}"))),
        };
        let name = file
            .strip_suffix(".json")
            .ok_or_else(|| bad(format!("unexpected entry {path}")))?;
        let object: Value =
            serde_json::from_slice(&data).map_err(|e| bad(format!("{path}: {e}")))?;
        out.push(BackupObject {
            group: if parts[0] == "core" {
                String::new()
            } else {
                parts[0].to_owned()
            },
            version: parts[1].to_owned(),
            plural: parts[2].to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            object,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spooled_archive_untars_with_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(4);
        let long = format!("core/v1/configmaps/ns/{}.json", "x".repeat(200));
        let paths = vec![
            "apps/v1/deployments/a/web.json".to_string(),
            long.clone(),
            "core/v1/namespaces/a.json".into(),
        ];
        let writer = {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || spool(&dir, "t", rx))
        };
        let entry = |p: &String| Entry {
            path: p.clone(),
            data: format!("{{\"path\":\"{p}\"}}").into_bytes(),
        };
        // Two batches, as two list pages would send them.
        tx.blocking_send(encode(&[entry(&paths[0]), entry(&paths[1])], 7).unwrap())
            .unwrap();
        tx.blocking_send(encode(&[entry(&paths[2])], 7).unwrap())
            .unwrap();
        drop(tx);
        let spooled = writer.join().unwrap().unwrap();
        assert_eq!(spooled.entries, 3);
        let bytes = std::fs::read(spooled.file.path()).unwrap();
        assert_eq!(bytes.len() as u64, spooled.size);
        assert_eq!(
            spooled.sha256,
            hex::encode(Sha256::digest(&bytes)),
            "digest computed while writing"
        );
        let mut ar = tar::Archive::new(zstd::Decoder::new(bytes.as_slice()).unwrap());
        let mut got = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), 7);
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut e, &mut body).unwrap();
            assert_eq!(body, format!("{{\"path\":\"{path}\"}}"));
            got.push(path);
        }
        assert_eq!(got, paths);
        let path = spooled.file.path().to_owned();
        drop(spooled);
        assert!(!path.exists(), "the spool file is removed on drop");
    }
}
