//! `lifeboat verify`

use anyhow::Context as _;
use serde_json::json;

use super::open_repo_reader;
use crate::cli::args::{OutputFormat, VerifyArgs};
use crate::cli::output;
use crate::cli::{Context, Exit, UsageError};
use crate::repo::BackupName;

/// Checks that a backup is complete (and intact with `--deep`) on a location. Exit 1 if not.
pub async fn run(ctx: &Context, args: VerifyArgs) -> anyhow::Result<Exit> {
    let name = BackupName::new(&args.name).map_err(|e| UsageError(e.to_string()))?;
    let (location, repo) = open_repo_reader(ctx, args.location.as_deref()).await?;
    if args.deep {
        // Deep verification decrypts every chunk: a writer key cannot.
        repo.identity_for("verify --deep")?;
    }
    let manifest = repo
        .manifest(&name)
        .await
        .with_context(|| format!("verifying backup {name}"))?;
    let verification = crate::mover::verify_backup(&repo, &manifest, args.deep).await?;
    let ok = verification.is_ok();
    let (report, volumes) = (&verification.objects, &verification.volume_data);
    match ctx.output {
        OutputFormat::Json => output::json(&json!({
            "backup": name, "location": location, "ok": ok, "report": report,
            "volumeData": volumes,
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
            if let Some(v) = &volumes {
                println!(
                    "  volume data: {} chunks in {} packs ({}) checked",
                    v.chunks,
                    v.packs,
                    output::human_bytes(v.bytes)
                );
                for p in &v.missing_packs {
                    println!("  missing pack: {p}");
                }
                for d in &v.damaged {
                    println!(
                        "  DAMAGED chunk {} in {}: {}; volumes {}; files {}",
                        d.chunk,
                        d.pack,
                        d.problem,
                        d.volumes.join(", "),
                        d.files.join(", ")
                    );
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
