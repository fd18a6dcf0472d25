//! `lifeboat demo`: a full region-loss drill on one machine, the first thing a newcomer runs.
//!
//! Two simulated AKS regions run in this process (primary `eastus2`, secondary `centralus`).
//! The demo deploys a small stateful app into the primary and fills its volume with generated
//! data; everything after that is done by running the real `lifeboat` command line as a
//! subprocess, printing each command, because learning those commands is the point: backup,
//! a second backup after more writes, replication to a read-only secondary location that lags
//! behind, the loss of the primary, `restore --to secondary`. Then it checks the secondary
//! against what was backed up — objects, mappings, running pods, volume bytes — and reports
//! the measured RPO and RTO.

pub mod app;
mod commands;
mod config;
pub mod data;
pub mod replicate;
pub mod report;
mod verify;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sim::{SimCluster, SimConfig, SimError};
pub use report::{Check, Report};

/// Options of a drill.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Leave the workdir in place (the caller keeps the clusters running).
    pub keep: bool,
    /// Azurite's base URL (`http://127.0.0.1:10000`): use its primary and `-secondary`
    /// endpoints instead of two local directories.
    pub azurite: Option<String>,
    /// Work here (a new or empty directory, never deleted) instead of a temporary directory.
    pub workdir: Option<PathBuf>,
    /// The lifeboat executable: the commands the demo runs, and the simulated kubelet's
    /// lifeboat pods (the volume mover).
    pub lifeboat_bin: PathBuf,
    /// An encrypted repository: the primary's location gets the writer key only (it cannot
    /// read its own backups), the secondary's the identity only.
    pub encrypted: bool,
}

