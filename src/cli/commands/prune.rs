//! `lifeboat prune`

use std::time::Duration;

use anyhow::Context as _;

use crate::cli::args::{OutputFormat, PruneArgs};
use crate::cli::output::{self, Table};
use crate::cli::{Context, Exit, UsageError};
use crate::repo::{
    BackupSelector, LockOptions, PruneOptions, PruneReport, RetentionError, RetentionPolicy,
    RetireReport, prune,
};
use crate::storage;

/// Applies the retention policy from the flags to a location and collects garbage.
pub async fn run(ctx: &Context, args: PruneArgs) -> anyhow::Result<Exit> {
    let policy = RetentionPolicy {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        ttl: args.keep_within.clone(),
    };
    // Flag names, not schedule field names, in the message.
    policy
        .validate()
        .map_err(|e| UsageError(flag_message(&e)))?;
    let (name, loc) = ctx.config.location(args.location.as_deref())?;
    if loc.read_only {
        return Err(UsageError(format!(
            "location {name:?} is read-only (readOnly: true in the config): prune deletes, so it \
             runs against the writable primary location, never against a replica"
        ))
        .into());
    }
    let store =
        storage::open_writer(name, loc).with_context(|| format!("opening location {name:?}"))?;
    let opts = PruneOptions {
        grace: to_std(args.grace),
        dry_run: args.dry_run,
        lock: LockOptions {
            lease: to_std(args.lease),
            wait: args.wait_lock.map(to_std),
            holder: None,
        },
        select: BackupSelector {
            name_prefix: args.prefix.clone(),
            labels: args.match_labels.iter().cloned().collect(),
        },
        ..Default::default()
    };
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    let report = prune(&store, &policy, &opts, now)
        .await
        .with_context(|| format!("pruning location {name:?}"))?;
    match ctx.output {
        OutputFormat::Json => output::json(&report)?,
        OutputFormat::Text => {
            print_text(name, &report);
            print_retire(&report.repack, report.dry_run);
        }
    }
    Ok(Exit::Ok)
}

fn print_retire(r: &RetireReport, dry_run: bool) {
    if r.retired > 0 || r.already_retired > 0 {
        println!(
            "Repacking: {} packs at least half garbage {} ({} to free once the backups using them expire; new backups store their live chunks again), {} retired earlier",
            r.retired,
            if dry_run { "to retire" } else { "retired" },
            output::human_bytes(r.garbage_bytes),
            r.already_retired
        );
    }
}

/// A policy error in terms of the flags (`--keep-daily: must be at least 1`).
fn flag_message(e: &RetentionError) -> String {
    let msg = e.to_string();
    let (field, rest) = msg.split_once(':').unwrap_or(("", &msg));
    let flag = match field {
        "keepLast" => "--keep-last",
        "keepHourly" => "--keep-hourly",
        "keepDaily" => "--keep-daily",
        "keepWeekly" => "--keep-weekly",
        "keepMonthly" => "--keep-monthly",
        "ttl" => "--keep-within",
        _ => return msg,
    };
    format!("{flag}:{rest}")
}

fn to_std(d: jiff::SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

fn print_text(name: &str, r: &PruneReport) {
    let (verb, deleted) = if r.dry_run {
        ("to delete", "to delete")
    } else {
        ("deleted", "deleted")
    };
    if r.dry_run {
        println!("Dry run on {name} ({}): nothing was deleted.", r.location);
    }
    let mut t = Table::new(&["BACKUP", "TIME", "DECISION", "WHY"]);
    let why = |reasons: &[crate::repo::retention::Reason]| {
        reasons
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    for d in &r.kept {
        t.row(vec![
            d.name.to_string(),
            d.time.to_string(),
            "keep".into(),
            why(&d.reasons),
        ]);
    }
    for d in &r.deleted {
        t.row(vec![
            d.decision.name.to_string(),
            d.decision.time.to_string(),
            deleted.into(),
            why(&d.decision.reasons),
        ]);
    }
    for n in &r.not_selected {
        t.row(vec![
            n.clone(),
            String::new(),
            "keep".into(),
            "notSelected".into(),
        ]);
    }
    if r.kept.len() + r.deleted.len() + r.not_selected.len() > 0 {
        t.print();
    } else {
        println!("No committed backups.");
    }
    for u in &r.leftovers_deleted {
        println!(
            "Leftovers of uncommitted backup {}: {} objects ({}), older than the grace period, {verb}",
            u.name,
            u.objects,
            output::human_bytes(u.bytes)
        );
    }
    for u in &r.in_progress {
        println!(
            "In progress (no manifest, younger than the grace period): {}, kept",
            u.name
        );
    }
    let p = &r.packs;
    println!(
        "Packs: {} listed; {} referenced ({}); {} unreferenced and older than the grace period, {verb} ({}); {} unreferenced but younger, kept ({})",
        p.total,
        p.referenced,
        output::human_bytes(p.referenced_bytes),
        p.deleted,
        output::human_bytes(p.deleted_bytes),
        p.young,
        output::human_bytes(p.young_bytes),
    );
    if p.deferred > 0 {
        println!(
            "  {} packs ({}) of the deleted backups kept while a backup is in progress; a later prune collects them",
            p.deferred,
            output::human_bytes(p.deferred_bytes)
        );
    }
    if r.dry_run {
        for k in &p.deleted_keys {
            println!("  would delete {k}");
        }
        if p.deleted as usize > p.deleted_keys.len() {
            println!(
                "  ... and {} more",
                p.deleted as usize - p.deleted_keys.len()
            );
        }
    }
    if r.dry_run {
        println!(
            "Would delete {} backups and {} objects in all, freeing {}.",
            r.deleted.len(),
            r.objects_deleted,
            output::human_bytes(r.bytes_freed)
        );
    } else {
        println!(
            "Deleted {} backups and {} objects in all; {} freed.",
            r.deleted.len(),
            r.objects_deleted,
            output::human_bytes(r.bytes_freed)
        );
    }
}
