//! `list --generations` and `check --max-lag`: what the bucket holds of `stream`, one row per
//! generation, with its continuity (as `wal-g wal-verify` shows a WAL: runs, gaps, overlaps).
//! The summary of a listing is pure; reading the start and end records is the only I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::commands::stream::{start_record, BaseRecord, EndRecord, StartRecord};
use crate::store::stream::{StreamObject, MAX_RECORD};
use crate::store::Store;
use crate::stream::names::{continuity, floor, Generation, Name, Span};
use crate::stream::retention::{Base, View};

/// One generation as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationRow {
    pub generation: String,
    pub cluster_id: Option<String>,
    /// The base backup's object name.
    pub base: Option<String>,
    pub base_revision: Option<i64>,
    /// Later bases inside the generation, by revision.
    pub bases: Vec<i64>,
    /// The newest revision its segments hold (the base's when there are none).
    pub last_revision: Option<i64>,
    pub started: String,
    /// When its newest segment reached the bucket.
    pub last_upload: Option<DateTime<Utc>>,
    pub segments: usize,
    pub bytes: u64,
    /// Why it ended; `None` while it is open.
    pub ended: Option<String>,
    /// Runs, gaps and overlaps of its revisions after the base.
    pub continuity: Vec<Span>,
}

impl GenerationRow {
    /// `ok`, or the first gap or overlap.
    pub fn verdict(&self) -> String {
        if self.base_revision.is_none() {
            return "no start record: not restorable".into();
        }
        match self
            .continuity
            .iter()
            .find(|s| !matches!(s, Span::Ok { .. }))
        {
            None => "ok".into(),
            Some(Span::Gap { first, last }) => format!("gap {first}..{last}"),
            Some(Span::Overlap { first, last }) => format!("overlap {first}..{last}"),
            Some(Span::Ok { .. }) => unreachable!(),
        }
    }
}

/// The rows of the listing `objects`, oldest generation first, given the start and end
/// records read for them.
pub fn summarize(
    objects: &[StreamObject],
    starts: &BTreeMap<Generation, StartRecord>,
    ends: &BTreeMap<Generation, EndRecord>,
) -> Vec<GenerationRow> {
    let mut by: BTreeMap<Generation, Vec<&StreamObject>> = BTreeMap::new();
    for o in objects {
        by.entry(o.name.generation()).or_default().push(o);
    }
    by.into_iter()
        .map(|(g, objects)| {
            let start = starts.get(&g);
            let mut segments = Vec::new();
            let mut bases = Vec::new();
            let mut trims = Vec::new();
            let (mut bytes, mut last_upload) = (0, None);
            for o in &objects {
                match o.name {
                    Name::Segment { first, last, .. } => {
                        segments.push((first, last));
                        bytes += o.size;
                        last_upload = last_upload.max(Some(o.last_modified));
                    }
                    Name::Base { revision, .. } => bases.push(revision),
                    Name::Trimmed { revision, .. } => trims.push(revision),
                    Name::Start(_) | Name::End(_) => {}
                }
            }
            bases.sort();
            let base_revision = start.map(|s| s.base_revision);
            let last = segments.iter().map(|s| s.1).max().or(base_revision);
            GenerationRow {
                generation: g.to_string(),
                cluster_id: start.map(|s| s.cluster_id.clone()),
                base: start.map(|s| s.base.clone()),
                base_revision,
                last_revision: last,
                started: g.0.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                last_upload,
                segments: segments.len(),
                bytes,
                ended: ends.get(&g).map(|e| e.reason.clone()),
                continuity: base_revision
                    .map(|b| continuity(floor(b, &trims), &segments))
                    .unwrap_or_default(),
                bases,
            }
        })
        .collect()
}

