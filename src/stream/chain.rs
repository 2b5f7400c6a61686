//! The rules of a generation, as pure functions: which revision may come next, and why a
//! generation ends. A generation is one unbroken chain of revisions; anything that would
//! leave a revision out, or in twice, ends it.

use std::fmt;

use super::kv::KeyValue;
use super::segment::{Event, Kind, Revision};

/// Why a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// A revision is missing between two we received.
    Gap { after: i64, got: i64 },
    /// A revision came again, or an older one after a newer.
    Backwards { after: i64, got: i64 },
    /// etcd no longer holds the revision to continue from.
    Compacted { wanted: i64, compacted: i64 },
    /// The endpoint answers for another cluster (a restore, or the wrong endpoint).
    ClusterChanged { was: String, now: String },
    /// The segments in the bucket do not reach the revision the generation must continue from.
    BucketGap { reason: String },
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Gap { after, got } => write!(f, "gap: revision {got} arrived after {after}; revisions {} to {} are missing", after + 1, got - 1),
            Break::Backwards { after, got } => write!(f, "revision went backwards: {got} arrived after {after}"),
            Break::Compacted { wanted, compacted } => write!(f, "compacted: etcd compacted its history to revision {compacted}, so the watch cannot continue from {wanted} (the stream was away longer than the compaction interval)"),
            Break::ClusterChanged { was, now } => write!(f, "cluster changed: etcd answers for cluster {now}, the generation follows {was}"),
            Break::BucketGap { reason } => write!(f, "the bucket's segments do not continue the generation: {reason}"),
        }
    }
}

/// Whether revision `got` may follow `after` in a generation. A full-keyspace watch sees every
/// revision: each one is made by a write, and every write yields at least one event.
pub fn follows(after: i64, got: i64) -> Result<(), Break> {
    match got.checked_sub(after) {
        Some(1) => Ok(()),
        Some(d) if d > 1 => Err(Break::Gap { after, got }),
        _ => Err(Break::Backwards { after, got }),
    }
}

/// Groups the events of watch responses into whole revisions. A response holds whole
/// revisions unless etcd fragmented it (a revision larger than its request limit): then the
/// revision is complete only with the last fragment.
#[derive(Debug, Default)]
pub struct Assembler {
    done: Vec<Revision>,
    open: Option<Revision>,
}

impl Assembler {
    /// Takes one response's events; returns the revisions it completed.
    pub fn push(
        &mut self,
        events: impl IntoIterator<Item = (Kind, KeyValue)>,
        fragment: bool,
        received_ms: i64,
    ) -> Vec<Revision> {
        for (kind, kv) in events {
            let rev = kv.mod_revision;
            match &mut self.open {
                Some(r) if r.revision == rev => r.events.push(Event { kind, kv }),
                open => {
                    if let Some(r) = open.take() {
                        self.done.push(r);
                    }
                    *open = Some(Revision {
                        revision: rev,
                        received_ms,
                        events: vec![Event { kind, kv }],
                    });
                }
            }
        }
        if !fragment {
            if let Some(r) = self.open.take() {
                self.done.push(r);
            }
        }
        std::mem::take(&mut self.done)
    }

    /// Whether part of a revision waits for its next fragment.
    /// Takes one watch response of etcd's; returns the revisions it completed.
    pub fn push_response(
        &mut self,
        resp: &etcd_client::WatchResponse,
        received_ms: i64,
    ) -> Vec<Revision> {
        let events = resp.events().iter().filter_map(|e| {
            let kind = match e.event_type() {
                etcd_client::EventType::Put => Kind::Put,
                etcd_client::EventType::Delete => Kind::Delete,
            };
            e.kv().map(|kv| (kind, kv.into()))
        });
        self.push(events, resp.0.fragment, received_ms)
    }

    pub fn pending(&self) -> bool {
        self.open.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: i64, key: &str) -> (Kind, KeyValue) {
        (
            Kind::Put,
            KeyValue {
                key: key.into(),
                mod_revision: rev,
                ..Default::default()
            },
        )
    }

    #[test]
    fn only_the_next_revision_follows() {
        let cases = [
            (10, 11, Ok(())),
            (10, 13, Err(Break::Gap { after: 10, got: 13 })),
            (10, 10, Err(Break::Backwards { after: 10, got: 10 })),
            (10, 3, Err(Break::Backwards { after: 10, got: 3 })),
            (
                i64::MAX,
                i64::MIN,
                Err(Break::Backwards {
                    after: i64::MAX,
                    got: i64::MIN,
                }),
            ),
        ];
        for (after, got, want) in cases {
            assert_eq!(follows(after, got), want, "{after} -> {got}");
        }
        assert!(Break::Gap { after: 10, got: 13 }
            .to_string()
            .contains("revisions 11 to 12 are missing"));
    }

    #[test]
    fn revisions_are_whole_across_fragments() {
        let mut a = Assembler::default();
        let got = a.push([ev(5, "a"), ev(5, "b"), ev(6, "c")], false, 1);
        assert_eq!(
            got.iter()
                .map(|r| (r.revision, r.events.len()))
                .collect::<Vec<_>>(),
            [(5, 2), (6, 1)]
        );
        // A revision in three fragments is returned once, whole, with the last.
        assert!(a.push([ev(7, "a"), ev(7, "b")], true, 2).is_empty());
        assert!(a.pending());
        assert!(a.push([ev(7, "c")], true, 3).is_empty());
        let got = a.push([ev(7, "d")], false, 4);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].revision, got[0].events.len(), got[0].received_ms),
            (7, 4, 2)
        );
        assert!(!a.pending());
        // A progress notification (no events) completes nothing.
        assert!(a.push([], false, 5).is_empty());
    }
}
