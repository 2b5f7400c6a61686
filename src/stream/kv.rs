//! etcd's `mvccpb.KeyValue` as protobuf bytes: what a segment stores for each event (the bytes
//! etcd sent, re-encoded field by field in etcd's own order, as it stores them in bbolt), and
//! the way back.
//!
//! Written by hand rather than with a protobuf compiler: six fields, and the reader must treat
//! every byte as hostile (lengths are checked against what is left, nothing is allocated
//! before it is known to be there).

/// One key's state after an event (for a delete: the key and the deleting revision).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// Why bytes are not a `KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadKeyValue {
    #[error("truncated protobuf field")]
    Truncated,
    #[error("varint longer than 10 bytes")]
    LongVarint,
    #[error("field {field} has wire type {wire}, expected {expected}")]
    WireType {
        field: u64,
        wire: u64,
        expected: u64,
    },
    #[error("unsupported wire type {0}")]
    UnknownWire(u64),
}

fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    if !b.is_empty() {
        put_varint(out, field << 3 | 2);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

fn put_int(out: &mut Vec<u8>, field: u64, v: i64) {
    if v != 0 {
        put_varint(out, field << 3);
        put_varint(out, v as u64);
    }
}

impl KeyValue {
    /// The protobuf encoding, fields in number order and zero values left out (what Go's
    /// generated code writes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.key.len() + self.value.len() + 40);
        put_bytes(&mut out, 1, &self.key);
        put_int(&mut out, 2, self.create_revision);
        put_int(&mut out, 3, self.mod_revision);
        put_int(&mut out, 4, self.version);
        put_bytes(&mut out, 5, &self.value);
        put_int(&mut out, 6, self.lease);
        out
    }

    /// Parses protobuf bytes. Unknown fields are skipped, as protobuf readers do (a newer
    /// etcd may add one).
    pub fn decode(mut b: &[u8]) -> Result<KeyValue, BadKeyValue> {
        let mut kv = KeyValue::default();
        while !b.is_empty() {
            let tag = varint(&mut b)?;
            let (field, wire) = (tag >> 3, tag & 7);
            match wire {
                0 => {
                    let v = varint(&mut b)? as i64;
                    match field {
                        2 => kv.create_revision = v,
                        3 => kv.mod_revision = v,
                        4 => kv.version = v,
                        6 => kv.lease = v,
                        1 | 5 => return Err(wrong(field, wire, 2)),
                        _ => {}
                    }
                }
                2 => {
                    let len = varint(&mut b)?;
                    if len > b.len() as u64 {
                        return Err(BadKeyValue::Truncated);
                    }
                    let (bytes, rest) = b.split_at(len as usize);
                    b = rest;
                    match field {
                        1 => kv.key = bytes.to_vec(),
                        5 => kv.value = bytes.to_vec(),
                        2 | 3 | 4 | 6 => return Err(wrong(field, wire, 0)),
                        _ => {}
                    }
                }
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    if b.len() < n {
                        return Err(BadKeyValue::Truncated);
                    }
                    b = &b[n..];
                }
                w => return Err(BadKeyValue::UnknownWire(w)),
            }
        }
        Ok(kv)
    }
}

fn wrong(field: u64, wire: u64, expected: u64) -> BadKeyValue {
    BadKeyValue::WireType {
        field,
        wire,
        expected,
    }
}

fn varint(b: &mut &[u8]) -> Result<u64, BadKeyValue> {
    let mut x = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = b.split_first() else {
            return Err(BadKeyValue::Truncated);
        };
        *b = rest;
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(x);
        }
    }
    Err(BadKeyValue::LongVarint)
}

impl From<&etcd_client::KeyValue> for KeyValue {
    fn from(kv: &etcd_client::KeyValue) -> KeyValue {
        KeyValue {
            key: kv.key().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_what_etcd_stores() {
        let cases = [
            KeyValue::default(),
            KeyValue {
                key: b"/registry/pods/default/a".to_vec(),
                create_revision: 5,
                mod_revision: 9,
                version: 3,
                value: vec![0; 300],
                lease: 0x694d_7f3a_2b1c_0d0e,
            },
            // A delete event: key and revision only.
            KeyValue {
                key: b"k".to_vec(),
                mod_revision: i64::MAX,
                ..Default::default()
            },
            KeyValue {
                key: b"neg".to_vec(),
                lease: -1,
                ..Default::default()
            },
        ];
        for kv in cases {
            assert_eq!(KeyValue::decode(&kv.encode()), Ok(kv.clone()), "{kv:?}");
        }
        // key "foo", create 2, mod 2, version 1, value "bar": as etcd 3.5 stores it in bbolt.
        let etcd = b"\n\x03foo\x10\x02\x18\x02 \x01*\x03bar";
        let kv = KeyValue::decode(etcd).unwrap();
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice()),
            (&b"foo"[..], &b"bar"[..])
        );
        assert_eq!(kv.encode(), etcd);
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let cases: &[(&[u8], BadKeyValue)] = &[
            (b"\x0a", BadKeyValue::Truncated),
            (b"\x0a\xff\xff\xff\xff\x0f", BadKeyValue::Truncated),
            (
                b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                BadKeyValue::LongVarint,
            ),
            (b"\x08\x01", wrong(1, 0, 2)),
            (b"\x12\x00", wrong(2, 2, 0)),
            (b"\x0b", BadKeyValue::UnknownWire(3)),
            (b"\x39\x01\x02", BadKeyValue::Truncated),
        ];
        for (bytes, want) in cases {
            assert_eq!(KeyValue::decode(bytes).as_ref(), Err(want), "{bytes:?}");
        }
        // An unknown field is skipped.
        assert_eq!(
            KeyValue::decode(b"\x3a\x01x\x0a\x01k").unwrap().key,
            b"k".to_vec()
        );
    }
}
