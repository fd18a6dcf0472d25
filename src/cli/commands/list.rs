//! `lifeboat list`

use serde::Serialize;

use super::open_repo_reader;
use crate::cli::args::{ListArgs, OutputFormat};
use crate::cli::output::{self, Table};
use crate::cli::{Context, Exit};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    name: String,
    status: &'static str,
    started_at: jiff::Timestamp,
    completed_at: jiff::Timestamp,
    objects: usize,
    size: u64,
    labels: std::collections::BTreeMap<String, String>,
    warnings: usize,
    /// Whether volume data was taken (absent: not recorded, a manifest of an older lifeboat).
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_data: Option<bool>,
    /// Claims in scope, and how many of them have their data in the backup (where recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    claims: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    claims_with_data: Option<usize>,
    /// API groups that did not answer discovery: their objects are not in the backup.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unanswered_groups: Vec<String>,
    /// With `--check`: whether every object is present on this location.
    #[serde(skip_serializing_if = "Option::is_none")]
    complete: Option<bool>,
    /// With `--check`: objects not (yet) on this location.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<usize>,
}

/// Lists committed backups, oldest first.
pub async fn run(ctx: &Context, args: ListArgs) -> anyhow::Result<Exit> {
    let (location, repo) = open_repo_reader(ctx, args.location.as_deref()).await?;
    let listed = repo.list_readable().await?;
    for bad in &listed.unreadable {
        eprintln!(
            "warning: backup {} is not listed: its manifest cannot be read ({})",
            bad.name, bad.error
        );
    }
    let listings = listed.backups;
    let mut checks = Vec::with_capacity(listings.len());
    for b in &listings {
        checks.push(if args.check {
            let c = repo
                .check(&b.manifest, crate::repo::VerifyOptions { deep: false })
                .await?;
            Some(c.missing.len() + c.wrong_size.len())
        } else {
            None
        });
    }
    let rows: Vec<Row> = listings
        .into_iter()
        .zip(checks)
        .map(|(b, missing)| {
            let m = b.manifest;
            let scope = m.details.scope.as_ref();
            Row {
                complete: missing.map(|n| n == 0),
                missing,
                status: m.status(),
                volume_data: scope.map(|s| s.volume_data),
                claims: scope.map(|s| s.claims.len()),
                claims_with_data: scope.map(|s| s.claims.iter().filter(|c| c.data).count()),
                unanswered_groups: scope
                    .map(|s| s.unanswered_groups.clone())
                    .unwrap_or_default(),
                // Kubernetes objects in the backup, where recorded; else stored objects.
                objects: m
                    .resource_objects()
                    .map(|n| n as usize)
                    .unwrap_or(m.objects.len() + m.packs.len()),
                size: m.total_size(),
                name: m.name.to_string(),
                started_at: m.started_at,
                completed_at: m.completed_at,
                labels: m.labels,
                warnings: m.warnings.len(),
            }
        })
        .collect();
    match ctx.output {
        OutputFormat::Json => output::json(&serde_json::json!({
            "location": location,
            "backups": rows,
            "unreadable": listed.unreadable,
        }))?,
        OutputFormat::Text if rows.is_empty() => println!("No backups in location {location:?}."),
        OutputFormat::Text => {
            let now = jiff::Timestamp::now();
            let mut headers = vec![
                "NAME",
                "STATUS",
                "AGE",
                "OBJECTS",
                "SIZE",
                "VOLUME DATA",
                "LABELS",
            ];
            if args.check {
                headers.insert(2, "HERE");
            }
            let mut t = Table::new(&headers);
            for r in &rows {
                let labels: Vec<String> =
                    r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let mut cells = vec![
                    r.name.clone(),
                    r.status.into(),
                    output::human_age(r.completed_at, now),
                    r.objects.to_string(),
                    output::human_bytes(r.size),
                    volume_data(r),
                    labels.join(","),
                ];
                if let Some(missing) = r.missing {
                    cells.insert(
                        2,
                        if missing == 0 {
                            "complete".into()
                        } else {
                            format!("{missing} missing")
                        },
                    );
                }
                t.row(cells);
            }
            t.print();
        }
    }
    Ok(Exit::Ok)
}

/// The VOLUME DATA column: what a restore from the backup can fill.
fn volume_data(r: &Row) -> String {
    match (r.volume_data, r.claims, r.claims_with_data) {
        (None, ..) => "-".into(),
        (Some(false), Some(0), _) => "none taken".into(),
        (Some(false), Some(n), _) => format!("none taken ({n} claims)"),
        (Some(true), Some(n), Some(d)) if n == d => format!("all {n} claims"),
        (Some(true), Some(n), Some(d)) => format!("{d} of {n} claims"),
        _ => "-".into(),
    }
}
