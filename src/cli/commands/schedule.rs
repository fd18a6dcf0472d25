//! `lifeboat schedule render|run`, and recording a backup's outcome in the cluster (shared with
//! `lifeboat backup`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::Progressed;
use crate::backup;
use crate::cli::args::{
    BackupArgs, OutputFormat, ScheduleCommand, ScheduleRenderArgs, ScheduleRunArgs, ScopeArgs,
};
use crate::cli::output;
use crate::cli::progress::BackupProgress;
use crate::cli::{Context, Exit, UsageError};
use crate::cluster;
use crate::cluster::status::{self, one_line};
use crate::config::ConfigError;
use crate::filter::ClusterResources;
use crate::repo::{
    BackupName, BackupSelector, LockOptions, PruneOptions, PruneReport, RepoWriter, prune,
};
use crate::schedule::{SCHEDULE_LABEL, Schedule, render};
use crate::storage;

/// Runs a `lifeboat schedule` subcommand.
pub async fn run(ctx: &Context, cmd: ScheduleCommand) -> anyhow::Result<Exit> {
    match cmd {
        ScheduleCommand::Render(a) => render_cmd(ctx, a),
        ScheduleCommand::Run(a) => run_cmd(ctx, a).await,
    }
}

fn render_cmd(ctx: &Context, a: ScheduleRenderArgs) -> anyhow::Result<Exit> {
    let file = a.file.display().to_string();
    let schedule = Schedule::load(&a.file)?;
    let text = std::fs::read_to_string(&a.file).map_err(|source| ConfigError::Read {
        path: a.file.clone(),
        source,
    })?;
    let rendered = render::render(&schedule, &file, &text, &ctx.config)?;
    for n in &rendered.notes {
        eprintln!("note: {n}");
    }
    match ctx.output {
        OutputFormat::Text => print!("{}", rendered.yaml),
        // A v1 List is what `kubectl apply -f -` reads as JSON.
        OutputFormat::Json => {
            let items = serde_yaml_ng::Deserializer::from_str(&rendered.yaml)
                .map(Value::deserialize)
                .collect::<Result<Vec<Value>, _>>()
                .context("re-reading the rendered manifests")?;
            output::json(&json!({"apiVersion": "v1", "kind": "List", "items": items}))?;
        }
    }
    Ok(Exit::Ok)
}

/// What happened to retention after a scheduled backup.
enum Retention {
    /// Applied: the prune report.
    Applied(Box<PruneReport>),
    /// Not applied (the backup failed, or prune did): the reason.
    NotApplied(String),
}

impl Retention {
    fn json(&self) -> Value {
        match self {
            Retention::Applied(r) => json!({
                "applied": true,
                "kept": r.kept.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
                "deleted": r.deleted.iter().map(|d| d.decision.name.as_str()).collect::<Vec<_>>(),
                "packsDeleted": r.packs.deleted,
                "bytesFreed": r.bytes_freed,
                "report": r,
            }),
            Retention::NotApplied(why) => json!({"applied": false, "reason": why}),
        }
    }

    /// Returns true if and only if retention did not run to completion.
    fn incomplete(&self) -> bool {
        matches!(self, Retention::NotApplied(_))
    }
}

/// How long a scheduled prune waits for another pruner (another schedule's run) to finish.
const PRUNE_LOCK_WAIT: Duration = Duration::from_secs(600);

/// Applies the schedule's retention to its own backups (label `lifeboat.io/schedule=<name>`:
/// never another schedule's or a CI backup), then collects garbage, as `lifeboat prune` does.
async fn apply_retention(
    store: &storage::Writer,
    schedule: &Schedule,
    now: jiff::Timestamp,
) -> Retention {
    let opts = PruneOptions {
        lock: LockOptions {
            wait: Some(PRUNE_LOCK_WAIT),
            ..LockOptions::default()
        },
        select: BackupSelector {
            name_prefix: None,
            labels: BTreeMap::from([(SCHEDULE_LABEL.to_owned(), schedule.name.clone())]),
        },
        ..PruneOptions::default()
    };
    match prune(store, &schedule.retention, &opts, now).await {
        Ok(report) => Retention::Applied(Box::new(report)),
        Err(e) => Retention::NotApplied(format!("retention was not applied: {}", one_line(&e))),
    }
}

