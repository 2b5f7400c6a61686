//! `diff`: which keys changed between two revisions, from the events between them alone. Pure.
//!
//! A key's first event after `R1` says whether it existed at `R1`: a delete means it did, a
//! put keeps its `create_revision` when the key existed (etcd `mvcc/kvstore_txn.go`, `put`), so
//! a put created at or below `R1` means it did. Its last event at or below `R2` says whether it
//! exists at `R2`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stream::segment::{Event, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

/// The keys seen between `from` (exclusive) and the last event observed.
#[derive(Debug, Default)]
pub struct Changes {
    from: i64,
    /// key -> (existed at `from`, exists now, revision of its last event)
    keys: BTreeMap<Vec<u8>, (bool, bool, i64)>,
}

impl Changes {
    pub fn new(from: i64) -> Changes {
        Changes {
            from,
            keys: BTreeMap::new(),
        }
    }

    /// Adds an event of a revision after `from`.
    pub fn observe(&mut self, revision: i64, e: &Event) {
        let present = e.kind == Kind::Put;
        let existed = match e.kind {
            Kind::Delete => true,
            Kind::Put => e.kv.create_revision <= self.from,
        };
        self.keys
            .entry(e.kv.key.clone())
            .and_modify(|k| (k.1, k.2) = (present, revision))
            .or_insert((existed, present, revision));
    }

    /// Each changed key with what happened and the revision of its last change, in key order;
    /// a key created and deleted in between is left out (it is in neither state).
    pub fn finish(self) -> Vec<(Vec<u8>, Change, i64)> {
        self.keys
            .into_iter()
            .filter_map(|(k, (existed, present, rev))| {
                let c = match (existed, present) {
                    (true, true) => Change::Modified,
                    (false, true) => Change::Added,
                    (true, false) => Change::Deleted,
                    (false, false) => return None,
                };
                Some((k, c, rev))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::kv::KeyValue;

    fn ev(kind: Kind, key: &str, create: i64) -> Event {
        Event {
            kind,
            kv: KeyValue {
                key: key.into(),
                create_revision: create,
                ..KeyValue::default()
            },
        }
    }

    #[test]
    fn each_sequence_of_events_is_one_change_or_none() {
        use Kind::{Delete as D, Put as P};
        // From revision 10: (events as (revision, kind, create_revision), expected)
        type Case<'a> = (&'a [(i64, Kind, i64)], Option<Change>);
        let cases: &[Case] = &[
            (&[(11, P, 5)], Some(Change::Modified)),
            (&[(11, P, 11)], Some(Change::Added)),
            (&[(11, P, 11), (12, P, 11)], Some(Change::Added)),
            (&[(11, D, 0)], Some(Change::Deleted)),
            (&[(11, D, 0), (12, P, 12)], Some(Change::Modified)),
            (&[(11, P, 11), (12, D, 0)], None),
            (
                &[(11, P, 3), (12, D, 0), (13, P, 13), (14, D, 0)],
                Some(Change::Deleted),
            ),
        ];
        for (events, want) in cases {
            let mut c = Changes::new(10);
            for &(rev, kind, create) in *events {
                c.observe(rev, &ev(kind, "k", create));
            }
            let got = c.finish();
            assert_eq!(got.first().map(|g| g.1), *want, "{events:?}");
            if let Some(g) = got.first() {
                assert_eq!(g.2, events.last().unwrap().0);
            }
        }
    }
}
