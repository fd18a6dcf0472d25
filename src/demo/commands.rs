//! Running the real `lifeboat` command line, as a user would in the workdir: each command is
//! printed before it runs, recorded for the report, and its JSON output parsed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use serde_json::Value;

use super::{COMMAND_LIMIT, CONFIG_FILE, DemoError, app, report};

/// A lifeboat command's result.
pub(super) struct Ran {
    pub line: String,
    pub code: i32,
    pub json: Value,
    pub stderr: String,
    pub seconds: f64,
}

/// Runs the real command line in the workdir and records what it ran.
pub(super) struct Commands<'a> {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub say: &'a (dyn Fn(&str) + Sync),
    /// Every command line run, as a user would type it in the workdir.
    pub lines: Vec<String>,
}

impl Commands<'_> {
    pub async fn run(&mut self, args: &[&str]) -> Result<Ran, DemoError> {
        let r = self.run_any(args).await?;
        if r.json.is_null() {
            return Err(DemoError::Command {
                command: r.line,
                problem: format!("exited with {} without a JSON report", r.code),
                stderr: r.stderr,
            });
        }
        Ok(r)
    }

    /// [`Self::run`] for a command expected to fail without a JSON report.
    async fn run_any(&mut self, args: &[&str]) -> Result<Ran, DemoError> {
        let line = std::iter::once("lifeboat")
            .chain(args.iter().copied())
            .map(|a| {
                if a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=./:,".contains(c))
                {
                    a.to_owned()
                } else {
                    format!("'{a}'")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        (self.say)(&format!("      $ {line}"));
        self.lines.push(line.clone());
        let started = Instant::now();
        let child = tokio::process::Command::new(&self.bin)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("LIFEBOAT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DemoError::Spawn {
                command: line.clone(),
                source,
            })?;
        let out = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
            .await
            .map_err(|_| DemoError::Timeout {
                what: format!("`{line}`"),
                seconds: COMMAND_LIMIT.as_secs(),
            })?
            .map_err(|source| DemoError::Spawn {
                command: line.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let stderr = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        let code = out.status.code().unwrap_or(-1);
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        Ok(Ran {
            line,
            code,
            json,
            stderr,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// `lifeboat backup`: committed (exit 0), or committed with warnings (exit 3).
    pub async fn backup(&mut self, name: &str) -> Result<report::BackupSummary, DemoError> {
        let r = self
            .run(&[
                "backup",
                "--config",
                CONFIG_FILE,
                "--name",
                name,
                "--include-namespaces",
                app::NAMESPACE,
                "--output",
                "json",
            ])
            .await?;
        if r.code != 0 && r.code != 3 {
            return Err(DemoError::Command {
                command: r.line,
                problem: format!("failed with exit code {}", r.code),
                stderr: r.stderr,
            });
        }
        let j = &r.json;
        let s = report::BackupSummary {
            name: j["name"].as_str().unwrap_or(name).to_owned(),
            status: j["status"].as_str().unwrap_or_default().to_owned(),
            exit_code: r.code,
            objects: j["objects"].as_u64().unwrap_or_default(),
            size: j["size"].as_u64().unwrap_or_default(),
            started_at: j["startedAt"].as_str().unwrap_or_default().to_owned(),
            seconds: r.seconds,
            warnings: j["warnings"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        };
        (self.say)(&format!(
            "        → {} {}: {} objects, {} stored, {:.1}s{}",
            s.name,
            s.status,
            s.objects,
            report::human_bytes(s.size),
            s.seconds,
            if s.warnings.is_empty() {
                String::new()
            } else {
                format!(" ({} warning(s), exit {})", s.warnings.len(), s.exit_code)
            }
        ));
        Ok(s)
    }

    /// `lifeboat list` of the secondary location: the backups whose manifest arrived.
    pub async fn list_secondary(&mut self) -> Result<Vec<String>, DemoError> {
        let listed = self
            .run(&[
                "list",
                "--config",
                CONFIG_FILE,
                "--location",
                "secondary",
                "--output",
                "json",
            ])
            .await?;
        let names: Vec<String> = listed.json["backups"]
            .as_array()
            .map(|b| {
                b.iter()
                    .filter_map(|x| x["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (self.say)(&format!(
            "        → manifests on the secondary location: {}",
            names.join(", ")
        ));
        Ok(names)
    }

    /// `lifeboat verify` of a backup on the secondary location: usable as a restore point?
    /// `describe --details` on the primary's location (writer key only): must be refused.
    pub async fn writer_cannot_read(&mut self, name: &str) -> Result<(), DemoError> {
        let r = self
            .run_any(&[
                "describe",
                name,
                "--details",
                "--config",
                CONFIG_FILE,
                "--location",
                "primary",
            ])
            .await?;
        if r.code != 2 || !r.stderr.contains("needs its identity") {
            return Err(DemoError::Command {
                command: r.line,
                problem: format!(
                    "the writer key read an encrypted backup (exit code {}, expected 2)",
                    r.code
                ),
                stderr: r.stderr,
            });
        }
        (self.say)(
            "        → refused (exit 2): reading needs the identity, which only the secondary holds",
        );
        Ok(())
    }

    pub async fn verify_secondary(&mut self, name: &str) -> Result<report::OnSecondary, DemoError> {
        let v = self
            .run(&[
                "verify",
                name,
                "--config",
                CONFIG_FILE,
                "--location",
                "secondary",
                "--output",
                "json",
            ])
            .await?;
        let complete = v.json["ok"].as_bool().unwrap_or(false) && v.code == 0;
        let missing = v.json["report"]["missing"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        (self.say)(&format!(
            "        → {name}: {}",
            if complete {
                "complete: usable as a restore point".to_owned()
            } else {
                format!("{missing} object(s) not yet replicated: not usable as a restore point")
            }
        ));
        Ok(report::OnSecondary {
            backup: name.to_owned(),
            complete,
            missing,
        })
    }

    /// `lifeboat restore --to secondary`: its summary and the restore point it reported.
    pub async fn restore(&mut self) -> Result<(report::RestoreSummary, Value, Ran), DemoError> {
        let restored = self
            .run(&[
                "restore",
                "--config",
                CONFIG_FILE,
                "--to",
                "secondary",
                "--output",
                "json",
            ])
            .await?;
        let point = restored.json["plan"]["restorePoint"].clone();
        let passed_over: Vec<String> = point["passedOver"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|x| match x["reason"].as_str() {
                        Some("incomplete") | None => format!(
                            "{}: {} of {} objects not yet replicated",
                            x["name"].as_str().unwrap_or_default(),
                            x["missing"],
                            x["total"]
                        ),
                        Some(reason) => format!(
                            "{}: {reason}: {}",
                            x["name"].as_str().unwrap_or_default(),
                            x["detail"].as_str().unwrap_or_default()
                        ),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rep = &restored.json["report"];
        let summary = report::RestoreSummary {
            backup: point["name"].as_str().unwrap_or_default().to_owned(),
            created: rep["created"].as_u64().unwrap_or_default(),
            failed: rep["failed"].as_array().map(Vec::len).unwrap_or_default() as u64,
            exit_code: restored.code,
            seconds: restored.seconds,
            passed_over,
        };
        (self.say)(&format!(
            "        → restored {}: {} objects created, {} failed, exit {}{}",
            summary.backup,
            summary.created,
            summary.failed,
            summary.exit_code,
            summary
                .passed_over
                .iter()
                .map(|p| format!("; passed over {p}"))
                .collect::<String>()
        ));
        Ok((summary, point, restored))
    }
}
