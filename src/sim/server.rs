//! The HTTP face of the simulated API server: discovery, generic CRUD over the store, watch
//! streams, patches, the status subresource and pod logs.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use futures::SinkExt as _;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::catalogue::ResourceType;
use super::patch;
use super::select::{FieldSelector, LabelSelector};
use super::store::{ApiError, DeleteOptions, SimContext, StoreEvent, WriteOptions, full_form};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) ctx: SimContext,
    pub(crate) requests: Arc<AtomicU64>,
    pub(crate) address: String,
}

/// The router: one fallback handler that parses Kubernetes paths itself, because the API's
/// path grammar (optional namespace, optional subresource) does not fit route patterns well.
pub(crate) fn router(app: App) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(app)
}

const BODY_LIMIT: usize = 64 << 20;

async fn handle(State(app): State<App>, req: Request) -> Response {
    let latency = app.ctx.config.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(t) = app.ctx.config.throttle {
        let n = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if t.every > 0 && n.is_multiple_of(t.every) {
            return error_response(&ApiError::too_many_requests(
                t.retry_after_secs.min(u32::MAX as u64) as u32,
            ));
        }
    }
    if let Some((ns, pod)) = super::exec::exec_target(req.uri().path()) {
        return super::exec::handle(app.ctx.clone(), ns, pod, req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let accept = header_str(&req, header::ACCEPT);
    let content_type = header_str(&req, header::CONTENT_TYPE);
    let body = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    tracing::trace!(%method, %path, %query, "sim api request");
    match route(&app, &method, &path, &query, &accept, &content_type, body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn header_str(req: &Request, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A parsed resource path.
struct Target {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Query parameters the handlers use.
#[derive(Default)]
struct Params {
    watch: bool,
    limit: Option<usize>,
    continue_token: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    resource_version: Option<String>,
    field_manager: Option<String>,
    dry_run: bool,
    bookmarks: bool,
    send_initial_events: bool,
    timeout_seconds: Option<u64>,
    container: Option<String>,
    tail_lines: Option<usize>,
    follow: bool,
    propagation_policy: Option<String>,
}

impl Params {
    /// The parsed `labelSelector` and `fieldSelector`, if given.
    fn selectors(&self) -> Result<(Option<LabelSelector>, Option<FieldSelector>), ApiError> {
        let labels = self
            .label_selector
            .as_deref()
            .map(LabelSelector::parse)
            .transpose()?;
        let fields = self
            .field_selector
            .as_deref()
            .map(FieldSelector::parse)
            .transpose()?;
        Ok((labels, fields))
    }
}

fn parse_params(query: &str) -> Params {
    let mut p = Params::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "watch" => p.watch = v == "true" || v == "1",
            "limit" => p.limit = v.parse().ok(),
            "continue" => p.continue_token = Some(v).filter(|s| !s.is_empty()),
            "labelSelector" => p.label_selector = Some(v).filter(|s| !s.is_empty()),
            "fieldSelector" => p.field_selector = Some(v).filter(|s| !s.is_empty()),
            "resourceVersion" => p.resource_version = Some(v).filter(|s| !s.is_empty()),
            "fieldManager" => p.field_manager = Some(v),
            "dryRun" => p.dry_run = v == "All",
            "allowWatchBookmarks" => p.bookmarks = v == "true",
            "sendInitialEvents" => p.send_initial_events = v == "true",
            "timeoutSeconds" => p.timeout_seconds = v.parse().ok(),
            "container" => p.container = Some(v),
            "tailLines" => p.tail_lines = v.parse().ok(),
            "follow" => p.follow = v == "true",
            "propagationPolicy" => p.propagation_policy = Some(v),
            _ => {}
        }
    }
    p
}

fn not_found_path() -> ApiError {
    let mut e = ApiError::bad_request("the server could not find the requested resource");
    e.code = 404;
    e.reason = "NotFound";
    e
}

#[allow(clippy::too_many_arguments)]
async fn route(
    app: &App,
    method: &Method,
    path: &str,
    query: &str,
    accept: &str,
    content_type: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return Ok(json_response(StatusCode::OK, version_info())),
        ["openapi", ..] => return Err(not_found_path()),
        ["healthz"] | ["readyz"] | ["livez"] => {
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .body(Body::from("ok"))
                .expect("static response"));
        }
        ["api"] => {
            if wants_aggregated(accept) {
                return Ok(aggregated(app, true));
            }
            return Ok(json_response(
                StatusCode::OK,
                json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": app.address}]}),
            ));
        }
        ["apis"] => {
            if wants_aggregated(accept) {
                return Ok(aggregated(app, false));
            }
            return Ok(json_response(StatusCode::OK, group_list(app)));
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => {
            let Some((_, versions)) = served_groups(app).into_iter().find(|(name, _)| name == g)
            else {
                return Err(not_found_path());
            };
            return Ok(json_response(StatusCode::OK, api_group(g, &versions)));
        }
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path()),
    };
    if rest.is_empty() {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        return resource_list(app, group, version).map(|v| json_response(StatusCode::OK, v));
    }
    let target = parse_target(app, group, version, rest)?;
    // A CRD's other served versions: stored at the storage version, shown at the one asked for
    // (the `None` conversion strategy changes only `apiVersion`).
    let converted = (target.rt.version != version)
        .then(|| (target.rt.api_version(), format!("{group}/{version}")));
    let p = parse_params(query);
    let watching = p.watch;
    let r = handle_target(app, method, target, p, content_type, body).await?;
    Ok(match converted {
        Some((stored, shown)) => shown_as(r, stored, shown, watching).await,
        None => r,
    })
}

/// Rewrites the `apiVersion` of the object, or of a list and its items, or of each watch
/// event's object, from `stored` to `shown`.
async fn shown_as(r: Response, stored: String, shown: String, watching: bool) -> Response {
    fn rewrite(v: &mut Value, stored: &str, shown: &str) {
        if v["apiVersion"] == stored {
            v["apiVersion"] = json!(shown);
        }
        if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
            for i in items {
                rewrite(i, stored, shown);
            }
        }
        if let Some(o) = v.get_mut("object") {
            rewrite(o, stored, shown);
        }
    }
    let (parts, body) = r.into_parts();
    if watching {
        let events = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
            let Ok(chunk) = chunk else {
                return Ok::<_, Infallible>(Bytes::new());
            };
            let mut out = Vec::with_capacity(chunk.len());
            for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<Value>(line) {
                    Ok(mut v) => {
                        rewrite(&mut v, &stored, &shown);
                        out.extend(serde_json::to_vec(&v).unwrap_or_default());
                    }
                    Err(_) => out.extend_from_slice(line),
                }
                out.push(b'\n');
            }
            Ok(Bytes::from(out))
        });
        return Response::from_parts(parts, Body::from_stream(events));
    }
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return error_response(&ApiError::internal("converting the response"));
    };
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut v) => {
            rewrite(&mut v, &stored, &shown);
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => bytes,
    };
    Response::from_parts(parts, Body::from(bytes))
}