/// The generations in the bucket, oldest first.
pub async fn generations(store: &Store) -> anyhow::Result<Vec<GenerationRow>> {
    let objects = store.list_stream().await?;
    let mut starts = BTreeMap::new();
    let mut ends = BTreeMap::new();
    for o in &objects {
        match o.name {
            Name::Start(g) => {
                if let Some(r) = start_record(store, g).await? {
                    starts.insert(g, r);
                }
            }
            Name::End(g) => {
                let body = store.get_stream_object(&o.name, MAX_RECORD).await?;
                match body.map(|b| serde_json::from_slice::<EndRecord>(&b)) {
                    Some(Ok(r)) => {
                        ends.insert(g, r);
                    }
                    Some(Err(e)) => {
                        tracing::warn!("{} is not an end record: {e}", store.stream_url(&o.name));
                        ends.insert(
                            g,
                            EndRecord {
                                reason: "ended (its end record is not readable)".into(),
                                last: 0,
                                ended: o.last_modified,
                            },
                        );
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }
    Ok(summarize(&objects, &starts, &ends))
}

/// What prune needs to know of each generation ([`crate::stream::retention`]): its bases
/// (reading each base record), its segments and when it ended.
pub async fn views(store: &Store) -> anyhow::Result<Vec<View>> {
    let objects = store.list_stream().await?;
    let mut views: BTreeMap<Generation, View> = BTreeMap::new();
    for o in &objects {
        let g = o.name.generation();
        let v = views.entry(g).or_insert_with(|| View {
            generation: g,
            start: None,
            bases: Vec::new(),
            segments: Vec::new(),
            trims: Vec::new(),
            ended: None,
        });
        match o.name {
            Name::Start(_) => {
                v.start = start_record(store, g).await?.map(|r| Base {
                    revision: r.base_revision,
                    key: r.base,
                    taken: r.started,
                    record: None,
                });
            }
            Name::Segment { first, last, .. } => {
                v.segments.push((o.name, first, last, o.last_modified))
            }
            Name::Base { revision, .. } => {
                let body = store.get_stream_object(&o.name, MAX_RECORD).await?;
                match body.map(|b| serde_json::from_slice::<BaseRecord>(&b)) {
                    Some(Ok(r)) if r.revision == revision => v.bases.push(Base {
                        revision,
                        key: r.base,
                        taken: r.taken,
                        record: Some(o.name),
                    }),
                    Some(_) => tracing::warn!(
                        "{} is not a base record of revision {revision}; ignoring it",
                        store.stream_url(&o.name)
                    ),
                    None => {}
                }
            }
            Name::End(_) => v.ended = Some(o.last_modified),
            Name::Trimmed { revision, .. } => v.trims.push(revision),
        }
    }
    Ok(views.into_values().collect())
}

/// What `check --max-lag` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lag {
    pub generation: Option<String>,
    pub last_revision: Option<i64>,
    pub last_upload: Option<DateTime<Utc>>,
    /// Seconds since the newest segment reached the bucket.
    pub age_seconds: Option<i64>,
    pub max_lag_seconds: u64,
    /// Why the stream is behind; `None` when it is not.
    pub problem: Option<String>,
}

/// Judges the newest generation of `rows` at `now`: it must be open, whole, and its newest
/// segment younger than `max_lag`. A cluster always writes (the API server renews leases every
/// few seconds), so a stream that uploads nothing for longer than that is not keeping up.
pub fn lag(rows: &[GenerationRow], now: DateTime<Utc>, max_lag: Duration) -> Lag {
    let newest = rows.last();
    let age = newest
        .and_then(|r| r.last_upload)
        .map(|t| (now - t).num_seconds());
    let problem = match newest {
        None => Some("no stream generation in the bucket: is `etcd-backup stream` running with this BACKUP_BUCKET and BACKUP_PREFIX?".to_string()),
        Some(r) if r.ended.is_some() => Some(format!(
            "the newest generation {} ended ({}) and no new one started: check the stream's log",
            r.generation,
            r.ended.as_deref().unwrap_or_default()
        )),
        Some(r) if r.verdict() != "ok" => Some(format!("generation {}: {}", r.generation, r.verdict())),
        Some(r) if r.last_upload.is_none() => Some(format!("generation {} has no segment yet", r.generation)),
        Some(r) if age.unwrap_or(i64::MAX) > max_lag.as_secs() as i64 => Some(format!(
            "the newest segment of generation {} (up to revision {}) reached the bucket {}s ago, more than --max-lag {}s: check the stream's log and etcd_backup_stream_upload_failures_total",
            r.generation,
            r.last_revision.unwrap_or_default(),
            age.unwrap_or_default(),
            max_lag.as_secs()
        )),
        Some(_) => None,
    };
    Lag {
        generation: newest.map(|r| r.generation.clone()),
        last_revision: newest.and_then(|r| r.last_revision),
        last_upload: newest.and_then(|r| r.last_upload),
        age_seconds: age,
        max_lag_seconds: max_lag.as_secs(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn g(s: i64) -> Generation {
        Generation(t(s))
    }

    fn seg(gen: i64, first: i64, last: i64, at: i64) -> StreamObject {
        StreamObject {
            name: Name::Segment {
                generation: g(gen),
                first,
                last,
                encrypted: false,
            },
            size: 100,
            last_modified: t(at),
        }
    }

    fn start(gen: i64, base: i64) -> (StreamObject, (Generation, StartRecord)) {
        (
            StreamObject {
                name: Name::Start(g(gen)),
                size: 10,
                last_modified: t(gen),
            },
            (
                g(gen),
                StartRecord {
                    cluster_id: "c".into(),
                    base: "b.db.zst".into(),
                    base_revision: base,
                    started: t(gen),
                },
            ),
        )
    }

    #[test]
    fn generations_with_their_continuity_and_the_lag_verdict() {
        let (s0, r0) = start(0, 10);
        let (s1, r1) = start(100, 50);
        let objects = vec![
            s0,
            seg(0, 11, 20, 10),
            seg(0, 24, 30, 20),
            StreamObject {
                name: Name::End(g(0)),
                size: 10,
                last_modified: t(30),
            },
            s1,
            seg(1_00, 51, 60, 110),
            seg(1_00, 61, 70, 120),
            StreamObject {
                name: Name::Base {
                    generation: g(100),
                    revision: 65,
                },
                size: 10,
                last_modified: t(121),
            },
        ];
        let starts = BTreeMap::from([r0, r1]);
        let ends = BTreeMap::from([(
            g(0),
            EndRecord {
                reason: "compacted".into(),
                last: 30,
                ended: t(30),
            },
        )]);
        let rows = summarize(&objects, &starts, &ends);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].verdict(), "gap 21..23");
        assert_eq!(rows[0].ended.as_deref(), Some("compacted"));
        assert_eq!(
            (rows[1].segments, rows[1].bytes, rows[1].last_revision),
            (2, 200, Some(70))
        );
        assert_eq!(rows[1].bases, [65]);
        assert_eq!(rows[1].verdict(), "ok");
        assert_eq!(rows[1].last_upload, Some(t(120)));

        let minute = Duration::from_secs(60);
        let cases: Vec<(&[GenerationRow], i64, Option<&str>)> = vec![
            (&rows, 150, None),
            (&rows, 200, Some("reached the bucket 80s ago")),
            (&rows[..1], 40, Some("ended (compacted)")),
            (&[], 0, Some("no stream generation")),
        ];
        for (rows, now, want) in cases {
            let got = lag(rows, t(now), minute).problem;
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) => {}
                _ => panic!("at {now}: want {want:?}, got {got:?}"),
            }
        }
        // A generation whose start record is missing cannot be restored.
        let rows = summarize(&objects[1..3], &BTreeMap::new(), &BTreeMap::new());
        assert!(rows[0].verdict().starts_with("no start record"));
        assert!(lag(&rows, t(20), minute).problem.is_some());
    }
}
