//! Progress of long work on stderr: a bar on a terminal, plain lines otherwise, nothing for
//! `--output json` (stdout carries the one JSON document; stderr stays quiet for scripts).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::backup::Progress;

/// Backup progress for people.
pub struct BackupProgress {
    bar: Option<ProgressBar>,
    plain: bool,
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl BackupProgress {
    /// A bar on a terminal, lines otherwise; silent when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {pos}/{len} resources  {msg}",
                )
                .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            plain: !quiet && !terminal,
            objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for BackupProgress {
    fn started(&self, resources: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(resources as u64);
        }
        if self.plain {
            eprintln!("listing {resources} resource types");
        }
    }

    fn objects(&self, count: u64, bytes: u64) {
        let objects = self.objects.fetch_add(count, Ordering::Relaxed) + count;
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{objects} objects, {}",
                super::output::human_bytes(total)
            ));
        }
    }

    fn resource_done(&self, resource: &str, objects: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        if self.plain {
            eprintln!("  {resource}: {objects} objects");
        }
    }

    fn phase(&self, what: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(what.to_owned());
        }
        if self.plain {
            eprintln!("{what}");
        }
    }
}

/// Restore progress: a bar over every object on a terminal, a line per tier otherwise.
pub struct RestoreBar {
    bar: Option<ProgressBar>,
    plain: bool,
}

impl RestoreBar {
    /// Silent when `quiet` (JSON output).
    pub fn new(quiet: bool, objects: usize) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(objects as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {pos}/{len} objects  {msg}",
                )
                .expect("the template is valid"),
            );
            bar
        });
        Self {
            bar,
            plain: !quiet && !terminal,
        }
    }

    /// Removes the bar before the report is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl crate::restore::RestoreProgress for RestoreBar {
    fn tier(&self, tier: crate::restore::Tier, writes: usize) {
        let name = serde_json::to_value(tier)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Some(bar) = &self.bar {
            bar.set_message(name.clone());
        }
        if self.plain {
            eprintln!("restoring {name}: {writes} objects");
        }
    }

    fn object_done(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn volumes(&self, count: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("volume data of {count} claims"));
        }
        if self.plain {
            eprintln!("restoring the data of {count} claims (mover Jobs)");
        }
    }
}

/// Progress of a mover (volume backup or restore): bytes, files, MB/s and ETA, polled from the
/// mover's counters. A bar on a terminal; a line every few seconds otherwise (the mover runs in
/// a pod whose log is a file); nothing for `--output json` unless it is not a terminal either,
/// since a pod's log is where an operator looks.
pub struct MoverProgress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MoverProgress {
    /// Starts reporting `counters` as `what` (e.g. `backup shop/data-db-0`).
    pub fn start(what: String, counters: std::sync::Arc<crate::mover::Progress>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let bar = terminal.then(|| {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}  {msg}",
                    )
                    .expect("the template is valid"),
                );
                bar
            });
            let period = if terminal {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            };
            let mut tick = tokio::time::interval(period);
            tick.tick().await; // the first tick is immediate: nothing to report yet
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let bytes = counters.bytes.load(Ordering::Relaxed);
                let total = counters.bytes_total.load(Ordering::Relaxed);
                let files = counters.files.load(Ordering::Relaxed);
                match &bar {
                    Some(bar) => {
                        bar.set_length(total.max(bytes));
                        bar.set_position(bytes);
                        bar.set_message(format!("{files} files  {what}"));
                    }
                    None => {
                        let secs = started.elapsed().as_secs_f64().max(1e-3);
                        let rate = bytes as f64 / secs;
                        let eta = if rate > 0.0 && total > bytes {
                            format!(", ETA {:.0} s", (total - bytes) as f64 / rate)
                        } else {
                            String::new()
                        };
                        let of = if total > 0 {
                            format!(" of {}", super::output::human_bytes(total))
                        } else {
                            String::new()
                        };
                        eprintln!(
                            "{what}: {}{of}, {files} files, {:.1} MB/s{eta}",
                            super::output::human_bytes(bytes),
                            rate / 1e6
                        );
                    }
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops reporting (before the summary is printed).
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
