//! `lifeboat backup`

use anyhow::Context as _;
use serde_json::json;

use super::Progressed;
use crate::backup::{self, BackupRequest, Filters};
use crate::cli::args::{BackupArgs, OutputFormat};
use crate::cli::output;
use crate::cli::progress::BackupProgress;
use crate::cli::{Context, Exit, UsageError};
use crate::cluster;
use crate::repo::{BackupName, RepoWriter};
use crate::storage;

/// Flags win over the config's `backup:` filters, field by field.
fn filters(ctx: &Context, a: &BackupArgs) -> Filters {
    let cfg = &ctx.config.backup;
    let pick = |flag: &Vec<String>, conf: &Vec<String>| {
        if flag.is_empty() {
            conf.clone()
        } else {
            flag.clone()
        }
    };
    Filters {
        include_namespaces: pick(&a.scope.include_namespaces, &cfg.include_namespaces),
        exclude_namespaces: pick(&a.scope.exclude_namespaces, &cfg.exclude_namespaces),
        include_resources: pick(&a.scope.include_resources, &cfg.include_resources),
        exclude_resources: pick(&a.scope.exclude_resources, &cfg.exclude_resources),
        selector: a.selector.clone().or_else(|| cfg.selector.clone()),
        include_cluster_resources: a
            .include_cluster_resources
            .unwrap_or(cfg.include_cluster_resources),
    }
}

/// Takes a backup and prints its summary; under `-o json` a failure prints one document too.
pub async fn run(ctx: &Context, args: BackupArgs) -> anyhow::Result<Exit> {
    let mut progressed = Progressed::default();
    let result = take(ctx, args, &mut progressed).await;
    if let (Err(e), OutputFormat::Json) = (&result, ctx.output) {
        output::json(&progressed.failure_json(e))?;
    }
    result
}