fn parse_target(app: &App, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let cat = &app.ctx.catalogue;
    // `namespaces/{ns}/{plural}...` unless it is the Namespace's own subresource.
    let (namespace, rest) = match rest {
        ["namespaces", ns, next, tail @ ..]
            if !(tail.is_empty() && matches!(*next, "status" | "finalize")) =>
        {
            (Some(ns.to_string()), [&[*next][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let plural = rest[0];
    let rt = cat
        .find(group, plural)
        .filter(|rt| rt.serves(version))
        .ok_or_else(not_found_path)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(not_found_path());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return Err(not_found_path());
    }
    if let Some(sub) = &subresource
        && !rt.subresources.iter().any(|s| s == sub)
        && !(rt.is("", "Namespace") && sub == "finalize")
    {
        return Err(not_found_path());
    }
    Ok(Target {
        rt,
        namespace,
        name,
        subresource,
    })
}

async fn handle_target(
    app: &App,
    method: &Method,
    t: Target,
    p: Params,
    content_type: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let store = &app.ctx.store;
    let rt = t.rt.clone();
    let ns = t.namespace.as_deref();
    let opts = WriteOptions {
        field_manager: p.field_manager.clone(),
        apply: false,
        dry_run: p.dry_run,
        applied_fields: None,
    };
    match (&t.name, t.subresource.as_deref(), method) {
        (None, None, &Method::GET) if p.watch => watch(app, &rt, ns, &p),
        (None, None, &Method::GET) => list(app, &rt, ns, &p),
        (None, None, &Method::POST) => {
            let obj = parse_body(&body, content_type)?;
            check_kind(&rt, &obj)?;
            let created = store.create_entry(&rt, ns, obj, &opts)?;
            Ok(raw_response(
                StatusCode::CREATED,
                full_form(&rt, &created.0.raw),
            ))
        }
        (None, None, &Method::DELETE) => {
            let (labels, fields) = p.selectors()?;
            let mut deleted = Vec::new();
            for obj in store.list(&rt, ns) {
                if labels.as_ref().is_none_or(|s| s.matches(&obj))
                    && fields.as_ref().is_none_or(|s| s.matches(&obj))
                {
                    let name = obj["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let on = obj["metadata"]["namespace"].as_str().map(str::to_string);
                    if let Ok(v) = store.delete(&rt, on.as_deref(), &name) {
                        deleted.push(v);
                    }
                }
            }
            Ok(json_response(
                StatusCode::OK,
                json!({"kind": rt.list_kind, "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": deleted}),
            ))
        }
        (Some(name), None | Some("status"), &Method::GET) => {
            let e = store
                .get_entry(&rt, ns, name)
                .ok_or_else(|| ApiError::not_found(&rt, name))?;
            Ok(raw_response(StatusCode::OK, full_form(&rt, &e.raw)))
        }
        (Some(name), sub @ (None | Some("status")), &Method::PUT) => {
            let mut obj = parse_body(&body, content_type)?;
            check_kind(&rt, &obj)?;
            let body_name = obj.pointer("/metadata/name").and_then(Value::as_str);
            if body_name.is_some_and(|b| b != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    body_name.unwrap_or_default()
                )));
            }
            obj["metadata"]["name"] = json!(name);
            match ns {
                Some(ns) => obj["metadata"]["namespace"] = json!(ns),
                None => {
                    if let Some(m) = obj["metadata"].as_object_mut() {
                        m.remove("namespace");
                    }
                }
            }
            let v = if sub == Some("status") {
                store.update_status(&rt, obj)?
            } else {
                store.update_with(&rt, obj, &opts)?
            };
            Ok(object_response(StatusCode::OK, &v))
        }
        (Some(name), Some("finalize"), &Method::PUT) => {
            let obj = parse_body(&body, content_type)?;
            let fin = obj
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            let v = store.modify(&rt, ns, name, |cur| {
                cur["spec"]["finalizers"] = fin;
                Ok(())
            })?;
            Ok(object_response(StatusCode::OK, &v))
        }
        (Some(name), sub @ (None | Some("status")), &Method::PATCH) => patch_object(
            app,
            &rt,
            ns,
            name,
            sub == Some("status"),
            &p,
            content_type,
            &body,
        ),
        (Some(name), None, &Method::DELETE) => {
            let v = store.delete_with(&rt, ns, name, &delete_options(&body, &p))?;
            Ok(object_response(StatusCode::OK, &v))
        }
        (Some(name), Some("scale"), &Method::GET) => {
            let obj = store
                .get(&rt, ns, name)
                .ok_or_else(|| ApiError::not_found(&rt, name))?;
            Ok(json_response(StatusCode::OK, scale_of(&obj)))
        }
        (Some(name), Some("scale"), &Method::PUT | &Method::PATCH) => {
            let ct = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let doc = parse_body(&body, "application/json")?;
            let v = store.modify_with(&rt, ns, name, &opts, false, |cur| {
                let mut scale = scale_of(cur);
                if *method == Method::PUT {
                    scale = doc.clone();
                } else if ct == "application/json-patch+json" {
                    scale = patch::json_patch(&scale, &doc)
                        .map_err(|m| ApiError::invalid(&rt, name, "patch", &m))?;
                } else {
                    patch::merge_patch(&mut scale, &doc);
                }
                let replicas = scale
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .filter(|r| *r >= 0)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            &rt,
                            name,
                            "spec.replicas",
                            "Invalid value: must be greater than or equal to 0",
                        )
                    })?;
                cur["spec"]["replicas"] = json!(replicas);
                Ok(())
            })?;
            Ok(json_response(StatusCode::OK, scale_of(&v)))
        }
        (Some(name), Some("log"), &Method::GET) => {
            pod_log(app, ns.unwrap_or("default"), name, &p).await
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// `DeleteOptions` from the body (kubectl, kube) or the query.
fn delete_options(body: &[u8], p: &Params) -> DeleteOptions {
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let policy = doc
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| p.propagation_policy.clone());
    let orphan_flag = doc.get("orphanDependents").and_then(Value::as_bool) == Some(true);
    let pre = |f: &str| {
        doc.pointer(&format!("/preconditions/{f}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    DeleteOptions {
        precondition_uid: pre("uid"),
        precondition_resource_version: pre("resourceVersion"),
        orphan: policy.as_deref() == Some("Orphan") || orphan_flag,
    }
}

/// The `autoscaling/v1 Scale` view of a workload.
fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

fn check_kind(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && k != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the body ({k}) does not match the resource ({})",
            rt.kind
        )));
    }
    Ok(())
}

