//! Backup hooks: commands run (`pods/exec`) in the pods that mount a volume, just before its
//! snapshot (e.g. a database checkpoint or `fsfreeze --freeze`) and once the snapshot is ready
//! (`fsfreeze --unfreeze`). Declared by annotations on the pods, Velero-style:
//!
//! ```text
//! pre.hook.backup.lifeboat.io/command:  '["/bin/sh", "-c", "psql -c CHECKPOINT"]'  (or a plain string for sh -c)
//! pre.hook.backup.lifeboat.io/container: pg          (default: see `container_for`)
//! pre.hook.backup.lifeboat.io/on-error:  Fail        (Fail: the volume is not backed up; Continue)
//! pre.hook.backup.lifeboat.io/timeout:   30          (seconds)
//! ```
//! and the same with `post.`. Post hooks run whenever pre hooks ran, even if the snapshot failed,
//! so a frozen file system is always thawed.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Before or after the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before.
    Pre,
    /// After the snapshot is ready.
    Post,
}

impl Phase {
    fn prefix(self) -> &'static str {
        match self {
            Phase::Pre => "pre.hook.backup.lifeboat.io",
            Phase::Post => "post.hook.backup.lifeboat.io",
        }
    }
}

/// One hook to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Pod name.
    pub pod: String,
    /// Container: a running one, an app container or a native sidecar.
    pub container: String,
    /// argv.
    pub command: Vec<String>,
    /// Whether a failure stops the volume's backup.
    pub fail: bool,
    /// How long it may run.
    pub timeout: Duration,
}

impl Hook {
    fn describe(&self) -> String {
        format!(
            "{}[{}]: {}",
            self.pod,
            self.container,
            self.command.join(" ")
        )
    }
}

/// The pods of `pods` (one namespace) that mount `claim` and are running.
pub fn pods_mounting<'a>(pods: &'a [Value], claim: &str) -> Vec<&'a Value> {
    pods.iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter(|p| {
            p["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["persistentVolumeClaim"]["claimName"] == claim)
        })
        .collect()
}

/// The containers of a pod that run for as long as it does: its app containers and its native
/// sidecars (init containers with `restartPolicy: Always`, Kubernetes 1.29+), with whether each
/// mounts one of `volumes`. Plain init containers have finished: nothing can be exec'd in them.
fn running_containers<'a>(pod: &'a Value, volumes: &[&str]) -> Vec<(&'a str, bool, bool)> {
    let mounts = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"].as_str().is_some_and(|n| volumes.contains(&n)))
    };
    let apps = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c, false));
    let sidecars = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always")
        .map(|c| (c, true));
    apps.chain(sidecars)
        .filter_map(|(c, sidecar)| Some((c["name"].as_str()?, sidecar, mounts(c))))
        .collect()
}

/// The container a hook of `pod` runs in. Named by the annotation: it must be running (an app
/// container or a native sidecar). Else the pod's `kubectl.kubernetes.io/default-container`,
/// else the first app container that mounts `claim`, else the first native sidecar that does
/// (a backup agent, say), else the first app container: never a sidecar by position alone,
/// since injected sidecars (service meshes) come first in `initContainers`.
pub fn container_for(pod: &Value, claim: &str, named: Option<&str>) -> Result<String, String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["persistentVolumeClaim"]["claimName"] == claim)
        .filter_map(|v| v["name"].as_str())
        .collect();
    let running = running_containers(pod, &volumes);
    if let Some(want) = named {
        if running.iter().any(|(c, ..)| *c == want) {
            return Ok(want.to_owned());
        }
        let init = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == want);
        let names: Vec<&str> = running.iter().map(|(c, ..)| *c).collect();
        return Err(if init {
            format!(
                "pod {name}: hook container {want:?} is an init container, which has finished before the pod runs; name a running one ({}) or make it a native sidecar (restartPolicy: Always)",
                names.join(", ")
            )
        } else {
            format!(
                "pod {name}: hook container {want:?} is not in the pod; its containers: {}",
                names.join(", ")
            )
        });
    }
    let default = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .filter(|d| running.iter().any(|(c, ..)| c == d));
    default
        .or_else(|| {
            running
                .iter()
                .find(|(_, sidecar, m)| !sidecar && *m)
                .map(|r| r.0)
        })
        .or_else(|| {
            running
                .iter()
                .find(|(_, sidecar, m)| *sidecar && *m)
                .map(|r| r.0)
        })
        .or_else(|| running.iter().find(|(_, sidecar, _)| !sidecar).map(|r| r.0))
        .map(str::to_owned)
        .ok_or_else(|| format!("pod {name} has no running container to run a hook in"))
}

