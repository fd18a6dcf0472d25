use super::*;

fn err(text: &str) -> String {
    Config::parse(text, "lifeboat.yaml")
        .expect_err("config should be rejected")
        .to_string()
}

#[test]
fn example_config_in_fixtures_parses() {
    let cfg = Config::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/lifeboat.yaml"
    )))
    .unwrap();
    assert!(cfg.locations.contains_key("dr"));
    assert!(cfg.restore.contains_key("secondary"));
    let dr = &cfg.locations["dr"];
    assert!(dr.read_only);
    let az = dr.azure.as_ref().unwrap();
    assert_eq!(az.endpoint, Endpoint::Secondary);
    assert_eq!(az.auth, AzureAuth::WorkloadIdentity);
}

#[test]
fn unknown_auth_value_names_key_path_and_choices() {
    let e = err(
        "locations:\n  dr:\n    azure:\n      account: acct\n      container: backups\n      auth: key\n",
    );
    assert!(
        e.starts_with("lifeboat.yaml: locations.dr.azure.auth: unknown value `key`"),
        "{e}"
    );
    assert!(e.contains("account-key"), "{e}");
    assert!(e.contains("line 6"), "{e}");
}

#[test]
fn unknown_key_is_rejected_with_its_path() {
    let e = err("locations:\n  main:\n    local:\n      path: /tmp/x\n      pth: y\n");
    assert!(e.contains("locations.main.local"), "{e}");
    assert!(e.contains("unknown key `pth`"), "{e}");
}

#[test]
fn location_needs_exactly_one_kind() {
    assert!(err("locations:\n  a: {}\n").contains("locations.a: no kind"));
    let both = err(
        "locations:\n  a:\n    local: { path: /x }\n    azure: { account: acct, container: abc, auth: sas }\n",
    );
    assert!(
        both.contains("locations.a: both `local` and `azure`"),
        "{both}"
    );
}

#[test]
fn azure_names_are_checked() {
    let e = err("locations:\n  a:\n    azure: { account: Bad_Name, container: abc, auth: sas }\n");
    assert!(e.contains("locations.a.azure.account"), "{e}");
    let e = err("locations:\n  a:\n    azure: { account: acct, container: A, auth: sas }\n");
    assert!(e.contains("locations.a.azure.container"), "{e}");
    let e = err(
        "locations:\n  a:\n    azure: { account: acct, container: abc, auth: sas, sasToken: {} }\n",
    );
    assert!(
        e.contains("locations.a.azure.sasToken: expected exactly one"),
        "{e}"
    );
}

#[test]
fn endpoint_accepts_primary_secondary_and_urls_only() {
    let ok = Config::parse(
        "locations:\n  a:\n    azure: { account: acct, container: abc, auth: sas, endpoint: 'http://127.0.0.1:10000/acct-secondary' }\n",
        "f",
    )
    .unwrap();
    let a = ok.locations["a"].azure.as_ref().unwrap();
    assert!(a.endpoint.is_secondary("acct"));
    assert_eq!(
        a.endpoint.account_url("acct"),
        "http://127.0.0.1:10000/acct-secondary"
    );
    assert_eq!(
        Endpoint::Secondary.account_url("acct"),
        "https://acct-secondary.blob.core.windows.net"
    );
    let e = err(
        "locations:\n  a:\n    azure: { account: acct, container: abc, auth: sas, endpoint: tertiary }\n",
    );
    assert!(e.contains("locations.a.azure.endpoint"), "{e}");
}

#[test]
fn restore_profile_references_are_checked() {
    let e = err(
        "clusters:\n  b: { context: b }\nlocations:\n  l: { local: { path: /x } }\nrestore:\n  s: { cluster: a, from: l }\n",
    );
    assert!(
        e.contains("restore.s.cluster: unknown cluster \"a\"; expected one of: b"),
        "{e}"
    );
    let e = err(
        "clusters:\n  b: { context: b }\nlocations:\n  l: { local: { path: /x } }\nrestore:\n  s: { cluster: b, from: m }\n",
    );
    assert!(e.contains("restore.s.from: unknown location \"m\""), "{e}");
}

#[test]
fn relative_local_paths_resolve_against_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lifeboat.yaml");
    std::fs::write(&file, "locations:\n  l: { local: { path: repo } }\n").unwrap();
    let cfg = Config::load(&file).unwrap();
    assert_eq!(
        cfg.locations["l"].local.as_ref().unwrap().path,
        dir.path().join("repo")
    );
}

#[test]
fn default_location_is_the_only_one_or_named() {
    let cfg = Config::embedded_default();
    assert_eq!(cfg.location(None).unwrap().0, DEFAULT_LOCATION);
    let two = Config::parse(
        "locations:\n  a: { local: { path: /a } }\n  b: { local: { path: /b } }\n",
        "f",
    )
    .unwrap();
    let e = two.location(None).unwrap_err().to_string();
    assert!(e.contains("pass --location NAME (one of a, b)"), "{e}");
    assert_eq!(two.location(Some("b")).unwrap().0, "b");
    assert!(
        two.location(Some("c"))
            .unwrap_err()
            .to_string()
            .contains("unknown location \"c\"")
    );
}
