//! What a Kubernetes value in etcd says about its object: kind, namespace, name, and whether
//! its deletion has begun (`metadata.deletionTimestamp`: a namespace is first updated with it,
//! then emptied, then deleted, so the revision before that update is the one to go back to).
//!
//! The API server stores objects as protobuf behind the `k8s\0` magic (a `runtime.Unknown`:
//! field 1 `TypeMeta{apiVersion 1, kind 2}`, field 2 the object, whose field 1 is `ObjectMeta`
//! with `name` 1, `namespace` 3, `deletionTimestamp` 9; k8s.io/apimachinery
//! `runtime/generated.proto`, `apis/meta/v1/generated.proto`), or as JSON (CRDs). Values the
//! API server encrypted (`k8s:enc:`) stay opaque. Every byte is untrusted: a field that does
//! not parse makes the value `Other`, never an error.

use serde::Serialize;

/// What a value is, as far as we can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Decoded {
    Object(Object),
    /// Encrypted at rest by the API server, with the provider named in the prefix.
    Encrypted {
        provider: String,
    },
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Object {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `metadata.deletionTimestamp` is set: the object is being deleted.
    pub deleting: bool,
}

const MAGIC: &[u8] = b"k8s\0";
const ENCRYPTED: &[u8] = b"k8s:enc:";

pub fn decode(value: &[u8]) -> Decoded {
    if let Some(rest) = value.strip_prefix(ENCRYPTED) {
        let provider = rest.split(|&b| b == b':').next().unwrap_or_default();
        return Decoded::Encrypted {
            provider: String::from_utf8_lossy(provider).into_owned(),
        };
    }
    let decoded = match value.strip_prefix(MAGIC) {
        Some(pb) => protobuf(pb),
        None => json(value),
    };
    decoded.map_or(Decoded::Other, Decoded::Object)
}

fn protobuf(b: &[u8]) -> Option<Object> {
    let mut o = Object::default();
    let (mut raw, mut seen_type) = (None, false);
    for (field, v) in Fields(b) {
        match (field?, v) {
            (1, Value::Bytes(t)) => {
                seen_type = true;
                for (f, v) in Fields(t) {
                    if let (2, Value::Bytes(kind)) = (f?, v) {
                        o.kind = String::from_utf8(kind.to_vec()).ok()?;
                    }
                }
            }
            (2, Value::Bytes(r)) => raw = Some(r),
            _ => {}
        }
    }
    let raw = raw.filter(|_| seen_type)?;
    for (f, v) in Fields(raw) {
        if let (1, Value::Bytes(meta)) = (f?, v) {
            for (f, v) in Fields(meta) {
                match (f?, v) {
                    (1, Value::Bytes(n)) => o.name = String::from_utf8(n.to_vec()).ok()?,
                    (3, Value::Bytes(n)) => o.namespace = String::from_utf8(n.to_vec()).ok()?,
                    (9, Value::Bytes(_)) => o.deleting = true,
                    _ => {}
                }
            }
            return Some(o);
        }
    }
    None
}

fn json(b: &[u8]) -> Option<Object> {
    if b.first() != Some(&b'{') {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(b).ok()?;
    let meta = v.get("metadata")?;
    let s = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("").to_string();
    Some(Object {
        kind: s(v.get("kind")),
        namespace: s(meta.get("namespace")),
        name: s(meta.get("name")),
        deleting: meta.get("deletionTimestamp").is_some_and(|d| !d.is_null()),
    })
}

enum Value<'a> {
    Int,
    Bytes(&'a [u8]),
}

/// The fields of a protobuf message: `Some(number)` and its value, or `None` (then the end)
/// where the bytes do not parse.
struct Fields<'a>(&'a [u8]);

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut x = 0u64;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some(x);
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = (Option<u64>, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let mut b = self.0;
        let parsed = (|| {
            let key = varint(&mut b)?;
            let v = match key & 7 {
                0 => varint(&mut b).map(|_| Value::Int)?,
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    b = b.get(n..)?;
                    Value::Int
                }
                2 => {
                    let n = usize::try_from(varint(&mut b)?).ok()?;
                    let (v, rest) = (b.get(..n)?, b.get(n..)?);
                    b = rest;
                    Value::Bytes(v)
                }
                _ => return None,
            };
            Some((key >> 3, v))
        })();
        match parsed {
            Some((field, v)) => {
                self.0 = b;
                Some((Some(field), v))
            }
            None => {
                self.0 = &[];
                Some((None, Value::Int))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, n: u8, b: &[u8]) {
        out.push(n << 3 | 2);
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }

    fn namespace(deleting: bool) -> Vec<u8> {
        let mut meta = Vec::new();
        field(&mut meta, 1, b"prod");
        field(&mut meta, 5, b"uid-1");
        if deleting {
            let mut ts = vec![0x08, 0x90, 0x4e];
            ts.truncate(3);
            field(&mut meta, 9, &ts);
        }
        let mut object = Vec::new();
        field(&mut object, 1, &meta);
        let mut typ = Vec::new();
        field(&mut typ, 1, b"v1");
        field(&mut typ, 2, b"Namespace");
        let mut v = MAGIC.to_vec();
        field(&mut v, 1, &typ);
        field(&mut v, 2, &object);
        v
    }

    #[test]
    fn values_decode_as_the_api_server_writes_them() {
        let ns = |deleting| {
            Decoded::Object(Object {
                kind: "Namespace".into(),
                namespace: "".into(),
                name: "prod".into(),
                deleting,
            })
        };
        assert_eq!(decode(&namespace(false)), ns(false));
        assert_eq!(decode(&namespace(true)), ns(true));
        let json = br#"{"kind":"Widget","metadata":{"name":"w","namespace":"a","deletionTimestamp":"2026-12-04T10:00:00Z"}}"#;
        assert_eq!(
            decode(json),
            Decoded::Object(Object {
                kind: "Widget".into(),
                namespace: "a".into(),
                name: "w".into(),
                deleting: true
            })
        );
        assert_eq!(
            decode(b"k8s:enc:aescbc:v1:key1:\x01\x02"),
            Decoded::Encrypted {
                provider: "aescbc".into()
            }
        );
        assert_eq!(decode(b"plain text"), Decoded::Other);
    }

    #[test]
    fn truncated_and_garbled_values_are_other_never_a_panic() {
        let v = namespace(true);
        for n in 0..v.len() {
            let _ = decode(&v[..n]);
            let mut bad = v.clone();
            bad[n] ^= 0xff;
            let _ = decode(&bad);
        }
        assert_eq!(decode(&v[..v.len() - 3]), Decoded::Other);
    }
}