fn parse_body(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") {
        return super::protobuf::decode(body).map_err(|why| {
            tracing::debug!(%why, "protobuf body not read");
            ApiError::unsupported_media_type(content_type)
        });
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v),
        // YAML bodies (server-side apply, `application/yaml`) are a superset of JSON.
        Err(json_err) => serde_yaml_ng::from_slice::<Value>(body).map_err(|_| {
            ApiError::bad_request(format!(
                "the request body is not valid JSON or YAML: {json_err}"
            ))
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    app: &App,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    name: &str,
    status: bool,
    p: &Params,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let store = &app.ctx.store;
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let apply = ct == "application/apply-patch+yaml";
    let mut opts = WriteOptions {
        field_manager: p.field_manager.clone(),
        apply,
        dry_run: p.dry_run,
        applied_fields: None,
    };
    if apply && p.field_manager.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "PATCH requests with content type application/apply-patch+yaml must include fieldManager",
        ));
    }
    let patch_doc = match ct {
        "application/json-patch+json" => serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid JSON: {e}")))?,
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/apply-patch+yaml" => parse_body(body, "application/json")?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if apply {
        check_kind(rt, &patch_doc)?;
        opts.applied_fields = Some(patch::applied_fields(&patch_doc));
        if store.get_entry(rt, ns, name).is_none() {
            let mut obj = patch_doc.clone();
            obj["metadata"]["name"] = json!(name);
            match store.create_with(rt, ns, obj, &opts) {
                Ok(created) => return Ok(object_response(StatusCode::CREATED, &created)),
                // Someone created it meanwhile: apply to theirs.
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
        }
    }
    let manager = p.field_manager.clone().unwrap_or_default();
    let result = store.modify_with(rt, ns, name, &opts, status, |cur| {
        let want_rv = patch_doc
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if let Some(want) = want_rv
            && cur
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                != Some(want)
        {
            return Err(ApiError::conflict(rt, name));
        }
        let patched = if ct == "application/json-patch+json" {
            patch::json_patch(cur, &patch_doc).map_err(|m| {
                let mut e = ApiError::invalid(rt, name, "patch", &m);
                e.code = 422;
                e
            })?
        } else {
            let mut doc = patch_doc.clone();
            if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            let mut v = cur.clone();
            if apply {
                drop_unapplied(&mut v, &manager, &doc);
            }
            patch::merge_patch(&mut v, &doc);
            v
        };
        *cur = patched;
        Ok(())
    })?;
    Ok(object_response(StatusCode::OK, &result))
}