/// Runs a schedule once; under `-o json` a failure prints one document too (with `schedule`).
async fn run_cmd(ctx: &Context, a: ScheduleRunArgs) -> anyhow::Result<Exit> {
    let schedule_name = a.name.clone();
    let mut progressed = Progressed::default();
    let result = run_schedule(ctx, a, &mut progressed).await;
    if let (Err(e), OutputFormat::Json) = (&result, ctx.output) {
        let mut doc = progressed.failure_json(e);
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("schedule".into(), schedule_name.into());
        }
        output::json(&doc)?;
    }
    result
}

async fn run_schedule(
    ctx: &Context,
    a: ScheduleRunArgs,
    progressed: &mut Progressed,
) -> anyhow::Result<Exit> {
    let path = schedule_path(&a.schedules, &a.name)?;
    let file = path.display().to_string();
    let schedule = Schedule::load(&path)?;
    schedule.check_config(&ctx.config, &file)?;
    let at = a.now.unwrap_or_else(jiff::Timestamp::now);
    let name = BackupName::new(schedule.backup_name(at))
        .map_err(|e| UsageError(format!("{file}: name: {e}")))?;
    progressed.name = Some(name.to_string());

    let cluster_ref = ctx.config.cluster(schedule.cluster.as_deref())?;
    let cluster_name = cluster_ref
        .map(|(n, _)| n.to_owned())
        .unwrap_or_else(|| "cluster".into());
    progressed.cluster = Some(cluster_name.clone());
    let (location, loc) = ctx.config.location(schedule.location.as_deref())?;
    progressed.location = Some(location.to_owned());
    let store = storage::open_writer(location, loc)
        .with_context(|| format!("opening location {location:?} for writing"))?;
    progressed.step("location opened");
    let keys = super::location_keys(location, loc)?;
    let repo = RepoWriter::open_or_init_with(store.clone(), keys)
        .await
        .with_context(|| format!("opening the repository in {location:?}"))?;
    progressed.step("repository opened");
    let connected = cluster::connect(&cluster_name, cluster_ref.map(|(_, c)| c))
        .await
        .with_context(|| format!("connecting to cluster {cluster_name:?}"))?;
    progressed.step("cluster client configured");

    // Exactly what `lifeboat backup` with the equivalent flags takes.
    let f = &schedule.backup;
    let args = BackupArgs {
        cluster: schedule.cluster.clone(),
        to: Some(location.to_owned()),
        name: Some(name.to_string()),
        scope: ScopeArgs {
            include_namespaces: f.include_namespaces.clone(),
            exclude_namespaces: f.exclude_namespaces.clone(),
            include_resources: f.include_resources.clone(),
            exclude_resources: f.exclude_resources.clone(),
        },
        selector: f.selector.clone(),
        // `auto` is also the unset value: leave the config's `backup:` in charge then.
        include_cluster_resources: (f.include_cluster_resources != ClusterResources::Auto)
            .then_some(f.include_cluster_resources),
        labels: schedule.backup_labels().into_iter().collect(),
        ttl: schedule.ttl(),
        no_volumes: !schedule.volumes,
        status_namespace: None,
        wait: true,
        fail_on_warnings: false,
    };
    let mut request = super::backup::request(ctx, &args, name.clone(), &cluster_name);
    // `--now` replays the schedule at that time: name, recorded start and retention clock.
    request.started_at = a.now;
    tracing::info!(schedule = %schedule.name, backup = %name, "scheduled backup starting");
    let progress = BackupProgress::new(ctx.output == OutputFormat::Json);
    let mut signals = crate::cli::interrupt::Signals::install();
    let result = tokio::select! {
        r = backup::run(&connected, &repo, request, &progress) => r,
        stop = signals.received() => {
            progress.finish();
            progressed.step("backup interrupted");
            return super::stopped(ctx, stop, &connected.client, repo.reader(), &name, progressed).await;
        }
    };
    progress.finish();

    // Retention runs after every committed backup, even an empty policy: it still deletes
    // backups past their own `ttl` and collects garbage.
    let retention = match &result {
        Err(_) => Retention::NotApplied("retention was not applied: the backup failed".into()),
        Ok(_) => apply_retention(&store, &schedule, at).await,
    };

    let namespace = a
        .status_namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| schedule.cron_job.namespace.clone());
    let status_result = super::record_status(
        &connected,
        &namespace,
        Some(&schedule.name),
        location,
        &name,
        result.as_ref(),
        retention.incomplete(),
    )
    .await;
    progressed.step("backup attempted");
    progressed.status_recorded = Some(status_result.is_ok());
    let status_json = match &status_result {
        Ok(()) => json!({"namespace": namespace, "recorded": true}),
        Err(e) => json!({"namespace": namespace, "recorded": false, "error": format!("{e:#}")}),
    };

    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            if let Err(se) = &status_result {
                eprintln!("warning: {se:#}");
            }
            return Err(anyhow::Error::new(e).context(format!(
                "scheduled backup {name} (schedule {:?}) of cluster {cluster_name:?} failed; \
                 nothing was committed",
                schedule.name
            )));
        }
    };
    let objects = manifest.resource_objects().unwrap_or_default();
    match ctx.output {
        OutputFormat::Json => output::json(&json!({
            "schedule": schedule.name,
            "backup": {
                "name": manifest.name,
                "location": location,
                "cluster": cluster_name,
                "status": if manifest.warnings.is_empty() { "Completed" } else { "PartiallyFailed" },
                "objects": objects,
                "size": manifest.total_size(),
                "startedAt": manifest.started_at,
                "completedAt": manifest.completed_at,
                "labels": manifest.labels,
                "expiresAt": manifest.expires_at,
                "warnings": manifest.warnings,
            },
            "retention": retention.json(),
            "statusConfigMap": status_json,
        }))?,
        OutputFormat::Text => {
            println!(
                "Scheduled backup {} (schedule {:?}) of cluster {cluster_name:?} committed to location {location:?}",
                manifest.name, schedule.name
            );
            println!(
                "  {objects} objects, {} stored",
                output::human_bytes(manifest.total_size())
            );
            for w in &manifest.warnings {
                println!("  warning: {w}");
            }
            match &retention {
                Retention::Applied(r) => {
                    let deleted: Vec<&str> =
                        r.deleted.iter().map(|d| d.decision.name.as_str()).collect();
                    println!(
                        "  retention: {} kept, {} deleted{}; {} unreferenced packs deleted, {} freed",
                        r.kept.len(),
                        deleted.len(),
                        if deleted.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", deleted.join(", "))
                        },
                        r.packs.deleted,
                        output::human_bytes(r.bytes_freed)
                    );
                }
                Retention::NotApplied(why) => println!("  warning: {why}"),
            }
            match &status_result {
                Ok(()) => println!(
                    "  status: ConfigMap {namespace}/{} updated",
                    status::CONFIGMAP
                ),
                Err(e) => println!("  warning: status not recorded: {e:#}"),
            }
        }
    }
    let clean = manifest.warnings.is_empty() && !retention.incomplete() && status_result.is_ok();
    Ok(if clean { Exit::Ok } else { Exit::Partial })
}

/// `<dir>/<name>.yaml`, or a usage error listing the schedules that exist.
fn schedule_path(dir: &Path, name: &str) -> Result<std::path::PathBuf, UsageError> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(UsageError(format!(
            "{name:?} is not a schedule name; expected the name of a file in {} without .yaml",
            dir.display()
        )));
    }
    let path = dir.join(format!("{name}.yaml"));
    if path.is_file() {
        return Ok(path);
    }
    let mut known: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yaml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    known.sort();
    Err(UsageError(format!(
        "no schedule {name:?}: {} does not exist (schedules in {}: {}); pass --schedules DIR",
        path.display(),
        dir.display(),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )))
}
