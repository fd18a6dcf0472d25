//! `lifeboat mover backup|restore`: one volume between a mounted directory and the repository,
//! as the mover Jobs run it. The CLI parses the flags and renders progress and the report; the
//! work — opening the location, finding the parent and retired packs, moving the data, storing
//! or checking the index — is here.

use std::path::PathBuf;
use std::sync::Arc;

use super::{
    BackupOptions, JobReport, KnownChunks, MoverError, ParentIndex, Progress, RestoreOptions,
};
use crate::config::Location;
use crate::repo::crypto::{ReaderKey, WriterKey};
use crate::repo::{BackupName, Layout, ObjectEntry, RepoError, RepoKeys, RepoReader, RepoWriter};
use crate::storage::{self, PutOutcome, StorageError};

/// The environment variable carrying one location as JSON (set on mover Jobs).
pub const LOCATION_ENV: &str = "LIFEBOAT_LOCATION";

/// Errors of a mover job, each naming the volume and the step.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The location could not be opened.
    #[error("opening location {location}")]
    Open {
        /// The location's name.
        location: String,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The repository on the location could not be opened or read.
    #[error("{what} in {location}")]
    Repo {
        /// What was being done.
        what: String,
        /// The location's name.
        location: String,
        /// Why.
        #[source]
        source: RepoError,
    },
    /// The mount table does not name the directory.
    #[error(transparent)]
    Mount(#[from] super::mounts::MountError),
    /// A restore target mounted read-only.
    #[error("{0} is mounted read-only: a restore must write it")]
    ReadOnlyTarget(String),
    /// Moving the data failed.
    #[error("{what}")]
    Move {
        /// What was being moved, naming the volume, the backup and the directory.
        what: String,
        /// Why.
        #[source]
        source: MoverError,
    },
    /// The target could not be emptied before a second fill.
    #[error("emptying {target} before filling it again")]
    Empty {
        /// The mounted target.
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the volume index failed.
    #[error("writing the volume index {key}")]
    WriteIndex {
        /// The index's key.
        key: String,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The location's keys could not be read.
    #[error("location {location}: {detail}")]
    Keys {
        /// The location's name.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// The index already exists: objects are write-once.
    #[error(
        "{key} already exists: backup {backup} already holds volume {volume} (objects are write-once); \
         use a new backup name"
    )]
    IndexExists {
        /// The index's key.
        key: String,
        /// The backup.
        backup: String,
        /// `namespace/claim`.
        volume: String,
    },
}

/// The keys a location's `encryption:` names, read from their files or environment variables.
/// An error says which key and where it looked (never the key).
pub fn location_keys(location: &Location) -> Result<RepoKeys, String> {
    let Some(enc) = &location.encryption else {
        return Ok(RepoKeys::default());
    };
    let writer = match &enc.writer_key {
        None => None,
        Some(src) => {
            let what = format!("the writer key from {}", src.describe());
            let text = src.read().map_err(|e| format!("{what}: {e}"))?;
            Some(WriterKey::parse(&text, &what).map_err(|e| e.to_string())?)
        }
    };
    let reader = match &enc.identity {
        None => None,
        Some(src) => {
            let what = format!("the identity from {}", src.describe());
            let text = src.read().map_err(|e| format!("{what}: {e}"))?;
            Some(ReaderKey::parse(&text, &what).map_err(|e| e.to_string())?)
        }
    };
    Ok(RepoKeys { writer, reader })
}

/// One volume to back up.
#[derive(Debug, Clone)]
pub struct BackupJob {
    /// The backup being written.
    pub backup: BackupName,
    /// The backup whose index of this volume serves as parent (incremental), if any.
    pub parent: Option<BackupName>,
    /// Namespace of the claim.
    pub namespace: String,
    /// The claim.
    pub pvc: String,
    /// The mounted source volume (translated through the runtime's mount table, if any).
    pub source: PathBuf,
}

/// One volume to restore.
#[derive(Debug, Clone)]
pub struct RestoreJob {
    /// The backup to restore from.
    pub backup: BackupName,
    /// Namespace of the claim in the backup.
    pub namespace: String,
    /// The claim in the backup.
    pub pvc: String,
    /// The mounted target volume.
    pub target: PathBuf,
    /// Ranged reads in flight.
    pub concurrency: usize,
    /// Empty the target before writing: an earlier run's fill may have left part of the data
    /// (files are created exclusively, so a second fill needs an empty volume).
    pub empty_first: bool,
}

impl BackupJob {
    fn volume(&self) -> String {
        format!("{}/{}", self.namespace, self.pvc)
    }
}

impl RestoreJob {
    fn volume(&self) -> String {
        format!("{}/{}", self.namespace, self.pvc)
    }
}

fn repo_err(what: impl Into<String>, location: &str) -> impl FnOnce(RepoError) -> JobError {
    let (what, location) = (what.into(), location.to_owned());
    move |source| JobError::Repo {
        what,
        location,
        source,
    }
}

/// Backs up one volume into the backup `job.backup` of the location (creating the repository
/// if needed) and stores its index; the report is what the orchestrator reads from the log.
pub async fn run_backup(
    job: &BackupJob,
    location_name: &str,
    location: &Location,
    progress: Option<Arc<Progress>>,
) -> Result<JobReport, JobError> {
    super::limit_malloc_arenas();
    let volume = job.volume();
    let (source, _) = super::mounts::host_path(&job.source)?;
    let store = storage::open_writer(location_name, location).map_err(|source| JobError::Open {
        location: location_name.to_owned(),
        source,
    })?;
    let keys = location_keys(location).map_err(|detail| JobError::Keys {
        location: location_name.to_owned(),
        detail,
    })?;
    let writer = RepoWriter::open_or_init_with(store.clone(), keys)
        .await
        .map_err(repo_err("opening the repository", location_name))?;
    let repo = writer.reader();
    let parent = match &job.parent {
        Some(p) => parent_index(repo, p, job, location_name).await?,
        None => None,
    };
    // Files touching a retired (mostly garbage) pack are read and stored again, not referenced.
    let retired = repo
        .retired_packs()
        .await
        .map_err(repo_err("listing retired packs", location_name))?;
    let parent = parent.map(|p| p.without_packs(&retired));
    if job.parent.is_some() && parent.is_none() {
        tracing::warn!(%volume, "the parent backup has no index of this volume: a full backup follows");
    }
    let mut opts = BackupOptions::for_repo(repo.config());
    opts.progress = progress;
    let seal = repo
        .is_encrypted()
        .then(|| repo.keys().writer.clone())
        .flatten();
    opts.seal = seal.clone();
    let outcome = super::backup_volume(source, store.clone(), opts, parent, KnownChunks::new())
        .await
        .map_err(|source| JobError::Move {
            what: format!("backing up {volume} from {}", job.source.display()),
            source,
        })?;

    // The index streams from its local file: a 1 TB volume's index is gigabytes.
    let key = repo.volume_index_key(&job.backup, &job.namespace, &job.pvc);
    let mut entry = ObjectEntry {
        key: key.clone(),
        size: outcome.index.size,
        sha256: outcome.index.sha256.clone(),
    };
    let mut index_path = outcome.index.path.clone();
    let sealed_dir = tempfile::tempdir().map_err(|source| JobError::Move {
        what: "a temporary directory for the sealed index".into(),
        source: MoverError::Spool {
            what: "the sealed index",
            source,
        },
    })?;
    if let Some(w) = seal {
        // Sealed to the recipients for restores, and a writer's view for the next backup's
        // parent (the writer cannot open the first).
        let (sealed, view) = (
            sealed_dir.path().join("index.age"),
            sealed_dir.path().join("index.writer"),
        );
        let (src, s2, v2) = (index_path.clone(), sealed.clone(), view.clone());
        let ((size, sha256), _) = tokio::task::spawn_blocking(move || {
            let a = crate::repo::crypto::encrypt_file(&w, &src, &s2)?;
            let pass = crate::repo::crypto::writer_view_passphrase(w.chunk_key());
            let b = crate::repo::crypto::seal_writer_view(&pass, &src, &v2)?;
            Ok::<_, crate::repo::crypto::CryptoError>((a, b))
        })
        .await
        .map_err(|e| crate::repo::crypto::CryptoError::Encrypt(e.to_string()))
        .and_then(|r| r)
        .map_err(|e| JobError::Move {
            what: format!("encrypting the index of {volume}"),
            source: MoverError::Seal(e.to_string()),
        })?;
        let view_key = Layout::writer_view(&key);
        store
            .put_file_if_absent(&view_key, &view, &storage::TransferOptions::default())
            .await
            .map_err(|source| JobError::WriteIndex {
                key: view_key.clone(),
                source,
            })?;
        entry.size = size;
        entry.sha256 = sha256;
        index_path = sealed;
    }
    match store
        .put_file_if_absent(&key, &index_path, &storage::TransferOptions::default())
        .await
        .map_err(|source| JobError::WriteIndex {
            key: key.clone(),
            source,
        })? {
        PutOutcome::Created => {}
        PutOutcome::AlreadyExists => {
            return Err(JobError::IndexExists {
                key,
                backup: job.backup.to_string(),
                volume,
            });
        }
    }
    let report = JobReport::of_backup(job.backup.as_str(), &volume, entry, &outcome.stats);
    for s in &report.skipped {
        tracing::warn!(%volume, "{s}");
    }
    Ok(report)
}

/// The parent's index of this volume; `None` if the parent holds no data of it.
async fn parent_index(
    repo: &RepoReader,
    parent: &BackupName,
    job: &BackupJob,
    location_name: &str,
) -> Result<Option<ParentIndex>, JobError> {
    let what = || {
        format!(
            "reading the index of {} in parent backup {parent}",
            job.volume()
        )
    };
    let manifest = repo
        .manifest(parent)
        .await
        .map_err(repo_err(what(), location_name))?;
    if repo.is_encrypted() {
        return match repo.writer_view(&manifest, &job.namespace, &job.pvc).await {
            Ok(file) => Ok(file.map(ParentIndex::downloaded)),
            Err(RepoError::MissingObject { .. }) => Ok(None),
            Err(e) => Err(repo_err(what(), location_name)(e)),
        };
    }
    match repo.volume_index(&manifest, &job.namespace, &job.pvc).await {
        Ok(file) => Ok(Some(ParentIndex::downloaded(file))),
        Err(RepoError::NoSuchVolume { .. } | RepoError::MissingObject { .. }) => Ok(None),
        Err(e) => Err(repo_err(what(), location_name)(e)),
    }
}

/// Restores one volume of backup `job.backup` from the (read-only) location into the target.
pub async fn run_restore(
    job: &RestoreJob,
    location_name: &str,
    location: &Location,
    progress: Option<Arc<Progress>>,
) -> Result<JobReport, JobError> {
    super::limit_malloc_arenas();
    let volume = job.volume();
    let (target, read_only) = super::mounts::host_path(&job.target)?;
    if read_only {
        return Err(JobError::ReadOnlyTarget(job.target.display().to_string()));
    }
    let store = storage::open_reader(location_name, location).map_err(|source| JobError::Open {
        location: location_name.to_owned(),
        source,
    })?;
    let keys = location_keys(location).map_err(|detail| JobError::Keys {
        location: location_name.to_owned(),
        detail,
    })?;
    let repo = RepoReader::open_with(store, keys)
        .await
        .map_err(repo_err("reading the repository", location_name))?;
    let identity = repo
        .identity_for(&format!("restoring {volume}"))
        .map_err(repo_err(format!("restoring {volume}"), location_name))?
        .cloned();
    let manifest = repo
        .manifest(&job.backup)
        .await
        .map_err(repo_err(format!("restoring {volume}"), location_name))?;
    // Downloaded to a local file, checked against the manifest, and streamed from there.
    let index = repo
        .volume_index(&manifest, &job.namespace, &job.pvc)
        .await
        .map_err(repo_err(
            format!("reading the index of {volume}"),
            location_name,
        ))?;
    if job.empty_first {
        empty_dir(&target).map_err(|source| JobError::Empty {
            target: job.target.display().to_string(),
            source,
        })?;
    }
    let opts = RestoreOptions {
        concurrency: job.concurrency.max(1),
        progress,
        identity,
        ..RestoreOptions::default()
    };
    let stats =
        super::restore_index_file(repo.store().clone(), index.path().to_owned(), target, opts)
            .await
            .map_err(|source| JobError::Move {
                what: format!(
                    "restoring {volume} of backup {} into {}",
                    job.backup,
                    job.target.display()
                ),
                source,
            })?;
    Ok(JobReport::of_restore(
        job.backup.as_str(),
        &volume,
        index.entry.clone(),
        &stats,
    ))
}

/// Removes every entry of `dir` but `lost+found` (a filesystem's own), without following
/// symlinks (`remove_dir_all` does not).
fn empty_dir(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "lost+found" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