/// Server-side apply's removal rule: fields this manager applied before but no longer applies,
/// and that no other manager owns, are removed.
fn drop_unapplied(obj: &mut Value, manager: &str, config: &Value) {
    use std::collections::HashSet;
    let mut previous = Vec::new();
    let mut others = HashSet::new();
    let entries = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for e in &entries {
        let paths = patch::field_paths(e.get("fieldsV1").unwrap_or(&Value::Null));
        let mine = e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some("Apply");
        if mine {
            previous.extend(paths);
        } else {
            others.extend(paths);
        }
    }
    let now: HashSet<Vec<String>> = patch::field_paths(&patch::applied_fields(config))
        .into_iter()
        .collect();
    for path in previous {
        if !now.contains(&path) && !others.contains(&path) {
            patch::remove_path(obj, &path);
        }
    }
}

async fn pod_log(app: &App, ns: &str, pod: &str, p: &Params) -> Result<Response, ApiError> {
    let store = &app.ctx.store;
    let rt = app
        .ctx
        .catalogue
        .find("", "pods")
        .ok_or_else(not_found_path)?;
    let obj = store
        .get(&rt, Some(ns), pod)
        .ok_or_else(|| ApiError::not_found(&rt, pod))?;
    let container = match &p.container {
        Some(c) => c.clone(),
        None => obj
            .pointer("/spec/containers/0/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    let path = app.ctx.log_path(ns, pod, &container);
    let follow_rt = rt.clone();
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let bytes = super::store::tail_lines(bytes, p.tail_lines);
            if p.follow {
                return Ok(follow_log(app, follow_rt, ns, pod, path, bytes));
            }
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(bytes))
                .expect("static response"))
        }
        Err(_) => Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
        ))),
    }
}

