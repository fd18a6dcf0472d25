//! A backup against an API server behind a fault-injecting proxy (issue 15 item 1): 5 % of
//! requests answered 500 and 5 % 429 with Retry-After, seeded. Every backup either holds every
//! object a direct backup holds, or is PartiallyFailed and names what it lacks.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lifeboat::repo::{BackupName, RepoReader};
use lifeboat::storage::Writer;
use lifeboat::storage::local::LocalBackend;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::restore::Regions;
use crate::support::{lifeboat, stderr};

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

/// What the proxy did.
#[derive(Default)]
struct Counts {
    forwarded: u64,
    failed_500: u64,
    throttled_429: u64,
}

fn status(code: StatusCode, message: &str, retry_after: bool) -> Response<Body> {
    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "code": code.as_u16()})
    .to_string();
    let mut r = Response::builder()
        .status(code)
        .header("content-type", "application/json");
    if retry_after {
        r = r.header("retry-after", "1");
    }
    r.body(
        http_body_util::Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

/// Starts the proxy in front of `upstream` (`host:port`); returns its address.
async fn fault_proxy(upstream: String, seed: u64, counts: Arc<Mutex<Counts>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let rng = Arc::new(Mutex::new(crate::volumes::dataset::Rng::new(seed)));
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let (upstream, rng, counts) = (upstream.clone(), rng.clone(), counts.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (upstream, rng, counts) = (upstream.clone(), rng.clone(), counts.clone());
                    async move {
                        let roll = rng.lock().unwrap().below(100);
                        if roll < 5 {
                            counts.lock().unwrap().failed_500 += 1;
                            return Ok::<_, hyper::Error>(status(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "injected: etcdserver: request timed out",
                                false,
                            ));
                        }
                        if roll < 10 {
                            counts.lock().unwrap().throttled_429 += 1;
                            return Ok(status(
                                StatusCode::TOO_MANY_REQUESTS,
                                "injected: too many requests, please try again later",
                                true,
                            ));
                        }
                        counts.lock().unwrap().forwarded += 1;
                        let stream = TcpStream::connect(&upstream)
                            .await
                            .expect("the simulator answers");
                        let (mut sender, conn) =
                            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                        tokio::spawn(conn);
                        let res = sender.send_request(req).await?;
                        Ok(res.map(|b| b.boxed()))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service)
                    .await;
            });
        }
    });
    addr
}

/// `(group, plural, namespace, name)` of every object of backup `name`, without the volumes
/// and snapshot contents of lifeboat's own temporary claims (released asynchronously by the
/// cluster after a backup, so one backup may still see the previous one's).
async fn objects(dir: &std::path::Path, name: &str) -> BTreeSet<(String, String, String, String)> {
    let store = Writer::new(Arc::new(LocalBackend::new(dir.join("repo")))).reader();
    let repo = RepoReader::open(store).await.unwrap();
    let m = repo
        .manifest(&BackupName::new(name).unwrap())
        .await
        .unwrap();
    repo.resources(&m)
        .await
        .unwrap()
        .into_iter()
        .filter(|o| {
            let temporary = |p: &str| {
                o.object
                    .pointer(p)
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with("lifeboat-"))
            };
            !temporary("/spec/claimRef/name") && !temporary("/spec/volumeSnapshotRef/name")
        })
        .map(|o| (o.group, o.plural, o.namespace, o.name))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_through_a_flaky_api_server_hold_every_object_or_name_what_they_lack() {
    let regions = Regions::new().await;
    let dir = regions.path();
    let direct = lifeboat(dir, &["backup", "--name", "direct", "-o", "json"]);
    assert_eq!(direct.status.code(), Some(0), "{}", stderr(&direct));
    let all = objects(dir, "direct").await;

    let counts = Arc::new(Mutex::new(Counts::default()));
    let upstream = regions
        .primary
        .cluster
        .url()
        .trim_start_matches("http://")
        .to_owned();
    let proxy = fault_proxy(upstream.clone(), 0x1505, counts.clone()).await;
    let kubeconfig = std::fs::read_to_string(regions.primary.cluster.kubeconfig_path())
        .unwrap()
        .replace(&upstream, &proxy);
    std::fs::write(dir.join("flaky.kubeconfig"), kubeconfig).unwrap();
    let config = std::fs::read_to_string(dir.join("lifeboat.yaml")).unwrap();
    let flaky = dir.join("flaky.kubeconfig");
    std::fs::write(
        dir.join("lifeboat.yaml"),
        config.replace(
            &format!("{:?}", regions.primary.cluster.kubeconfig_path()),
            &format!("{flaky:?}"),
        ),
    )
    .unwrap();

    let (mut completed, mut partial) = (0, 0);
    for i in 0..10 {
        let name = format!("flaky-{i}");
        let out = lifeboat(dir, &["backup", "--name", &name, "-o", "json"]);
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("backup {i}: one JSON document\n{}", stderr(&out)));
        match (out.status.code(), doc["status"].as_str()) {
            (Some(0), Some("Completed")) => {
                let got = objects(dir, &name).await;
                let missing: Vec<_> = all.difference(&got).collect();
                assert!(
                    missing.is_empty(),
                    "backup {i} is Completed but lacks {missing:?}"
                );
                let volumes = doc["volumes"].as_array().unwrap();
                assert!(volumes.iter().all(|v| v["status"] == "completed"), "{doc}");
                completed += 1;
            }
            (Some(3), Some("PartiallyFailed")) => {
                // What it lacks is named: the resource (or group) of every missing object, and
                // every volume that failed, with why.
                let warnings = doc["warnings"].to_string();
                let got = objects(dir, &name).await;
                for (group, plural, ns, n) in all.difference(&got) {
                    assert!(
                        warnings.contains(plural.as_str())
                            || (!group.is_empty() && warnings.contains(group.as_str())),
                        "backup {i} lacks {group}/{plural} {ns}/{n} without naming it: {warnings}"
                    );
                }
                for v in doc["volumes"].as_array().unwrap() {
                    assert!(
                        v["status"] == "completed"
                            || v["error"].as_str().is_some_and(|e| !e.is_empty()),
                        "{v}"
                    );
                }
                partial += 1;
            }
            other => panic!("backup {i}: {other:?}\n{doc}\n{}", stderr(&out)),
        }
    }
    let (forwarded, failed_500, throttled_429) = {
        let c = counts.lock().unwrap();
        (c.forwarded, c.failed_500, c.throttled_429)
    };
    eprintln!(
        "through the proxy: {} forwarded, {} answered 500, {} answered 429; {completed} Completed, {partial} PartiallyFailed",
        forwarded, failed_500, throttled_429
    );
    assert!(failed_500 > 0 && throttled_429 > 0, "faults were injected");
    regions.primary.cluster.shutdown().await.unwrap();
    regions.secondary.cluster.shutdown().await.unwrap();
}
