//! The Job that runs `lifeboat mover` next to a volume: its spec as data. Backup mounts a
//! temporary claim cloned from a snapshot read-only; restore mounts the new claim read-write.
//! Creating and waiting for it is the orchestrator's business (`crate::cluster::job`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::config::{Location, VolumesConfig};

/// What an orchestrator needs to run mover Jobs: the location as the pods should see it, and
/// the `volumes:` settings.
#[derive(Debug, Clone)]
pub struct VolumeJobs {
    /// The location's name in the config (what errors name).
    pub location_name: String,
    /// The location the movers read or write (credential references only).
    pub location: Location,
    /// Image, parallelism, snapshot classes, service account, timeouts.
    pub settings: VolumesConfig,
}

/// Where the volume is mounted in the mover pod.
pub const MOUNT_PATH: &str = "/data";

/// Which way the mover goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Volume → repository; the claim is mounted read-only.
    Backup,
    /// Repository → volume; the claim is mounted read-write.
    Restore,
}

/// Everything a mover Job needs.
#[derive(Debug, Clone)]
pub struct MoverJob<'a> {
    /// Job name (≤ 57 characters).
    pub name: String,
    /// Namespace (the claim's).
    pub namespace: String,
    /// The claim to mount.
    pub claim: String,
    /// Backup or restore.
    pub direction: Direction,
    /// `lifeboat mover …` arguments after the subcommand.
    pub args: Vec<String>,
    /// The location, passed as JSON in `LIFEBOAT_LOCATION` (credential references only).
    pub location: &'a Location,
    /// Image, service account, credentials Secret, timeout.
    pub settings: &'a VolumesConfig,
    /// Labels of the Job and its pod.
    pub labels: BTreeMap<String, String>,
}

impl MoverJob<'_> {
    /// The Job object.
    pub fn to_object(&self) -> Value {
        let (sub, read_only, caps) = match self.direction {
            // Reading every file whatever its owner and mode needs DAC_READ_SEARCH only.
            Direction::Backup => ("backup", true, json!(["DAC_READ_SEARCH"])),
            // Writing files with their owners and modes needs these, nothing else.
            Direction::Restore => (
                "restore",
                false,
                json!(["CHOWN", "FOWNER", "DAC_OVERRIDE", "FSETID"]),
            ),
        };
        let mut args = vec![
            "mover".to_owned(),
            sub.to_owned(),
            "--output".to_owned(),
            "json".to_owned(),
        ];
        args.extend(self.args.iter().cloned());
        // With a service account, mover pods authenticate as it (AKS workload identity) whatever
        // the orchestrator used (e.g. `azure-cli` in a CI pipeline).
        // `file:` secrets become environment names a Secret provides (see `credentials`).
        let location = super::credentials::pod_location(self.location, self.settings);
        let mut env = vec![json!({
            "name": super::run::LOCATION_ENV,
            "value": serde_json::to_string(&location).expect("locations serialize"),
        })];
        env.push(json!({"name": "HOME", "value": "/tmp"}));
        // Indexes and the known-chunk set are spooled there (about 5 GB per TB of data).
        env.push(json!({"name": "TMPDIR", "value": "/tmp"}));
        let mut container = json!({
            "name": "mover",
            "image": self.settings.mover_image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["lifeboat"],
            "args": args,
            "env": env,
            "volumeMounts": [
                {"name": "data", "mountPath": MOUNT_PATH, "readOnly": read_only},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            "resources": {
                "requests": {"cpu": "500m", "memory": "256Mi"},
                "limits": {"memory": "1Gi"},
            },
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": false,
                "readOnlyRootFilesystem": true,
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": caps},
            },
        });
        if let Some(secret) = &self.settings.credentials_secret {
            container["envFrom"] = json!([{"secretRef": {"name": secret}}]);
        }
        let mut pod_labels = self.labels.clone();
        let mut pod_spec = json!({
            "restartPolicy": "Never",
            "automountServiceAccountToken": self.settings.service_account.is_some(),
            "containers": [container],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": self.claim, "readOnly": read_only}},
                {"name": "tmp", "emptyDir": {}},
            ],
        });
        if let Some(sa) = &self.settings.service_account {
            pod_spec["serviceAccountName"] = json!(sa);
            // Azure workload identity injects the federated token into labelled pods only.
            pod_labels.insert("azure.workload.identity/use".into(), "true".into());
        }
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
            },
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": self.settings.timeout_seconds,
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": pod_spec,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::labels::{TEMPORARY_LABEL, temporary_labels};

    #[test]
    fn backup_jobs_mount_read_only_and_carry_credential_references_only() {
        let loc: Location = serde_json::from_value(json!({
            "azure": {"account": "acct", "container": "c", "auth": "sas",
                      "sasToken": {"env": "LIFEBOAT_SAS"}}
        }))
        .unwrap();
        let settings = VolumesConfig {
            credentials_secret: Some("lifeboat-credentials".into()),
            service_account: Some("lifeboat".into()),
            ..VolumesConfig::default()
        };
        let job = MoverJob {
            name: "lifeboat-1234-data".into(),
            namespace: "shop".into(),
            claim: "lifeboat-1234-data".into(),
            direction: Direction::Backup,
            args: vec!["--backup".into(), "b1".into()],
            location: &loc,
            settings: &settings,
            labels: temporary_labels("b1", "mover"),
        }
        .to_object();
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["readOnly"], true);
        assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(pod["serviceAccountName"], "lifeboat");
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
            "true"
        );
        assert_eq!(
            pod["containers"][0]["envFrom"][0]["secretRef"]["name"],
            "lifeboat-credentials"
        );
        let env = pod["containers"][0]["env"][0]["value"].as_str().unwrap();
        assert!(
            env.contains("LIFEBOAT_SAS") && !env.contains("sig="),
            "{env}"
        );
        assert!(
            env.contains("workload-identity"),
            "pods use the service account: {env}"
        );
        assert_eq!(
            pod["containers"][0]["args"],
            json!(["mover", "backup", "--output", "json", "--backup", "b1"])
        );
        assert_eq!(job["metadata"]["labels"][TEMPORARY_LABEL], "true");
    }
}