/// Streams `first`, then whatever the kubelet appends to the log, until the pod ends (or is
/// gone) and the file stops growing, or the client hangs up.
fn follow_log(
    app: &App,
    rt: Arc<ResourceType>,
    ns: &str,
    pod: &str,
    path: std::path::PathBuf,
    first: Vec<u8>,
) -> Response {
    let store = app.ctx.store.clone();
    let shutdown = app.ctx.shutdown.clone();
    let (ns, pod) = (ns.to_string(), pod.to_string());
    let (mut tx, body_rx) = futures::channel::mpsc::channel::<Result<Bytes, Infallible>>(16);
    let mut offset = first.len() as u64;
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        // The kubelet appends to a plain file, so polling its length is the notification.
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            let ended = store.get(&rt, Some(&ns), &pod).is_none_or(|p| {
                matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded" | "Failed")
                )
            });
            let bytes = tokio::fs::read(&path).await.unwrap_or_default();
            if (bytes.len() as u64) > offset {
                let chunk = Bytes::copy_from_slice(&bytes[offset as usize..]);
                offset = bytes.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            } else if ended {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(body_rx))
        .expect("static response")
}

/// The continue token's content; opaque to clients (base64 JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    ns: String,
    name: String,
    /// Unix milliseconds of the first page.
    at: i64,
}

