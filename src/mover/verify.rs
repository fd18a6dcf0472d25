//! Deep verification: read packs, check every chunk's digest, name what is damaged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};

use super::chunker::ChunkId;
use super::index::VolumeIndex;
use super::pack::{PackEntry, decode_chunk, read_trailer};
use super::{MoverError, Result};
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
    let mut report = verify_keys(store, expected.into_iter().collect()).await?;
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
        let mut d = DamagedChunk {
            chunk: String::new(),
            pack: key.clone(),
            problem: "pack missing".into(),
            volumes: Vec::new(),
            files: Vec::new(),
        };
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

/// Reads the given packs and checks every chunk their trailers list.
pub async fn verify_packs(store: &Reader, keys: &[String]) -> Result<VerifyReport> {
    verify_keys(
        store,
        keys.iter().map(|k| (k.clone(), Vec::new())).collect(),
    )
    .await
}

async fn verify_keys(store: &Reader, keys: Vec<(String, Expected)>) -> Result<VerifyReport> {
    let results: Vec<PackResult> = futures::stream::iter(keys)
        .map(|(key, expected)| async move {
            let bytes = match store.get(&key).await {
                Ok(b) => b,
                Err(StorageError::NotFound { .. }) => return Ok(PackResult::Missing(key)),
                Err(source) => return Err(MoverError::Fetch { pack: key, source }),
            };
            let checked = tokio::task::spawn_blocking(move || check_pack(&key, &bytes, &expected))
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

fn check_pack(key: &str, bytes: &[u8], expected: &Expected) -> Checked {
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
            Some(stored) => decode_chunk(stored, size, id).err().map(|e| e.to_string()),
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