/// Why the drill stopped before its checks.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A simulated cluster did not start or stop.
    #[error("simulated cluster {region}")]
    Sim {
        /// The region.
        region: String,
        /// The simulator's error.
        #[source]
        source: SimError,
    },
    /// A file-system operation failed.
    #[error("{what} ({path})")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A Kubernetes API call failed.
    #[error("{what}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Something the simulator does asynchronously did not happen in time.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit.
        seconds: u64,
    },
    /// A lifeboat command could not be started.
    #[error("starting `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A lifeboat command failed or answered something unexpected.
    #[error("`{command}` {problem}{}", if stderr.is_empty() { String::new() } else { format!("; its stderr ends with:\n{stderr}") })]
    Command {
        /// The command line.
        command: String,
        /// What went wrong.
        problem: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// Copying objects to the secondary location failed.
    #[error("replicating {key:?} to the secondary location")]
    Replicate {
        /// The object.
        key: String,
        /// The storage error.
        #[source]
        source: crate::storage::StorageError,
    },
    /// Reading the primary location's repository (to decide what replication holds back).
    #[error("reading the primary location's repository")]
    Repo(#[source] crate::repo::RepoError),
    /// Nothing answers at the `--azurite` URL.
    #[error(
        "cannot reach Azurite at {url} ({reason}); `.ci/azurite start` starts one and prints its URL"
    )]
    AzuriteUnreachable {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// `--workdir` names a non-empty directory.
    #[error("--workdir {0}: not empty; pass a new or empty directory")]
    WorkdirNotEmpty(PathBuf),
    /// An invariant of the drill itself did not hold.
    #[error("{0}")]
    Unexpected(String),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DemoError + use<> {
    let path = path.to_path_buf();
    move |source| DemoError::Io { what, path, source }
}

/// One simulated region.
struct Region {
    name: &'static str,
    cidr: &'static str,
}

const PRIMARY: Region = Region {
    name: "eastus2",
    cidr: "10.0.0.0/16",
};
const SECONDARY: Region = Region {
    name: "centralus",
    cidr: "10.1.0.0/16",
};

impl Region {
    fn zones(&self) -> Vec<String> {
        (1..=3).map(|i| format!("{}-{i}", self.name)).collect()
    }
    fn zone(&self) -> String {
        format!("{}-1", self.name)
    }
    fn describe(&self) -> String {
        format!(
            "{} (zones {}, service CIDR {})",
            self.name,
            self.zones().join(", "),
            self.cidr
        )
    }
}

/// The mover Jobs' image: what the simulated kubelet runs with the demo's own binary.
const MOVER_IMAGE: &str = "lifeboat:demo";
/// The two locations' directories in the workdir (local storage).
const PRIMARY_REPO: &str = "repo-eastus2";
const SECONDARY_REPO: &str = "repo-centralus";

/// The config file the demo writes into the workdir (the commands run there).
const CONFIG_FILE: &str = "lifeboat.yaml";

/// The two backups.
const BACKUP_1: &str = "shop-1";
const BACKUP_2: &str = "shop-2";

/// Azurite's published development account and key (not a secret).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long the simulator may take to schedule, provision and run.
const SETTLE: Duration = Duration::from_secs(90);
/// How long one lifeboat command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(420);

/// The working directory: removed at the end unless kept or given by the user.
#[derive(Debug)]
struct Workdir {
    path: PathBuf,
    remove: bool,
}

impl Workdir {
    fn new(given: Option<&Path>, keep: bool) -> Result<Workdir, DemoError> {
        let (path, remove) = match given {
            Some(p) => {
                let empty = match std::fs::read_dir(p) {
                    Ok(mut entries) => entries.next().is_none(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => return Err(io_err("reading --workdir", p)(e)),
                };
                if !empty {
                    return Err(DemoError::WorkdirNotEmpty(p.to_path_buf()));
                }
                (p.to_path_buf(), false)
            }
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos();
                let p = std::env::temp_dir()
                    .join(format!("lifeboat-demo-{}-{nanos:08x}", std::process::id()));
                (p, !keep)
            }
        };
        std::fs::create_dir_all(&path).map_err(io_err("creating the workdir", &path))?;
        // Absolute, so the paths written into the config and printed stay valid from anywhere.
        let path = std::fs::canonicalize(&path).map_err(io_err("resolving the workdir", &path))?;
        Ok(Workdir { path, remove })
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.remove {
            // Best effort: a temporary directory left behind is only disk space.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A finished drill: the report, and the clusters still running until [`Finished::close`].
#[derive(Debug)]
pub struct Finished {
    /// The report.
    pub report: Report,
    secondary: SimCluster,
    workdir: Workdir,
}

impl Finished {
    /// The secondary region's kubeconfig (context `centralus`).
    pub fn secondary_kubeconfig(&self) -> &Path {
        self.secondary.kubeconfig_path()
    }

    /// The working directory (config, locations, cluster state).
    pub fn workdir(&self) -> &Path {
        &self.workdir.path
    }

    /// Stops the secondary cluster and removes a temporary workdir (unless kept).
    pub async fn close(self) -> Result<(), DemoError> {
        let Finished {
            secondary, workdir, ..
        } = self;
        stop(secondary, SECONDARY.name).await?;
        drop(workdir);
        Ok(())
    }
}

async fn stop(cluster: SimCluster, region: &str) -> Result<(), DemoError> {
    match tokio::time::timeout(Duration::from_secs(30), cluster.shutdown()).await {
        Ok(r) => r.map_err(|source| DemoError::Sim {
            region: region.to_owned(),
            source,
        }),
        Err(_) => Err(DemoError::Timeout {
            what: format!("cluster {region} to stop"),
            seconds: 30,
        }),
    }
}

async fn start_region(r: &Region, dir: &Path, bin: &Path) -> Result<SimCluster, DemoError> {
    let cfg = SimConfig {
        name: r.name.to_owned(),
        zones: r.zones(),
        nodes: (1..=3)
            .map(|i| format!("aks-{}-node-{i}", r.name))
            .collect(),
        service_cidr: r.cidr.to_owned(),
        state_dir: dir.join(r.name),
        lifeboat_bin: bin.to_path_buf(),
        lifeboat_image: MOVER_IMAGE.to_owned(),
        ..SimConfig::default()
    };
    SimCluster::start(cfg)
        .await
        .map_err(|source| DemoError::Sim {
            region: r.name.to_owned(),
            source,
        })
}

fn client(c: &SimCluster, region: &str) -> Result<kube::Client, DemoError> {
    c.client().map_err(|source| DemoError::Sim {
        region: region.to_owned(),
        source,
    })
}

/// Runs blocking file-system work off the async workers (the simulators run on them).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DemoError> + Send + 'static,
) -> Result<T, DemoError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DemoError::Unexpected(format!("a file-system task failed: {e}")))?
}

/// The primary's view of what a backup holds, read just before taking it.
struct Expected {
    configmap: Value,
    secret: Value,
    data: PathBuf,
}

async fn expected(c: &kube::Client, volume: &Path, into: PathBuf) -> Result<Expected, DemoError> {
    let ns = app::NAMESPACE;
    let cm = app::get(
        c,
        &format!("/api/v1/namespaces/{ns}/configmaps/{}", app::CONFIGMAP),
    )
    .await?;
    let secret = app::get(
        c,
        &format!("/api/v1/namespaces/{ns}/secrets/{}", app::SECRET),
    )
    .await?;
    // The expected volume data is an exact copy of the volume as the backup will see it; the
    // copy is compared with the volume at once, so a flaw of the copy cannot hide one of the
    // restore.
    let (src, dst) = (volume.to_path_buf(), into.clone());
    blocking(move || {
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating a directory", parent))?;
        }
        data::copy_exact(&src, &dst).map_err(io_err("copying the volume's data", &dst))?;
        let c = data::compare(&src, &dst).map_err(io_err("comparing the copy", &dst))?;
        if !c.identical() {
            return Err(DemoError::Unexpected(format!(
                "the reference copy of the volume differs from it: {}",
                c.differences.join("; ")
            )));
        }
        Ok(())
    })
    .await?;
    Ok(Expected {
        configmap: cm.map(|v| v["data"].clone()).unwrap_or_default(),
        secret: secret.map(|v| v["data"].clone()).unwrap_or_default(),
        data: into,
    })
}

