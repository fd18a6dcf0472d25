//! Schedules (issue 7): `schedule render` accepted by a server-side dry run of real `kubectl`
//! against the simulator, schedule-file errors exiting 2 with the field named, `schedule run`
//! taking a labelled `<schedule>-<time>` backup, and the `lifeboat-status` ConfigMap and Events.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use crate::sim::{Sim, WAIT, start_with};
use crate::support::{lifeboat_cmd, stderr, stdout};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Runs lifeboat in `dir` with no in-cluster hints leaking in from the test's environment.
fn lifeboat(dir: &Path, args: &[&str]) -> Output {
    lifeboat_cmd(dir, args)
        .env_remove("LIFEBOAT_NAMESPACE")
        .env_remove("LIFEBOAT_SCHEDULES")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("lifeboat runs")
}

/// Runs kubectl against `sim` with `stdin` piped in; bounded by [`WAIT`].
async fn kubectl(sim: &Sim, args: &[&str], stdin: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let home = sim._dir.path().join("kubectl-home");
    let mut child = tokio::process::Command::new(crate::support::kubectl_path())
        .args(args)
        .arg("--kubeconfig")
        .arg(sim.cluster.kubeconfig_path())
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .env("HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .expect("kubectl runs")
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

async fn create_namespace(sim: &Sim, name: &str) {
    Api::<Namespace>::all(sim.client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace"),
        )
        .await
        .expect("namespace created");
}

#[tokio::test(flavor = "multi_thread")]
async fn render_is_accepted_by_kubectl_server_dry_run_against_the_simulator() {
    if !crate::support::kubectl_present() {
        return;
    }
    let sim = start_with(|_| {}).await;
    let rendered = lifeboat(
        Path::new(REPO),
        &[
            "schedule",
            "render",
            "schedules/nightly.yaml",
            "--config",
            "fixtures/lifeboat.yaml",
        ],
    );
    assert_ok("schedule render", &rendered);

    // A server-side dry run cannot create the namespace the other objects go in (a real API
    // server refuses them just the same), so it exists first, as the README says.
    create_namespace(&sim, "lifeboat").await;
    let dry = kubectl(
        &sim,
        &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
        &rendered.stdout,
    )
    .await;
    assert_ok("kubectl apply --dry-run=server", &dry);
    let said = stdout(&dry);
    for want in [
        "serviceaccount/lifeboat",
        "clusterrole.rbac.authorization.k8s.io/lifeboat-backup",
        "clusterrolebinding.rbac.authorization.k8s.io/lifeboat-backup-lifeboat",
        "role.rbac.authorization.k8s.io/lifeboat-status",
        "rolebinding.rbac.authorization.k8s.io/lifeboat-status",
        "configmap/lifeboat-schedule-nightly",
        "cronjob.batch/lifeboat-nightly",
    ] {
        assert!(
            said.contains(&format!("{want} created (server dry run)")),
            "{want} not dry-run created:\n{said}"
        );
    }
    let cronjobs: Api<CronJob> = Api::namespaced(sim.client.clone(), "lifeboat");
    assert!(
        cronjobs
            .get_opt("lifeboat-nightly")
            .await
            .unwrap()
            .is_none(),
        "a dry run must not create the CronJob"
    );

    // The same manifests applied for real are stored as rendered.
    let applied = kubectl(
        &sim,
        &["apply", "--validate=false", "-f", "-"],
        &rendered.stdout,
    )
    .await;
    assert_ok("kubectl apply", &applied);
    let cj = cronjobs
        .get("lifeboat-nightly")
        .await
        .expect("CronJob stored");
    let spec = cj.spec.expect("spec");
    assert_eq!(spec.schedule, "0 3 * * *");
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(spec.starting_deadline_seconds, Some(3600));
    let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("lifeboat"));
    let sc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
}

/// A scratch directory with `schedules/<name>.yaml` holding `text` and a local-only config.
fn scratch_with_schedule(name: &str, text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schedules")).unwrap();
    std::fs::write(dir.path().join(format!("schedules/{name}.yaml")), text).unwrap();
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        "locations:\n  local: { local: { path: repo } }\n",
    )
    .unwrap();
    dir
}

#[test]
fn malformed_cron_exits_2_naming_file_and_field() {
    let dir = scratch_with_schedule("bad", "name: bad\nschedule: \"61 * * * *\"\n");
    for args in [
        &["schedule", "render", "schedules/bad.yaml"][..],
        &["schedule", "run", "bad"][..],
    ] {
        let out = lifeboat(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(
                "schedules/bad.yaml: schedule: invalid cron \"61 * * * *\": minute 61 out of range (0-59)"
            ),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            stdout(&out).is_empty(),
            "nothing rendered: {}",
            stdout(&out)
        );
    }
}

