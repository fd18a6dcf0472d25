//! The checks run against the secondary region after the restore: each compares what is live
//! there with what the primary held when the restored backup was taken.

use serde_json::Value;

use super::app::{self, BoundVolume};
use super::report::Check;
use super::report::RestoreSummary;
use super::{BACKUP_2, DemoError, Expected, SECONDARY, SETTLE, blocking, data, io_err};

/// The checks of the restore command's own report: the restore point it chose, the newer
/// backup it passed over (`lagging`: the secondary location lags behind), its success.
pub(super) fn restore_checks(
    restore: &RestoreSummary,
    point: &Value,
    stderr: &str,
    want: &str,
    lagging: bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let why = if lagging {
        "the newest backup complete on the secondary location"
    } else {
        "the newest backup (replication is immediate on Azurite)"
    };
    checks.push(Check::new(
        "restore-point",
        format!("restore chose {want}, {why}"),
        restore.backup == want,
        format!("restored {:?}", restore.backup),
    ));
    if lagging {
        let skipped = point["passedOver"]
            .as_array()
            .is_some_and(|p| p.iter().any(|x| x["name"] == BACKUP_2));
        checks.push(Check::new(
            "incomplete-skipped",
            format!("the partly replicated {BACKUP_2} was reported and passed over"),
            skipped,
            if restore.passed_over.is_empty() {
                "nothing was passed over".to_owned()
            } else {
                restore.passed_over.join("; ")
            },
        ));
    }
    checks.push(Check::new(
        "restore-succeeded",
        "the restore command succeeded (exit 0, no object failed)",
        restore.exit_code == 0 && restore.failed == 0,
        format!(
            "exit {}, {} created, {} failed{}",
            restore.exit_code,
            restore.created,
            restore.failed,
            if restore.exit_code == 0 {
                String::new()
            } else {
                format!("; stderr: {stderr}")
            }
        ),
    ));
    checks
}

pub(super) struct Verifier<'a> {
    pub client: &'a kube::Client,
    pub expected: &'a Expected,
    /// The backup that should have been restored.
    pub backup: &'a str,
}

pub(super) struct Verified {
    pub checks: Vec<Check>,
    /// Bytes of the restored volume's files.
    pub volume_bytes: u64,
}

/// A wait that ran out of time is a failed check, not a failed demo.
fn timed_out<T>(r: Result<T, DemoError>) -> Result<Result<T, String>, DemoError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e @ DemoError::Timeout { .. }) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

