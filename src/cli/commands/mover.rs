//! `lifeboat mover backup|restore`: one volume between a mounted directory and the repository.
//! Normally run by the mover Jobs that `backup` and `restore` create; the last line on stdout is
//! a [`crate::mover::JobReport`] they read back from the pod's log.

use std::sync::Arc;

use crate::cli::args::{MoverBackupArgs, MoverCommand, MoverLocationArgs, MoverRestoreArgs};
use crate::cli::progress::MoverProgress;
use crate::cli::{Context, Exit, UsageError};
use crate::config::Location;
use crate::mover::{self, BackupJob, JobReport, LOCATION_ENV, RestoreJob};
use crate::repo::BackupName;

/// Runs a mover subcommand.
pub async fn run(ctx: &Context, cmd: MoverCommand) -> anyhow::Result<Exit> {
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
        return Ok((format!("${LOCATION_ENV}"), loc));
    }
    let (name, loc) = ctx.config.location(a.location.as_deref())?;
    Ok((name.to_owned(), loc.clone()))
}

fn backup_name(flag: &str, value: &str) -> Result<BackupName, UsageError> {
    BackupName::new(value).map_err(|e| UsageError(format!("{flag}: {e}")))
}

async fn backup(ctx: &Context, a: MoverBackupArgs) -> anyhow::Result<Exit> {
    let job = BackupJob {
        backup: backup_name("--backup", &a.backup)?,
        parent: a
            .parent
            .as_deref()
            .map(|p| backup_name("--parent", p))
            .transpose()?,
        namespace: a.namespace,
        pvc: a.pvc,
        source: a.source,
    };
    let (loc_name, loc) = location(ctx, &a.location)?;
    let counters = Arc::new(mover::Progress::default());
    let progress = MoverProgress::start(
        format!("backup {}/{}", job.namespace, job.pvc),
        counters.clone(),
    );
    let result = mover::run_backup(&job, &loc_name, &loc, Some(counters)).await;
    progress.finish().await;
    let report = result?;
    print_report(&report)?;
    Ok(if report.skipped.is_empty() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

async fn restore(ctx: &Context, a: MoverRestoreArgs) -> anyhow::Result<Exit> {
    let job = RestoreJob {
        backup: backup_name("--backup", &a.backup)?,
        namespace: a.namespace,
        pvc: a.pvc,
        target: a.target,
        concurrency: a.concurrency,
        empty_first: a.empty_first,
    };
    let (loc_name, loc) = location(ctx, &a.location)?;
    let counters = Arc::new(mover::Progress::default());
    let progress = MoverProgress::start(
        format!("restore {}/{}", job.namespace, job.pvc),
        counters.clone(),
    );
    let result = mover::run_restore(&job, &loc_name, &loc, Some(counters)).await;
    progress.finish().await;
    print_report(&result?)?;
    Ok(Exit::Ok)
}

/// The report, as the last line on stdout (the orchestrator reads it from the pod's log).
fn print_report(report: &JobReport) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(report)?);
    Ok(())
}
