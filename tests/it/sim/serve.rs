//! `lifeboat sim serve`: prints the kubeconfig path and URL, serves until SIGTERM, then saves
//! its state and exits 0; a restart on the same state dir has the objects.

use std::path::Path;
use std::process::Stdio;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::WAIT;

struct Served {
    child: tokio::process::Child,
    client: kube::Client,
}

async fn serve(state: &Path, kubeconfig: &Path) -> Served {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["sim", "serve", "--name", "served", "--port", "0", "--state"])
        .arg(state)
        .arg("--kubeconfig-out")
        .arg(kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lifeboat sim serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut read = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("output in time")
            .expect("read")
            .expect("a line")
    };
    let first = read().await;
    let second = read().await;
    assert_eq!(first, format!("kubeconfig: {}", kubeconfig.display()));
    let url = second.strip_prefix("url: ").expect("url line").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    lifeboat::sim::install_crypto_provider();
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let opts = kube::config::KubeConfigOptions {
        context: Some("served".into()),
        ..Default::default()
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("context");
    assert_eq!(cfg.cluster_url.to_string().trim_end_matches('/'), url);
    Served {
        child,
        client: kube::Client::try_from(cfg).expect("client"),
    }
}

async fn terminate(mut s: Served) {
    let pid = s.child.id().expect("running").to_string();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(WAIT, s.child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn serve_prints_its_address_stops_on_sigterm_and_keeps_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let served = serve(&state, &kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(served.client.clone(), "default");
    let c: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kept"}})).expect("cm");
    api.create(&PostParams::default(), &c)
        .await
        .expect("create");
    terminate(served).await;

    let served = serve(&state, &kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(served.client.clone(), "default");
    api.get("kept").await.expect("kept across restarts");
    terminate(served).await;
}
