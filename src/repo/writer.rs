//! Writing a repository: data objects first, the manifest last.

use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::index::{IndexError, VolumeIndex, read_header};
use super::{
    BackupName, Layout, Manifest, ObjectEntry, RepoConfig, RepoError, RepoKeys, RepoReader, Result,
};
use crate::storage::{PutOutcome, TransferOptions, Writer};

/// A repository opened for writing.
#[derive(Clone)]
pub struct RepoWriter {
    store: Writer,
    reader: RepoReader,
}

impl RepoWriter {
    /// Opens the repository on a location, creating `lifeboat.json` if the location is empty.
    /// Two writers initialising at once agree: the create is conditional and the loser reads
    /// the winner's config.
    pub async fn open_or_init(store: Writer) -> Result<Self> {
        Self::open_or_init_with(store, RepoKeys::default()).await
    }

    /// [`RepoWriter::open_or_init`] with keys: a new repository is created encrypted exactly
    /// when a writer key is given; an existing one must match (never mixed). Writing an
    /// encrypted repository needs the writer key.
    pub async fn open_or_init_with(store: Writer, keys: RepoKeys) -> Result<Self> {
        // A fresh container or directory is created; credentials that may write blobs but not
        // create containers (a pre-created container) are fine too.
        match store.create_location().await {
            Ok(created) if created => {
                tracing::info!(location = store.location(), "created the location")
            }
            Ok(_) => {}
            Err(crate::storage::StorageError::Denied { .. }) => {
                tracing::debug!(
                    location = store.location(),
                    "may not create the location; assuming it exists"
                )
            }
            Err(e) => return Err(e.into()),
        }
        if store.head(Layout::CONFIG).await?.is_none()
            && let Some(found) = store.top_entry().await?
            && found != Layout::CONFIG
            // A writer initialising beside us may have created the config (and more) since.
            && store.head(Layout::CONFIG).await?.is_none()
        {
            return Err(RepoError::ForeignLocation {
                location: store.location().into(),
                found,
            });
        }
        let config = match &keys.writer {
            Some(w) => RepoConfig::new_encrypted(w),
            None => RepoConfig::new_default(),
        };
        let body = serde_json::to_vec_pretty(&config).expect("RepoConfig serializes");
        match store
            .put_if_absent(Layout::CONFIG, Bytes::from(body))
            .await?
        {
            PutOutcome::Created => {
                tracing::info!(location = store.location(), "initialised a new repository")
            }
            PutOutcome::AlreadyExists => {}
        }
        let reader = RepoReader::open_with(store.reader(), keys).await?;
        if reader.is_encrypted() && reader.keys().writer.is_none() {
            return Err(RepoError::WriterKeyNeeded {
                location: store.location().into(),
            });
        }
        Ok(Self { store, reader })
    }

    /// The read side of the same repository.
    pub fn reader(&self) -> &RepoReader {
        &self.reader
    }

    /// Starts writing a backup. Fails if a backup of that name is committed.
    pub async fn begin_backup(&self, name: BackupName) -> Result<BackupWriter> {
        if self.store.head(&Layout::manifest(&name)).await?.is_some() {
            return Err(RepoError::BackupExists {
                name: name.to_string(),
                location: self.store.location().into(),
            });
        }
        // Visible to prune as in progress from now on, however long it runs.
        let heartbeat = super::alive::start(&self.store, &name, super::alive::INTERVAL).await?;
        Ok(BackupWriter {
            store: self.store.clone(),
            key: self
                .reader
                .is_encrypted()
                .then(|| self.reader.keys().writer.clone())
                .flatten(),
            name,
            objects: Vec::new(),
            packs: Vec::new(),
            _heartbeat: heartbeat,
        })
    }
}

/// A backup being written. Until [`BackupWriter::commit`] it does not exist for readers.
pub struct BackupWriter {
    store: Writer,
    /// The writer key of an encrypted repository: every object is encrypted to it.
    key: Option<super::crypto::WriterKey>,
    name: BackupName,
    objects: Vec<ObjectEntry>,
    packs: Vec<ObjectEntry>,
    /// Beats until the writer is dropped (after the commit, or when the backup fails).
    _heartbeat: super::alive::Heartbeat,
}

impl BackupWriter {
    /// The backup's name.
    pub fn name(&self) -> &BackupName {
        &self.name
    }

