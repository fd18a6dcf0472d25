//! `lifeboat mover backup|restore`: one volume between a mounted directory and the repository.
//! Normally run by the mover Jobs that `backup` and `restore` create; the last line on stdout is
//! a [`JobReport`] they read back from the pod's log.

use std::sync::Arc;

use anyhow::Context as _;

use crate::cli::args::{MoverBackupArgs, MoverCommand, MoverLocationArgs, MoverRestoreArgs};
use crate::cli::progress::MoverProgress;
use crate::cli::{Context, Exit, UsageError};
use crate::config::Location;
use crate::mover::{self, BackupOptions, JobReport, KnownChunks, RestoreOptions};
use crate::repo::{BackupName, Layout, ObjectEntry, RepoReader, RepoWriter};
use crate::storage::{self, PutOutcome};

/// The environment variable carrying one location as JSON (set on mover Jobs).
pub const LOCATION_ENV: &str = "LIFEBOAT_LOCATION";

/// Runs a mover subcommand.
pub async fn run(ctx: &Context, cmd: MoverCommand) -> anyhow::Result<Exit> {
    mover::limit_malloc_arenas();
    match cmd {
        MoverCommand::Backup(a) => backup(ctx, a).await,
        MoverCommand::Restore(a) => restore(ctx, a).await,
    }
}

/// `--location NAME`, else `$LIFEBOAT_LOCATION`, else the config's default location.
fn location(ctx: &Context, a: &MoverLocationArgs) -> anyhow::Result<(String, Location)> {
    if a.location.is_none()
        && let Ok(json) = std::env::var(LOCATION_ENV)
    {
        let loc: Location = serde_json::from_str(&json)
            .map_err(|e| UsageError(format!("${LOCATION_ENV} is not a location: {e}")))?;
        if loc.kind().is_none() {
            return Err(UsageError(format!(
                "${LOCATION_ENV} must set exactly one of `local` or `azure`"
            ))
            .into());
        }
        return Ok(("$LIFEBOAT_LOCATION".into(), loc));
    }
    let (name, loc) = ctx.config.location(a.location.as_deref())?;
    Ok((name.to_owned(), loc.clone()))
}

fn volume_name(namespace: &str, pvc: &str) -> String {
    format!("{namespace}/{pvc}")
}

