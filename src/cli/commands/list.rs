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
    let listings = repo.list_backups().await?;
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
            Row {
                complete: missing.map(|n| n == 0),
                missing,
                status: if m.warnings.is_empty() {
                    "Completed"
                } else {
                    "PartiallyFailed"
                },
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
        OutputFormat::Json => {
            output::json(&serde_json::json!({ "location": location, "backups": rows }))?
        }
        OutputFormat::Text if rows.is_empty() => println!("No backups in location {location:?}."),
        OutputFormat::Text => {
            let now = jiff::Timestamp::now();
            let mut headers = vec!["NAME", "STATUS", "AGE", "OBJECTS", "SIZE", "LABELS"];
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
