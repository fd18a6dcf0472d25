//! One module per command: each turns parsed args into library calls and renders the result.

pub mod backup;
pub mod demo;
pub mod describe;
pub mod doctor;
pub mod key;
pub mod list;
pub mod mover;
pub mod prune;
pub mod restore;
pub mod schedule;
pub mod sim;
pub mod verify;

use anyhow::Context as _;

use super::Context;
use crate::repo::RepoReader;
use crate::storage;

/// Opens a configured location read-only as a repository.
pub async fn open_repo_reader(
    ctx: &Context,
    location: Option<&str>,
) -> anyhow::Result<(String, RepoReader)> {
    let (name, loc) = ctx.config.location(location)?;
    let store =
        storage::open_reader(name, loc).with_context(|| format!("opening location {name:?}"))?;
    let keys = location_keys(name, loc)?;
    let repo = RepoReader::open_with(store, keys)
        .await
        .with_context(|| format!("reading location {name:?}"))?;
    Ok((name.to_owned(), repo))
}

/// The keys the location's `encryption:` names (none if it names none): a key that cannot be
/// read or parsed is a configuration error (exit 2).
pub fn location_keys(
    name: &str,
    loc: &crate::config::Location,
) -> anyhow::Result<crate::repo::RepoKeys> {
    crate::mover::location_keys(loc)
        .map_err(|e| super::UsageError(format!("location {name:?}: {e}")).into())
}

/// Writes the outcome of backup `name` to ConfigMap `lifeboat-status` in `namespace`, with an
/// Event (`cluster::status`). `incomplete` marks a committed backup whose follow-up (retention)
/// was not done.
async fn record_status(
    connected: &crate::cluster::Connected,
    namespace: &str,
    schedule: Option<&str>,
    location: &str,
    name: &crate::repo::BackupName,
    result: Result<&crate::repo::Manifest, &crate::backup::BackupError>,
    incomplete: bool,
) -> anyhow::Result<()> {
    use crate::cluster::status::{self, BackupStatus, Committed};
    let committed = result.map(|m| Committed {
        time: m.completed_at,
        size: m.total_size(),
        objects: m.resource_objects().unwrap_or_default(),
        warnings: m.warnings.len(),
    });
    let status = BackupStatus::of(
        name.as_str(),
        schedule,
        location,
        committed
            .as_ref()
            .map_err(|e| *e as &(dyn std::error::Error + 'static)),
        incomplete,
    );
    status::record(&connected.client, namespace, &status)
        .await
        .map(|_| ())
        .map_err(anyhow::Error::new)
}

/// Records the outcome of `lifeboat backup` when asked to (see
/// [`crate::cluster::status::status_namespace`]). Returns false if it was asked and failed
/// (warned on stderr): the command then exits 3.
async fn record_backup_status(
    connected: &crate::cluster::Connected,
    namespace: Option<String>,
    location: &str,
    name: &crate::repo::BackupName,
    result: &Result<crate::repo::Manifest, crate::backup::BackupError>,
) -> bool {
    let Some(ns) = namespace else {
        return true;
    };
    match record_status(connected, &ns, None, location, name, result.as_ref(), false).await {
        Ok(()) => true,
        Err(e) => {
            eprintln!("warning: the backup's status was not recorded: {e:#}");
            false
        }
    }
}

/// How far a backup command (`backup`, `schedule run`) got, for the one JSON document it prints
/// under `-o json` also when it fails: CI pipelines upload that file, and a failed run is
/// exactly when it must not be empty.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Progressed {
    /// The backup's name, once chosen.
    name: Option<String>,
    /// The location's configured name, once resolved.
    location: Option<String>,
    /// The cluster's configured name, once resolved.
    cluster: Option<String>,
    /// The steps completed, in order (`location opened`, `repository opened`, ...).
    done: Vec<&'static str>,
    /// Whether the failed backup's outcome was written to the status ConfigMap; `None` when it
    /// was not asked for or the backup never ran.
    status_recorded: Option<bool>,
}

impl Progressed {
    fn step(&mut self, what: &'static str) {
        self.done.push(what);
    }

    /// The document of a run stopped by a signal: `status: Interrupted`, the signal, the exit
    /// code, whether the backup had committed, and the cleanup.
    fn interrupted_json(
        &self,
        stop: crate::cli::interrupt::Stop,
        committed: bool,
        cleanup: &serde_json::Value,
    ) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "status": "Interrupted",
            "signal": stop.name(),
            "exitCode": stop.exit() as u8,
            "committed": committed,
            "cleanup": cleanup,
        });
        if let (Some(obj), Ok(serde_json::Value::Object(more))) =
            (doc.as_object_mut(), serde_json::to_value(self))
        {
            obj.extend(more);
        }
        doc
    }

    /// The failure document: `status`, `error` (the whole chain, as stderr shows it),
    /// `exitCode` (the one the process exits with), `committed` and what was done.
    fn failure_json(&self, err: &anyhow::Error) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "status": "Failed",
            "error": format!("{err:#}"),
            "exitCode": crate::cli::exit_code_of(err) as u8,
            "committed": false,
        });
        if let (Some(obj), Ok(serde_json::Value::Object(more))) =
            (doc.as_object_mut(), serde_json::to_value(self))
        {
            obj.extend(more);
        }
        doc
    }
}

/// After SIGINT or SIGTERM stopped backup `name`: deletes what the run created in the cluster
/// (bounded), settles whether its manifest was written, and says so on stderr (and in one JSON
/// document under `-o json`). Returns the signal's exit code.
async fn stopped(
    ctx: &Context,
    stop: crate::cli::interrupt::Stop,
    client: &kube::Client,
    repo: &crate::repo::RepoReader,
    name: &crate::repo::BackupName,
    progressed: &Progressed,
) -> anyhow::Result<crate::cli::Exit> {
    eprintln!(
        "{}: stopping backup {name} and deleting its temporary objects",
        stop.name()
    );
    let cleanup = crate::backup::cleanup::remove_run_objects(
        client,
        name.as_str(),
        crate::backup::cleanup::WITHIN,
    )
    .await;
    // The manifest is the commit point: a signal during its write may come after it landed.
    let committed = repo.manifest(name).await.is_ok();
    let cleanup_json = match &cleanup {
        Ok(c) => serde_json::to_value(c).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    match &cleanup {
        Ok(c) if c.left.is_empty() => eprintln!(
            "interrupted: {}; {} temporary object(s) deleted",
            if committed {
                format!("backup {name} was committed before the signal")
            } else {
                "nothing committed".into()
            },
            c.deleted.len()
        ),
        Ok(c) => eprintln!(
            "interrupted: {}; {} temporary object(s) deleted, not yet gone (a later run sweeps them once their lease lapses): {}",
            if committed {
                format!("backup {name} was committed before the signal")
            } else {
                "nothing committed".into()
            },
            c.deleted.len(),
            c.left.join(", ")
        ),
        Err(e) => eprintln!(
            "interrupted: {}; its temporary objects could not be listed ({e}): a later run sweeps them once their lease lapses",
            if committed {
                format!("backup {name} was committed before the signal")
            } else {
                "nothing committed".into()
            },
        ),
    }
    if ctx.output == crate::cli::OutputFormat::Json {
        crate::cli::output::json(&progressed.interrupted_json(stop, committed, &cleanup_json))?;
    }
    Ok(stop.exit())
}
