//! `lifeboat key generate`: the two key files of an encrypted repository.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use anyhow::Context as _;
use serde_json::json;

use super::super::OutputFormat;
use super::super::args::{KeyCommand, KeyGenerateArgs};
use super::super::exit::Exit;
use super::super::output;
use super::super::{Context, UsageError};
use crate::repo::crypto;

/// Runs a `key` subcommand.
pub fn run(ctx: &Context, cmd: KeyCommand) -> anyhow::Result<Exit> {
    match cmd {
        KeyCommand::Generate(a) => generate(ctx, &a),
    }
}

fn generate(ctx: &Context, a: &KeyGenerateArgs) -> anyhow::Result<Exit> {
    if a.identity == a.writer_key {
        return Err(UsageError("--identity and --writer-key must be two files".into()).into());
    }
    let (reader, writer) = crypto::generate().context("generating keys")?;
    // Mode 0600 and create-new: a key file is never overwritten or readable by others.
    for (path, text) in [
        (&a.identity, reader.to_text()),
        (&a.writer_key, writer.to_text()),
    ] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let recipient = reader.fingerprint();
    match ctx.output {
        OutputFormat::Json => output::json(&json!({
            "identity": a.identity, "writerKey": a.writer_key, "recipient": recipient,
        }))?,
        OutputFormat::Text => {
            println!(
                "identity   {} (reads backups: keep it on the DR side only)",
                a.identity.display()
            );
            println!(
                "writer key {} (writes backups, cannot read them: CronJob and CI)",
                a.writer_key.display()
            );
            println!("recipient  {recipient}");
            println!();
            println!(
                "Configure the writer's location with `encryption: {{ writerKey: {{ file: PATH }} }}`"
            );
            println!(
                "and the DR side's with `encryption: {{ identity: {{ file: PATH }} }}` (or `{{ env: VAR }}`)."
            );
            println!("A new location becomes an encrypted repository on its first backup.");
        }
    }
    Ok(Exit::Ok)
}