fn list(
    app: &App,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    p: &Params,
) -> Result<Response, ApiError> {
    let store = &app.ctx.store;
    let (labels, fields) = p.selectors()?;
    let after = match &p.continue_token {
        Some(tok) => {
            let t = decode_continue(tok)?;
            let cfg = &app.ctx.config;
            let expired_writes = cfg
                .continue_max_writes
                .is_some_and(|m| store.resource_version().saturating_sub(t.rv) > m);
            let age = jiff::Timestamp::now().as_millisecond() - t.at;
            if expired_writes || age > cfg.continue_ttl.as_millis() as i64 {
                return Err(ApiError::gone(
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            Some((t.ns, t.name))
        }
        None => None,
    };
    let filter = |v: &Value| {
        labels.as_ref().is_none_or(|s| s.matches(v)) && fields.as_ref().is_none_or(|s| s.matches(v))
    };
    // Without selectors no object needs parsing: the page is spliced from cached bytes.
    let selective = labels.is_some() || fields.is_some();
    let filter: Option<&dyn Fn(&Value) -> bool> = if selective { Some(&filter) } else { None };
    let (items, rv, next) = store.list_page(rt, ns, after, p.limit, filter);
    // A continued list keeps the resourceVersion of its first page, as etcd snapshots do.
    let list_rv = match &p.continue_token {
        Some(tok) => decode_continue(tok).map(|t| t.rv).unwrap_or(rv),
        None => rv,
    };
    let cont = next.map(|(ns, name)| {
        let t = ContinueToken {
            rv: list_rv,
            ns,
            name,
            at: match &p.continue_token {
                Some(tok) => decode_continue(tok).map(|t| t.at).unwrap_or(0),
                None => jiff::Timestamp::now().as_millisecond(),
            },
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&t).unwrap_or_default())
    });
    let mut out = Vec::with_capacity(items.iter().map(|b| b.len() + 1).sum::<usize>() + 256);
    out.extend_from_slice(b"{\"kind\":");
    out.extend_from_slice(
        serde_json::to_string(&rt.list_kind)
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b",\"apiVersion\":");
    out.extend_from_slice(
        serde_json::to_string(&rt.api_version())
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b",\"metadata\":{\"resourceVersion\":\"");
    out.extend_from_slice(list_rv.to_string().as_bytes());
    out.push(b'"');
    if let Some(c) = cont {
        out.extend_from_slice(b",\"continue\":\"");
        out.extend_from_slice(c.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"},\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Ok(raw_response(StatusCode::OK, Bytes::from(out)))
}

fn decode_continue(tok: &str) -> Result<ContinueToken, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))
}

fn watch_line(kind: &str, obj: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(obj.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(obj);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn watch(
    app: &App,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    p: &Params,
) -> Result<Response, ApiError> {
    let store = app.ctx.store.clone();
    let (labels, fields) = p.selectors()?;
    let rv_param = p.resource_version.as_deref().unwrap_or("0");
    let from: Option<u64> = match rv_param {
        "0" => None,
        s => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let selective = labels.is_some() || fields.is_some();
    let ns_owned = ns.filter(|_| rt.namespaced).map(str::to_string);
    let matches = {
        let rt = rt.clone();
        let ns = ns_owned.clone();
        move |ev_rt: &ResourceType, obj: &Value| {
            ev_rt.group == rt.group
                && ev_rt.plural == rt.plural
                && ns.as_deref().is_none_or(|n| {
                    obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n)
                })
                && labels.as_ref().is_none_or(|s| s.matches(obj))
                && fields.as_ref().is_none_or(|s| s.matches(obj))
        }
    };
    // Initial state for watches that start "now" (or ask for initial events).
    let mut initial: Vec<Bytes> = Vec::new();
    let start_rv = match from {
        Some(rv) if !p.send_initial_events => rv,
        _ => {
            let filter = |v: &Value| matches(rt, v);
            let filter: Option<&dyn Fn(&Value) -> bool> =
                if selective { Some(&filter) } else { None };
            let (items, rv, _) = store.list_page(rt, ns_owned.as_deref(), None, None, filter);
            initial = items
                .iter()
                .map(|raw| watch_line("ADDED", &full_form(rt, raw)))
                .collect();
            rv
        }
    };
    let (past, mut rx) = match store.watch_from(start_rv) {
        Ok(x) => x,
        Err(_) => {
            // The real server answers 200 and a single ERROR event for a too-old version.
            let st =
                ApiError::gone("Expired", format!("too old resource version: {start_rv}")).status();
            let line = watch_line("ERROR", &serde_json::to_vec(&st).unwrap_or_default());
            return Ok(stream_response(futures::stream::once(async move {
                Ok::<_, Infallible>(line)
            })));
        }
    };
    let (mut tx, body_rx) = futures::channel::mpsc::channel::<Result<Bytes, Infallible>>(256);
    let rt = rt.clone();
    let shutdown = app.ctx.shutdown.clone();
    let bookmarks = p.bookmarks;
    let initial_end = p.send_initial_events;
    let bookmark_every = app.ctx.config.bookmark_interval;
    let timeout = std::time::Duration::from_secs(p.timeout_seconds.unwrap_or(1800).max(1));
    tokio::spawn(async move {
        let bookmark = |rv: u64, end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let obj = json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta});
            watch_line("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
        };
        let line_of =
            |ev: &StoreEvent| watch_line(ev.kind.wire(), &full_form(&ev.resource, &ev.raw));
        let mut last_rv = start_rv;
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        for ev in past {
            last_rv = ev.resource_version;
            if matches(&ev.resource, &ev.object) && tx.send(Ok(line_of(&ev))).await.is_err() {
                return;
            }
        }
        if initial_end && tx.send(Ok(bookmark(last_rv, true))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.resource_version <= last_rv {
                            continue;
                        }
                        last_rv = ev.resource_version;
                        if matches(&ev.resource, &ev.object) && tx.send(Ok(line_of(&ev))).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let st = ApiError::gone("Expired", "watch fell behind; too old resource version").status();
                        let _ = tx.send(Ok(watch_line("ERROR", &serde_json::to_vec(&st).unwrap_or_default()))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(Ok(bookmark(last_rv, false))).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = shutdown.wait() => return,
            }
        }
    });
    Ok(stream_response(body_rx))
}

fn stream_response<S>(s: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(s))
        .expect("static response")
}