async fn backup(ctx: &Context, a: MoverBackupArgs) -> anyhow::Result<Exit> {
    let name = BackupName::new(&a.backup).map_err(|e| UsageError(format!("--backup: {e}")))?;
    let parent = a
        .parent
        .as_deref()
        .map(BackupName::new)
        .transpose()
        .map_err(|e| UsageError(format!("--parent: {e}")))?;
    let volume = volume_name(&a.namespace, &a.pvc);
    let (source, _) = mover::mounts::host_path(&a.source)?;
    let (loc_name, loc) = location(ctx, &a.location)?;
    let store = storage::open_writer(&loc_name, &loc)
        .with_context(|| format!("opening location {loc_name} for writing"))?;
    let writer = RepoWriter::open_or_init(store.clone())
        .await
        .with_context(|| format!("opening the repository in {loc_name}"))?;
    let repo = writer.reader();
    let parent_index = match &parent {
        Some(p) => {
            let key = Layout::volume_index(p, &a.namespace, &a.pvc);
            mover::ParentIndex::download(repo.store(), &key)
                .await
                .with_context(|| format!("reading the index of {volume} in parent backup {p}"))?
        }
        None => None,
    };
    // Files touching a retired (mostly garbage) pack are read and stored again, not referenced.
    let retired = mover::retired_packs(repo.store())
        .await
        .context("listing retired packs")?;
    let parent_index = parent_index.map(|p| p.without_packs(&retired));
    if parent.is_some() && parent_index.is_none() {
        tracing::warn!(%volume, "the parent backup has no index of this volume: a full backup follows");
    }
    let counters = Arc::new(mover::Progress::default());
    let mut opts = BackupOptions::for_repo(repo.config());
    opts.progress = Some(counters.clone());
    let progress = MoverProgress::start(format!("backup {volume}"), counters);
    let result = mover::backup_volume(
        source.clone(),
        store.clone(),
        opts,
        parent_index,
        KnownChunks::new(),
    )
    .await;
    progress.finish().await;
    let outcome =
        result.with_context(|| format!("backing up {volume} from {}", a.source.display()))?;

    // The index streams from its local file: a 1 TB volume's index is gigabytes.
    let key = Layout::volume_index(&name, &a.namespace, &a.pvc);
    let entry = ObjectEntry {
        key: key.clone(),
        size: outcome.index.size,
        sha256: outcome.index.sha256.clone(),
    };
    match store
        .put_file_if_absent(
            &key,
            &outcome.index.path,
            &storage::TransferOptions::default(),
        )
        .await
        .with_context(|| format!("writing the volume index {key}"))?
    {
        PutOutcome::Created => {}
        PutOutcome::AlreadyExists => anyhow::bail!(
            "{key} already exists: backup {name} already holds volume {volume} (objects are write-once); \
             use a new backup name"
        ),
    }
    let report = JobReport::of_backup(name.as_str(), &volume, entry, &outcome.stats);
    for s in &report.skipped {
        tracing::warn!(%volume, "{s}");
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.skipped.is_empty() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

async fn restore(ctx: &Context, a: MoverRestoreArgs) -> anyhow::Result<Exit> {
    let name = BackupName::new(&a.backup).map_err(|e| UsageError(format!("--backup: {e}")))?;
    let volume = volume_name(&a.namespace, &a.pvc);
    let (target, read_only) = mover::mounts::host_path(&a.target)?;
    if read_only {
        return Err(UsageError(format!(
            "{} is mounted read-only: a restore must write it",
            a.target.display()
        ))
        .into());
    }
    let (loc_name, loc) = location(ctx, &a.location)?;
    let store = storage::open_reader(&loc_name, &loc)
        .with_context(|| format!("opening location {loc_name}"))?;
    let repo = RepoReader::open(store)
        .await
        .with_context(|| format!("reading the repository in {loc_name}"))?;
    let manifest = repo
        .manifest(&name)
        .await
        .with_context(|| format!("restoring {volume}"))?;
    let key = Layout::volume_index(&name, &a.namespace, &a.pvc);
    let entry = manifest
        .objects
        .iter()
        .find(|o| o.key == key)
        .cloned()
        .with_context(|| {
            format!("backup {name} holds no data of volume {volume} ({key} is not in its manifest)")
        })?;
    // Downloaded to a local file and streamed from there: a 1 TB volume's index is gigabytes.
    let index = mover::download_index(repo.store(), &key)
        .await
        .with_context(|| format!("reading the volume index {key}"))?
        .with_context(|| {
            format!("the volume index {key} is listed in the manifest but missing from {loc_name}")
        })?;
    if index.sha256 != entry.sha256 {
        anyhow::bail!(
            "the volume index {key} is corrupted: sha256 {}, the manifest says {}",
            index.sha256,
            entry.sha256
        );
    }
    let counters = Arc::new(mover::Progress::default());
    let opts = RestoreOptions {
        concurrency: a.concurrency.max(1),
        progress: Some(counters.clone()),
        ..RestoreOptions::default()
    };
    let progress = MoverProgress::start(format!("restore {volume}"), counters);
    let result =
        mover::restore_index_file(repo.store().clone(), index.path.clone(), target, opts).await;
    progress.finish().await;
    let stats = result.with_context(|| {
        format!(
            "restoring {volume} of backup {name} into {}",
            a.target.display()
        )
    })?;
    let report = JobReport::of_restore(name.as_str(), &volume, entry, &stats);
    println!("{}", serde_json::to_string(&report)?);
    Ok(Exit::Ok)
}
