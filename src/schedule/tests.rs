use super::*;

const MINIMAL: &str = "name: nightly\nschedule: \"0 3 * * *\"\n";

fn err(text: &str) -> String {
    Schedule::parse(text, "schedules/x.yaml")
        .expect_err("schedule should be rejected")
        .to_string()
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn minimal_schedule_gets_the_documented_defaults() {
    let s = Schedule::parse(MINIMAL, "nightly.yaml").unwrap();
    assert!(s.volumes);
    assert_eq!(s.cron_job.namespace, "lifeboat");
    assert_eq!(s.cron_job.service_account.name, "lifeboat");
    assert_eq!(s.cron_job.starting_deadline_seconds, 3600);
    assert_eq!(s.retention, RetentionPolicy::default());
    assert_eq!(
        s.image(),
        format!("ghcr.io/lifeboat/lifeboat:{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn shipped_schedules_parse() {
    for name in ["nightly", "hourly-critical", "pre-release"] {
        let s = Schedule::load(&repo_file(&format!("schedules/{name}.yaml")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.name, name);
    }
}

#[test]
fn cron_minute_out_of_range_names_field_and_value() {
    let e = err("name: x\nschedule: \"61 * * * *\"\n");
    assert_eq!(
        e,
        "schedules/x.yaml: schedule: invalid cron \"61 * * * *\": minute 61 out of range (0-59)"
    );
}

#[test]
fn cron_errors_name_each_field() {
    for (expr, want) in [
        ("0 24 * * *", "hour 24 out of range (0-23)"),
        ("0 0 32 * *", "day-of-month 32 out of range (1-31)"),
        ("0 0 * 13 *", "month 13 out of range (1-12)"),
        ("0 0 * * 8", "day-of-week 8 out of range (0-7)"),
        ("0 0 L * *", "day-of-month L: 'L' is not supported"),
        ("0 0 * * 5#2", "day-of-week 5#2: '#' is not supported"),
        ("0 0 * *", "expected 5 fields"),
        ("0 0 0 * * *", "found 6"),
        ("@every 1h", "unknown macro"),
        ("TZ=UTC 0 0 * * *", "cronJob.timeZone"),
        ("x * * * *", "minute \"x\""),
    ] {
        let e = validate_cron(expr).expect_err(expr).to_string();
        assert!(e.contains(want), "{expr}: {e}");
    }
}

#[test]
fn cron_accepts_what_kubernetes_accepts() {
    for expr in [
        "0 3 * * *",
        "*/15 * * * *",
        "0 0 1,15 * MON-FRI",
        "30 2 * JAN-JUN SUN",
        "0 0 ? * WED",
        "@hourly",
        "@midnight",
        "5 4 * * 7",
    ] {
        validate_cron(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    }
}

#[test]
fn malformed_retention_names_the_key() {
    let e = err(&format!("{MINIMAL}retention:\n  keepDaily: 0\n"));
    assert!(
        e.starts_with("schedules/x.yaml: retention.keepDaily: must be at least 1"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}retention:\n  keepDayly: 7\n"));
    assert!(
        e.starts_with("schedules/x.yaml: retention.keepDayly: unknown key `keepDayly`"),
        "{e}"
    );
    assert!(e.contains("line 4"), "{e}");
    let e = err(&format!("{MINIMAL}retention:\n  keepWeekly: -1\n"));
    assert!(
        e.starts_with("schedules/x.yaml: retention.keepWeekly:"),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}retention:\n  ttl: forever\n"));
    assert!(e.starts_with("schedules/x.yaml: retention.ttl:"), "{e}");
}

#[test]
fn other_fields_are_checked() {
    assert!(err("name: Nightly\nschedule: \"@daily\"\n").contains(": name: "));
    assert!(err(&format!("{MINIMAL}ttl: 3x\n")).contains(": ttl: "));
    assert!(
        err(&format!("{MINIMAL}labels:\n  lifeboat.io/schedule: x\n"))
            .contains(": labels.lifeboat.io/schedule: ")
    );
    assert!(
        err(&format!(
            "{MINIMAL}cronJob:\n  startingDeadlineSeconds: 0\n"
        ))
        .contains(": cronJob.startingDeadlineSeconds: ")
    );
    assert!(err(&format!("{MINIMAL}cronJob:\n  nmespace: x\n")).contains("unknown key"));
}

#[test]
fn unquoted_quantities_are_quantities() {
    let s = Schedule::parse(
        &format!("{MINIMAL}cronJob:\n  resources:\n    limits: {{cpu: 2, memory: 1Gi}}\n"),
        "x",
    )
    .unwrap();
    assert_eq!(s.cron_job.resources.limits["cpu"], "2");
    assert_eq!(s.cron_job.resources.limits["memory"], "1Gi");
}

#[test]
fn file_name_must_match_the_schedule_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("weekly.yaml");
    std::fs::write(&p, MINIMAL).unwrap();
    let e = Schedule::load(&p).unwrap_err().to_string();
    assert!(
        e.contains(": name: \"nightly\" differs from the file name"),
        "{e}"
    );
}

#[test]
fn backup_names_and_labels() {
    let s = Schedule::parse(&format!("{MINIMAL}labels: {{tier: gold}}\n"), "x").unwrap();
    let at: jiff::Timestamp = "2026-11-20T03:00:07Z".parse().unwrap();
    assert_eq!(s.backup_name(at), "nightly-20261120-030007");
    let labels = s.backup_labels();
    assert_eq!(labels[SCHEDULE_LABEL], "nightly");
    assert_eq!(labels["tier"], "gold");
}

fn fixture_config() -> Config {
    Config::load(&repo_file("fixtures/lifeboat.yaml")).unwrap()
}

#[test]
fn render_nightly_has_the_pieces() {
    let path = repo_file("schedules/nightly.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let s = Schedule::parse(&text, "schedules/nightly.yaml").unwrap();
    let out = render::render(&s, "schedules/nightly.yaml", &text, &fixture_config()).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&out.yaml)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "CronJob"
        ]
    );
    let sa = &docs[1];
    assert!(
        sa["metadata"]["annotations"][render::WORKLOAD_IDENTITY_CLIENT_ID]
            .as_str()
            .is_some()
    );
    // The ClusterRole writes nothing but what volume backup orchestrates.
    for rule in docs[2]["rules"].as_array().unwrap() {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        for v in &verbs {
            assert!(
                ["get", "list", "watch"].contains(v)
                    || [
                        "volumesnapshots",
                        "persistentvolumeclaims",
                        "jobs",
                        "pods/exec"
                    ]
                    .contains(&resources[0]),
                "unexpected write {v} on {resources:?}"
            );
            // patch only renews the lease annotation of lifeboat's temporary objects.
            assert!(
                *v != "update" && (*v != "patch" || resources[0] != "*"),
                "{v} on {resources:?} in ClusterRole"
            );
        }
    }
    assert!(out.yaml.contains("Secrets included"));
    let cm = &docs[6];
    let cfg = cm["data"]["lifeboat.yaml"].as_str().unwrap();
    let embedded = Config::parse(cfg, "embedded").unwrap();
    assert_eq!(embedded.locations.len(), 1);
    assert!(embedded.clusters.values().all(|c| c.in_cluster));
    assert!(
        cm["data"]["nightly.yaml"]
            .as_str()
            .unwrap()
            .contains("name: nightly")
    );
    let cj = &docs[7]["spec"];
    assert_eq!(cj["concurrencyPolicy"], "Forbid");
    assert_eq!(cj["schedule"], s.schedule.as_str());
    let pod = &cj["jobTemplate"]["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"][render::WORKLOAD_IDENTITY_USE],
        "true"
    );
    let c = &pod["spec"]["containers"][0];
    assert_eq!(
        c["args"],
        serde_json::json!([
            "schedule",
            "run",
            "nightly",
            "--config",
            "/etc/lifeboat/lifeboat.yaml",
            "--schedules",
            "/etc/lifeboat"
        ])
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/tmp")
    );
}

#[test]
fn render_requires_a_client_id_for_workload_identity() {
    let s = Schedule::parse(&format!("{MINIMAL}location: prod\n"), "x.yaml").unwrap();
    let e = render::render(&s, "x.yaml", MINIMAL, &fixture_config())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("x.yaml: cronJob.serviceAccount.clientId: missing"),
        "{e}"
    );
}

#[test]
fn render_refuses_a_read_only_location() {
    let s = Schedule::parse(&format!("{MINIMAL}location: dr\n"), "x.yaml").unwrap();
    let e = render::render(&s, "x.yaml", MINIMAL, &fixture_config())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("x.yaml: location: location \"dr\" is read-only"),
        "{e}"
    );
}

#[test]
fn every_shipped_schedule_renders_with_the_example_config() {
    for name in ["nightly", "hourly-critical", "pre-release"] {
        let file = format!("schedules/{name}.yaml");
        let text = std::fs::read_to_string(repo_file(&file)).unwrap();
        let s = Schedule::parse(&text, &file).unwrap();
        let out = render::render(&s, &file, &text, &fixture_config())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            out.yaml.contains(&format!("name: lifeboat-{name}\n")),
            "{name}"
        );
    }
}