#[test]
fn malformed_retention_exits_2_naming_file_and_field() {
    for (retention, want) in [
        (
            "  keepDaily: 0\n",
            "schedules/bad.yaml: retention.keepDaily: must be at least 1",
        ),
        (
            "  keepDaily: seven\n",
            "schedules/bad.yaml: retention.keepDaily: invalid type",
        ),
        (
            "  keepDayly: 7\n",
            "schedules/bad.yaml: retention.keepDayly: unknown key `keepDayly`",
        ),
    ] {
        let dir = scratch_with_schedule(
            "bad",
            &format!("name: bad\nschedule: \"@daily\"\nretention:\n{retention}"),
        );
        let out = lifeboat(dir.path(), &["schedule", "render", "schedules/bad.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{retention}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{retention}: {}", stderr(&out));
    }
}

/// A simulator, a config naming it and a local location, and one schedule of it.
struct Env {
    sim: Sim,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new(schedule: &str) -> Env {
        let sim = start_with(|_| {}).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lifeboat.yaml"),
            format!(
                "clusters:\n  primary: {{ context: primary, kubeconfig: {:?} }}\n\
                 locations:\n  local: {{ local: {{ path: repo }} }}\n",
                sim.cluster.kubeconfig_path()
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("schedules")).unwrap();
        std::fs::write(dir.path().join("schedules/tick.yaml"), schedule).unwrap();
        create_namespace(&sim, "ops").await;
        Env { sim, dir }
    }

    /// Runs lifeboat off the runtime's threads: the simulator serves it from this runtime.
    async fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            lifeboat(&dir, &args)
        })
        .await
        .expect("lifeboat run joins")
    }

    fn manifest(&self, name: &str) -> Value {
        let p: PathBuf = self
            .dir
            .path()
            .join(format!("repo/backups/{name}/manifest.json"));
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
            .expect("manifest JSON")
    }

    async fn status(&self) -> std::collections::BTreeMap<String, String> {
        Api::<ConfigMap>::namespaced(self.sim.client.clone(), "ops")
            .get("lifeboat-status")
            .await
            .expect("lifeboat-status exists")
            .data
            .expect("data")
    }

    /// Events on the status ConfigMap, oldest first.
    async fn events(&self) -> Vec<Event> {
        let mut events = Api::<Event>::namespaced(self.sim.client.clone(), "ops")
            .list(
                &ListParams::default()
                    .fields("involvedObject.kind=ConfigMap,involvedObject.name=lifeboat-status"),
            )
            .await
            .expect("events")
            .items;
        events.sort_by_key(|e| e.metadata.name.clone());
        events
    }
}

const TICK: &str = "name: tick\nschedule: \"*/5 * * * *\"\ncluster: primary\nlocation: local\n\
volumes: false\nlabels: { team: sre }\nbackup: { excludeNamespaces: [kube-node-lease] }\n\
cronJob: { namespace: ops }\n";

