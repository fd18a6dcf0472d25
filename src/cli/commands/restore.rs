//! `lifeboat restore`

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use crate::cli::args::{OutputFormat, RestoreArgs};
use crate::cli::output::{self, Table};
use crate::cli::progress::RestoreBar;
use crate::cli::{Context, Exit, UsageError};
use crate::cluster;
use crate::config::RestoreProfile;
use crate::repo::{BackupName, RepoReader};
use crate::restore::{self, Action, ExecOptions, Outcome, Plan, PlanOptions, RestoreFilters};
use crate::storage;
use crate::transform::{Mappings, TransformOptions};

/// The report of a run: what was restored, skipped and failed, and the data-loss window.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    backup: &'a str,
    cluster: &'a str,
    location: &'a str,
    rpo_seconds: i64,
    #[serde(flatten)]
    outcome: &'a Outcome,
}

fn merged(
    profile: &BTreeMap<String, String>,
    flags: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut m = profile.clone();
    m.extend(flags.iter().cloned());
    m
}

fn pick(flag: &[String], profile: &[String]) -> Vec<String> {
    if flag.is_empty() {
        profile.to_vec()
    } else {
        flag.to_vec()
    }
}

/// Plans and (unless `--dry-run`) executes a restore.
pub async fn run(ctx: &Context, a: RestoreArgs) -> anyhow::Result<Exit> {
    let profile: RestoreProfile = match &a.to {
        Some(p) => ctx.config.restore.get(p).cloned().ok_or_else(|| {
            UsageError(format!(
                "--to {p}: no restore profile {p:?} in {}; defined: {}",
                ctx.config.file_name(),
                ctx.config
                    .restore
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => RestoreProfile::default(),
    };
    let cluster_name = a
        .cluster
        .clone()
        .or_else(|| (!profile.cluster.is_empty()).then(|| profile.cluster.clone()));
    let location = a
        .from
        .clone()
        .or_else(|| (!profile.from.is_empty()).then(|| profile.from.clone()))
        .ok_or_else(|| {
            UsageError("no location to read: pass --to PROFILE or --from LOCATION".into())
        })?;
    let (location, loc) = ctx.config.location(Some(&location))?;
    let cluster_ref = ctx.config.cluster(cluster_name.as_deref())?;
    let cluster_label = cluster_ref
        .map(|(n, _)| n.to_owned())
        .unwrap_or_else(|| "current context".into());
    let backup = match a.backup.as_str() {
        "latest" => None,
        n => Some(BackupName::new(n).map_err(|e| UsageError(format!("--backup: {e}")))?),
    };

    // Read-only whatever the config says: the storage layer hands out a Reader only.
    let store = storage::open_reader(location, loc)
        .with_context(|| format!("opening location {location:?}"))?;
    let keys = super::location_keys(location, loc)?;
    let repo = RepoReader::open_with(store, keys)
        .await
        .with_context(|| format!("reading location {location:?}"))?;
    // Before the target cluster is touched: an encrypted repository needs the identity.
    repo.identity_for("a restore")?;
    let connected = cluster::connect(&cluster_label, cluster_ref.map(|(_, c)| c))
        .await
        .with_context(|| format!("connecting to cluster {cluster_label:?}"))?;
    let existing = a.existing.unwrap_or(profile.existing);
    let opts = PlanOptions {
        mappings: Mappings {
            storage_classes: merged(&profile.storage_class_map, &a.storage_class_map),
            volume_attributes_classes: merged(
                &profile.volume_attributes_class_map,
                &a.volume_attributes_class_map,
            ),
            zones: merged(&profile.zone_map, &a.zone_map),
            storage_accounts: merged(&profile.storage_account_map, &a.storage_account_map),
            namespaces: merged(&profile.namespace_map, &a.namespace_map),
        },
        transform: TransformOptions {
            preserve_node_ports: a.preserve_node_ports,
            backup: String::new(),
            rebound_volumes: Default::default(),
        },
        existing,
        filters: RestoreFilters {
            include_namespaces: pick(&a.scope.include_namespaces, &profile.include_namespaces),
            exclude_namespaces: pick(&a.scope.exclude_namespaces, &profile.exclude_namespaces),
            include_resources: pick(&a.scope.include_resources, &profile.include_resources),
            exclude_resources: pick(&a.scope.exclude_resources, &profile.exclude_resources),
        },
        replica: loc.read_only,
        shared_storage_drivers: ctx.config.volumes.shared_storage_drivers.clone(),
        preprovisioned: Default::default(),
    };
    let mut labels: BTreeMap<String, String> = a.selector.iter().cloned().collect();
    if let Some(schedule) = &a.from_schedule {
        labels.insert(crate::schedule::SCHEDULE_LABEL.to_owned(), schedule.clone());
    }
    if backup.is_some() && !labels.is_empty() {
        return Err(UsageError(
            "--selector and --from-schedule choose among backups: they go with --backup latest, not a named backup".into(),
        )
        .into());
    }
    let choice = restore::PointOptions {
        allow_incomplete: a.allow_incomplete,
        allow_partial: a.allow_partial,
        labels,
        no_volumes: a.no_volumes,
        ..Default::default()
    };
    let plan = restore::prepare(&repo, &connected.client, backup.as_ref(), choice, opts)
        .await
        .context("preparing the restore; nothing was written")?;

    // How the movers open the location (issue 14): decided before anything is written.
    let credentials = (!a.no_volumes && !plan.volumes.is_empty()).then(|| {
        crate::mover::credentials::resolve(
            location,
            &super::backup::absolute(loc),
            &ctx.config.volumes,
            true,
        )
    });
    let movers = match &credentials {
        None => "no volume data to fill".to_owned(),
        Some(Ok(c)) => c.describe(),
        Some(Err(e)) => e.to_string(),
    };
    if a.dry_run {
        match ctx.output {
            OutputFormat::Json => {
                output::json(&json!({ "dryRun": true, "plan": plan, "moverCredentials": movers }))?
            }
            OutputFormat::Text => {
                print_plan_summary(&plan, location, &cluster_label, loc.read_only);
                println!("Movers: {movers}");
                print_items(&plan);
                println!("\nDry run: nothing was written.");
            }
        }
        return Ok(Exit::Ok);
    }
    let credentials = match credentials {
        None => crate::mover::credentials::MoverCredentials::NotNeeded("no volume data to fill"),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            return Err(anyhow::Error::new(e).context("preparing the restore; nothing was written"));
        }
    };
    if ctx.output == OutputFormat::Text {
        print_plan_summary(&plan, location, &cluster_label, loc.read_only);
        println!("Movers: {movers}");
    }
    let bar = RestoreBar::new(ctx.output == OutputFormat::Json, plan.items.len());
    let exec = ExecOptions {
        concurrency: a.concurrency,
        api_service_timeout: a.api_service_timeout.unsigned_abs(),
        existing,
        volumes: (!a.no_volumes).then(|| restore::VolumeJobs {
            location_name: location.to_owned(),
            location: super::backup::absolute(loc),
            settings: ctx.config.volumes.clone(),
        }),
        credentials,
        ..ExecOptions::default()
    };
    let outcome = restore::execute(&connected.client, &plan, &exec, &bar).await;
    bar.finish();
    let report = Report {
        backup: &plan.restore_point.name,
        cluster: &cluster_label,
        location,
        rpo_seconds: plan.restore_point.rpo_seconds,
        outcome: &outcome,
    };
    if let Some(path) = &a.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    match ctx.output {
        OutputFormat::Json => {
            output::json(&json!({ "plan": plan, "moverCredentials": movers, "report": report }))?
        }
        OutputFormat::Text => print_report(&report),
    }
    let written = outcome.created + outcome.updated;
    let short = restore::data_risks(&plan);
    if ctx.output == OutputFormat::Text && !short.is_empty() {
        println!("Not everything was brought back (exit 3):");
        for r in &short {
            println!("  [{}] {}", r.kind, r.message);
        }
    }
    Ok(match (outcome.failed.is_empty(), written) {
        // Exit 0 means the application is back with its data: never with a data risk.
        (true, _) if short.is_empty() => Exit::Ok,
        (true, _) => Exit::Partial,
        (false, 0) => Exit::Failed,
        (false, _) => Exit::Partial,
    })
}

/// `replica`: the location is configured `readOnly` (absent objects may still arrive there).
fn print_plan_summary(plan: &Plan, location: &str, cluster: &str, replica: bool) {
    let p = &plan.restore_point;
    println!(
        "Restore point: {} (taken {}) from location {location:?} into cluster {cluster:?}",
        p.name, p.taken_at
    );
    for skipped in &p.passed_over {
        println!("  passed over {skipped}");
    }
    for bad in &p.unreadable {
        println!(
            "  passed over {}: its manifest cannot be read ({})",
            bad.name, bad.error
        );
    }
    if p.status != "Completed" {
        println!("  WARNING: this backup is {}", p.status);
    }
    if p.incomplete && replica {
        println!("  WARNING: this backup is not completely replicated here (--allow-incomplete)");
    } else if p.incomplete {
        println!("  WARNING: objects of this backup are missing here (--allow-incomplete)");
    }
    if let Some(r) = &p.replication {
        let lst = r
            .last_sync_time
            .map(|t| t.to_string())
            .unwrap_or_else(|| "unknown".into());
        println!("  geo-replication: {}, Last Sync Time {lst}", r.status);
    }
    println!(
        "  data-loss window (RPO) if the primary is gone now: {}",
        human_secs(p.rpo_seconds)
    );
    let counts: Vec<String> = plan
        .counts
        .iter()
        .map(|(a, n)| format!("{n} {}", action_name(*a)))
        .collect();
    println!("Plan: {} objects: {}", plan.items.len(), counts.join(", "));
    if !plan.volumes.is_empty() {
        let bytes: u64 = plan.volumes.iter().map(|v| v.bytes).sum();
        println!(
            "Volume data: {} claims, {} to restore before the workloads start",
            plan.volumes.len(),
            output::human_bytes(bytes)
        );
    }
    for n in plan.volume_notes.iter().chain(&plan.notes) {
        println!("  {n}");
    }
    if plan.risks.is_empty() {
        println!("Risks: none found");
    } else {
        println!("Risks:");
        for r in &plan.risks {
            println!("  [{}] {}", r.kind, r.message);
        }
    }
}

fn print_items(plan: &Plan) {
    let mut t = Table::new(&["TIER", "ACTION", "OBJECT", "TRANSFORMS / REASON"]);
    for i in &plan.items {
        let detail = match (&i.reason, i.transforms.is_empty()) {
            (Some(r), _) => r.clone(),
            (None, false) => i.transforms.join(","),
            (None, true) => String::new(),
        };
        t.row(vec![
            serde_json::to_value(i.tier)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            action_name(i.action).into(),
            i.display(),
            detail,
        ]);
    }
    println!();
    t.print();
}

fn print_report(r: &Report<'_>) {
    let o = r.outcome;
    println!(
        "Restored backup {} into {:?} in {:.1}s: {} created, {} updated, {} skipped, {} failed",
        r.backup,
        r.cluster,
        o.duration_seconds,
        o.created,
        o.updated,
        o.skipped.values().sum::<usize>(),
        o.failed.len()
    );
    for (why, n) in &o.skipped {
        println!("  skipped {n}: {why}");
    }
    for v in &o.volumes {
        match &v.error {
            None => println!(
                "  volume {}/{}: {} files, {} restored in {:.1}s",
                v.namespace,
                v.pvc,
                v.files,
                output::human_bytes(v.bytes),
                v.seconds
            ),
            Some(e) => println!("  volume {}/{}: FAILED: {e}", v.namespace, v.pvc),
        }
    }
    for f in &o.failed {
        println!("  FAILED {}: {}", f.object, f.message);
    }
    println!("  RPO: {}", human_secs(r.rpo_seconds));
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::SkipExists => "skip-exists",
        Action::SkipRule => "skip-rule",
    }
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}
