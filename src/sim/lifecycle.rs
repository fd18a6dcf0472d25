//! Server-side machinery a real cluster runs beside the API server: CRD establishment, the
//! namespace finalizer and the garbage collector for `ownerReferences`.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::catalogue::ResourceType;
use super::store::{ApiError, EventKind, SimContext};

/// The resource type a CustomResourceDefinition defines (its storage version), if well formed.
pub fn crd_resource_type(crd: &Value) -> Option<ResourceType> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let kind = names.get("kind")?.as_str()?.to_string();
    let versions = spec.get("versions")?.as_array()?;
    let version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| versions.first())?;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut served: Vec<String> = versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .filter_map(|v| str_of(v, "name"))
        .collect();
    super::catalogue::sort_by_priority(&mut served);
    Some(ResourceType {
        group: str_of(spec, "group")?,
        version: str_of(version, "name")?,
        served,
        list_kind: str_of(names, "listKind").unwrap_or_else(|| format!("{kind}List")),
        plural: str_of(names, "plural")?,
        singular: str_of(names, "singular").unwrap_or_else(|| kind.to_ascii_lowercase()),
        short_names: names
            .get("shortNames")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        verbs: super::catalogue::ALL_VERBS
            .iter()
            .map(|v| v.to_string())
            .collect(),
        subresources: if version.pointer("/subresources/status").is_some() {
            vec!["status".to_string()]
        } else {
            Vec::new()
        },
        categories: names
            .get("categories")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        kind,
        custom: true,
        validate: None,
    })
}

/// Returns true if and only if the CRD carries `Established=True`.
pub fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Established")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Marks a CRD established (a status update, so watches see it) and serves its resources.
pub(crate) fn establish(ctx: &SimContext, name: &str) -> Result<(), ApiError> {
    let Some(crd_rt) = ctx
        .catalogue
        .find("apiextensions.k8s.io", "customresourcedefinitions")
    else {
        return Ok(());
    };
    ctx.store.modify_status(&crd_rt, None, name, |crd| {
        if is_established(crd) {
            return Ok(());
        }
        let stored = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let status = &mut crd["status"];
        if !status.is_object() {
            *status = json!({});
        }
        status["storedVersions"] = Value::Array(stored);
        let cond = json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
            "message": "the initial names have been accepted",
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()});
        match status.get_mut("conditions").and_then(Value::as_array_mut) {
            Some(cs) => cs.push(cond),
            None => status["conditions"] = json!([cond]),
        }
        // Serve the resources before the write commits, so whoever sees Established can use
        // them (the store lock is held here; the catalogue's lock nests inside it).
        if let Some(rt) = crd_resource_type(crd) {
            ctx.catalogue.add(rt);
        }
        Ok(())
    })?;
    Ok(())
}

/// Watches CRDs: establishes new ones after the configured delay, keeps the catalogue in step
/// with spec changes, and drops a deleted CRD's resources.
pub(crate) async fn run_crd_controller(ctx: SimContext) {
    let mut rx = ctx.store.subscribe();
    // CRDs that exist before the subscription (a loaded state) get established too.
    establish_pending(&ctx);
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = ctx.shutdown.wait() => return,
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "sim CRD controller lagged; re-checking every CRD"
                );
                establish_pending(&ctx);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if !ev
            .resource
            .is("apiextensions.k8s.io", "CustomResourceDefinition")
        {
            continue;
        }
        let name = ev.name().to_string();
        match ev.kind {
            EventKind::Added => schedule_establish(&ctx, name),
            EventKind::Modified => {
                if is_established(&ev.object)
                    && let Some(rt) = crd_resource_type(&ev.object)
                {
                    ctx.catalogue.add(rt);
                }
            }
            EventKind::Deleted => {
                if let Some(rt) = crd_resource_type(&ev.object) {
                    ctx.catalogue.remove(&rt.group, &rt.plural);
                    ctx.store.drop_table(&rt.group, &rt.plural);
                }
            }
        }
    }
}

fn establish_pending(ctx: &SimContext) {
    let Some(rt) = ctx
        .catalogue
        .find("apiextensions.k8s.io", "customresourcedefinitions")
    else {
        return;
    };
    for crd in ctx.store.list(&rt, None) {
        if !is_established(&crd) {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            schedule_establish(ctx, name.to_string());
        }
    }
}

fn schedule_establish(ctx: &SimContext, name: String) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(ctx.config.crd_established_delay) => {}
            _ = ctx.shutdown.wait() => return,
        }
        if let Err(e) = establish(&ctx, &name) {
            // A CRD deleted before it was established is not an error.
            if !e.is_not_found() {
                tracing::warn!(crd = %name, error = %e, "sim could not establish CRD");
            }
        }
    });
}

/// Periodically finalizes terminating namespaces and collects objects whose owners are gone.
pub(crate) async fn run_collectors(ctx: SimContext) {
    let mut last_rv = 0;
    let mut tick = tokio::time::interval(ctx.config.gc_interval.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.shutdown.wait() => return,
        }
        let rv = ctx.store.resource_version();
        if rv == last_rv {
            continue;
        }
        last_rv = rv;
        finalize_namespaces(&ctx);
        collect_garbage(&ctx);
    }
}

fn finalize_namespaces(ctx: &SimContext) {
    let Some(ns_rt) = ctx.catalogue.find("", "namespaces") else {
        return;
    };
    for ns in ctx.store.list(&ns_rt, None) {
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = ns["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let contents = ctx.store.namespace_contents(&name);
        if contents.is_empty() {
            let r = ctx.store.modify(&ns_rt, None, &name, |ns| {
                ns["spec"]["finalizers"] = json!([]);
                Ok(())
            });
            if let Err(e) = r
                && !e.is_not_found()
            {
                tracing::warn!(namespace = %name, error = %e, "sim could not finalize namespace");
            }
            continue;
        }
        for (rt, obj) in contents {
            // Objects with finalizers stay until their controllers release them.
            let _ = ctx.store.delete(&rt, Some(&name), &obj);
        }
    }
}

fn collect_garbage(ctx: &SimContext) {
    for (rt, ns, name) in ctx.store.orphans() {
        tracing::debug!(kind = %rt.kind, ?ns, %name, "sim garbage collector deletes an object whose owners are gone");
        let _ = ctx.store.delete(&rt, ns.as_deref(), &name);
    }
}
