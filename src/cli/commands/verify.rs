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
    // Deep: also every chunk of every volume, so damage is named by volume and file.
    let volumes = if args.deep {
        Some(verify_volume_data(&repo, &manifest).await?)
    } else {
        None
    };
    let ok = report.is_complete() && volumes.as_ref().is_none_or(|v| v.is_ok());
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

/// Reads every pack the backup's volume indexes reference and checks every chunk.
async fn verify_volume_data(
    repo: &crate::repo::RepoReader,
    manifest: &crate::repo::Manifest,
) -> anyhow::Result<crate::mover::VerifyReport> {
    let mut indexes = Vec::new();
    for v in manifest.volumes() {
        if v.index.is_none() {
            continue;
        }
        let label = format!("{}/{}", v.namespace, v.pvc);
        let key = crate::repo::Layout::volume_index(&manifest.name, &v.namespace, &v.pvc);
        match crate::mover::download_index(repo.store(), &key).await {
            Ok(Some(index)) => indexes.push((label, index)),
            // A missing index is already reported by the completeness check.
            Ok(None) => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("reading the index of volume {label}"))
                );
            }
        }
    }
    // Streamed from local files, in batches of bounded memory.
    let refs: Vec<(&str, &std::path::Path)> = indexes
        .iter()
        .map(|(l, i)| (l.as_str(), i.path.as_path()))
        .collect();
    crate::mover::verify_index_files(repo.store(), &refs)
        .await
        .context("verifying volume data")
}
