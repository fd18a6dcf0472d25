//! `lifeboat describe`

use anyhow::Context as _;

use super::open_repo_reader;
use crate::cli::args::{DescribeArgs, OutputFormat};
use crate::cli::output::{self, Table};
use crate::cli::{Context, Exit, UsageError};
use crate::repo::BackupName;

/// Shows one backup's manifest.
pub async fn run(ctx: &Context, args: DescribeArgs) -> anyhow::Result<Exit> {
    let name = BackupName::new(&args.name).map_err(|e| UsageError(e.to_string()))?;
    let (location, repo) = open_repo_reader(ctx, args.location.as_deref()).await?;
    if args.details {
        repo.identity_for("describe --details")?;
    }
    let m = repo
        .manifest(&name)
        .await
        .with_context(|| format!("describing backup {name}"))?;
    if ctx.output == OutputFormat::Json {
        output::json(&m)?;
        return Ok(Exit::Ok);
    }
    println!("Name:        {}", m.name);
    println!("Location:    {location}");
    println!("Created by:  {}", m.created_by);
    println!("Started:     {}", m.started_at);
    println!("Completed:   {}", m.completed_at);
    if let Some(exp) = m.expires_at {
        println!("Expires:     {exp}");
    }
    if let Some(c) = &m.cluster.name {
        println!(
            "Cluster:     {c} {}",
            m.cluster.server_version.as_deref().unwrap_or("")
        );
    }
    let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "Labels:      {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(", ")
        }
    );
    println!(
        "Objects:     {} ({}), packs referenced: {}",
        m.objects.len(),
        output::human_bytes(m.total_size()),
        m.packs.len()
    );
    println!("Status:      {}", m.status());
    match &m.details.scope {
        None => println!("Scope:       not recorded (written by an older lifeboat)"),
        Some(scope) => {
            println!(
                "Volume data: {}",
                if scope.volume_data {
                    "taken"
                } else {
                    "not taken (--no-volumes, or a schedule with volumes: false)"
                }
            );
            if !scope.claims.is_empty() {
                let mut t = Table::new(&["  CLAIM", "DATA", "WHY NOT"]);
                for c in &scope.claims {
                    t.row(vec![
                        format!("  {}/{}", c.namespace, c.pvc),
                        if c.data { "yes" } else { "no" }.into(),
                        c.reason.clone().unwrap_or_default(),
                    ]);
                }
                t.print();
            }
            if !scope.unanswered_groups.is_empty() {
                println!(
                    "Not answering discovery (not in this backup): {}",
                    scope.unanswered_groups.join(", ")
                );
            }
        }
    }
    let f = &m.filters;
    let filters: Vec<String> = [
        ("namespaces", &f.include_namespaces),
        ("exclude-namespaces", &f.exclude_namespaces),
        ("resources", &f.include_resources),
        ("exclude-resources", &f.exclude_resources),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={}", v.join(",")))
    .chain(f.selector.iter().map(|s| format!("selector={s}")))
    .collect();
    println!(
        "Filters:     {}",
        if filters.is_empty() {
            "<none: the whole cluster>".into()
        } else {
            filters.join(" ")
        }
    );
    if m.warnings.is_empty() {
        println!("Warnings:    <none>");
    } else {
        println!("Warnings:");
        for w in &m.warnings {
            println!("  - {w}");
        }
    }
    if let Some(res) = &m.details.resources {
        println!("Resources:   {} objects", res.objects);
        let mut t = Table::new(&["  RESOURCE", "OBJECTS", "LIST RV", "ERROR"]);
        for r in &res.resources {
            t.row(vec![
                format!("  {}", r.resource),
                r.count.to_string(),
                r.list_resource_version
                    .clone()
                    .unwrap_or_else(|| "-".into()),
                r.error.clone().unwrap_or_default(),
            ]);
        }
        t.print();
        println!("Namespaces:");
        let mut t = Table::new(&["  NAMESPACE", "OBJECTS"]);
        for (ns, n) in &res.namespaces {
            t.row(vec![format!("  {ns}"), n.to_string()]);
        }
        t.print();
        println!("Skipped:");
        for s in &res.skipped {
            println!("  {}: {}", s.resource, s.reason);
        }
    }
    if args.details {
        let mut t = Table::new(&["OBJECT", "SIZE", "SHA256"]);
        for o in m.required_objects() {
            t.row(vec![o.key.clone(), o.size.to_string(), o.sha256.clone()]);
        }
        println!();
        t.print();
    }
    Ok(Exit::Ok)
}