/// The hooks of `phase` the pods mounting `claim` declare; an unparsable annotation is an error
/// naming it.
pub fn hooks_of(pods: &[&Value], claim: &str, phase: Phase) -> Result<Vec<Hook>, String> {
    let mut hooks = Vec::new();
    for p in pods {
        let pod = p["metadata"]["name"].as_str().unwrap_or_default();
        let a = &p["metadata"]["annotations"];
        let key = |k: &str| format!("{}/{k}", phase.prefix());
        let Some(raw) = a[key("command")].as_str() else {
            continue;
        };
        let command: Vec<String> = if raw.trim_start().starts_with('[') {
            serde_json::from_str(raw).map_err(|e| {
                format!(
                    "pod {pod}: annotation {} is not a JSON array of strings: {e}",
                    key("command")
                )
            })?
        } else {
            vec!["/bin/sh".into(), "-c".into(), raw.to_owned()]
        };
        if command.is_empty() {
            return Err(format!("pod {pod}: annotation {} is empty", key("command")));
        }
        let fail = match a[key("on-error")].as_str().unwrap_or("Fail") {
            "Fail" => true,
            "Continue" => false,
            other => {
                return Err(format!(
                    "pod {pod}: annotation {} is {other:?}; expected Fail or Continue",
                    key("on-error")
                ));
            }
        };
        let timeout = match a[key("timeout")].as_str() {
            None => Duration::from_secs(30),
            Some(s) => Duration::from_secs(s.trim_end_matches('s').parse().map_err(|_| {
                format!(
                    "pod {pod}: annotation {} is {s:?}; expected seconds",
                    key("timeout")
                )
            })?),
        };
        hooks.push(Hook {
            pod: pod.to_owned(),
            container: container_for(p, claim, a[key("container")].as_str())?,
            command,
            fail,
            timeout,
        });
    }
    Ok(hooks)
}

/// Runs one hook; `Err` is why it failed.
async fn exec(client: &kube::Client, ns: &str, hook: &Hook) -> Result<(), String> {
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), ns);
    let mut params = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    params = params.container(hook.container.clone());
    let run = async {
        let mut process = api
            .exec(&hook.pod, hook.command.clone(), &params)
            .await
            .map_err(|e| format!("exec failed: {e}"))?;
        let status = process.take_status();
        let mut stderr = String::new();
        if let Some(mut err) = process.stderr() {
            let _ = err.read_to_string(&mut stderr).await;
        }
        if let Some(mut out) = process.stdout() {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        }
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = process.join().await;
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => Ok(()),
            Some(s) => Err(format!(
                "{}{}",
                s.message.unwrap_or_else(|| "failed".into()),
                if stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (stderr: {})", stderr.trim())
                }
            )),
            None => Err("the exec ended without a status".into()),
        }
    };
    tokio::time::timeout(hook.timeout, run)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {}s", hook.timeout.as_secs())))
}

