//! `lifeboat doctor`: is each location usable for what the config says it is for?

use serde::Serialize;

use crate::cli::args::{DoctorArgs, OutputFormat};
use crate::cli::output::{self, Table};
use crate::cli::{Context, Exit, UsageError};
use crate::config::{Location, LocationKind};
use crate::repo::RepoReader;
use crate::storage::{self, ReplicationStatus};

/// What doctor found about one location.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LocationReport {
    name: String,
    kind: &'static str,
    endpoint: String,
    configured_read_only: bool,
    reachable: bool,
    /// `writable`, `read-only`, or `unknown` when the probe itself failed.
    observed_access: &'static str,
    repository: Option<RepositoryReport>,
    replication: Option<ReplicationReport>,
    /// Failures: the location cannot serve its purpose.
    problems: Vec<String>,
    /// Worth fixing, not blocking.
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RepositoryReport {
    initialized: bool,
    version: Option<u32>,
    backups: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplicationReport {
    #[serde(flatten)]
    status: ReplicationStatus,
    /// Seconds between the Last Sync Time and now: the data-loss window if the primary
    /// were lost now.
    lag_seconds: Option<i64>,
}

/// Checks every (or each named) location.
pub async fn run(ctx: &Context, args: DoctorArgs) -> anyhow::Result<Exit> {
    for n in &args.location {
        if !ctx.config.locations.contains_key(n) {
            return Err(UsageError(format!(
                "--location {n}: no such location in {}; defined: {}",
                ctx.config.file_name(),
                ctx.config
                    .locations
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
    }
    let selected: Vec<(&String, &Location)> = ctx
        .config
        .locations
        .iter()
        .filter(|(n, _)| args.location.is_empty() || args.location.contains(n))
        .collect();
    let reports = futures::future::join_all(selected.into_iter().map(|(n, l)| check(n, l))).await;
    let failed = reports.iter().any(|r| !r.problems.is_empty());
    let warned = reports.iter().any(|r| !r.warnings.is_empty());
    match ctx.output {
        OutputFormat::Json => {
            output::json(&serde_json::json!({ "ok": !failed, "locations": reports }))?
        }
        OutputFormat::Text => print_text(&reports),
    }
    Ok(if failed {
        Exit::Failed
    } else if warned {
        Exit::Partial
    } else {
        Exit::Ok
    })
}

async fn check(name: &str, loc: &Location) -> LocationReport {
    let (kind, endpoint) = match loc.kind() {
        Some(LocationKind::Local(l)) => ("local", l.path.display().to_string()),
        Some(LocationKind::Azure(a)) => {
            let url = a.endpoint.account_url(&a.account);
            (
                "azure",
                format!(
                    "{url}/{}{}",
                    a.container,
                    a.prefix
                        .as_ref()
                        .map(|p| format!("/{p}"))
                        .unwrap_or_default()
                ),
            )
        }
        None => ("unknown", String::new()),
    };
    let mut r = LocationReport {
        name: name.to_owned(),
        kind,
        endpoint,
        configured_read_only: loc.read_only,
        reachable: false,
        observed_access: "unknown",
        repository: None,
        replication: None,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let reader = match storage::open_reader(name, loc) {
        Ok(reader) => reader,
        Err(e) => {
            r.problems.push(format!("{e:#}"));
            return r;
        }
    };
    match RepoReader::exists(&reader).await {
        Ok(false) => {
            r.reachable = true;
            r.repository = Some(RepositoryReport {
                initialized: false,
                version: None,
                backups: None,
            });
        }
        Ok(true) => {
            r.reachable = true;
            match RepoReader::open(reader.clone()).await {
                Ok(repo) => {
                    let backups = repo.backup_names().await.map(|n| n.len());
                    if let Err(e) = &backups {
                        r.problems.push(format!("listing backups: {e}"));
                    }
                    r.repository = Some(RepositoryReport {
                        initialized: true,
                        version: Some(repo.config().version),
                        backups: backups.ok(),
                    });
                }
                Err(e) => r.problems.push(format!("{:#}", anyhow::Error::from(e))),
            }
        }
        Err(e) => {
            r.problems
                .push(format!("not reachable: {:#}", anyhow::Error::from(e)));
            return r;
        }
    }
    match reader.replication_status().await {
        Ok(Some(status)) => {
            let lag_seconds = status
                .last_sync_time
                .map(|t| jiff::Timestamp::now().as_second() - t.as_second());
            r.replication = Some(ReplicationReport {
                status,
                lag_seconds,
            });
        }
        Ok(None) => {}
        Err(e) => r.warnings.push(format!(
            "replication status unavailable: {:#}",
            anyhow::Error::from(e)
        )),
    }
    match storage::probe_write(name, loc).await {
        Ok(true) => {
            r.observed_access = "writable";
            if loc.read_only {
                r.warnings.push(
                    "configured readOnly but accepted a probe write: its credentials allow more than reading; \
                     give restore a read+list-only SAS or a Reader role"
                        .into(),
                );
            }
        }
        Ok(false) => {
            r.observed_access = "read-only";
            if !loc.read_only {
                r.problems.push(
                    "refused a probe write, but backups need to write here: check the credentials' permissions \
                     (e.g. Storage Blob Data Contributor), or mark the location readOnly: true"
                        .into(),
                );
            }
        }
        Err(e) => r
            .warnings
            .push(format!("write probe failed: {:#}", anyhow::Error::from(e))),
    }
    r
}

fn print_text(reports: &[LocationReport]) {
    let mut t = Table::new(&[
        "LOCATION",
        "KIND",
        "REACHABLE",
        "REPOSITORY",
        "ACCESS",
        "REPLICATION",
        "ENDPOINT",
    ]);
    for r in reports {
        let repo = match &r.repository {
            None => "-".to_owned(),
            Some(RepositoryReport {
                initialized: false, ..
            }) => "empty".into(),
            Some(RepositoryReport {
                version, backups, ..
            }) => format!(
                "v{} ({} backups)",
                version.unwrap_or_default(),
                backups.map(|b| b.to_string()).unwrap_or("?".into())
            ),
        };
        let access = format!(
            "{} (configured {})",
            r.observed_access,
            if r.configured_read_only {
                "read-only"
            } else {
                "read-write"
            }
        );
        let repl = match &r.replication {
            None => "-".to_owned(),
            Some(rep) => format!(
                "{}, last sync {}{}",
                rep.status.status,
                rep.status
                    .last_sync_time
                    .map(|t| t.to_string())
                    .unwrap_or("unknown".into()),
                rep.lag_seconds
                    .map(|s| format!(" (lag {s}s)"))
                    .unwrap_or_default()
            ),
        };
        t.row(vec![
            r.name.clone(),
            r.kind.into(),
            if r.reachable { "yes" } else { "NO" }.into(),
            repo,
            access,
            repl,
            r.endpoint.clone(),
        ]);
    }
    t.print();
    for r in reports {
        for p in &r.problems {
            println!("problem: {}: {p}", r.name);
        }
        for w in &r.warnings {
            println!("warning: {}: {w}", r.name);
        }
    }
}
