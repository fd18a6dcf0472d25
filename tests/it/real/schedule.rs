//! The nightly CronJob as users install it: `lifeboat schedule render schedules/nightly.yaml`
//! applied with kubectl to the real primary, its ServiceAccount held to the shipped ClusterRole
//! by the real RBAC authorizer, and a run started by the real CronJob and Job controllers on the
//! node agent, with in-cluster credentials.

use std::path::Path;

use serde_json::Value;

use super::{get, kubectl, kubectl_in, real, unique, wait_until};
use crate::support::{lifeboat, stderr};

#[tokio::test(flavor = "multi_thread")]
async fn nightly_cronjob_runs_in_cluster_under_rbac_that_refuses_what_it_must_not_do() {
    let Some(r) = real().await else { return };
    let dir = super::workdir();
    let repo = dir.path().join("repo");
    // In the cluster, `primary` is the cluster the pod runs in; the location is a directory the
    // agent's processes share with this test.
    std::fs::write(
        dir.path().join("lifeboat.yaml"),
        format!(
            "clusters:\n  primary: {{ inCluster: true }}\nlocations:\n  prod: {{ local: {{ path: {repo:?} }} }}\n\
             defaults: {{ cluster: primary, location: prod }}\n"
        ),
    )
    .unwrap();
    let nightly = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules/nightly.yaml");
    let rendered = lifeboat(
        dir.path(),
        &[
            "schedule",
            "render",
            &nightly.to_string_lossy(),
            "--config",
            "lifeboat.yaml",
        ],
    );
    assert_eq!(rendered.status.code(), Some(0), "{}", stderr(&rendered));
    let applied = kubectl_in(&r.primary, &["apply", "-f", "-"], Some(&rendered.stdout));
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // The job's ServiceAccount, as the real authorizer sees it.
    let token = kubectl(
        &r.primary,
        &["create", "token", "lifeboat", "-n", "lifeboat"],
    );
    let as_job = format!("--token={}", token.trim());
    let ns = unique("rbac");
    kubectl(&r.primary, &["create", "namespace", &ns]);
    kubectl(
        &r.primary,
        &["create", "deployment", "victim", "--image=nginx", "-n", &ns],
    );
    // Reading everything is allowed (a backup reads every object) ...
    kubectl(
        &r.primary,
        &["get", "deployments,secrets,configmaps", "-A", &as_job],
    );
    // ... deleting an application's Deployment and writing a Secret are not (403).
    for args in [
        vec!["delete", "deployment", "victim", "-n", &ns],
        vec![
            "create",
            "secret",
            "generic",
            "stolen",
            "--from-literal=k=v",
            "-n",
            &ns,
        ],
        vec![
            "create",
            "secret",
            "generic",
            "stolen",
            "--from-literal=k=v",
            "-n",
            "lifeboat",
        ],
    ] {
        let mut args = args;
        args.push(&as_job);
        let out = kubectl_in(&r.primary, &args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was allowed");
        assert!(
            err.contains("Forbidden") || err.contains("forbidden"),
            "{args:?}: {err}"
        );
    }
    kubectl(&r.primary, &["get", "deployment", "victim", "-n", &ns]);

    // A run now, as the README says: the real Job controller runs it on the agent, whose
    // process gets the projected service-account token at the in-cluster path.
    let job = unique("nightly-now");
    kubectl(
        &r.primary,
        &[
            "create",
            "job",
            &job,
            "--from=cronjob/lifeboat-nightly",
            "-n",
            "lifeboat",
        ],
    );
    let job_path = format!("/apis/batch/v1/namespaces/lifeboat/jobs/{job}");
    let complete = wait_until(&format!("job {job} to finish"), || async {
        let j = get(&r.primary, &job_path).await?;
        let conditions = j["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .find_map(|c| match (c["type"].as_str(), c["status"].as_str()) {
                (Some("Complete"), Some("True")) => Some(true),
                (Some("Failed"), Some("True")) => Some(false),
                _ => None,
            })
    })
    .await;
    if !complete {
        // `kubectl logs` works too (the agent serves container logs); read them where the agent
        // keeps them (`.ci/controlplane` puts its state beside the kubeconfig).
        let logs = r.primary.kubeconfig.with_file_name("agent/logs/lifeboat");
        let mut text = String::new();
        for pod in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                text += &format!(
                    "{}:\n{}\n",
                    f.path().display(),
                    std::fs::read_to_string(f.path()).unwrap_or_default()
                );
            }
        }
        panic!("the scheduled run failed:\n{text}");
    }
    let status: Value = serde_json::from_str(&kubectl(
        &r.primary,
        &[
            "get",
            "configmap",
            "lifeboat-status",
            "-n",
            "lifeboat",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(status["data"]["outcome"], "succeeded", "{status}");
    let name = status["data"]["lastBackup"].as_str().unwrap();
    assert!(name.starts_with("nightly-"), "{status}");
    assert!(
        repo.join(format!("backups/{name}/manifest.json")).is_file(),
        "the committed manifest of {name} is in the location"
    );
}
