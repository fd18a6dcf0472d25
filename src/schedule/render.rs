//! The Kubernetes manifests that run a schedule in its cluster: Namespace, ServiceAccount (AKS
//! workload identity), ClusterRole + binding (read everything, create/delete what backup
//! orchestrates), Role + binding (the `lifeboat-status` ConfigMap and its Events), a ConfigMap
//! with the config and the schedule, and the CronJob. Pure: the caller prints the text.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec as K8sCronJobSpec, JobSpec, JobTemplateSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, Namespace, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::{CONFIG_MOUNT, SCHEDULE_LABEL, Schedule};
use crate::config::{AzureAuth, Cluster, Config, ConfigError, Defaults, LocationKind};

/// The ConfigMap `lifeboat schedule run` and `lifeboat backup` keep the last outcome in.
pub use crate::cluster::status::CONFIGMAP as STATUS_CONFIGMAP;

/// The ClusterRole every schedule's ServiceAccount is bound to.
pub const CLUSTER_ROLE: &str = "lifeboat-backup";
/// The Role (in the schedule's namespace) for the status ConfigMap and its Events.
pub const STATUS_ROLE: &str = "lifeboat-status";
/// The annotation AKS workload identity reads the client id from.
pub const WORKLOAD_IDENTITY_CLIENT_ID: &str = "azure.workload.identity/client-id";
/// The pod label that opts a pod into AKS workload identity.
pub const WORKLOAD_IDENTITY_USE: &str = "azure.workload.identity/use";
/// The uid the container runs as (the distroless `nonroot` user).
const RUN_AS: i64 = 65532;
/// The config file name inside the ConfigMap (and at [`CONFIG_MOUNT`]).
pub const CONFIG_KEY: &str = "lifeboat.yaml";

/// The rendered manifests.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Multi-document YAML, ready for `kubectl apply -f -`.
    pub yaml: String,
    /// Things the operator must do that the manifests cannot (also in the YAML as comments).
    pub notes: Vec<String>,
}