#[tokio::test(flavor = "multi_thread")]
async fn schedule_run_takes_a_labelled_backup_named_after_now_and_records_status() {
    let env = Env::new(TICK).await;
    let out = env
        .run(&[
            "schedule",
            "run",
            "tick",
            "--now",
            "2026-11-20T03:05:09Z",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let name = "tick-20261120-030509";
    assert_eq!(report["backup"]["name"], name);
    assert_eq!(report["retention"]["applied"], true);
    assert_eq!(report["retention"]["deleted"], json!([]));
    assert_eq!(report["statusConfigMap"]["recorded"], true);

    let manifest = env.manifest(name);
    assert_eq!(manifest["labels"]["lifeboat.io/schedule"], "tick");
    assert_eq!(manifest["labels"]["team"], "sre");
    assert_eq!(
        manifest["filters"]["excludeNamespaces"],
        json!(["kube-node-lease"])
    );
    let size: u64 = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["size"].as_u64().unwrap())
        .sum();

    let data = env.status().await;
    assert_eq!(data["lastBackup"], name);
    assert_eq!(data["outcome"], "succeeded");
    assert_eq!(data["schedule"], "tick");
    assert_eq!(data["location"], "local");
    assert_eq!(data["size"], size.to_string());
    assert_eq!(data["objects"], report["backup"]["objects"].to_string());
    assert_eq!(data["time"], manifest["completedAt"].as_str().unwrap());

    let events = env.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason.as_deref(), Some("BackupSucceeded"));
    assert_eq!(events[0].type_.as_deref(), Some("Normal"));
    assert!(events[0].message.as_deref().unwrap().contains(name));

    if crate::support::kubectl_present() {
        let described = kubectl(
            &env.sim,
            &["describe", "configmap", "lifeboat-status", "-n", "ops"],
            b"",
        )
        .await;
        assert_ok("kubectl describe", &described);
        let text = stdout(&described);
        assert!(
            text.contains("BackupSucceeded") && text.contains(name),
            "describe shows the event:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dozen_scheduled_runs_leave_exactly_what_retention_keeps() {
    let env = Env::new(&format!("{TICK}retention: {{ keepLast: 4 }}\n")).await;
    // A manual backup in the same location: not this schedule's retention to delete.
    let manual = env
        .run(&["backup", "--no-volumes", "--name", "manual-1"])
        .await;
    assert_eq!(manual.status.code(), Some(0), "{}", stderr(&manual));
    let mut names = Vec::new();
    for i in 0..12 {
        let now = format!("2026-11-20T03:{:02}:00Z", i * 5);
        let out = env
            .run(&["schedule", "run", "tick", "--now", &now, "-o", "json"])
            .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {i}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
        assert_eq!(report["retention"]["applied"], true, "run {i}: {report}");
        names.push(report["backup"]["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(names[0], "tick-20261120-030000");
    assert_eq!(names[11], "tick-20261120-035500");

    let listed = env.run(&["list", "-o", "json"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("list JSON");
    let mut remaining: Vec<String> = listed_names(&listed);
    remaining.sort();
    let mut want: Vec<String> = names[8..].to_vec();
    want.push("manual-1".into());
    want.sort();
    assert_eq!(remaining, want, "keepLast 4 of tick, and the manual backup");
    for name in &remaining {
        let v = env.run(&["verify", "--deep", name]).await;
        assert_eq!(
            v.status.code(),
            Some(0),
            "verify --deep {name}: {}",
            stderr(&v)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_daily_over_replayed_days_keeps_the_newest_run_of_each_day() {
    let env = Env::new(&format!("{TICK}retention: {{ keepDaily: 3 }}\n")).await;
    // Three runs a day for five days, replayed with --now: the clock of name, start and
    // retention alike.
    for day in 16..=20 {
        for hour in [1, 9, 17] {
            let now = format!("2026-11-{day}T{hour:02}:00:00Z");
            let out = env
                .run(&["schedule", "run", "tick", "--now", &now, "-o", "json"])
                .await;
            assert_eq!(out.status.code(), Some(0), "{now}: {}", stderr(&out));
        }
    }
    let listed = env.run(&["list", "-o", "json"]).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("list JSON");
    let mut remaining = listed_names(&listed);
    remaining.sort();
    assert_eq!(
        remaining,
        [
            "tick-20261118-170000",
            "tick-20261119-170000",
            "tick-20261120-170000"
        ],
        "the newest run of each of the last 3 days"
    );
}

/// Backup names from `lifeboat list -o json` (an array, or an object with `backups`).
fn listed_names(v: &Value) -> Vec<String> {
    let items = v
        .as_array()
        .or_else(|| v["backups"].as_array())
        .unwrap_or_else(|| panic!("unexpected list output: {v}"));
    items
        .iter()
        .map(|b| b["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_scheduled_backup_and_plain_backup_record_status() {
    let env = Env::new(TICK).await;
    let now = "2026-11-20T03:15:00Z";
    let first = env.run(&["schedule", "run", "tick", "--now", now]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    // The same --now names the same backup, which the repository refuses: a failed run.
    let again = env.run(&["schedule", "run", "tick", "--now", now]).await;
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let data = env.status().await;
    assert_eq!(data["lastBackup"], "tick-20261120-031500");
    assert_eq!(data["outcome"], "failed");
    assert_eq!(data["size"], "");
    let events = env.events().await;
    let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
    assert_eq!(reasons, ["BackupSucceeded", "BackupFailed"]);

    // `lifeboat backup --status-namespace` records a plain backup the same way.
    let plain = env
        .run(&[
            "backup",
            "--no-volumes",
            "--name",
            "manual-1",
            "--status-namespace",
            "ops",
        ])
        .await;
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let data = env.status().await;
    assert_eq!(data["lastBackup"], "manual-1");
    assert_eq!(data["outcome"], "succeeded");
    assert_eq!(data["schedule"], "");
    assert_eq!(env.events().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn unrecordable_status_makes_a_committed_scheduled_backup_partial() {
    let env = Env::new(TICK).await;
    let out = env
        .run(&[
            "schedule",
            "run",
            "tick",
            "--now",
            "2026-11-20T04:00:00Z",
            "--status-namespace",
            "nowhere",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(report["backup"]["name"], "tick-20261120-040000");
    assert_eq!(report["statusConfigMap"]["recorded"], false);
    let why = report["statusConfigMap"]["error"].as_str().unwrap();
    assert!(
        why.contains("writing ConfigMap nowhere/lifeboat-status")
            && why.contains("404 NotFound: namespaces \"nowhere\" not found"),
        "{why}"
    );
    // The backup itself is committed.
    assert_eq!(
        env.manifest("tick-20261120-040000")["labels"]["lifeboat.io/schedule"],
        "tick"
    );
}
