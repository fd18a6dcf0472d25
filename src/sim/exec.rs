//! `pods/{name}/exec` over WebSocket (the `v5.channel.k8s.io` / `v4.channel.k8s.io` protocols
//! kube-rs and kubectl speak): what backup hooks use. The simulated kubelet runs no real
//! containers, so an exec runs nothing: it is recorded as an `Exec` Event on the pod (tests
//! read the order of hooks from it) and succeeds, unless the pod's annotation
//! `sim.lifeboat.io/exec-fail` is a substring of the command, which then exits 1 — how tests
//! make a hook fail. `sim.lifeboat.io/exec-duration-ms` makes every exec of the pod take that
//! long, as a real checkpoint does.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use futures::SinkExt;
use http::{StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::controllers::{Kind, Objects};
use super::store::SimContext;

/// Annotation that makes matching execs fail.
pub const EXEC_FAIL: &str = "sim.lifeboat.io/exec-fail";

/// Annotation that makes every exec in the pod take this many milliseconds, as a database
/// checkpoint does: how tests make a backup run long without writing anything.
pub const EXEC_DURATION_MS: &str = "sim.lifeboat.io/exec-duration-ms";

/// Whether `path` is a pod's exec subresource: `(namespace, pod)`.
pub(crate) fn exec_target(path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", pod, "exec"] => {
            Some(((*ns).to_owned(), (*pod).to_owned()))
        }
        _ => None,
    }
}

fn plain(status: StatusCode, message: String) -> Response {
    let code = status.as_u16();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code})
                .to_string(),
        ))
        .expect("static response")
}

/// Handles an exec request: validates it, answers 101 and plays the session on the upgraded
/// connection.
pub(crate) async fn handle(
    ctx: SimContext,
    ns: String,
    pod_name: String,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_owned();
    let mut command = Vec::new();
    let mut container = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "command" => command.push(v.into_owned()),
            "container" => container = Some(v.into_owned()),
            _ => {}
        }
    }
    let objects = Objects::new(&ctx);
    let pod = match objects.get(Kind::Pod, Some(&ns), &pod_name).await {
        Ok(Some(p)) => p,
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("pods \"{pod_name}\" not found"),
            );
        }
    };
    if pod["status"]["phase"] != "Running" {
        return plain(
            StatusCode::BAD_REQUEST,
            format!(
                "cannot exec into a container in a completed or pending pod; current phase is {}",
                pod["status"]["phase"].as_str().unwrap_or("Unknown")
            ),
        );
    }
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match container {
        Some(c) if containers.contains(&c.as_str()) => c,
        Some(c) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("container {c} is not valid for pod {pod_name}"),
            );
        }
        None => containers
            .first()
            .map(|c| (*c).to_owned())
            .unwrap_or_default(),
    };
    if command.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return plain(
            StatusCode::BAD_REQUEST,
            "exec needs a WebSocket upgrade (this simulator speaks no SPDY)".into(),
        );
    };
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let protocol = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.split(',').any(|o| o.trim() == *p));
    let Some(protocol) = protocol else {
        return plain(
            StatusCode::BAD_REQUEST,
            format!("unsupported exec protocols {offered:?}"),
        );
    };

    let joined = command.join(" ");
    let fails = pod["metadata"]["annotations"][EXEC_FAIL]
        .as_str()
        .is_some_and(|needle| !needle.is_empty() && joined.contains(needle));
    let _ = objects
        .event(
            Kind::Pod,
            &pod,
            fails,
            "Exec",
            &format!("exec in container {container}: {joined}"),
            "kubelet",
        )
        .await;
    tracing::info!(pod = %format!("{ns}/{pod_name}"), %container, command = %joined, fails, "sim exec");

    let duration = pod["metadata"]["annotations"][EXEC_DURATION_MS]
        .as_str()
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis);
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Some(d) = duration {
            tokio::time::sleep(d).await; // the simulated command's own run time
        }
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "exec upgrade failed");
                return;
            }
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let frame = |channel: u8, data: &[u8]| {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(channel);
            v.extend_from_slice(data);
            Message::Binary(v.into())
        };
        let status: Value = if fails {
            let _ = ws
                .send(frame(
                    2,
                    format!("{}: simulated failure\n", command[0]).as_bytes(),
                ))
                .await;
            json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                   "message": "command terminated with non-zero exit code: error executing command, exit status 1",
                   "details": {"causes": [{"reason": "ExitCode", "message": "1"}]}})
        } else {
            json!({"metadata": {}, "status": "Success"})
        };
        let _ = ws.send(frame(3, status.to_string().as_bytes())).await;
        let _ = ws.close(None).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .header("sec-websocket-protocol", protocol)
        .body(Body::empty())
        .expect("static response")
}