/// Renders the manifests of `schedule` (read from `file`, whose text is `text`) with the parts
/// of `config` it needs. Errors name the schedule file and key, or the config's.
pub fn render(
    schedule: &Schedule,
    file: &str,
    text: &str,
    config: &Config,
) -> Result<Rendered, ConfigError> {
    schedule.check_config(config, file)?;
    let ns = schedule.cron_job.namespace.as_str();
    let sa = schedule.cron_job.service_account.name.as_str();
    let (loc_name, loc) = config.location(schedule.location.as_deref())?;
    let mut notes = Vec::new();
    let mut uses_workload_identity = false;
    match loc.kind() {
        Some(LocationKind::Azure(az)) => match az.auth {
            AzureAuth::WorkloadIdentity => uses_workload_identity = true,
            AzureAuth::ManagedIdentity => {}
            other => notes.push(format!(
                "location {loc_name:?} uses auth {}: the pod needs those credentials; mount them \
                 (e.g. a Secret volume at the configured file path) or switch the location to \
                 workload-identity",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )),
        },
        Some(LocationKind::Local(l)) => notes.push(format!(
            "location {loc_name:?} is a local directory ({}): inside the pod it is on the \
             pod's filesystem (read-only, except /tmp, and lost with the pod); use an azure \
             location for in-cluster schedules",
            l.path.display()
        )),
        None => {}
    }
    let client_id = schedule.cron_job.service_account.client_id.clone();
    if uses_workload_identity && client_id.is_none() {
        return Err(ConfigError::Invalid {
            file: file.to_owned(),
            key_path: "cronJob.serviceAccount.clientId".into(),
            message: format!(
                "missing; location {loc_name:?} uses auth workload-identity, so the \
                 ServiceAccount needs the client id of the identity federated with it"
            ),
        });
    }

    // The pod gets only what this schedule needs, and always talks to the cluster it runs in
    // whatever the operator's config says about reaching it from outside.
    let cluster_name = match config.cluster(schedule.cluster.as_deref())? {
        Some((name, _)) => name.to_owned(),
        None => "in-cluster".to_owned(),
    };
    let in_pod = Config {
        clusters: BTreeMap::from([(
            cluster_name.clone(),
            Cluster {
                in_cluster: true,
                ..Cluster::default()
            },
        )]),
        locations: BTreeMap::from([(loc_name.to_owned(), loc.clone())]),
        restore: BTreeMap::new(),
        defaults: Defaults {
            cluster: Some(cluster_name),
            location: Some(loc_name.to_owned()),
        },
        backup: config.backup.clone(),
        volumes: config.volumes.clone(),
        source: None,
    };
    let config_yaml = serde_yaml_ng::to_string(&in_pod).expect("a config serializes");

    let labels = |component: &str| {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "lifeboat".to_owned()),
            (
                "app.kubernetes.io/component".to_owned(),
                component.to_owned(),
            ),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "lifeboat".to_owned(),
            ),
        ])
    };
    let mut schedule_labels = labels("schedule");
    schedule_labels.insert(SCHEDULE_LABEL.to_owned(), schedule.name.clone());
    let meta = |name: &str, namespaced: bool, labels: BTreeMap<String, String>| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespaced.then(|| ns.to_owned()),
        labels: Some(labels),
        ..ObjectMeta::default()
    };
    let cron_job_name = format!("lifeboat-{}", schedule.name);
    let config_map_name = format!("lifeboat-schedule-{}", schedule.name);
    let binding_name = format!("{CLUSTER_ROLE}-{ns}");

    let mut docs = Documents::default();
    docs.push(
        "Created by `kubectl apply` before the objects in it; a server-side dry run cannot \
         create it, so create it first when dry-running (kubectl create namespace ...).",
        &Namespace {
            metadata: meta(ns, false, labels("namespace")),
            ..Namespace::default()
        },
    );
    let mut sa_meta = meta(sa, true, labels("identity"));
    if let Some(id) = &client_id {
        sa_meta.annotations = Some(BTreeMap::from([(
            WORKLOAD_IDENTITY_CLIENT_ID.to_owned(),
            id.clone(),
        )]));
    }
    docs.push(
        "The identity of the backup pods; with AKS workload identity its client-id \
         annotation names the Azure identity that may write the location.",
        &ServiceAccount {
            metadata: sa_meta,
            ..ServiceAccount::default()
        },
    );
    docs.push(
        "Least privilege for a backup. A backup must read every object to back it up, \
         Secrets included, so get/list/watch on everything is inherent to the job; \
         nothing else is readable-only-by-name here. Writes are limited to what volume \
         backup orchestrates (VolumeSnapshots, PVCs from snapshots, mover Jobs) and \
         pods/exec for backup hooks. No update, patch or delete of application objects.",
        &cluster_role(),
    );
    docs.push(
        "",
        &ClusterRoleBinding {
            metadata: meta(&binding_name, false, labels("rbac")),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: CLUSTER_ROLE.into(),
            },
            subjects: Some(vec![subject(sa, ns)]),
        },
    );
    docs.push(
        "Writes the last outcome to the lifeboat-status ConfigMap and an Event on it, in \
         this namespace only. `create` cannot be limited by name (the name is not known \
         when a create is authorized), the other verbs are.",
        &status_role(ns),
    );
    docs.push(
        "",
        &RoleBinding {
            metadata: meta(STATUS_ROLE, true, labels("rbac")),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: STATUS_ROLE.into(),
            },
            subjects: Some(vec![subject(sa, ns)]),
        },
    );
    let schedule_key = format!("{}.yaml", schedule.name);
    docs.push(
        "The config this schedule needs (its cluster, reached in-cluster, and its \
         location; never secret values) and the schedule file itself.",
        &ConfigMap {
            metadata: meta(&config_map_name, true, schedule_labels.clone()),
            data: Some(BTreeMap::from([
                (CONFIG_KEY.to_owned(), config_yaml),
                (schedule_key, text.to_owned()),
            ])),
            ..ConfigMap::default()
        },
    );
    docs.push(
        &format!(
            "Runs `lifeboat schedule run {}` at {:?}: a backup named {}-<UTC time>, then \
             retention, then the status ConfigMap. Exit codes: 0 ok, 3 warnings, 1 failed.",
            schedule.name, schedule.schedule, schedule.name
        ),
        &cron_job(
            schedule,
            meta(&cron_job_name, true, schedule_labels.clone()),
            &config_map_name,
            schedule_labels,
            client_id.is_some(),
        ),
    );

    let mut yaml = format!(
        "# Rendered by lifeboat {} from {file} (schedule {:?}).\n\
         # Apply: lifeboat schedule render {file} --config lifeboat.yaml | kubectl apply -f -\n",
        env!("CARGO_PKG_VERSION"),
        schedule.name
    );
    for n in &notes {
        yaml.push_str(&comment(&format!("NOTE: {n}")));
    }
    yaml.push_str(&docs.text);
    Ok(Rendered { yaml, notes })
}

/// Multi-document YAML being built.
#[derive(Default)]
struct Documents {
    text: String,
}

