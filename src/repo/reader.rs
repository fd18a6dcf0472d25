//! Reading a repository: committed backups only, and whether each is complete here.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::archive::BackupObject;
use super::{
    BackupName, FORMAT_VERSION, Layout, Manifest, ObjectEntry, PackId, RepoConfig, RepoError,
    Result,
};
use crate::storage::{Reader, StorageError};

/// How many objects are checked at once; completeness is HEAD-bound, not bandwidth-bound.
const CHECK_CONCURRENCY: usize = 32;
/// Deep verification reads objects in ranges of this size so a large pack is never held whole.
const VERIFY_RANGE: u64 = 8 * 1024 * 1024;

/// A repository opened for reading. It holds a [`Reader`], so it cannot write.
#[derive(Clone)]
pub struct RepoReader {
    store: Reader,
    config: RepoConfig,
    keys: RepoKeys,
}

/// The keys a repository is used with: none for an unencrypted one; for an encrypted one the
/// writer key (writes, reads nothing) and/or the identity (reads).
#[derive(Clone, Debug, Default)]
pub struct RepoKeys {
    /// The writer key.
    pub writer: Option<super::crypto::WriterKey>,
    /// The identity.
    pub reader: Option<super::crypto::ReaderKey>,
}

impl RepoKeys {
    /// Returns true if and only if any key is given.
    pub fn any(&self) -> bool {
        self.writer.is_some() || self.reader.is_some()
    }
}

/// One committed backup, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupListing {
    /// The manifest.
    pub manifest: Manifest,
}

/// Every committed backup whose manifest reads, and those whose manifest does not.
#[derive(Debug, Clone, Default)]
pub struct Listed {
    /// Readable backups, oldest first.
    pub backups: Vec<BackupListing>,
    /// Backups whose manifest does not parse or fails its own digest, in name order.
    pub unreadable: Vec<Unreadable>,
}

/// A committed backup whose manifest cannot be read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unreadable {
    /// The backup.
    pub name: String,
    /// Why its manifest cannot be read.
    pub error: String,
}

/// Whether every object a manifest names is present (and intact, when checked deeply).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Completeness {
    /// Objects the manifest names.
    pub total: usize,
    /// Keys not present on this location (not yet replicated, or lost).
    pub missing: Vec<String>,
    /// Keys present with another size than the manifest says.
    pub wrong_size: Vec<String>,
    /// Keys whose sha256 differs (deep check only).
    pub corrupt: Vec<String>,
    /// Returns true if the digests were checked.
    pub deep: bool,
}

impl Completeness {
    /// Returns true if and only if every object is present with the right size (and digest, if
    /// checked deeply).
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.wrong_size.is_empty() && self.corrupt.is_empty()
    }

    /// Objects present and intact.
    pub fn present(&self) -> usize {
        self.total - self.missing.len() - self.wrong_size.len() - self.corrupt.len()
    }
}

/// A volume index in a local temporary file (deleted on drop), checked against its manifest.
#[derive(Debug)]
pub struct IndexFile {
    /// The index as the manifest lists it.
    pub entry: ObjectEntry,
    /// The downloaded copy.
    pub copy: crate::storage::LocalCopy,
}

impl IndexFile {
    /// The local file.
    pub fn path(&self) -> &std::path::Path {
        &self.copy.path
    }
}

/// Options of [`RepoReader::check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Re-read every object and compare its sha256 with the manifest.
    pub deep: bool,
}

enum ObjectState {
    Ok,
    Missing,
    WrongSize,
    Corrupt,
}