fn json_response(code: StatusCode, v: Value) -> Response {
    raw_response(
        code,
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
    )
}

fn object_response(code: StatusCode, v: &Value) -> Response {
    json_response(code, v.clone())
}

fn raw_response(code: StatusCode, b: Bytes) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(b))
        .expect("static response")
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.status(),
    );
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-lifeboat-sim",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Every named group with the versions served in it, most preferred first (a group's types may
/// come from several CRDs).
fn served_groups(app: &App) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for rt in app.ctx.catalogue.all() {
        if rt.group.is_empty() {
            continue;
        }
        let at = match out.iter().position(|(g, _)| *g == rt.group) {
            Some(at) => at,
            None => {
                out.push((rt.group.clone(), Vec::new()));
                out.len() - 1
            }
        };
        for v in &rt.served {
            if !out[at].1.contains(v) {
                out[at].1.push(v.clone());
            }
        }
    }
    for (_, versions) in &mut out {
        super::catalogue::sort_by_priority(versions);
    }
    out
}

/// A group's `APIGroup` document: its versions, the preferred one first.
fn api_group(g: &str, versions: &[String]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": g,
        "versions": gvs, "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null)})
}

fn group_list(app: &App) -> Value {
    let groups: Vec<Value> = served_groups(app)
        .into_iter()
        .map(|(g, versions)| {
            let mut group = api_group(&g, &versions);
            if let Some(o) = group.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            group
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(app: &App, group: &str, version: &str) -> Result<Value, ApiError> {
    let types: Vec<Arc<ResourceType>> = app
        .ctx
        .catalogue
        .all()
        .into_iter()
        .filter(|rt| rt.group == group && rt.serves(version))
        .collect();
    if types.is_empty() {
        return Err(not_found_path());
    }
    let mut resources = Vec::new();
    for rt in &types {
        resources.push(json!({
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": rt.verbs, "shortNames": rt.short_names, "categories": rt.categories,
            "storageVersionHash": "",
        }));
        for sub in &rt.subresources {
            let verbs: &[&str] = if sub == "log" {
                &["get"]
            } else {
                &["get", "patch", "update"]
            };
            let mut r = json!({
                "name": format!("{}/{}", rt.plural, sub), "singularName": "", "namespaced": rt.namespaced,
                "kind": rt.kind, "verbs": verbs,
            });
            if sub == "scale" {
                r["group"] = json!("autoscaling");
                r["version"] = json!("v1");
                r["kind"] = json!("Scale");
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2")
}

/// Aggregated discovery (apidiscovery.k8s.io/v2): every group's resources in one response.
fn aggregated(app: &App, core: bool) -> Response {
    let all = app.ctx.catalogue.all();
    let groups: Vec<(String, Vec<String>)> = if core {
        vec![(String::new(), vec!["v1".to_string()])]
    } else {
        served_groups(app)
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, versions)| {
          let versions: Vec<Value> = versions.iter().map(|v| {
            let resources: Vec<Value> = all
                .iter()
                .filter(|rt| rt.group == *g && rt.serves(v))
                .map(|rt| {
                    let kind = json!({"group": rt.group, "version": v, "kind": rt.kind});
                    let subs: Vec<Value> = rt
                        .subresources
                        .iter()
                        .map(|s| {
                            let verbs: &[&str] = if s == "log" { &["get"] } else { &["get", "patch", "update"] };
                            let kind = if s == "scale" {
                                json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
                            } else {
                                kind.clone()
                            };
                            json!({"subresource": s, "responseKind": kind, "verbs": verbs})
                        })
                        .collect();
                    json!({
                        "resource": rt.plural, "responseKind": kind,
                        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": rt.singular, "verbs": rt.verbs,
                        "shortNames": rt.short_names, "subresources": subs, "categories": rt.categories,
                    })
                })
                .collect();
            json!({"version": v, "resources": resources, "freshness": "Current"})
          }).collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    let mut r = json_response(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    r
}