impl Documents {
    fn push(&mut self, why: &str, object: &impl Serialize) {
        self.text.push_str("---\n");
        if !why.is_empty() {
            self.text.push_str(&comment(why));
        }
        self.text
            .push_str(&serde_yaml_ng::to_string(object).expect("a manifest serializes"));
    }
}

/// `text` as `# ` lines wrapped at ~96 columns.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 96 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

fn subject(sa: &str, ns: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: sa.into(),
        namespace: Some(ns.into()),
        api_group: None,
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        ..PolicyRule::default()
    }
}

fn cluster_role() -> ClusterRole {
    let read = ["get", "list", "watch"];
    // patch: the lease annotation of temporary objects is renewed while they are in use.
    let orchestrate = ["create", "delete", "get", "list", "watch", "patch"];
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(CLUSTER_ROLE.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "lifeboat".to_owned()),
                ("app.kubernetes.io/component".to_owned(), "rbac".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "lifeboat".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(&["*"], &["*"], &read),
            PolicyRule {
                non_resource_urls: Some(
                    ["/api", "/api/*", "/apis", "/apis/*", "/version"]
                        .map(str::to_owned)
                        .to_vec(),
                ),
                verbs: vec!["get".to_owned()],
                ..PolicyRule::default()
            },
            rule(
                &["snapshot.storage.k8s.io"],
                &["volumesnapshots"],
                &orchestrate,
            ),
            rule(&[""], &["persistentvolumeclaims"], &orchestrate),
            rule(&["batch"], &["jobs"], &orchestrate),
            rule(&[""], &["pods/exec"], &["create"]),
        ]),
        aggregation_rule: None,
    }
}

fn status_role(ns: &str) -> Role {
    let mut by_name = rule(&[""], &["configmaps"], &["get", "update", "patch"]);
    by_name.resource_names = Some(vec![STATUS_CONFIGMAP.to_owned()]);
    Role {
        metadata: ObjectMeta {
            name: Some(STATUS_ROLE.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "lifeboat".to_owned()),
                ("app.kubernetes.io/component".to_owned(), "rbac".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "lifeboat".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        rules: Some(vec![
            rule(&[""], &["configmaps"], &["create"]),
            by_name,
            rule(&[""], &["events"], &["create"]),
        ]),
    }
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn cron_job(
    schedule: &Schedule,
    metadata: ObjectMeta,
    config_map: &str,
    labels: BTreeMap<String, String>,
    workload_identity: bool,
) -> CronJob {
    let cj = &schedule.cron_job;
    let mut pod_labels = labels.clone();
    if workload_identity {
        pod_labels.insert(WORKLOAD_IDENTITY_USE.to_owned(), "true".to_owned());
    }
    let env = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    };
    let container = Container {
        name: "lifeboat".into(),
        image: Some(schedule.image()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["lifeboat".into()]),
        args: Some(
            [
                "schedule",
                "run",
                &schedule.name,
                "--config",
                &format!("{CONFIG_MOUNT}/{CONFIG_KEY}"),
                "--schedules",
                CONFIG_MOUNT,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        env: Some(vec![
            // The status ConfigMap goes to the namespace the pod runs in.
            EnvVar {
                name: "LIFEBOAT_NAMESPACE".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.namespace".into(),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }),
            },
            // The root filesystem is read-only: spool archives and keep caches in /tmp.
            env("TMPDIR", "/tmp"),
            env("HOME", "/tmp"),
        ]),
        resources: Some(ResourceRequirements {
            requests: quantities(&cj.resources.requests),
            limits: quantities(&cj.resources.limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let pod = PodSpec {
        service_account_name: Some(cj.service_account.name.clone()),
        restart_policy: Some("Never".into()),
        // SIGTERM (drain, eviction) makes the backup delete its temporary objects first.
        termination_grace_period_seconds: Some(crate::backup::cleanup::GRACE_PERIOD_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map.into(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    CronJob {
        metadata,
        spec: Some(K8sCronJobSpec {
            schedule: schedule.schedule.clone(),
            time_zone: cj.time_zone.clone(),
            suspend: Some(cj.suspend),
            // Two backups of one schedule at once would race for the same packs and double the
            // load on the API server; a late run waits instead of overlapping.
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(cj.starting_deadline_seconds),
            successful_jobs_history_limit: Some(cj.successful_jobs_history_limit),
            failed_jobs_history_limit: Some(cj.failed_jobs_history_limit),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(cj.backoff_limit),
                    active_deadline_seconds: cj.active_deadline_seconds,
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
        }),
        status: None,
    }
}
