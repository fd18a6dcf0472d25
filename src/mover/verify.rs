//! Deep verification: read packs, check every chunk's digest, name what is damaged.
//!
//! [`verify_index`] and [`verify_volumes`] take indexes in memory (and gather every reference
//! they make, by pack); [`verify_index_files`] streams index files instead, in batches of packs,
//! so its memory does not grow with the volumes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::chunker::ChunkId;
use super::{MoverError, Result};
use crate::repo::crypto::ReaderKey;
use crate::repo::index::IndexError;
use crate::repo::index::{Flow, IndexEvent, IndexHeader, IndexVisitor, VolumeIndex, read_index};
use crate::repo::pack::{PackEntry, decode_chunk_keyed, read_trailer};
use crate::repo::{Completeness, Manifest, RepoError, RepoReader, VerifyOptions};
use crate::storage::{Reader, StorageError};

/// A damaged or unreachable chunk, with the files that contain it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DamagedChunk {
    /// The chunk.
    pub chunk: String,
    /// Its pack's key.
    pub pack: String,
    /// What is wrong.
    pub problem: String,
    /// Volumes containing it (labels given to [`verify_volumes`]; empty for bare packs).
    pub volumes: Vec<String>,
    /// Files containing it: paths, or `<volume>:<path>` when verifying labelled volumes.
    pub files: Vec<String>,
}

/// What a verification found.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Packs read.
    pub packs: u64,
    /// Chunks checked.
    pub chunks: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Packs absent from the location.
    pub missing_packs: Vec<String>,
    /// Damaged chunks, sorted by pack then chunk.
    pub damaged: Vec<DamagedChunk>,
}

impl VerifyReport {
    /// Returns true if and only if nothing is missing or damaged.
    pub fn is_ok(&self) -> bool {
        self.missing_packs.is_empty() && self.damaged.is_empty()
    }
}

/// An index's references into one pack: (chunk id, offset, length, size).
type Expected = Vec<(ChunkId, u32, u32, u32)>;

/// Packs read at once (each is held whole, ~24 MiB).
const CONCURRENCY: usize = 4;