impl RepoReader {
    /// Opens the repository on a location: reads and checks `lifeboat.json`.
    pub async fn open(store: Reader) -> Result<Self> {
        let location = store.location().to_owned();
        let bytes = match store.get(Layout::CONFIG).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(RepoError::NotARepository { location });
            }
            Err(e) => return Err(e.into()),
        };
        let config: RepoConfig =
            serde_json::from_slice(&bytes).map_err(|source| RepoError::Corrupt {
                location: location.clone(),
                key: Layout::CONFIG.into(),
                what: "repository config",
                source,
            })?;
        if !config.is_supported() {
            return Err(RepoError::UnsupportedFormat {
                location,
                found: format!(
                    "{} v{} (encryption {}{})",
                    config.format,
                    config.version,
                    config.encryption.scheme,
                    config
                        .encryption
                        .chunk_id
                        .as_deref()
                        .map(|c| format!(", chunk ids {c}"))
                        .unwrap_or_default()
                ),
                supported: FORMAT_VERSION,
            });
        }
        Ok(Self {
            store,
            config,
            keys: RepoKeys::default(),
        })
    }

    /// Opens the repository with keys: checks they are this repository's (an unencrypted
    /// repository refuses any key, so it is never mixed). Without keys, an encrypted repository
    /// opens too: listing and completeness need none, reading content fails naming the identity.
    pub async fn open_with(store: Reader, keys: RepoKeys) -> Result<Self> {
        let mut repo = Self::open(store).await?;
        repo.set_keys(keys)?;
        Ok(repo)
    }

    pub(super) fn set_keys(&mut self, keys: RepoKeys) -> Result<()> {
        let enc = &self.config.encryption;
        let location = self.store.location().to_owned();
        if !enc.is_encrypted() {
            if keys.any() {
                return Err(RepoError::NotEncrypted { location });
            }
            return Ok(());
        }
        let check = enc.chunk_id_key_check.as_deref().unwrap_or_default();
        if let Some(w) = &keys.writer {
            if w.chunk_key().check() != check {
                return Err(RepoError::WrongKey {
                    location,
                    what: "the writer key",
                    detail:
                        "its chunk-id key differs from the one this repository was created with"
                            .into(),
                });
            }
            if w.fingerprints() != enc.recipients {
                return Err(RepoError::WrongKey {
                    location,
                    what: "the writer key",
                    detail: format!(
                        "its recipients {:?} differ from the repository's {:?}",
                        w.fingerprints(),
                        enc.recipients
                    ),
                });
            }
        }
        if let Some(r) = &keys.reader {
            if !enc.recipients.contains(&r.fingerprint()) {
                return Err(RepoError::WrongKey {
                    location,
                    what: "the identity",
                    detail: format!(
                        "its public key ({}) is not among the repository's recipients {:?}: a wrong identity file?",
                        r.fingerprint(),
                        enc.recipients
                    ),
                });
            }
            if r.chunk_key().check() != check {
                return Err(RepoError::WrongKey {
                    location,
                    what: "the identity",
                    detail: "its chunk-id key differs from the repository's".into(),
                });
            }
        }
        self.keys = keys;
        Ok(())
    }

    /// The keys it was opened with.
    pub fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    /// Returns true if and only if the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.config.encryption.is_encrypted()
    }

    /// The identity, for reading content; an error naming `what` if the repository is encrypted
    /// and none was given. `None` for an unencrypted repository.
    pub fn identity_for(&self, what: &str) -> Result<Option<&super::crypto::ReaderKey>> {
        if !self.is_encrypted() {
            return Ok(None);
        }
        self.keys
            .reader
            .as_ref()
            .map(Some)
            .ok_or_else(|| RepoError::IdentityNeeded {
                location: self.store.location().into(),
                what: what.into(),
            })
    }

    /// The chunk-id key of an encrypted repository (from either key), `None` if unencrypted.
    pub fn chunk_key(&self) -> Option<&super::crypto::ChunkKey> {
        if !self.is_encrypted() {
            return None;
        }
        self.keys
            .writer
            .as_ref()
            .map(|w| w.chunk_key())
            .or_else(|| self.keys.reader.as_ref().map(|r| r.chunk_key()))
    }

    /// The key of volume `namespace/claim`'s index in backup `name`: the claim appears only
    /// as a keyed tag in an encrypted repository.
    pub fn volume_index_key(&self, name: &BackupName, namespace: &str, claim: &str) -> String {
        match self.chunk_key() {
            Some(k) => Layout::volume_index_sealed(name, &Layout::claim_tag(k, namespace, claim)),
            None => Layout::volume_index(name, namespace, claim),
        }
    }

    /// Returns true if and only if the location holds a repository (its `lifeboat.json`),
    /// without reading it: what `doctor` reports before it opens one.
    pub async fn exists(store: &Reader) -> Result<bool> {
        Ok(store.head(Layout::CONFIG).await?.is_some())
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The underlying storage handle (read-only).
    pub fn store(&self) -> &Reader {
        &self.store
    }

    /// Names of committed backups (those with a manifest), in name order. Objects of backups
    /// without a manifest (in progress, interrupted, or manifest not yet replicated) are invisible.
    pub async fn backup_names(&self) -> Result<Vec<BackupName>> {
        let mut names = Vec::new();
        let mut keys = self.store.list(Layout::BACKUPS);
        while let Some(meta) = keys.try_next().await? {
            if let Some(name) = Layout::manifest_owner(&meta.key)
                && let Ok(name) = BackupName::new(name)
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Every committed backup with its manifest, oldest first.
    pub async fn list_backups(&self) -> Result<Vec<BackupListing>> {
        let names = self.backup_names().await?;
        let mut listings: Vec<BackupListing> = futures::stream::iter(names)
            .map(|n| async move {
                self.manifest(&n)
                    .await
                    .map(|manifest| BackupListing { manifest })
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .try_collect()
            .await?;
        listings.sort_by(|a, b| {
            (a.manifest.completed_at, a.manifest.name.as_str())
                .cmp(&(b.manifest.completed_at, b.manifest.name.as_str()))
        });
        Ok(listings)
    }

    /// Every committed backup with its manifest, oldest first, passing over (and naming) those
    /// whose manifest is damaged: one bad manifest must not hide the good backups from `list`
    /// or a restore. Deletion (prune) uses [`Self::list_backups`], which refuses instead.
    pub async fn list_readable(&self) -> Result<Listed> {
        let names = self.backup_names().await?;
        let results: Vec<(BackupName, Result<Manifest>)> = futures::stream::iter(names)
            .map(|n| async move {
                let m = self.manifest(&n).await;
                (n, m)
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .collect()
            .await;
        let mut out = Listed::default();
        for (name, r) in results {
            match r {
                Ok(manifest) => out.backups.push(BackupListing { manifest }),
                Err(
                    e @ (RepoError::Corrupt { .. }
                    | RepoError::BadManifest { .. }
                    | RepoError::ManifestDamaged { .. }),
                ) => out.unreadable.push(Unreadable {
                    name: name.to_string(),
                    error: crate::repo::error_chain(&e),
                }),
                Err(e) => return Err(e),
            }
        }
        out.backups.sort_by(|a, b| {
            (a.manifest.completed_at, a.manifest.name.as_str())
                .cmp(&(b.manifest.completed_at, b.manifest.name.as_str()))
        });
        out.unreadable.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A backup's manifest.
    pub async fn manifest(&self, name: &BackupName) -> Result<Manifest> {
        let key = Layout::manifest(name);
        let bytes = match self.store.get(&key).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(RepoError::NoSuchBackup {
                    name: name.to_string(),
                    location: self.store.location().into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        parse_manifest_with(
            name,
            self.store.location(),
            &key,
            &bytes,
            self.keys.reader.as_ref(),
        )
    }

    /// Every object of the backup's resource archive: downloaded, checked against the
    /// manifest's sha256 (a corrupt or tampered archive is refused), and decoded.
    pub async fn resources(&self, manifest: &Manifest) -> Result<Vec<BackupObject>> {
        let backup = manifest.name.to_string();
        let key = Layout::resources(&manifest.name);
        let entry = manifest
            .objects
            .iter()
            .find(|o| o.key == key)
            .ok_or_else(|| RepoError::Archive {
                backup: backup.clone(),
                detail: format!("the manifest lists no {}", Layout::RESOURCES_FILE),
            })?;
        let identity = self.identity_for(&format!("reading backup {backup}'s resources"))?;
        let bytes = self.store.get(&key).await?;
        if hex::encode(Sha256::digest(&bytes)) != entry.sha256 {
            return Err(RepoError::Archive {
                backup,
                detail: format!(
                    "{key} does not match the sha256 in the manifest (corrupt or tampered)"
                ),
            });
        }
        let bytes = match identity {
            None => bytes,
            Some(id) => {
                let id = id.clone();
                let k = key.clone();
                let b = backup.clone();
                tokio::task::spawn_blocking(move || {
                    super::crypto::decrypt_bytes(&id, &bytes).map_err(|source| RepoError::Decrypt {
                        backup: b,
                        key: k,
                        source,
                    })
                })
                .await
                .map_err(|e| RepoError::Archive {
                    backup: backup.clone(),
                    detail: format!("decrypting stopped: {e}"),
                })??
                .into()
            }
        };
        tokio::task::spawn_blocking(move || super::archive::decode(&bytes, &backup))
            .await
            .map_err(|e| RepoError::Archive {
                backup: manifest.name.to_string(),
                detail: format!("decoding stopped: {e}"),
            })?
    }

    /// The index of volume `namespace/claim` of a backup, downloaded into a temporary file
    /// (a large volume's index is gigabytes, so it is streamed from disk, never held in memory)
    /// and checked against the manifest's sha256.
    pub async fn volume_index(
        &self,
        manifest: &Manifest,
        namespace: &str,
        claim: &str,
    ) -> Result<IndexFile> {
        let identity = self.identity_for(&format!(
            "reading the index of {namespace}/{claim} in backup {}",
            manifest.name
        ))?;
        let key = self.volume_index_key(&manifest.name, namespace, claim);
        let entry = manifest
            .objects
            .iter()
            .find(|o| o.key == key)
            .cloned()
            .ok_or_else(|| RepoError::NoSuchVolume {
                backup: manifest.name.to_string(),
                volume: format!("{namespace}/{claim}"),
                key: key.clone(),
            })?;
        let copy = match crate::storage::download_to_temp(&*self.store, &key).await {
            Ok(c) => c,
            Err(StorageError::NotFound { .. }) => {
                return Err(RepoError::MissingObject {
                    backup: manifest.name.to_string(),
                    key,
                    location: self.store.location().into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if copy.sha256 != entry.sha256 {
            return Err(RepoError::DigestMismatch {
                key,
                expected: entry.sha256,
                actual: copy.sha256,
            });
        }
        if let Some(id) = identity {
            decrypt_file_in_place(id, &copy.path)
                .await
                .map_err(|source| RepoError::Decrypt {
                    backup: manifest.name.to_string(),
                    key: key.clone(),
                    source,
                })?;
        }
        Ok(IndexFile { entry, copy })
    }

    /// The writer's view of volume `namespace/claim`'s index in backup `name` (encrypted
    /// repositories; see [`super::crypto::writer_view_passphrase`]), decrypted into a temporary
    /// file, if the manifest lists one.
    pub async fn writer_view(
        &self,
        manifest: &Manifest,
        namespace: &str,
        claim: &str,
    ) -> Result<Option<IndexFile>> {
        let Some(w) = self.keys.writer.as_ref() else {
            return Ok(None);
        };
        let key = Layout::writer_view(&self.volume_index_key(&manifest.name, namespace, claim));
        let Some(entry) = manifest.objects.iter().find(|o| o.key == key).cloned() else {
            return Ok(None);
        };
        let copy = match crate::storage::download_to_temp(&*self.store, &key).await {
            Ok(c) => c,
            Err(StorageError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if copy.sha256 != entry.sha256 {
            return Err(RepoError::DigestMismatch {
                key,
                expected: entry.sha256,
                actual: copy.sha256,
            });
        }
        let passphrase = super::crypto::writer_view_passphrase(w.chunk_key());
        let path = copy.path.clone();
        tokio::task::spawn_blocking(move || super::crypto::open_writer_view(&passphrase, &path))
            .await
            .map_err(|e| super::crypto::CryptoError::Damaged(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| RepoError::Decrypt {
                backup: manifest.name.to_string(),
                key,
                source,
            })?;
        Ok(Some(IndexFile { entry, copy }))
    }

    /// The ids of the retired packs (`retired/<pack id>`): new backups store their live chunks
    /// again instead of referencing them.
    pub async fn retired_packs(&self) -> Result<std::collections::HashSet<PackId>> {
        Ok(self
            .store
            .list(Layout::RETIRED)
            .try_filter_map(|m| async move { Ok(Layout::retired_pack_of(&m.key)) })
            .try_collect()
            .await?)
    }

    /// A whole object of the repository.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.store.get(key).await?)
    }

    /// Checks that every object the manifest names is present here with its size, and with
    /// `deep`, that its sha256 matches. On a replicated location this tells whether the backup
    /// is a usable restore point yet.
    pub async fn check(&self, manifest: &Manifest, opts: VerifyOptions) -> Result<Completeness> {
        let entries: Vec<&ObjectEntry> = manifest.required_objects().collect();
        let mut report = Completeness {
            total: entries.len(),
            deep: opts.deep,
            ..Default::default()
        };
        let mut states = futures::stream::iter(entries)
            .map(|e| async move { self.check_object(e, opts.deep).await.map(|s| (e, s)) })
            .buffer_unordered(if opts.deep { 4 } else { CHECK_CONCURRENCY });
        while let Some((entry, state)) = states.try_next().await? {
            let key = entry.key.clone();
            match state {
                ObjectState::Ok => {}
                ObjectState::Missing => report.missing.push(key),
                ObjectState::WrongSize => report.wrong_size.push(key),
                ObjectState::Corrupt => report.corrupt.push(key),
            }
        }
        for v in [
            &mut report.missing,
            &mut report.wrong_size,
            &mut report.corrupt,
        ] {
            v.sort();
        }
        Ok(report)
    }

    async fn check_object(&self, entry: &ObjectEntry, deep: bool) -> Result<ObjectState> {
        let Some(meta) = self.store.head(&entry.key).await? else {
            return Ok(ObjectState::Missing);
        };
        if meta.size != entry.size {
            return Ok(ObjectState::WrongSize);
        }
        if !deep {
            return Ok(ObjectState::Ok);
        }
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < entry.size {
            let end = (offset + VERIFY_RANGE).min(entry.size);
            let chunk = match self.store.get_range(&entry.key, offset..end).await {
                Ok(c) => c,
                Err(StorageError::NotFound { .. }) => return Ok(ObjectState::Missing),
                Err(e) => return Err(e.into()),
            };
            hasher.update(&chunk);
            offset = end;
        }
        Ok(if hex::encode(hasher.finalize()) == entry.sha256 {
            ObjectState::Ok
        } else {
            ObjectState::Corrupt
        })
    }
}

/// Decrypts a local age file into its own place (through a sibling file).
pub(super) async fn decrypt_file_in_place(
    key: &super::crypto::ReaderKey,
    path: &std::path::Path,
) -> std::result::Result<(), super::crypto::CryptoError> {
    let key = key.clone();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || super::crypto::decrypt_file_in_place(&key, &path))
        .await
        .map_err(|e| super::crypto::CryptoError::Damaged(e.to_string()))?
}

/// [`parse_manifest`], opening the sealed fields with the identity if given.
pub(super) fn parse_manifest_with(
    name: &BackupName,
    location: &str,
    key: &str,
    bytes: &[u8],
    identity: Option<&super::crypto::ReaderKey>,
) -> Result<Manifest> {
    let sealed = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .filter(|d| d.get(super::manifest::SEALED_FIELD).is_some());
    let Some(mut doc) = sealed else {
        return parse_manifest(name, location, key, bytes);
    };
    // The digest (over the stored, sealed document) first, as for any manifest.
    let mut m = parse_manifest(name, location, key, bytes)?;
    let Some(id) = identity else {
        m.unopened = true;
        return Ok(m);
    };
    super::manifest::open(&mut doc, id).map_err(|source| RepoError::Decrypt {
        backup: name.to_string(),
        key: format!("{key} (its sealed fields)"),
        source,
    })?;
    // Checked above over the stored (sealed) document; the opened one has another digest.
    if let Some(o) = doc.as_object_mut() {
        o.remove(super::manifest::DIGEST_FIELD);
    }
    let opened = serde_json::to_vec(&doc).unwrap_or_default();
    let mut opened = parse_manifest(name, location, key, &opened)?;
    opened.manifest_sha256 = m.manifest_sha256;
    Ok(opened)
}

/// Parses a manifest; an error names the backup and, where the JSON is well-formed but a field
/// is not what it should be, that field's path (`details.volumes[0].status`).
pub(super) fn parse_manifest(
    name: &BackupName,
    location: &str,
    key: &str,
    bytes: &[u8],
) -> Result<Manifest> {
    // The digest first: a damaged manifest may still parse (a flipped hex digit in an object's
    // sha256) or fail on a field, and either way it is the manifest that is damaged.
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(recorded) = doc.get(super::manifest::DIGEST_FIELD)
    {
        let actual = super::manifest::content_sha256(&doc);
        if recorded.as_str() != Some(actual.as_str()) {
            return Err(RepoError::ManifestDamaged {
                backup: name.to_string(),
                location: location.into(),
                key: key.into(),
                recorded: recorded.to_string(),
                actual,
            });
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let source = e.into_inner();
        if field == "." || source.is_syntax() || source.is_eof() {
            RepoError::Corrupt {
                location: location.into(),
                key: key.into(),
                what: "backup manifest",
                source,
            }
        } else {
            RepoError::BadManifest {
                backup: name.to_string(),
                location: location.into(),
                field,
                source,
            }
        }
    })
}
