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
pub mod data;
pub mod report;
mod replicate;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
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
        format!("{} (zones {}, service CIDR {})", self.name, self.zones().join(", "), self.cidr)
    }
}

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
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

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
        nodes: (1..=3).map(|i| format!("aks-{}-node-{i}", r.name)).collect(),
        service_cidr: r.cidr.to_owned(),
        state_dir: dir.join(r.name),
        lifeboat_bin: bin.to_path_buf(),
        ..SimConfig::default()
    };
    SimCluster::start(cfg).await.map_err(|source| DemoError::Sim {
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

/// A lifeboat command's result.
struct Ran {
    line: String,
    code: i32,
    json: Value,
    stderr: String,
    seconds: f64,
}

/// Runs the real command line in the workdir and records what it ran.
struct Commands<'a> {
    bin: PathBuf,
    dir: PathBuf,
    say: &'a (dyn Fn(&str) + Sync),
    lines: Vec<String>,
}

impl Commands<'_> {
    async fn run(&mut self, args: &[&str]) -> Result<Ran, DemoError> {
        let line = std::iter::once("lifeboat")
            .chain(args.iter().copied())
            .map(|a| {
                if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,".contains(c)) {
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
        if json.is_null() {
            return Err(DemoError::Command {
                command: line,
                problem: format!("exited with {code} without a JSON report"),
                stderr,
            });
        }
        Ok(Ran {
            line,
            code,
            json,
            stderr,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// `lifeboat backup`: committed (exit 0), or committed with warnings (exit 3).
    async fn backup(&mut self, name: &str) -> Result<report::BackupSummary, DemoError> {
        let r = self
            .run(&[
                "backup",
                "--config",
                "lifeboat.yaml",
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
                .map(|w| w.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        };
        (self.say)(&format!(
            "        → {} {}: {} objects, {} bytes stored, {:.1}s{}",
            s.name,
            s.status,
            s.objects,
            s.size,
            s.seconds,
            if s.warnings.is_empty() {
                String::new()
            } else {
                format!(" ({} warning(s), exit {})", s.warnings.len(), s.exit_code)
            }
        ));
        Ok(s)
    }
}

/// The primary's view of what a backup holds, read just before taking it.
struct Expected {
    configmap: Value,
    secret: Value,
    data: PathBuf,
}

async fn expected(c: &kube::Client, volume: &Path, into: PathBuf) -> Result<Expected, DemoError> {
    let ns = app::NAMESPACE;
    let cm = app::get(c, &format!("/api/v1/namespaces/{ns}/configmaps/{}", app::CONFIGMAP)).await?;
    let secret = app::get(c, &format!("/api/v1/namespaces/{ns}/secrets/{}", app::SECRET)).await?;
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

/// An account SAS for Azurite's blob service (`ss=b`, `srt=sco`) with `permissions`.
fn azurite_sas(permissions: &str) -> String {
    use base64::Engine as _;
    let (version, expiry) = ("2019-12-12", "2099-01-01T00:00:00Z");
    // Account SAS string-to-sign for service versions before 2020-12-06.
    let sts = format!("{AZURITE_ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\n\n{version}\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap_or_default();
    let sig = crate::storage::azure::shared_key::sign(&key, &sts);
    let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    format!("sv={version}&ss=b&srt=sco&sp={permissions}&se={expiry}&sig={sig}")
}

/// Writes `lifeboat.yaml` into the workdir and returns its locations' description.
fn write_config(
    dir: &Path,
    primary: &SimCluster,
    secondary: &SimCluster,
    azurite: Option<&str>,
) -> Result<PathBuf, DemoError> {
    let locations = match azurite {
        None => "\
  # The primary region's location (a directory here; an RA-GRS blob container in production).
  primary:
    local: { path: repo-eastus2 }
  # Its replica in the secondary region, read-only: the restore reads only this one.
  secondary:
    readOnly: true
    local: { path: repo-centralus }
"
        .to_owned(),
        Some(url) => {
            let url = url.trim_end_matches('/');
            let container = format!(
                "lifeboat-demo-{}-{}",
                jiff::Timestamp::now().as_second(),
                std::process::id()
            );
            let key = dir.join("azurite.key");
            let sas = dir.join("secondary.sas");
            std::fs::write(&key, AZURITE_KEY).map_err(io_err("writing the Azurite key", &key))?;
            std::fs::write(&sas, azurite_sas("rl")).map_err(io_err("writing the SAS", &sas))?;
            format!(
                "\
  # Azurite's primary endpoint, written with the account key.
  primary:
    azure:
      account: {AZURITE_ACCOUNT}
      container: {container}
      endpoint: {url}/{AZURITE_ACCOUNT}
      auth: account-key
      accountKey: {{ file: {key:?} }}
  # The RA-GRS secondary endpoint, read with a read+list SAS: it cannot write.
  secondary:
    readOnly: true
    azure:
      account: {AZURITE_ACCOUNT}
      container: {container}
      endpoint: {url}/{AZURITE_ACCOUNT}-secondary
      auth: sas
      sasToken: {{ file: {sas:?} }}
"
            )
        }
    };
    let (p, s) = (PRIMARY, SECONDARY);
    let zone_map: Vec<String> = p
        .zones()
        .iter()
        .zip(s.zones())
        .map(|(a, b)| format!("{a}: {b}"))
        .collect();
    let text = format!(
        "\
# Written by `lifeboat demo`: two simulated AKS clusters, a backup location and its
# read-only replica in the paired region, and the restore profile used during the incident.
clusters:
  primary: {{ context: {pn}, kubeconfig: {pk:?} }}
  secondary: {{ context: {sn}, kubeconfig: {sk:?} }}
locations:
{locations}defaults: {{ cluster: primary, location: primary }}
# `lifeboat restore --to secondary`: into the secondary cluster, from the read-only replica,
# with the primary region's storage class and zones mapped to the secondary's.
restore:
  secondary:
    cluster: secondary
    from: secondary
    storageClassMap: {{ {psc}: {ssc} }}
    zoneMap: {{ {zones} }}
",
        pn = p.name,
        sn = s.name,
        pk = primary.kubeconfig_path(),
        sk = secondary.kubeconfig_path(),
        psc = app::storage_class(p.name),
        ssc = app::storage_class(s.name),
        zones = zone_map.join(", "),
    );
    let path = dir.join("lifeboat.yaml");
    std::fs::write(&path, text).map_err(io_err("writing the config", &path))?;
    Ok(path)
}

/// Runs the drill. Progress lines go to `say`; the report is returned with the secondary
/// cluster still running (see [`Finished::close`]).
pub async fn run(opts: &DemoOptions, say: &(dyn Fn(&str) + Sync)) -> Result<Finished, DemoError> {
    let started = Instant::now();
    let work = Workdir::new(opts.workdir.as_deref(), opts.keep)?;
    let dir = work.path.clone();
    let storage = if opts.azurite.is_some() { "azurite" } else { "local" };
    say(&format!(
        "lifeboat demo: a region-loss drill on this machine (workdir {})",
        dir.display()
    ));

    say("[1/7] starting two simulated AKS regions");
    let primary = start_region(&PRIMARY, &dir, &opts.lifeboat_bin).await?;
    let secondary = start_region(&SECONDARY, &dir, &opts.lifeboat_bin).await?;
    say(&format!("      primary   {}: {}", PRIMARY.describe(), primary.url()));
    say(&format!("      secondary {}: {}", SECONDARY.describe(), secondary.url()));
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

    let config = write_config(&dir, &primary, &secondary, opts.azurite.as_deref())?;
    say(&format!(
        "[3/7] wrote {} (clusters, a backup location and its read-only replica, a restore profile); \
         these are the commands to learn (run in {}):",
        config.display(),
        dir.display()
    ));
    let mut cmds = Commands {
        bin: opts.lifeboat_bin.clone(),
        dir: dir.clone(),
        say,
        lines: Vec::new(),
    };
    let expected_1 = expected(&pc, &volume.dir, dir.join("expected").join(BACKUP_1)).await?;
    let b1 = cmds.backup(BACKUP_1).await?;

    say(&format!(
        "[4/7] the app keeps working: rewrites 10% of its database pages and small files, changes ConfigMap {}; second backup",
        app::CONFIGMAP
    ));
    let vdir = volume.dir.clone();
    blocking(move || data::write_more(&vdir).map_err(io_err("writing more data", &vdir))).await?;
    app::send(
        &pc,
        http::Method::PATCH,
        &format!("/api/v1/namespaces/{}/configmaps/{}", app::NAMESPACE, app::CONFIGMAP),
        Some(("application/merge-patch+json", json!({"data": {"release": "2"}}))),
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
            replicate::lagging(&dir.join("repo-eastus2"), &dir.join("repo-centralus"), BACKUP_1, BACKUP_2)
                .await?
        }
        Some(_) => {
            say("[5/7] replication: Azurite's -secondary endpoint reads the primary's data, so it is immediate here");
            report::Replication {
                mode: "azurite-geo",
                objects_copied: 0,
                held_back: Vec::new(),
                complete_on_secondary: Vec::new(),
                note: "Azurite's -secondary endpoint serves the primary's data at once, so replication is \
                       immediate and the newest backup is complete (on Azure, RA-GRS lags by minutes: the \
                       local drill shows a partly replicated backup being skipped)"
                    .to_owned(),
            }
        }
    };
    let listed = cmds
        .run(&["list", "--config", "lifeboat.yaml", "--location", "secondary", "--output", "json"])
        .await?;
    let names: Vec<String> = listed.json["backups"]
        .as_array()
        .map(|b| b.iter().filter_map(|x| x["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    say(&format!("        → manifests on the secondary location: {}", names.join(", ")));
    for name in [BACKUP_1, BACKUP_2] {
        let v = cmds
            .run(&["verify", name, "--config", "lifeboat.yaml", "--location", "secondary", "--output", "json"])
            .await?;
        let ok = v.json["ok"].as_bool().unwrap_or(false) && v.code == 0;
        let missing = v.json["report"]["missing"].as_array().map(Vec::len).unwrap_or(0);
        say(&format!(
            "        → {name}: {}",
            if ok {
                "complete: usable as a restore point".to_owned()
            } else {
                format!("{missing} object(s) not yet replicated: not usable as a restore point")
            }
        ));
        replication.complete_on_secondary.push((name.to_owned(), ok));
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
        let (from, to) = (dir.join("repo-eastus2"), dir.join("repo-eastus2.lost"));
        std::fs::rename(&from, &to).map_err(io_err("hiding the primary location", &from))?;
    }

    say(&format!(
        "[7/7] restoring into {} from the read-only replica, then checking the app",
        SECONDARY.name
    ));
    let restore_started = Instant::now();
    let restored = cmds
        .run(&["restore", "--config", "lifeboat.yaml", "--to", "secondary", "--output", "json"])
        .await?;
    let point = &restored.json["plan"]["restorePoint"];
    let chosen = point["name"].as_str().unwrap_or_default().to_owned();
    let passed_over: Vec<String> = point["passedOver"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|x| {
                    format!(
                        "{}: {} of {} objects not yet replicated",
                        x["name"].as_str().unwrap_or_default(),
                        x["missing"],
                        x["total"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let rep = &restored.json["report"];
    let created = rep["created"].as_u64().unwrap_or_default();
    let failed = rep["failed"].as_array().map(Vec::len).unwrap_or_default() as u64;
    say(&format!(
        "        → restored {chosen}: {created} objects created, {failed} failed, exit {}{}",
        restored.code,
        passed_over
            .iter()
            .map(|p| format!("; passed over {p}"))
            .collect::<String>()
    ));

    let (want_point, expected) = match opts.azurite {
        None => (BACKUP_1, &expected_1),
        Some(_) => (BACKUP_2, &expected_2),
    };
    let mut checks = Vec::new();
    let newest_complete = if opts.azurite.is_none() {
        "the newest backup complete on the secondary location"
    } else {
        "the newest backup (replication is immediate on Azurite)"
    };
    checks.push(Check::new(
        "restore-point",
        format!("restore chose {want_point}, {newest_complete}"),
        chosen == want_point,
        format!("restored {chosen:?}"),
    ));
    if opts.azurite.is_none() {
        let skipped = point["passedOver"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["name"] == BACKUP_2));
        checks.push(Check::new(
            "incomplete-skipped",
            format!("the partly replicated {BACKUP_2} was reported and passed over"),
            skipped,
            if passed_over.is_empty() {
                "nothing was passed over".to_owned()
            } else {
                passed_over.join("; ")
            },
        ));
    }
    checks.push(Check::new(
        "restore-succeeded",
        "the restore command succeeded (exit 0, no object failed)",
        restored.code == 0 && failed == 0,
        format!(
            "exit {}, {created} created, {failed} failed{}",
            restored.code,
            if restored.code == 0 {
                String::new()
            } else {
                format!("; stderr: {}", restored.stderr)
            }
        ),
    ));
    let mut secondary_checks = verify::Verifier {
        client: &sc,
        expected,
    }
    .run()
    .await?;
    checks.append(&mut secondary_checks.checks);
    let rto = restore_started.elapsed().as_secs_f64();

    let taken_at: Option<jiff::Timestamp> = point["takenAt"].as_str().and_then(|t| t.parse().ok());
    let rpo = taken_at
        .map(|t| (lost_at.as_millisecond() - t.as_millisecond()) as f64 / 1000.0)
        .unwrap_or_default();
    let report = Report {
        ok: checks.iter().all(|c| c.passed),
        storage,
        workdir: dir.display().to_string(),
        config: config.display().to_string(),
        primary: PRIMARY.describe(),
        secondary: SECONDARY.describe(),
        commands: cmds.lines,
        backups: vec![b1, b2],
        replication,
        restore: Some(report::RestoreSummary {
            backup: chosen,
            passed_over,
            exit_code: restored.code,
            created,
            failed,
            seconds: restored.seconds,
        }),
        rpo_seconds: rpo,
        rto_seconds: rto,
        objects_restored: created,
        bytes_restored: secondary_checks.volume_bytes,
        checks,
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Finished {
        report,
        secondary,
        workdir: work,
    })
}

mod verify;
