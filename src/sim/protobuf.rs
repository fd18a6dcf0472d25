//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), for the kinds
//! kubectl's imperative commands create: since 1.33 generated clients send built-in types as
//! protobuf with no fallback, so `kubectl create namespace|configmap|secret|serviceaccount`
//! needs the server to read them (a real one always does). The envelope is the `k8s\0` magic
//! and a `runtime.Unknown` (typeMeta = 1, raw = 2); the object's fields follow the field
//! numbers of `k8s.io/api`'s `generated.proto`. Other kinds are refused with 415, a documented
//! difference (docs/SIMULATOR.md).

use base64::Engine as _;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// One field of a message: its number and its value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message, in order; None when it does not parse.
fn fields(mut b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let (number, wire) = (key >> 3, key & 7);
        let value = match wire {
            0 => Field::Varint(varint(&mut b)?),
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let (v, rest) = (b.get(..len)?, b.get(len..)?);
                b = rest;
                Field::Bytes(v)
            }
            1 => {
                b = b.get(8..)?;
                continue;
            }
            5 => {
                b = b.get(4..)?;
                continue;
            }
            _ => return None,
        };
        out.push((number, value));
    }
    Some(out)
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn text(b: &[u8]) -> Option<Value> {
    Some(Value::String(std::str::from_utf8(b).ok()?.to_owned()))
}

/// A `map<string, string>` (or `map<string, bytes>`, base64-encoded as JSON has it) entry.
fn entry(b: &[u8], bytes: bool) -> Option<(String, Value)> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(s)) => k = std::str::from_utf8(s).ok()?.to_owned(),
            (2, Field::Bytes(s)) if bytes => {
                v = Value::String(base64::engine::general_purpose::STANDARD.encode(s));
            }
            (2, Field::Bytes(s)) => v = text(s)?,
            _ => {}
        }
    }
    Some((k, v))
}

fn insert_entry(obj: &mut Map<String, Value>, key: &str, b: &[u8], bytes: bool) -> Option<()> {
    let (k, v) = entry(b, bytes)?;
    obj.entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()?
        .insert(k, v);
    Some(())
}

/// ObjectMeta: the fields a create request carries.
fn object_meta(b: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(s)) => _ = m.insert("name".into(), text(s)?),
            (2, Field::Bytes(s)) => _ = m.insert("generateName".into(), text(s)?),
            (3, Field::Bytes(s)) => _ = m.insert("namespace".into(), text(s)?),
            (11, Field::Bytes(s)) => insert_entry(&mut m, "labels", s, false)?,
            (12, Field::Bytes(s)) => insert_entry(&mut m, "annotations", s, false)?,
            (14, Field::Bytes(s)) => m
                .entry("finalizers")
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(text(s)?),
            _ => {} // server-set or not used by imperative creates
        }
    }
    Some(Value::Object(m))
}

/// Decodes a protobuf request body into the JSON object it encodes. Err names why it cannot.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or("the body does not start with the k8s protobuf magic")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (n, f) in fields(unknown).ok_or("a malformed protobuf envelope")? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).ok_or("a malformed typeMeta")? {
                    if let Field::Bytes(s) = f {
                        let s = String::from_utf8_lossy(s).into_owned();
                        match n {
                            1 => api_version = s,
                            2 => kind = s,
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = Some(r),
            _ => {}
        }
    }
    let raw = raw.ok_or("the envelope holds no object")?;
    let obj = object(&api_version, &kind, raw).ok_or_else(|| {
        format!("{kind} ({api_version}) in protobuf is not read by the simulator")
    })?;
    Ok(obj)
}

fn object(api_version: &str, kind: &str, raw: &[u8]) -> Option<Value> {
    let read = matches!(
        kind,
        "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
    );
    if api_version != "v1" || !read {
        return None;
    }
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!("v1"));
    o.insert("kind".into(), json!(kind));
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(s)) => _ = o.insert("metadata".into(), object_meta(s)?),
            ("Namespace", 2, Field::Bytes(s)) => {
                let finalizers: Option<Vec<Value>> = fields(s)?
                    .into_iter()
                    .filter_map(|(n, f)| match (n, f) {
                        (1, Field::Bytes(t)) => Some(text(t)),
                        _ => None,
                    })
                    .collect();
                o.insert("spec".into(), json!({"finalizers": finalizers?}));
            }
            ("ConfigMap", 2, Field::Bytes(s)) => insert_entry(&mut o, "data", s, false)?,
            ("ConfigMap", 3, Field::Bytes(s)) => insert_entry(&mut o, "binaryData", s, true)?,
            ("ConfigMap", 4, Field::Varint(v)) => _ = o.insert("immutable".into(), json!(v != 0)),
            ("Secret", 2, Field::Bytes(s)) => insert_entry(&mut o, "data", s, true)?,
            ("Secret", 3, Field::Bytes(s)) => _ = o.insert("type".into(), text(s)?),
            ("Secret", 4, Field::Bytes(s)) => insert_entry(&mut o, "stringData", s, false)?,
            ("Secret", 5, Field::Varint(v)) => _ = o.insert("immutable".into(), json!(v != 0)),
            ("ServiceAccount", 4, Field::Varint(v)) => {
                _ = o.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            _ => {} // fields lifeboat's users do not set with imperative commands
        }
    }
    Some(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(n << 3 | 2).unwrap()];
        out.push(u8::try_from(bytes.len()).unwrap());
        out.extend_from_slice(bytes);
        out
    }

    fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [field(1, b"v1"), field(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), field(1, &tm), field(2, raw)].concat()
    }

    /// A Secret as `kubectl create secret generic s --from-literal=k=v -n a` sends it.
    #[test]
    fn a_secret_from_kubectl_decodes_to_its_json() {
        let meta = [
            field(1, b"s"),
            field(3, b"a"),
            field(11, &[field(1, b"app"), field(2, b"x")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let obj = decode(&envelope("Secret", &raw)).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": "s", "namespace": "a", "labels": {"app": "x"}},
                   "data": {"k": "dg=="}})
        );
    }

    #[test]
    fn other_kinds_and_garbage_are_refused_with_a_reason() {
        let raw = field(1, &field(1, b"d"));
        assert!(decode(&envelope("Pod", &raw)).unwrap_err().contains("Pod"));
        assert!(decode(b"{}").is_err());
        assert!(decode(&[MAGIC, &[0x0a, 0x50]].concat()).is_err());
    }
}
