//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902) over `serde_json::Value`.

use serde_json::Value;

/// Applies an RFC 7386 merge patch in place: objects merge recursively, `null` deletes, anything
/// else replaces (strategic merge patches of built-ins are treated the same way).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("the root cannot be replaced by a JSON patch operation here".into());
    }
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok((parent.to_string(), unescape(last)))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, last) = split(path)?;
    let container = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("doc is missing path: {parent:?}"))?;
    match container {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("invalid array index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("array index {i} out of bounds"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("cannot add to a scalar at {parent:?}")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path)?;
    let container = doc
        .pointer_mut(&parent)
        .ok_or_else(|| format!("doc is missing path: {path:?}"))?;
    match container {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("unable to remove nonexistent key: {last}: missing value")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of bounds"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove from a scalar at {parent:?}")),
    }
}

/// Applies an RFC 6902 JSON patch, returning the patched document or the reason it failed.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut out = doc.clone();
    for op in ops {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or("operation without \"op\"")?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("operation without \"path\"")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("{kind} operation without \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or(format!("{kind} operation without \"from\""))
        };
        match kind {
            "add" => add(&mut out, path, value()?)?,
            "remove" => {
                remove(&mut out, path)?;
            }
            "replace" => {
                let v = value()?;
                let slot = out
                    .pointer_mut(path)
                    .ok_or_else(|| format!("replace operation does not apply: doc is missing key: {path}: missing value"))?;
                *slot = v;
            }
            "move" => {
                let v = remove(&mut out, from()?)?;
                add(&mut out, path, v)?;
            }
            "copy" => {
                let v = out
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| format!("copy from missing path {path:?}"))?;
                add(&mut out, path, v)?;
            }
            "test" => {
                if out.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_and_deletes() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_patch_operations() {
        let doc = json!({"a": [1, 2], "b": {"c": 1}});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "test", "path": "/b/c", "value": 2},
                {"op": "move", "from": "/b/c", "path": "/d"},
                {"op": "remove", "path": "/a/0"}
            ]),
        )
        .expect("patch applies");
        assert_eq!(out, json!({"a": [2, 3], "b": {}, "d": 2}));
        assert!(json_patch(&doc, &json!([{"op": "remove", "path": "/x"}])).is_err());
    }
}

/// The fields a server-side apply configuration sets, in `managedFields` `FieldsV1` form
/// (`{"f:data": {"f:key": {}}}`); lists are owned as a whole. Identity fields (apiVersion, kind,
/// name, namespace, resourceVersion, uid) are not owned.
pub fn applied_fields(config: &Value) -> Value {
    fn walk(v: &Value, top: bool) -> Value {
        let mut out = serde_json::Map::new();
        if let Value::Object(m) = v {
            for (k, child) in m {
                if top && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                let sub = if k == "metadata" && top {
                    let mut meta = serde_json::Map::new();
                    for keep in ["labels", "annotations"] {
                        if let Some(x) = child.get(keep) {
                            meta.insert(format!("f:{keep}"), walk(x, false));
                        }
                    }
                    Value::Object(meta)
                } else if child.is_object() && child.as_object().is_some_and(|o| !o.is_empty()) {
                    walk(child, false)
                } else {
                    Value::Object(serde_json::Map::new())
                };
                out.insert(format!("f:{k}"), sub);
            }
        }
        Value::Object(out)
    }
    walk(config, true)
}

/// Every owned leaf path of a `FieldsV1` value, as keys.
pub fn field_paths(fields: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() {
            if !prefix.is_empty() {
                out.push(prefix.clone());
            }
            return;
        }
        for (k, child) in m {
            let Some(key) = k.strip_prefix("f:") else {
                continue;
            };
            prefix.push(key.to_string());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// Removes the field at `path` (object keys) if present.
pub fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

#[cfg(test)]
mod apply_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applied_fields_and_paths() {
        let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"a": "b"}}, "data": {"k": "v", "l": "w"}});
        let f = applied_fields(&cfg);
        assert_eq!(
            f,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:data": {"f:k": {}, "f:l": {}}})
        );
        let mut paths = field_paths(&f);
        paths.sort();
        assert_eq!(
            paths,
            vec![
                vec!["data", "k"],
                vec!["data", "l"],
                vec!["metadata", "labels", "a"]
            ]
        );
        let mut obj = cfg.clone();
        remove_path(&mut obj, &["data".to_string(), "l".to_string()]);
        assert_eq!(obj["data"], json!({"k": "v"}));
    }
}
