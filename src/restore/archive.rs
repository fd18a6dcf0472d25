//! Reading a backup's `resources.tar.zst` from a (read-only) repository.

use std::io::Read;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::RestoreError;
use crate::repo::{Layout, Manifest, RepoReader};

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

/// Downloads, checks against the manifest's digest, and decodes every object of the archive.
pub async fn read_objects(
    repo: &RepoReader,
    manifest: &Manifest,
) -> Result<Vec<BackupObject>, RestoreError> {
    let key = Layout::resources(&manifest.name);
    let entry = manifest
        .objects
        .iter()
        .find(|o| o.key == key)
        .ok_or_else(|| RestoreError::Archive {
            backup: manifest.name.to_string(),
            detail: "the manifest lists no resources.tar.zst".into(),
        })?;
    let bytes = repo.get(&key).await.map_err(|source| RestoreError::Repo {
        what: "reading the resource archive",
        source,
    })?;
    if hex::encode(Sha256::digest(&bytes)) != entry.sha256 {
        return Err(RestoreError::Archive {
            backup: manifest.name.to_string(),
            detail: format!(
                "{key} does not match the sha256 in the manifest (corrupt or tampered)"
            ),
        });
    }
    let backup = manifest.name.to_string();
    tokio::task::spawn_blocking(move || decode(&bytes, &backup))
        .await
        .expect("decoding does not panic")
}

fn decode(bytes: &[u8], backup: &str) -> Result<Vec<BackupObject>, RestoreError> {
    let bad = |detail: String| RestoreError::Archive {
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