impl Verifier<'_> {
    async fn get(&self, path: &str) -> Result<Option<Value>, DemoError> {
        app::get(self.client, path).await
    }

    pub async fn run(&self) -> Result<Verified, DemoError> {
        let ns = app::NAMESPACE;
        let mut checks = Vec::new();

        let wanted = [
            (
                "StatefulSet",
                format!(
                    "/apis/apps/v1/namespaces/{ns}/statefulsets/{}",
                    app::STATEFULSET
                ),
            ),
            (
                "Deployment",
                format!(
                    "/apis/apps/v1/namespaces/{ns}/deployments/{}",
                    app::DEPLOYMENT
                ),
            ),
            (
                "Service",
                format!("/api/v1/namespaces/{ns}/services/{}", app::STATEFULSET),
            ),
            (
                "Service",
                format!("/api/v1/namespaces/{ns}/services/{}", app::DEPLOYMENT),
            ),
            (
                "ConfigMap",
                format!("/api/v1/namespaces/{ns}/configmaps/{}", app::CONFIGMAP),
            ),
            (
                "Secret",
                format!("/api/v1/namespaces/{ns}/secrets/{}", app::SECRET),
            ),
        ];
        let mut missing = Vec::new();
        for (kind, path) in &wanted {
            if self.get(path).await?.is_none() {
                missing.push(format!(
                    "{kind} {}",
                    path.rsplit('/').next().unwrap_or_default()
                ));
            }
        }
        checks.push(Check::new(
            "objects",
            format!(
                "StatefulSet, Deployment, 2 Services, ConfigMap and Secret exist in {}",
                SECONDARY.name
            ),
            missing.is_empty(),
            if missing.is_empty() {
                format!("all {} present in namespace {ns}", wanted.len())
            } else {
                format!("missing: {}", missing.join(", "))
            },
        ));

        let cm = self
            .get(&wanted[4].1)
            .await?
            .map(|v| v["data"].clone())
            .unwrap_or_default();
        checks.push(Check::new(
            "configmap",
            format!(
                "ConfigMap values are {}'s (release={}), as the primary had them then",
                self.backup,
                self.expected.configmap["release"].as_str().unwrap_or("?")
            ),
            cm == self.expected.configmap,
            if cm == self.expected.configmap {
                format!("{} values equal", cm.as_object().map_or(0, |m| m.len()))
            } else {
                format!("live {cm}, backed up {}", self.expected.configmap)
            },
        ));
        let secret = self
            .get(&wanted[5].1)
            .await?
            .map(|v| v["data"].clone())
            .unwrap_or_default();
        let keys = self
            .expected
            .secret
            .as_object()
            .map(|m| m.len())
            .unwrap_or(0);
        checks.push(Check::new(
            "secret",
            "Secret values are equal to the primary's",
            secret == self.expected.secret && keys > 0,
            // Values are never printed.
            if secret == self.expected.secret {
                format!("{keys} key(s), every value equal")
            } else {
                "values differ (not shown)".to_owned()
            },
        ));

        let web = self.get(&wanted[3].1).await?.unwrap_or_default();
        let db = self.get(&wanted[2].1).await?.unwrap_or_default();
        let ip = web["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let in_cidr = ip
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.octets()[..2] == [10, 1]);
        checks.push(Check::new(
            "service-addresses",
            format!(
                "Services got addresses of {} ({}); the headless one stayed headless",
                SECONDARY.name, SECONDARY.cidr
            ),
            in_cidr && db["spec"]["clusterIP"] == "None",
            format!("web {ip}, db {}", db["spec"]["clusterIP"]),
        ));

        let (want_sc, old_sc) = (
            app::storage_class(SECONDARY.name),
            app::storage_class(super::PRIMARY.name),
        );
        let sc = self
            .get(&format!("/apis/storage.k8s.io/v1/storageclasses/{want_sc}"))
            .await?;
        let old = self
            .get(&format!("/apis/storage.k8s.io/v1/storageclasses/{old_sc}"))
            .await?;
        let zones = sc
            .as_ref()
            .map(|s| s["allowedTopologies"][0]["matchLabelExpressions"][0]["values"].clone());
        let sts = self.get(&wanted[0].1).await?.unwrap_or_default();
        let template_sc =
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"].clone();
        checks.push(Check::new(
            "storage-class",
            format!(
                "StorageClass mapped {old_sc} → {want_sc}, pinned to {} instead of {}",
                SECONDARY.zone(),
                super::PRIMARY.zone()
            ),
            zones == Some(serde_json::json!([SECONDARY.zone()]))
                && old.is_none()
                && template_sc == want_sc.as_str(),
            format!(
                "{want_sc} {}; {old_sc} {}; claim template uses {template_sc}",
                zones
                    .map(|z| format!("allows {z}"))
                    .unwrap_or_else(|| "missing".into()),
                if old.is_some() {
                    "exists (unmapped)"
                } else {
                    "not created"
                }
            ),
        ));

        let pods = timed_out(app::wait_running(self.client, SETTLE).await)?;
        checks.push(match &pods {
            Ok(p) => Check::new(
                "pods-running",
                "the app's pods are Running",
                true,
                p.iter()
                    .map(|(n, _, node)| format!("{n} on {node}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(e) => {
                let now = app::pods(self.client).await?;
                Check::new(
                    "pods-running",
                    "the app's pods are Running",
                    false,
                    format!(
                        "{e}; pods: {}",
                        now.iter()
                            .map(|(n, ph, _)| format!("{n} {ph}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            }
        });

        let bound = timed_out(app::wait_bound(self.client, SETTLE).await)?;
        let mut volume_bytes = 0;
        match bound {
            Ok(v) => {
                let node_zone = self.pod_zone().await?;
                checks.push(Check::new(
                    "zones",
                    format!("the volume and the db pod are in {}", SECONDARY.zone()),
                    v.zone == SECONDARY.zone()
                        && node_zone == SECONDARY.zone()
                        && v.storage_class == want_sc,
                    format!(
                        "PV {} ({}) in {}, pod {}-0 in {node_zone}",
                        v.pv,
                        v.storage_class,
                        v.zone,
                        app::STATEFULSET
                    ),
                ));
                let (c, bytes) = self.compare(&v).await?;
                volume_bytes = bytes;
                checks.push(c);
            }
            Err(e) => {
                checks.push(Check::new(
                    "zones",
                    format!("the volume and the db pod are in {}", SECONDARY.zone()),
                    false,
                    e.clone(),
                ));
                checks.push(Check::new(
                    "volume-data",
                    "volume data is byte-for-byte the backup's",
                    false,
                    e,
                ));
            }
        }
        Ok(Verified {
            checks,
            volume_bytes,
        })
    }

    async fn pod_zone(&self) -> Result<String, DemoError> {
        let pod = self
            .get(&format!(
                "/api/v1/namespaces/{}/pods/{}-0",
                app::NAMESPACE,
                app::STATEFULSET
            ))
            .await?
            .unwrap_or_default();
        let Some(node) = pod["spec"]["nodeName"].as_str() else {
            return Ok("no node".into());
        };
        let node = self
            .get(&format!("/api/v1/nodes/{node}"))
            .await?
            .unwrap_or_default();
        Ok(node["metadata"]["labels"]["topology.kubernetes.io/zone"]
            .as_str()
            .unwrap_or("unknown zone")
            .to_owned())
    }

    async fn compare(&self, v: &BoundVolume) -> Result<(Check, u64), DemoError> {
        let (want, got) = (self.expected.data.clone(), v.dir.clone());
        let (cmp, stats) = blocking(move || {
            let c = data::compare(&want, &got)
                .map_err(io_err("comparing the restored volume", &got))?;
            let s = data::stats(&got).map_err(io_err("measuring the restored volume", &got))?;
            Ok((c, s))
        })
        .await?;
        let title = "volume data is byte-for-byte the backup's (content, modes, mtimes, symlinks, hard link)";
        let check = if cmp.identical() {
            Check::new(
                "volume-data",
                title,
                true,
                format!(
                    "{} entries, {} bytes compared, all identical",
                    cmp.entries, cmp.bytes
                ),
            )
        } else {
            let more = cmp.difference_count.saturating_sub(cmp.differences.len());
            Check::new(
                "volume-data",
                title,
                false,
                format!(
                    "{} difference(s) in {} ({} files restored):\n{}{}",
                    cmp.difference_count,
                    v.dir.display(),
                    stats.files,
                    cmp.differences.join("\n"),
                    if more > 0 {
                        format!("\n… and {more} more")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        Ok((check, stats.bytes))
    }
}
