//! `lifeboat verify`

use anyhow::Context as _;
use serde_json::json;

use super::open_repo_reader;
use crate::cli::args::{OutputFormat, VerifyArgs};
use crate::cli::output;
use crate::cli::{Context, Exit, UsageError};
use crate::repo::{BackupName, VerifyOptions};

/// Checks that a backup is complete (and intact with `--deep`) on a location. Exit 1 if not.
pub async fn run(ctx: &Context, args: VerifyArgs) -> anyhow::Result<Exit> {
    let name = BackupName::new(&args.name).map_err(|e| UsageError(e.to_string()))?;
    let (location, repo) = open_repo_reader(ctx, args.location.as_deref()).await?;
    let manifest = repo
        .manifest(&name)
        .await
        .with_context(|| format!("verifying backup {name}"))?;
    let report = repo
        .check(&manifest, VerifyOptions { deep: args.deep })
        .await?;
    let ok = report.is_complete();
    match ctx.output {
        OutputFormat::Json => output::json(&json!({
            "backup": name, "location": location, "ok": ok, "report": report,
        }))?,
        OutputFormat::Text => {
            let what = if args.deep {
                "present and intact"
            } else {
                "present"
            };
            println!(
                "{name} in {location}: {} of {} objects {what}",
                report.present(),
                report.total
            );
            for (label, keys) in [
                ("missing", &report.missing),
                ("wrong size", &report.wrong_size),
                ("corrupt", &report.corrupt),
            ] {
                for k in keys {
                    println!("  {label}: {k}");
                }
            }
            if ok {
                println!("OK");
            } else {
                println!("NOT COMPLETE: not usable as a restore point from this location");
            }
        }
    }
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}