    /// Stores `backups/<name>/<relative>`, recording its size and digest for the manifest.
    pub async fn put(&mut self, relative: &str, data: Bytes) -> Result<ObjectEntry> {
        let key = format!("{}{relative}", Layout::backup_dir(&self.name));
        let data = match &self.key {
            Some(k) => Bytes::from(super::crypto::encrypt_bytes(k, &data).map_err(|source| {
                RepoError::Decrypt {
                    backup: self.name.to_string(),
                    key: key.clone(),
                    source,
                }
            })?),
            None => data,
        };
        let entry = ObjectEntry {
            key: key.clone(),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(&data)),
        };
        self.create(&key, self.store.put_if_absent(&key, data).await?)?;
        self.objects.push(entry.clone());
        Ok(entry)
    }

    /// Stores a local file as `backups/<name>/<relative>` (staged blocks for large files).
    pub async fn put_file(
        &mut self,
        relative: &str,
        path: &Path,
        opts: &TransferOptions,
    ) -> Result<ObjectEntry> {
        let (size, sha256) = hash_file(path).await?;
        self.put_file_digested(relative, path, size, sha256, opts)
            .await
    }

    /// [`BackupWriter::put_file`] for a file whose size and sha256 the caller computed while
    /// writing it, saving a second read.
    pub async fn put_file_digested(
        &mut self,
        relative: &str,
        path: &Path,
        size: u64,
        sha256: String,
        opts: &TransferOptions,
    ) -> Result<ObjectEntry> {
        let key = format!("{}{relative}", Layout::backup_dir(&self.name));
        // Encrypted to a sibling temporary file, streaming; the manifest records the stored
        // (encrypted) bytes, which is what a reader without the identity can check.
        let mut sealed = None;
        let (path, size, sha256) = match &self.key {
            None => (path.to_owned(), size, sha256),
            Some(k) => {
                let dir = tempfile::tempdir().map_err(|source| RepoError::File {
                    path: "a temporary directory".into(),
                    source,
                })?;
                let dst = dir.path().join("sealed.age");
                let (k, src, d) = (k.clone(), path.to_owned(), dst.clone());
                let (n, digest) =
                    tokio::task::spawn_blocking(move || super::crypto::encrypt_file(&k, &src, &d))
                        .await
                        .map_err(|e| super::crypto::CryptoError::Encrypt(e.to_string()))
                        .and_then(|r| r)
                        .map_err(|source| RepoError::Decrypt {
                            backup: self.name.to_string(),
                            key: key.clone(),
                            source,
                        })?;
                sealed = Some(dir);
                (dst, n, digest)
            }
        };
        let outcome = self.store.put_file_if_absent(&key, &path, opts).await?;
        drop(sealed);
        self.create(&key, outcome)?;
        let entry = ObjectEntry { key, size, sha256 };
        self.objects.push(entry.clone());
        Ok(entry)
    }

    /// Records `backups/<name>/<relative>`, written by another process (a mover Job), after
    /// downloading it into a temporary file and checking the sha256 that process reported.
    /// Returns the file (a volume index of a large volume is gigabytes: never held in memory).
    pub async fn adopt(
        &mut self,
        relative: &str,
        sha256: &str,
    ) -> Result<(ObjectEntry, crate::storage::LocalCopy)> {
        let key = format!("{}{relative}", Layout::backup_dir(&self.name));
        let copy = crate::storage::download_to_temp(&*self.store, &key).await?;
        if copy.sha256 != sha256 {
            return Err(RepoError::DigestMismatch {
                key,
                expected: sha256.to_owned(),
                actual: copy.sha256,
            });
        }
        let entry = ObjectEntry {
            key,
            size: copy.size,
            sha256: copy.sha256.clone(),
        };
        self.objects.push(entry.clone());
        Ok((entry, copy))
    }

    /// Stores a volume's index in the backup being written and references every pack it uses,
    /// so the manifest lists them. Call once per volume, before the commit.
    pub async fn put_volume_index(
        &mut self,
        namespace: &str,
        pvc: &str,
        index: &VolumeIndex,
    ) -> Result<ObjectEntry> {
        let relative = match &self.key {
            Some(k) => Layout::volume_index_sealed_in_backup(&Layout::claim_tag(
                k.chunk_key(),
                namespace,
                pvc,
            )),
            None => Layout::volume_index_in_backup(namespace, pvc),
        };
        let entry = self.put(&relative, Bytes::from(index.to_json())).await?;
        for pack in index.pack_entries() {
            self.reference_pack(pack);
        }
        Ok(entry)
    }

    /// Takes over the index of volume `namespace/pvc` that its mover wrote into this backup's
    /// folder: checks it holds what the mover reported (`sha256`), lists it in the manifest, and
    /// references every pack of its pack table (at the head of the index: nothing else is
    /// read).
    pub async fn adopt_volume_index(
        &mut self,
        namespace: &str,
        pvc: &str,
        sha256: &str,
    ) -> Result<ObjectEntry> {
        let Some(k) = self.key.clone() else {
            let relative = Layout::volume_index_in_backup(namespace, pvc);
            let (entry, file) = self.adopt(&relative, sha256).await?;
            return self.reference_packs_of(entry, &file.path);
        };
        // Encrypted: the index is checked against the reported digest, and its pack table is
        // read from the writer's view the mover stored beside it.
        let tag = Layout::claim_tag(k.chunk_key(), namespace, pvc);
        let relative = Layout::volume_index_sealed_in_backup(&tag);
        let (entry, _) = self.adopt(&relative, sha256).await?;
        let view_key = Layout::writer_view(&entry.key);
        let view = crate::storage::download_to_temp(&*self.store, &view_key).await?;
        self.objects.push(ObjectEntry {
            key: view_key.clone(),
            size: view.size,
            sha256: view.sha256.clone(),
        });
        let passphrase = super::crypto::writer_view_passphrase(k.chunk_key());
        let path = view.path.clone();
        tokio::task::spawn_blocking(move || super::crypto::open_writer_view(&passphrase, &path))
            .await
            .map_err(|e| super::crypto::CryptoError::Damaged(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| RepoError::Decrypt {
                backup: self.name.to_string(),
                key: view_key,
                source,
            })?;
        self.reference_packs_of(entry, &view.path)
    }

    fn reference_packs_of(&mut self, entry: ObjectEntry, index: &Path) -> Result<ObjectEntry> {
        let header = std::fs::File::open(index)
            .map_err(IndexError::Io)
            .and_then(|f| read_header(std::io::BufReader::new(f)))
            .map_err(|source| RepoError::Index {
                key: entry.key.clone(),
                source,
            })?;
        for pack in &header.packs {
            self.reference_pack(pack.object_entry());
        }
        Ok(entry)
    }

    /// Records a pack the backup references (written by the volume mover, possibly by an
    /// earlier backup).
    pub fn reference_pack(&mut self, entry: ObjectEntry) {
        self.packs.push(entry);
    }

    fn create(&self, key: &str, outcome: PutOutcome) -> Result<()> {
        match outcome {
            PutOutcome::Created => Ok(()),
            PutOutcome::AlreadyExists => Err(RepoError::LeftoverObject {
                key: key.into(),
                location: self.store.location().into(),
            }),
        }
    }

    /// Writes the manifest, the commit point. `draft`'s `name`, `objects` and `packs` are
    /// replaced by what this writer stored; everything else is kept as given.
    pub async fn commit(mut self, mut draft: Manifest) -> Result<Manifest> {
        draft.name = self.name.clone();
        self.objects.sort_by(|a, b| a.key.cmp(&b.key));
        self.packs.sort_by(|a, b| a.key.cmp(&b.key));
        self.packs.dedup_by(|a, b| a.key == b.key);
        // Every object the manifest will name must be there right before it is written: a pack
        // deduplicated against, or this backup's own archive or index when the backup outlived
        // the grace period, may have been collected by a prune since. Fail the backup rather
        // than commit one that names a lost object.
        let store = &self.store;
        let named = self.packs.iter().map(|p| (&p.key, true));
        let named = named.chain(self.objects.iter().map(|o| (&o.key, false)));
        let missing = futures::stream::iter(named)
            .map(|(key, pack)| async move { (key, pack, store.head(key).await) })
            .buffer_unordered(16)
            .filter_map(|(key, pack, head)| async move {
                match head {
                    Ok(Some(_)) => None,
                    Ok(None) => Some(Ok((key.clone(), pack))),
                    Err(e) => Some(Err(e)),
                }
            })
            .collect::<Vec<_>>()
            .await;
        if let Some(first) = missing.into_iter().next() {
            let backup = self.name.to_string();
            return Err(match first {
                Ok((key, true)) => RepoError::MissingPack { key, backup },
                Ok((key, false)) => RepoError::LostBeforeCommit { key, backup },
                Err(e) => e.into(),
            });
        }
        draft.objects = self.objects;
        draft.packs = self.packs;
        draft.completed_at = jiff::Timestamp::now();
        draft.manifest_sha256 = None;
        // Hashed as a reader will see it: parsed back from text. `to_value` would keep each
        // float exactly, while parsing its text may land one ulp away (serde_json's fast float
        // parsing), and the digests would differ.
        draft.sealed = None;
        let unsigned = serde_json::to_vec(&draft).expect("Manifest serializes");
        let mut doc: serde_json::Value =
            serde_json::from_slice(&unsigned).expect("a serialized Manifest parses");
        if let Some(k) = &self.key {
            super::manifest::seal(&mut doc, k).map_err(|source| RepoError::Decrypt {
                backup: self.name.to_string(),
                key: Layout::manifest(&self.name),
                source,
            })?;
            draft.sealed = doc
                .get(super::manifest::SEALED_FIELD)
                .and_then(|v| v.as_str())
                .map(str::to_owned);
        }
        let digest = super::manifest::content_sha256(&doc);
        draft.manifest_sha256 = Some(digest.clone());
        if let Some(o) = doc.as_object_mut() {
            o.insert(
                super::manifest::DIGEST_FIELD.into(),
                serde_json::Value::String(digest),
            );
        }
        let body = if self.key.is_some() {
            Bytes::from(serde_json::to_vec_pretty(&doc).expect("Manifest serializes"))
        } else {
            Bytes::from(serde_json::to_vec_pretty(&draft).expect("Manifest serializes"))
        };
        let key = Layout::manifest(&self.name);
        let put_error = match self.store.put_if_absent(&key, body.clone()).await {
            Ok(PutOutcome::Created) => return Ok(draft),
            Ok(PutOutcome::AlreadyExists) => None,
            Err(e) => Some(e),
        };
        // A refused create (409) or an error does not say who wrote: when the answer to our PUT
        // is lost, the service may have stored it and the retry then finds "our" manifest
        // there. Only its content settles it: the body carries `completedAt` to the
        // nanosecond, so no other writer's manifest is byte-for-byte ours.
        match read_back(&self.store, &key, &body).await {
            Ok(ReadBack::Ours) => {
                tracing::info!(
                    backup = %self.name,
                    "the manifest write's answer was lost; reading it back shows it committed"
                );
                Ok(draft)
            }
            Ok(ReadBack::Theirs) => Err(RepoError::CommitRace {
                name: self.name.to_string(),
                location: self.store.location().into(),
            }),
            Ok(ReadBack::Absent) => Err(match put_error {
                Some(e) => e.into(),
                // 409 and then nothing there: a concurrent delete of a just-committed backup;
                // whatever it was, it was not ours.
                None => RepoError::CommitRace {
                    name: self.name.to_string(),
                    location: self.store.location().into(),
                },
            }),
            Err(read_error) => {
                tracing::warn!(
                    backup = %self.name,
                    error = %read_error,
                    "could not read the manifest back to settle the commit"
                );
                Err(match put_error {
                    Some(e) => e.into(),
                    None => RepoError::CommitRace {
                        name: self.name.to_string(),
                        location: self.store.location().into(),
                    },
                })
            }
        }
    }
}

/// Whose manifest `key` holds, comparing its bytes with the `body` this writer sent.
async fn read_back(store: &Writer, key: &str, body: &[u8]) -> crate::storage::Result<ReadBack> {
    match store.get(key).await {
        Ok(stored) if Sha256::digest(&stored) == Sha256::digest(body) => Ok(ReadBack::Ours),
        Ok(_) => Ok(ReadBack::Theirs),
        Err(crate::storage::StorageError::NotFound { .. }) => Ok(ReadBack::Absent),
        Err(e) => Err(e),
    }
}

/// What reading a manifest back after an unsettled commit found.
enum ReadBack {
    /// The bytes this writer sent: the commit happened.
    Ours,
    /// Another writer's manifest of the same name.
    Theirs,
    /// No manifest.
    Absent,
}

async fn hash_file(path: &Path) -> Result<(u64, String)> {
    let path = path.to_owned();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let n = std::io::copy(&mut f, &mut h)?;
        Ok((n, hex::encode(h.finalize())))
    })
    .await
    .expect("hashing task does not panic")
    .map_err(|source| RepoError::File {
        path: shown,
        source,
    })
}