async fn take(
    ctx: &Context,
    args: BackupArgs,
    progressed: &mut Progressed,
) -> anyhow::Result<Exit> {
    let started = jiff::Timestamp::now();
    // From here on SIGINT and SIGTERM stop the backup cleanly (see `interrupt`).
    let mut signals = crate::cli::interrupt::Signals::install();
    let cluster_ref = ctx.config.cluster(args.cluster.as_deref())?;
    let cluster_name = cluster_ref
        .map(|(n, _)| n.to_owned())
        .unwrap_or_else(|| "cluster".into());
    progressed.cluster = Some(cluster_name.clone());
    let name = match &args.name {
        Some(n) => BackupName::new(n).map_err(|e| UsageError(format!("--name: {e}")))?,
        None => {
            backup::default_name(&cluster_name, started).map_err(|e| UsageError(e.to_string()))?
        }
    };
    progressed.name = Some(name.to_string());
    let (location, loc) = ctx.config.location(args.to.as_deref())?;
    progressed.location = Some(location.to_owned());
    let store = storage::open_writer(location, loc)
        .with_context(|| format!("opening location {location:?} for writing"))?;
    progressed.step("location opened");
    let keys = super::location_keys(location, loc)?;
    let repo = RepoWriter::open_or_init_with(store, keys)
        .await
        .with_context(|| format!("opening the repository in {location:?}"))?;
    progressed.step("repository opened");
    let connected = cluster::connect(&cluster_name, cluster_ref.map(|(_, c)| c))
        .await
        .with_context(|| format!("connecting to cluster {cluster_name:?}"))?;
    progressed.step("cluster client configured");

    let request = request(ctx, &args, name.clone(), &cluster_name);
    let progress = BackupProgress::new(ctx.output == OutputFormat::Json);
    let result = tokio::select! {
        r = backup::run(&connected, &repo, request, &progress) => r,
        stop = signals.received() => {
            progress.finish();
            progressed.step("backup interrupted");
            return super::stopped(ctx, stop, &connected.client, repo.reader(), &name, progressed).await;
        }
    };
    progress.finish();
    let status_namespace = crate::cluster::status::status_namespace(
        args.status_namespace.as_deref(),
        cluster_ref.is_some_and(|(_, c)| c.in_cluster),
    );
    let asked_for_status = status_namespace.is_some();
    let status_recorded =
        super::record_backup_status(&connected, status_namespace, location, &name, &result).await;
    progressed.step("backup attempted");
    progressed.status_recorded = asked_for_status.then_some(status_recorded);
    let manifest = result.with_context(|| {
        format!("backup {name} of cluster {cluster_name:?} failed; nothing was committed")
    })?;

    let objects = manifest.resource_objects().unwrap_or_default();
    let resources = manifest.details.resources.as_ref();
    let resource_types = resources.map_or(0, |r| r.resources.len());
    let status = if manifest.warnings.is_empty() {
        "Completed"
    } else {
        "PartiallyFailed"
    };
    let seconds = (manifest.completed_at.as_millisecond() - manifest.started_at.as_millisecond())
        as f64
        / 1000.0;
    match ctx.output {
        OutputFormat::Json => output::json(&json!({
            "name": manifest.name,
            "location": location,
            "cluster": cluster_name,
            "status": status,
            "objects": objects,
            "resourceTypes": resource_types,
            "size": manifest.total_size(),
            "startedAt": manifest.started_at,
            "completedAt": manifest.completed_at,
            "durationSeconds": seconds,
            "labels": manifest.labels,
            "expiresAt": manifest.expires_at,
            "volumes": manifest.volumes(),
            "warnings": manifest.warnings,
            "skipped": resources.map(|r| &r.skipped),
        }))?,
        OutputFormat::Text => {
            println!(
                "Backup {} of cluster {cluster_name:?} committed to location {location:?} in {seconds:.1}s",
                manifest.name
            );
            println!(
                "  {objects} objects of {resource_types} resource types, {} stored",
                output::human_bytes(manifest.total_size())
            );
            let volumes = manifest.volumes();
            if !volumes.is_empty() {
                let done: Vec<_> = volumes
                    .iter()
                    .filter(|v| v.status == crate::repo::VolumeStatus::Completed)
                    .collect();
                println!(
                    "  {} of {} volumes: {} of data, {} new ({} stored)",
                    done.len(),
                    volumes.len(),
                    output::human_bytes(done.iter().map(|v| v.figures.bytes).sum()),
                    output::human_bytes(done.iter().map(|v| v.figures.new_bytes).sum()),
                    output::human_bytes(done.iter().map(|v| v.figures.stored_bytes).sum()),
                );
            }
            for w in &manifest.warnings {
                println!("  warning: {w}");
            }
            println!(
                "  `lifeboat describe {}` shows what it holds.",
                manifest.name
            );
        }
    }
    Ok(if manifest.warnings.is_empty() && status_recorded {
        Exit::Ok
    } else if args.fail_on_warnings {
        Exit::Failed
    } else {
        Exit::Partial
    })
}

/// The request `lifeboat backup` sends for `args`; `lifeboat schedule run` builds its request
/// here too, so a scheduled backup takes exactly what the equivalent command line would.
pub(super) fn request(
    ctx: &Context,
    args: &BackupArgs,
    name: BackupName,
    cluster_name: &str,
) -> BackupRequest {
    BackupRequest {
        name,
        cluster_name: cluster_name.to_owned(),
        filters: filters(ctx, args),
        labels: args.labels.iter().cloned().collect(),
        ttl: args.ttl,
        volumes: (!args.no_volumes)
            .then(|| ctx.config.location(args.to.as_deref()).ok())
            .flatten()
            .map(|(name, location)| backup::volumes::VolumeJobs {
                location_name: name.to_owned(),
                location: absolute(location),
                settings: ctx.config.volumes.clone(),
            }),
        spool_dir: std::env::temp_dir(),
        started_at: None,
    }
}

/// The location as a mover pod must see it: a local directory by absolute path (pods do not
/// share the orchestrator's working directory; only the simulated cluster runs them locally).
pub(super) fn absolute(location: &crate::config::Location) -> crate::config::Location {
    let mut location = location.clone();
    if let Some(local) = &mut location.local
        && let Ok(abs) = std::path::absolute(&local.path)
    {
        local.path = abs;
    }
    // Key files too: the mover pod reads the key the location names.
    if let Some(enc) = &mut location.encryption {
        for src in [&mut enc.writer_key, &mut enc.identity]
            .into_iter()
            .flatten()
        {
            if let crate::config::KeySource::File { file } = src
                && let Ok(abs) = std::path::absolute(&*file)
            {
                *file = abs;
            }
        }
    }
    location
}