impl DamagedChunk {
    /// A pack that is gone, before the volumes and files using it are named.
    fn missing_pack(key: &str) -> Self {
        Self {
            chunk: String::new(),
            pack: key.to_owned(),
            problem: "pack missing".into(),
            volumes: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// Reads every pack `index` references and checks every chunk in it, plus that each reference
/// of the index matches its pack's trailer. Damage is reported, not returned as an error;
/// errors are storage failures other than a missing pack.
pub async fn verify_index(store: &Reader, index: &VolumeIndex) -> Result<VerifyReport> {
    verify_volumes(store, &[("", index)]).await
}

/// [`verify_index`] over several volumes (e.g. every volume of a backup): each pack is read once
/// however many volumes share it, and a damaged chunk names every volume and file containing it
/// (`files` entries are `<volume>:<path>`).
pub async fn verify_volumes(
    store: &Reader,
    volumes: &[(&str, &VolumeIndex)],
) -> Result<VerifyReport> {
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    for (_, index) in volumes {
        let keys: Vec<String> = index.packs.iter().map(|p| p.key()).collect();
        for k in &keys {
            expected.entry(k.clone()).or_default();
        }
        for f in index.files() {
            for c in &f.chunks {
                if let Some(k) = keys.get(c.pack as usize) {
                    expected
                        .entry(k.clone())
                        .or_default()
                        .push((c.id, c.offset, c.length, c.size));
                }
            }
        }
    }
    for refs in expected.values_mut() {
        refs.sort_unstable_by_key(|r| (r.1, r.2, r.0));
        refs.dedup();
    }
    let mut report = verify_keys(store, expected.into_iter().collect(), None).await?;
    let name = |label: &str, path: &str| {
        if label.is_empty() {
            path.to_owned()
        } else {
            format!("{label}:{path}")
        }
    };
    let attribute =
        |d: &mut DamagedChunk, index: &VolumeIndex, label: &str, ids: &BTreeSet<ChunkId>| {
            let files = index.files_containing(ids);
            if !files.is_empty() {
                d.volumes.push(label.to_owned());
                d.files.extend(files.iter().map(|p| name(label, p)));
            }
        };
    for d in &mut report.damaged {
        let Some(id) = ChunkId::from_hex(&d.chunk) else {
            continue;
        };
        let ids = BTreeSet::from([id]);
        for (label, index) in volumes {
            attribute(d, index, label, &ids);
        }
    }
    for key in report.missing_packs.clone() {
        let mut d = DamagedChunk::missing_pack(&key);
        for (label, index) in volumes {
            let Some(row) = index.packs.iter().position(|p| p.key() == key) else {
                continue;
            };
            let ids: BTreeSet<ChunkId> = index
                .files()
                .flat_map(|f| f.chunks.iter())
                .filter(|c| c.pack as usize == row)
                .map(|c| c.id)
                .collect();
            attribute(&mut d, index, label, &ids);
        }
        tracing::warn!(pack = %key, files = d.files.len(), "pack missing");
        report.damaged.push(d);
    }
    Ok(report)
}

/// Distinct chunk references [`verify_index_files`] holds at once (44 bytes each, ~46 MB): the
/// packs are verified in batches whose references fit, each batch one more pass over the index
/// files.
const BATCH_REFS: u64 = 1 << 20;

/// [`verify_volumes`] over index files, streamed: memory does not grow with the indexes' size.
/// Each pack is read once however many volumes share it. The packs are verified in batches of
/// at most ~1 Mi chunk references, each batch a pass over the index files (a 1 TB volume, ~17 M
/// references, takes ~17 passes), then one more pass names the files of what is damaged.
///
/// The report is [`verify_volumes`]'s, except that a missing pack names the files with a
/// reference into it (not also those holding the same chunks through another pack).
pub async fn verify_index_files(store: &Reader, volumes: &[(&str, &Path)]) -> Result<VerifyReport> {
    verify_files_in_batches(store, volumes, BATCH_REFS, None).await
}

/// [`verify_index_files`] for an encrypted repository: each pack is decrypted with the identity
/// (a pack that does not decrypt is reported damaged) and chunk ids are checked as keyed.
pub async fn verify_index_files_keyed(
    store: &Reader,
    volumes: &[(&str, &Path)],
    key: Option<&ReaderKey>,
) -> Result<VerifyReport> {
    verify_files_in_batches(store, volumes, BATCH_REFS, key).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("verify task does not panic")
}

/// Streams the index file at `path` through `on_event`, which also gets the pack table's keys;
/// returns them.
fn stream_index(path: &Path, on_event: impl FnMut(&[String], IndexEvent)) -> Result<Vec<String>> {
    struct Visit<E> {
        keys: Vec<String>,
        on_event: E,
    }
    impl<E: FnMut(&[String], IndexEvent)> IndexVisitor for Visit<E> {
        type Error = MoverError;
        fn header(&mut self, h: &IndexHeader) -> Result<Flow> {
            self.keys = h.packs.iter().map(|p| p.key()).collect();
            Ok(Flow::Continue)
        }
        fn event(&mut self, e: IndexEvent) -> Result<()> {
            (self.on_event)(&self.keys, e);
            Ok(())
        }
    }
    let file = File::open(path).map_err(|e| MoverError::Index(IndexError::Io(e)))?;
    let mut v = Visit {
        keys: Vec::new(),
        on_event,
    };
    read_index(BufReader::with_capacity(256 << 10, file), &mut v)?;
    Ok(v.keys)
}

/// References of one pack being collected; sorted and deduplicated whenever it doubles, so a
/// chunk referenced a million times takes little room.
#[derive(Default)]
struct Collected {
    refs: Expected,
    dedup_at: usize,
}

impl Collected {
    fn push(&mut self, r: (ChunkId, u32, u32, u32)) {
        self.refs.push(r);
        if self.refs.len() >= self.dedup_at {
            self.finish();
            self.dedup_at = (self.refs.len() * 2).max(1024);
        }
    }
    fn finish(&mut self) {
        self.refs.sort_unstable_by_key(|r| (r.1, r.2, r.0));
        self.refs.dedup();
    }
}

async fn verify_files_in_batches(
    store: &Reader,
    volumes: &[(&str, &Path)],
    batch_refs: u64,
    key: Option<&ReaderKey>,
) -> Result<VerifyReport> {
    let paths: Arc<Vec<PathBuf>> = Arc::new(volumes.iter().map(|(_, p)| p.to_path_buf()).collect());
    // Every volume's pack table, and how many references go into each pack.
    let (tables, counts) = blocking({
        let paths = paths.clone();
        move || {
            let mut tables = Vec::new();
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for path in paths.iter() {
                let mut per_row: Vec<u64> = Vec::new();
                let keys = stream_index(path, |keys, e| {
                    if let IndexEvent::Chunk(c) = e {
                        per_row.resize(keys.len(), 0);
                        if let Some(n) = per_row.get_mut(c.pack as usize) {
                            *n += 1;
                        }
                    }
                })?;
                for (k, n) in keys.iter().zip(per_row) {
                    *counts.entry(k.clone()).or_default() += n;
                }
                tables.push(keys);
            }
            Ok((tables, counts))
        }
    })
    .await?;
    // Batches of packs in key order, each with at most `batch_refs` references (or one pack).
    let mut batch_of: HashMap<String, usize> = HashMap::new();
    let (mut batches, mut in_batch) = (0usize, 0u64);
    for (key, n) in &counts {
        if in_batch > 0 && in_batch + n > batch_refs {
            batches += 1;
            in_batch = 0;
        }
        in_batch += n;
        batch_of.insert(key.clone(), batches);
    }
    let rows: Arc<Vec<Vec<usize>>> = Arc::new(
        tables
            .iter()
            .map(|keys| keys.iter().map(|k| batch_of[k]).collect())
            .collect(),
    );
    let tables = Arc::new(tables);
    let mut report = VerifyReport::default();
    for b in 0..=batches {
        let mine: Vec<String> = counts
            .keys()
            .filter(|k| batch_of[*k] == b)
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let expected = blocking({
            let (paths, tables, rows) = (paths.clone(), tables.clone(), rows.clone());
            move || {
                let mut expected: BTreeMap<String, Collected> = mine
                    .into_iter()
                    .map(|k| (k, Collected::default()))
                    .collect();
                for (v, path) in paths.iter().enumerate() {
                    stream_index(path, |_, e| {
                        if let IndexEvent::Chunk(c) = e
                            && rows[v].get(c.pack as usize) == Some(&b)
                            && let Some(col) = expected.get_mut(&tables[v][c.pack as usize])
                        {
                            col.push((c.id, c.offset, c.length, c.size));
                        }
                    })?;
                }
                Ok(expected
                    .into_iter()
                    .map(|(k, mut c)| {
                        c.finish();
                        (k, c.refs)
                    })
                    .collect::<Vec<_>>())
            }
        })
        .await?;
        let part = verify_keys(store, expected, key).await?;
        report.packs += part.packs;
        report.chunks += part.chunks;
        report.bytes += part.bytes;
        report.missing_packs.extend(part.missing_packs);
        report.damaged.extend(part.damaged);
    }
    report.missing_packs.sort();
    report
        .damaged
        .sort_by(|a, b| (&a.pack, &a.chunk).cmp(&(&b.pack, &b.chunk)));
    if report.damaged.is_empty() && report.missing_packs.is_empty() {
        return Ok(report);
    }
    // One more pass names the files (and their hard links) holding what is damaged.
    let damaged_ids: Arc<BTreeSet<ChunkId>> = Arc::new(
        report
            .damaged
            .iter()
            .filter_map(|d| ChunkId::from_hex(&d.chunk))
            .collect(),
    );
    let missing: Arc<Vec<String>> = Arc::new(report.missing_packs.clone());
    let hits = blocking({
        let (paths, tables, damaged_ids, missing) = (
            paths.clone(),
            tables.clone(),
            damaged_ids.clone(),
            missing.clone(),
        );
        move || {
            let mut all = Vec::new();
            for (v, path) in paths.iter().enumerate() {
                let row_missing: Vec<Option<usize>> = tables[v]
                    .iter()
                    .map(|k| missing.iter().position(|m| m == k))
                    .collect();
                all.push(files_hit(path, &row_missing, &damaged_ids, missing.len())?);
            }
            Ok(all)
        }
    })
    .await?;
    let name = |label: &str, path: &str| {
        if label.is_empty() {
            path.to_owned()
        } else {
            format!("{label}:{path}")
        }
    };
    let attribute = |d: &mut DamagedChunk, label: &str, files: Option<&BTreeSet<String>>| {
        if let Some(files) = files.filter(|f| !f.is_empty()) {
            d.volumes.push(label.to_owned());
            d.files.extend(files.iter().map(|p| name(label, p)));
        }
    };
    for d in &mut report.damaged {
        let Some(id) = ChunkId::from_hex(&d.chunk) else {
            continue;
        };
        for ((label, _), h) in volumes.iter().zip(&hits) {
            attribute(d, label, h.by_chunk.get(&id));
        }
    }
    for (m, key) in missing.iter().enumerate() {
        let mut d = DamagedChunk::missing_pack(key);
        for ((label, _), h) in volumes.iter().zip(&hits) {
            attribute(&mut d, label, h.by_missing.get(m));
        }
        tracing::warn!(pack = %key, files = d.files.len(), "pack missing");
        report.damaged.push(d);
    }
    Ok(report)
}

/// Files of one volume holding damaged chunks or references into missing packs.
struct Hits {
    /// Files (and hard links to them) containing each damaged chunk.
    by_chunk: BTreeMap<ChunkId, BTreeSet<String>>,
    /// Files (and hard links to them) with a reference into each missing pack.
    by_missing: Vec<BTreeSet<String>>,
}

fn files_hit(
    path: &Path,
    row_missing: &[Option<usize>],
    damaged: &BTreeSet<ChunkId>,
    missing: usize,
) -> Result<Hits> {
    let mut out = Hits {
        by_chunk: BTreeMap::new(),
        by_missing: vec![BTreeSet::new(); missing],
    };
    // What each hit file holds, for its hard links listed later: bounded by the damage.
    let mut hit_files: HashMap<String, (BTreeSet<ChunkId>, BTreeSet<usize>)> = HashMap::new();
    let mut current: Option<(String, BTreeSet<ChunkId>, BTreeSet<usize>)> = None;
    stream_index(path, |_, e| match e {
        IndexEvent::FileStart(f) => current = Some((f.path, BTreeSet::new(), BTreeSet::new())),
        IndexEvent::Chunk(c) => {
            if let Some((_, ids, packs)) = current.as_mut() {
                if damaged.contains(&c.id) {
                    ids.insert(c.id);
                }
                if let Some(Some(m)) = row_missing.get(c.pack as usize) {
                    packs.insert(*m);
                }
            }
        }
        IndexEvent::FileEnd => {
            if let Some((path, ids, packs)) = current.take()
                && !(ids.is_empty() && packs.is_empty())
            {
                hit_files.insert(path, (ids, packs));
            }
        }
        IndexEvent::HardLink(h) => {
            if let Some(hit) = hit_files.get(&h.target).cloned() {
                hit_files.insert(h.path, hit);
            }
        }
        IndexEvent::Dir(_) | IndexEvent::Symlink(_) => {}
    })?;
    for (path, (ids, packs)) in hit_files {
        for id in ids {
            out.by_chunk.entry(id).or_default().insert(path.clone());
        }
        for m in packs {
            out.by_missing[m].insert(path.clone());
        }
    }
    Ok(out)
}

/// Reads the given packs and checks every chunk their trailers list.
pub async fn verify_packs(store: &Reader, keys: &[String]) -> Result<VerifyReport> {
    verify_keys(
        store,
        keys.iter().map(|k| (k.clone(), Vec::new())).collect(),
        None,
    )
    .await
}

async fn verify_keys(
    store: &Reader,
    keys: Vec<(String, Expected)>,
    identity: Option<&ReaderKey>,
) -> Result<VerifyReport> {
    let results: Vec<PackResult> = futures::stream::iter(keys)
        .map(|(key, expected)| async move {
            let bytes = match store.get(&key).await {
                Ok(b) => b,
                Err(StorageError::NotFound { .. }) => return Ok(PackResult::Missing(key)),
                Err(source) => return Err(MoverError::Fetch { pack: key, source }),
            };
            let identity = identity.cloned();
            let checked = tokio::task::spawn_blocking(move || match identity {
                None => check_pack(&key, &bytes, &expected, None),
                Some(id) => match crate::repo::crypto::decrypt_bytes(&id, &bytes) {
                    Ok(plain) => check_pack(&key, &plain, &expected, Some(id.chunk_key())),
                    Err(e) => Checked {
                        chunks: 0,
                        bytes: bytes.len() as u64,
                        damaged: vec![DamagedChunk {
                            chunk: String::new(),
                            pack: key.clone(),
                            problem: format!("does not decrypt: {e}"),
                            volumes: Vec::new(),
                            files: Vec::new(),
                        }],
                    },
                },
            })
            .await
            .expect("verify task does not panic");
            Ok(PackResult::Read(checked))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut report = VerifyReport::default();
    for r in results {
        match r {
            PackResult::Missing(k) => report.missing_packs.push(k),
            PackResult::Read(c) => {
                report.packs += 1;
                report.chunks += c.chunks;
                report.bytes += c.bytes;
                report.damaged.extend(c.damaged);
            }
        }
    }
    report.missing_packs.sort();
    report
        .damaged
        .sort_by(|a, b| (&a.pack, &a.chunk).cmp(&(&b.pack, &b.chunk)));
    Ok(report)
}

enum PackResult {
    Missing(String),
    Read(Checked),
}

struct Checked {
    chunks: u64,
    bytes: u64,
    damaged: Vec<DamagedChunk>,
}

fn check_pack(
    key: &str,
    bytes: &[u8],
    expected: &Expected,
    chunk_key: Option<&crate::repo::crypto::ChunkKey>,
) -> Checked {
    let mut out = Checked {
        chunks: 0,
        bytes: bytes.len() as u64,
        damaged: Vec::new(),
    };
    let damaged = |chunk: &ChunkId, problem: String| DamagedChunk {
        chunk: chunk.to_hex(),
        pack: key.to_owned(),
        problem,
        volumes: Vec::new(),
        files: Vec::new(),
    };
    // The index's own references are checked against the bytes directly, so a damaged trailer
    // does not hide which of the index's chunks are still readable.
    let mut listed: HashMap<(u32, u32), PackEntry> = HashMap::new();
    match read_trailer(bytes) {
        Ok(t) => {
            for e in t.chunks() {
                listed.insert((e.offset, e.length), *e);
            }
        }
        Err(e) => {
            tracing::warn!(pack = %key, error = %e, "pack trailer unreadable");
            out.damaged.push(DamagedChunk {
                chunk: String::new(),
                pack: key.to_owned(),
                problem: format!("trailer: {e}"),
                volumes: Vec::new(),
                files: Vec::new(),
            });
        }
    }
    let mut checked: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut mismatched: Vec<DamagedChunk> = Vec::new();
    let mut check = |id: &ChunkId, offset: u32, length: u32, size: u32| {
        if !checked.insert((offset, length)) {
            return;
        }
        out.chunks += 1;
        let range = offset as usize..offset as usize + length as usize;
        let problem = match bytes.get(range) {
            None => Some("outside the pack".to_owned()),
            Some(stored) => {
                let mut plain = Vec::new();
                decode_chunk_keyed(stored, size, id, &mut plain, chunk_key)
                    .err()
                    .map(|e| e.to_string())
            }
        };
        if let Some(p) = problem {
            out.damaged.push(damaged(id, p));
        }
    };
    for &(id, offset, length, size) in expected {
        match listed.get(&(offset, length)) {
            Some(e) if e.id != id || e.size != size => {
                mismatched.push(damaged(&id, "index and pack trailer disagree".into()));
            }
            _ => {}
        }
        check(&id, offset, length, size);
    }
    let mut trailer: Vec<PackEntry> = listed.into_values().collect();
    trailer.sort_by_key(|e| e.offset);
    for e in trailer {
        check(&e.id, e.offset, e.length, e.size);
    }
    out.damaged.extend(mismatched);
    out
}

/// What `lifeboat verify` finds for one backup on a location.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupVerification {
    /// Whether every object the manifest names is present (and, deep, intact).
    pub objects: Completeness,
    /// Deep only: every chunk of every volume read and checked.
    pub volume_data: Option<VerifyReport>,
}

impl BackupVerification {
    /// Returns true if and only if the backup is usable as a restore point from here.
    pub fn is_ok(&self) -> bool {
        self.objects.is_complete() && self.volume_data.as_ref().is_none_or(VerifyReport::is_ok)
    }
}

/// Errors of [`verify_backup`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The repository could not be read (a manifest, an object, an index).
    #[error("{what}")]
    Repo {
        /// What was being read.
        what: String,
        /// Why.
        #[source]
        source: RepoError,
    },
    /// Reading or checking the volume data failed.
    #[error("verifying volume data")]
    Data(#[source] MoverError),
}

/// Checks that every object of the backup is present (with `deep`: that its sha256 matches, and
/// that every chunk of every volume reads back as its id), so damage is named by volume and
/// file. The check `lifeboat verify` runs.
pub async fn verify_backup(
    repo: &RepoReader,
    manifest: &Manifest,
    deep: bool,
) -> std::result::Result<BackupVerification, VerifyError> {
    let objects = repo
        .check(manifest, VerifyOptions { deep })
        .await
        .map_err(|source| VerifyError::Repo {
            what: format!("checking the objects of backup {}", manifest.name),
            source,
        })?;
    let volume_data = if deep {
        Some(verify_volume_data(repo, manifest).await?)
    } else {
        None
    };
    Ok(BackupVerification {
        objects,
        volume_data,
    })
}

/// Reads every pack the backup's volume indexes reference and checks every chunk.
async fn verify_volume_data(
    repo: &RepoReader,
    manifest: &Manifest,
) -> std::result::Result<VerifyReport, VerifyError> {
    let mut indexes = Vec::new();
    for v in manifest.volumes() {
        if v.index.is_none() {
            continue;
        }
        let label = format!("{}/{}", v.namespace, v.pvc);
        match repo.volume_index(manifest, &v.namespace, &v.pvc).await {
            Ok(index) => indexes.push((label, index)),
            // Missing or damaged: already reported by the completeness check.
            Err(RepoError::MissingObject { .. } | RepoError::DigestMismatch { .. }) => {}
            Err(source) => {
                return Err(VerifyError::Repo {
                    what: format!("reading the index of volume {label}"),
                    source,
                });
            }
        }
    }
    // Streamed from local files, in batches of bounded memory.
    let refs: Vec<(&str, &Path)> = indexes
        .iter()
        .map(|(l, i)| (l.as_str(), i.path()))
        .collect();
    let identity = repo
        .identity_for("verify --deep")
        .map_err(|source| VerifyError::Repo {
            what: format!("verifying the volume data of backup {}", manifest.name),
            source,
        })?;
    verify_index_files_keyed(repo.store(), &refs, identity)
        .await
        .map_err(VerifyError::Data)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::repo::RepoConfig;
    use crate::repo::index::{ChunkRef, Entry, FileNode, HardLinkNode, Meta, Mtime, PackRef};
    use crate::repo::pack::{PackBuilder, encode_chunk};
    use crate::storage::Writer;
    use crate::storage::memory::MemoryBackend;

    fn noise(seed: u32, len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed << 20).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// Builds a pack of `chunks`; stores it (with chunk `corrupt` damaged) unless `missing`.
    async fn pack(
        store: &Writer,
        chunks: &[Vec<u8>],
        corrupt: Option<usize>,
        missing: bool,
    ) -> (PackRef, Vec<ChunkRef>) {
        let mut b = PackBuilder::with_capacity(1 << 16);
        let entries: Vec<_> = chunks
            .iter()
            .map(|c| b.add(ChunkId::of(c), c.len() as u32, &encode_chunk(c, 3)))
            .collect();
        let p = b.finish();
        let pack = PackRef {
            id: p.id.clone(),
            size: p.bytes.len() as u64,
        };
        let mut bytes = p.bytes.to_vec();
        if let Some(i) = corrupt {
            bytes[(entries[i].offset + entries[i].length / 2) as usize] ^= 0x55;
        }
        if !missing {
            store
                .put_if_absent(&pack.key(), bytes.into())
                .await
                .unwrap();
        }
        let refs = entries
            .iter()
            .map(|e| ChunkRef {
                id: e.id,
                pack: 0,
                offset: e.offset,
                length: e.length,
                size: e.size,
            })
            .collect();
        (pack, refs)
    }

    fn index(packs: &[&PackRef], files: Vec<(&str, Vec<(usize, ChunkRef)>)>) -> VolumeIndex {
        let mut ix = VolumeIndex::new(RepoConfig::new_default().chunker);
        ix.packs = packs.iter().map(|p| (*p).clone()).collect();
        for (path, chunks) in files {
            if let Some(target) = path.strip_prefix("link:") {
                let (path, target) = target.split_once("->").unwrap();
                ix.entries.push(Entry::HardLink(HardLinkNode {
                    path: path.into(),
                    target: target.into(),
                }));
                continue;
            }
            let chunks: Vec<ChunkRef> = chunks
                .into_iter()
                .map(|(row, c)| ChunkRef {
                    pack: row as u32,
                    ..c
                })
                .collect();
            ix.entries.push(Entry::File(FileNode {
                path: path.into(),
                meta: Meta {
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    mtime: Mtime(1, 0),
                },
                size: chunks.iter().map(|c| u64::from(c.size)).sum(),
                inode: 1,
                holes: vec![],
                chunks,
            }));
        }
        ix
    }

    #[tokio::test]
    async fn streamed_verification_in_any_batch_size_reports_what_the_in_memory_one_does() {
        let store = Writer::new(Arc::new(MemoryBackend::new("verify-test")));
        let c: Vec<Vec<u8>> = (0..8).map(|n| noise(n, 2000 + 100 * n as usize)).collect();
        let (p1, r1) = pack(&store, &c[0..3], Some(1), false).await;
        let (p2, r2) = pack(&store, &c[3..5], None, false).await;
        let (p3, r3) = pack(&store, &c[5..6], None, true).await;
        let (p4, _) = pack(&store, &c[6..8], None, false).await;
        let a = index(
            &[&p1, &p2, &p3],
            vec![
                ("a/x", vec![(0, r1[0]), (0, r1[1])]),
                ("a/y", vec![(1, r2[0])]),
                ("link:a/hl->a/x", vec![]),
                ("a/z", vec![(2, r3[0]), (1, r2[0])]),
            ],
        );
        let b = index(
            &[&p2, &p1, &p4],
            vec![
                ("b", vec![(1, r1[1]), (0, r2[1]), (1, r1[1])]),
                ("b2", vec![(1, r1[2])]),
            ],
        );
        let reader = store.reader();
        let want = verify_volumes(&reader, &[("ns/a", &a), ("ns/b", &b)])
            .await
            .unwrap();
        assert_eq!(want.missing_packs, vec![p3.key()]);
        assert_eq!(want.damaged.len(), 2, "{want:?}");
        assert_eq!(
            want.damaged[0].files,
            ["ns/a:a/hl", "ns/a:a/x", "ns/b:b"],
            "{want:?}"
        );
        assert_eq!(want.damaged[1].files, ["ns/a:a/z"], "{want:?}");
        let (fa, fb) = (a.write_file().unwrap(), b.write_file().unwrap());
        let files = [("ns/a", fa.path.as_path()), ("ns/b", fb.path.as_path())];
        let json = |r: &VerifyReport| serde_json::to_value(r).unwrap();
        for batch in [1, 2, 3, BATCH_REFS] {
            let got = verify_files_in_batches(&reader, &files, batch, None)
                .await
                .unwrap();
            assert_eq!(json(&got), json(&want), "batches of {batch}");
        }
        let clean = verify_index_files(&reader, &[("", fb.path.as_path())]).await;
        assert_eq!(clean.unwrap().damaged.len(), 1, "b holds the damaged chunk");
    }
}
