//! Watches: kube-runtime's watcher, resuming from a resourceVersion, 410 for a too-old one,
//! bookmarks.

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;

use super::{WAIT, start, start_with};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).expect("cm")
}

#[tokio::test]
async fn runtime_watcher_sees_create_update_delete() {
    let sim = start().await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let mut stream = watcher(
        api.clone(),
        watcher::Config::default().labels("watched=yes"),
    )
    .boxed();
    let mut next = async || {
        tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("event in time")
            .expect("watch ok")
            .expect("stream open")
    };
    loop {
        if let watcher::Event::InitDone = next().await {
            break;
        }
    }
    let mut obj = cm("w");
    obj.metadata.labels = Some([("watched".to_string(), "yes".to_string())].into());
    api.create(&PostParams::default(), &cm("unwatched"))
        .await
        .expect("create other");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create");
    match next().await {
        watcher::Event::Apply(c) => {
            assert_eq!(c.metadata.name.as_deref(), Some("w"));
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .expect("patch");
    match next().await {
        watcher::Event::Apply(c) => assert_eq!(c.data.expect("data")["k"], "2"),
        other => panic!("expected Apply, got {other:?}"),
    }
    api.delete("w", &DeleteParams::default())
        .await
        .expect("delete");
    match next().await {
        watcher::Event::Delete(c) => assert_eq!(c.metadata.name.as_deref(), Some("w")),
        other => panic!("expected Delete, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_refuses_too_old_ones() {
    let sim = start_with(|c| c.watch_history = 5).await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let first = api
        .create(&PostParams::default(), &cm("a"))
        .await
        .expect("a");
    let rv = first.metadata.resource_version.clone().expect("rv");
    api.create(&PostParams::default(), &cm("b"))
        .await
        .expect("b");
    // Resuming from a's version replays b's creation.
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let ev = tokio::time::timeout(WAIT, s.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open");
    match ev {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("b")),
        other => panic!("expected Added b, got {other:?}"),
    }
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("n{i}")))
            .await
            .expect("write");
    }
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let ev = tokio::time::timeout(WAIT, s.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open");
    match ev {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_sends_bookmarks_when_asked() {
    let sim = start_with(|c| c.bookmark_interval = std::time::Duration::from_millis(100)).await;
    let api: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let current = api
        .create(&PostParams::default(), &cm("x"))
        .await
        .expect("x");
    let rv = current.metadata.resource_version.expect("rv");
    let mut s = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            },
            &rv,
        )
        .await
        .expect("watch")
        .boxed();
    let ev = tokio::time::timeout(WAIT, s.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open");
    match ev {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}