/// Runs hooks one after another, stopping at a failing hook with `on-error: Fail`. Returns what
/// ran (for the record) and, if one failed that way, why the volume must not be backed up.
pub async fn run(
    client: &kube::Client,
    ns: &str,
    phase: Phase,
    hooks: &[Hook],
) -> (Vec<String>, Option<String>) {
    let label = match phase {
        Phase::Pre => "pre",
        Phase::Post => "post",
    };
    let mut ran = Vec::new();
    for h in hooks {
        match exec(client, ns, h).await {
            Ok(()) => ran.push(format!("{label} {}: ok", h.describe())),
            Err(why) if h.fail => {
                let msg = format!("{label}-hook {} failed: {why}", h.describe());
                ran.push(msg.clone());
                return (ran, Some(msg));
            }
            Err(why) => {
                tracing::warn!(%ns, hook = %h.describe(), %why, "hook failed (on-error: Continue)");
                ran.push(format!(
                    "{label} {}: failed, continued: {why}",
                    h.describe()
                ));
            }
        }
    }
    (ran, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, claim: &str, annotations: Value) -> Value {
        json!({"metadata": {"name": name, "annotations": annotations},
               "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}],
                        "containers": [{"name": "pg", "volumeMounts": [{"name": "d", "mountPath": "/data"}]}]},
               "status": {"phase": "Running"}})
    }

    /// A pod with a mesh proxy injected as a native sidecar first, a plain init container, an
    /// app container that does not mount the claim, and one that does.
    fn pod_with_sidecars() -> Value {
        json!({"metadata": {"name": "db-0", "annotations": {}},
               "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}],
                        "initContainers": [
                            {"name": "istio-proxy", "restartPolicy": "Always"},
                            {"name": "init-perms", "volumeMounts": [{"name": "data", "mountPath": "/d"}]},
                            {"name": "backup-agent", "restartPolicy": "Always", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}],
                        "containers": [
                            {"name": "metrics"},
                            {"name": "db", "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"}]}]},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn hooks_run_in_the_app_container_mounting_the_claim_never_in_a_finished_init_container() {
        let mut p = pod_with_sidecars();
        assert_eq!(container_for(&p, "data-db-0", None).unwrap(), "db");
        // A native sidecar may be named: it runs as long as the pod does.
        assert_eq!(
            container_for(&p, "data-db-0", Some("backup-agent")).unwrap(),
            "backup-agent"
        );
        let err = container_for(&p, "data-db-0", Some("init-perms")).unwrap_err();
        assert!(err.contains("is an init container"), "{err}");
        assert!(err.contains("backup-agent"), "{err}");
        let err = container_for(&p, "data-db-0", Some("nope")).unwrap_err();
        assert!(err.contains("not in the pod"), "{err}");
        // kubectl's default container wins when it is running.
        p["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] = json!("metrics");
        assert_eq!(container_for(&p, "data-db-0", None).unwrap(), "metrics");
        // Only a native sidecar mounts the claim: it is the one.
        let mut p = pod_with_sidecars();
        p["spec"]["containers"][1]["volumeMounts"] = json!([]);
        assert_eq!(
            container_for(&p, "data-db-0", None).unwrap(),
            "backup-agent"
        );
        // Nothing mounts it: the first app container, not the injected proxy.
        p["spec"]["initContainers"][2]["volumeMounts"] = json!([]);
        assert_eq!(container_for(&p, "data-db-0", None).unwrap(), "metrics");
    }

    #[test]
    fn hooks_come_from_annotations_of_running_pods_mounting_the_claim() {
        let pods = vec![
            pod(
                "pg-0",
                "data-pg-0",
                json!({
                    "pre.hook.backup.lifeboat.io/command": "[\"psql\", \"-c\", \"CHECKPOINT\"]",
                    "pre.hook.backup.lifeboat.io/container": "pg",
                    "post.hook.backup.lifeboat.io/command": "echo done",
                    "post.hook.backup.lifeboat.io/on-error": "Continue",
                }),
            ),
            pod(
                "pg-1",
                "data-pg-1",
                json!({"pre.hook.backup.lifeboat.io/command": "sync"}),
            ),
        ];
        let mounting = pods_mounting(&pods, "data-pg-0");
        assert_eq!(mounting.len(), 1);
        let pre = hooks_of(&mounting, "data-pg-0", Phase::Pre).unwrap();
        assert_eq!(pre[0].command, vec!["psql", "-c", "CHECKPOINT"]);
        assert_eq!(pre[0].container, "pg");
        assert!(pre[0].fail);
        let post = hooks_of(&mounting, "data-pg-0", Phase::Post).unwrap();
        assert_eq!(post[0].command, vec!["/bin/sh", "-c", "echo done"]);
        assert!(!post[0].fail);
    }

    #[test]
    fn malformed_hook_annotations_are_errors_naming_them() {
        let pods = [pod(
            "p",
            "c",
            json!({
                "pre.hook.backup.lifeboat.io/command": "[1, 2]",
            }),
        )];
        let err = hooks_of(&pods.iter().collect::<Vec<_>>(), "c", Phase::Pre).unwrap_err();
        assert!(err.contains("pre.hook.backup.lifeboat.io/command"), "{err}");
        let pods = [pod(
            "p",
            "c",
            json!({
                "post.hook.backup.lifeboat.io/command": "x",
                "post.hook.backup.lifeboat.io/on-error": "Ignore",
            }),
        )];
        let err = hooks_of(&pods.iter().collect::<Vec<_>>(), "c", Phase::Post).unwrap_err();
        assert!(err.contains("expected Fail or Continue"), "{err}");
    }
}