fn fresh_password() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("pw-{:x}{:x}", t.as_nanos(), std::process::id())
}

/// Runs the drill. Progress lines go to `say`; the report is returned with the secondary
/// cluster still running (see [`Finished::close`]).
pub async fn run(opts: &DemoOptions, say: &(dyn Fn(&str) + Sync)) -> Result<Finished, DemoError> {
    let started = Instant::now();
    if let Some(url) = &opts.azurite {
        // Fail in seconds, not after the storage client's minutes of retries.
        config::azurite_reachable(url).await?;
    }
    let work = Workdir::new(opts.workdir.as_deref(), opts.keep)?;
    let dir = work.path.clone();
    let storage = if opts.azurite.is_some() {
        "azurite"
    } else {
        "local"
    };
    say(&format!(
        "lifeboat demo: a region-loss drill on this machine (workdir {})",
        dir.display()
    ));

    say("[1/7] starting two simulated AKS regions");
    let primary = start_region(&PRIMARY, &dir, &opts.lifeboat_bin).await?;
    let secondary = start_region(&SECONDARY, &dir, &opts.lifeboat_bin).await?;
    say(&format!(
        "      primary   {}: {}",
        PRIMARY.describe(),
        primary.url()
    ));
    say(&format!(
        "      secondary {}: {}",
        SECONDARY.describe(),
        secondary.url()
    ));
    let pc = client(&primary, PRIMARY.name)?;
    let sc = client(&secondary, SECONDARY.name)?;

    say(&format!(
        "[2/7] deploying the `{}` app into {}: StatefulSet {} (volume on StorageClass {} pinned to {}), \
         Deployment {}, Services, ConfigMap, Secret",
        app::NAMESPACE,
        PRIMARY.name,
        app::STATEFULSET,
        app::storage_class(PRIMARY.name),
        PRIMARY.zone(),
        app::DEPLOYMENT
    ));
    app::deploy(&pc, PRIMARY.name, &PRIMARY.zone(), &fresh_password()).await?;
    let volume = app::wait_bound(&pc, SETTLE).await?;
    app::wait_running(&pc, SETTLE).await?;
    let vdir = volume.dir.clone();
    let stats = blocking(move || {
        data::generate(&vdir).map_err(io_err("generating the volume's data", &vdir))?;
        data::stats(&vdir).map_err(io_err("measuring the volume's data", &vdir))
    })
    .await?;
    say(&format!(
        "      pods running; wrote {:.1} MiB of generated data ({} files: small files, a large file, \
         a database of 8 KiB pages, a sparse file, symlinks, a hard link, a 0600 file, an empty dir) \
         into volume {}/{} ({} in zone {})",
        stats.bytes as f64 / (1 << 20) as f64,
        stats.files,
        app::NAMESPACE,
        app::CLAIM,
        volume.pv,
        volume.zone
    ));

    let keys = if opts.encrypted {
        Some(config::write_keys(&dir)?)
    } else {
        None
    };
    let config = config::write_config(
        &dir,
        &primary,
        &secondary,
        opts.azurite.as_deref(),
        keys.as_ref(),
    )?;
    if opts.azurite.is_some() {
        app::credentials_secret(&pc, "AZURE_STORAGE_KEY", AZURITE_KEY).await?;
    }
    say(&format!(
        "[3/7] wrote {} (clusters, a backup location and its read-only replica, a restore profile); \
         these are the commands to learn (run in {}):",
        config.display(),
        dir.display()
    ));
    let mut cmds = commands::Commands {
        bin: opts.lifeboat_bin.clone(),
        dir: dir.clone(),
        say,
        lines: Vec::new(),
    };
    let expected_1 = expected(&pc, &volume.dir, dir.join("expected").join(BACKUP_1)).await?;
    let b1 = cmds.backup(BACKUP_1).await?;
    if let Some((identity, writer)) = &keys {
        say(&format!(
            "      encrypted: the primary holds only the writer key ({}), the secondary only the identity ({}); \
             the writer cannot read what it wrote:",
            writer.display(),
            identity.display()
        ));
        cmds.writer_cannot_read(BACKUP_1).await?;
    }

    say(&format!(
        "[4/7] the app keeps working: rewrites 10% of its database pages and small files, changes ConfigMap {}; second backup",
        app::CONFIGMAP
    ));
    let vdir = volume.dir.clone();
    let written_later =
        blocking(move || data::write_more(&vdir).map_err(io_err("writing more data", &vdir)))
            .await?;
    app::send(
        &pc,
        http::Method::PATCH,
        &format!(
            "/api/v1/namespaces/{}/configmaps/{}",
            app::NAMESPACE,
            app::CONFIGMAP
        ),
        Some((
            "application/merge-patch+json",
            json!({"data": {"release": "2"}}),
        )),
        "changing the ConfigMap",
    )
    .await?;
    let expected_2 = expected(&pc, &volume.dir, dir.join("expected").join(BACKUP_2)).await?;
    let b2 = cmds.backup(BACKUP_2).await?;

    let mut replication = match &opts.azurite {
        None => {
            say(&format!(
                "[5/7] replicating to the secondary location, as RA-GRS would: in random order, all of {BACKUP_1} \
                 but only part of {BACKUP_2} (replication lag)"
            ));
            replicate::lagging(
                &dir.join(PRIMARY_REPO),
                &dir.join(SECONDARY_REPO),
                BACKUP_1,
                BACKUP_2,
            )
            .await?
        }
        Some(_) => {
            say(
                "[5/7] replication: Azurite's -secondary endpoint reads the primary's data, so it is immediate here",
            );
            report::Replication {
                mode: "azurite-geo",
                objects_copied: 0,
                held_back: Vec::new(),
                on_secondary: Vec::new(),
                note: "Azurite's -secondary endpoint serves the primary's data at once, so replication is \
                       immediate and the newest backup is complete (on Azure, RA-GRS lags by minutes: the \
                       local drill shows a partly replicated backup being skipped)"
                    .to_owned(),
            }
        }
    };
    cmds.list_secondary().await?;
    for name in [BACKUP_1, BACKUP_2] {
        let seen = cmds.verify_secondary(name).await?;
        replication.on_secondary.push(seen);
    }

    say(&format!(
        "[6/7] losing {}: its cluster stops and its backup location is never used again",
        PRIMARY.name
    ));
    let lost_at = jiff::Timestamp::now();
    drop(pc);
    stop(primary, PRIMARY.name).await?;
    if opts.azurite.is_none() {
        // Gone for good: any attempt to read the primary's location now fails.
        let (from, to) = (
            dir.join(PRIMARY_REPO),
            dir.join(format!("{PRIMARY_REPO}.lost")),
        );
        std::fs::rename(&from, &to).map_err(io_err("hiding the primary location", &from))?;
    }

    say(&format!(
        "[7/7] restoring into {} from the read-only replica, then checking the app",
        SECONDARY.name
    ));
    let restore_started = Instant::now();
    let (restore, point, restored) = cmds.restore().await?;
    let (want, expected) = match opts.azurite {
        None => (BACKUP_1, &expected_1),
        Some(_) => (BACKUP_2, &expected_2),
    };
    let mut checks = verify::restore_checks(
        &restore,
        &point,
        &restored.stderr,
        want,
        opts.azurite.is_none(),
    );
    let secondary_checks = verify::Verifier {
        client: &sc,
        expected,
        backup: want,
    }
    .run()
    .await?;
    checks.extend(secondary_checks.checks);
    let rto = restore_started.elapsed().as_secs_f64();

    let taken_at: Option<jiff::Timestamp> = point["takenAt"].as_str().and_then(|t| t.parse().ok());
    let rpo = taken_at
        .map(|t| (lost_at.as_millisecond() - t.as_millisecond()) as f64 / 1000.0)
        .unwrap_or_default();
    let report = Report {
        ok: checks.iter().all(|c| c.passed),
        storage,
        workdir: dir.display().to_string(),
        kept: !work.remove,
        config: config.display().to_string(),
        primary: PRIMARY.describe(),
        secondary: SECONDARY.describe(),
        commands: cmds.lines,
        backups: vec![b1, b2],
        replication,
        rpo_seconds: rpo,
        lost: if restore.backup == BACKUP_1 {
            format!(
                "the writes after {BACKUP_1}: {} of volume data and the ConfigMap \
                 change (they are in {BACKUP_2}, which had not fully replicated)",
                report::human_bytes(written_later)
            )
        } else {
            "only what was written after the restored backup (nothing, in this drill)".to_owned()
        },
        rto_seconds: rto,
        objects_restored: restore.created,
        bytes_restored: secondary_checks.volume_bytes,
        checks,
        restore,
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Finished {
        report,
        secondary,
        workdir: work,
    })
}
