//! What the bucket holds of `stream`, one row per generation, with its continuity (as `wal-g
//! wal-verify` shows a WAL: runs, gaps, overlaps), and the verdict of `check --max-lag`. Pure
//! functions of a [`StreamView`]: `list --generations` and `check --max-lag` read it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::names::Span;
use super::records::{GenerationView, StreamView};
use crate::sign::VerifyKeys;

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
    /// The revisions a restore can reach: from the base it counts from to the last before
    /// its first gap.
    pub restorable_from: Option<i64>,
    pub restorable_to: Option<i64>,
    /// Its start record's signature: "ok" (it passed BACKUP_VERIFY_KEY), "BAD" (it did not),
    /// "no" (not signed), "unchecked" (signed, no key to check it), "-" (no start record).
    pub signed: String,
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

/// The signature column of a start record.
fn signed(v: &GenerationView, keys: Option<&VerifyKeys>) -> &'static str {
    let Some(vouch) = v.start_vouch.as_ref().filter(|_| v.start.is_some()) else {
        return "-";
    };
    match (keys, vouch.signature.is_some()) {
        (None, true) => "unchecked",
        (_, false) => "no",
        (Some(keys), true) => match vouch.check(keys) {
            Some(Ok(_)) => "ok",
            _ => "BAD",
        },
    }
}

/// The rows of `view`, oldest generation first; with `keys`, each start record's signature
/// checked.
pub fn summarize(view: &StreamView, keys: Option<&VerifyKeys>) -> Vec<GenerationRow> {
    view.generations
        .iter()
        .map(|v| {
            let start = v.start.as_ref();
            let restorable = v.restorable();
            GenerationRow {
                generation: v.generation.to_string(),
                cluster_id: start.map(|s| s.cluster_id.clone()),
                base: start.map(|s| s.base.clone()),
                base_revision: start.map(|s| s.base_revision),
                bases: v.bases.iter().map(|b| b.revision).collect(),
                last_revision: v.last_revision(),
                started: v.generation.0.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                last_upload: v.segments.iter().map(|s| s.uploaded).max(),
                segments: v.segments.len(),
                bytes: v.segments.iter().map(|s| s.size).sum(),
                ended: v.end.as_ref().map(|e| e.reason.clone()),
                continuity: v.continuity(),
                signed: signed(v, keys).into(),
                restorable_from: restorable.map(|r| r.from),
                restorable_to: restorable.map(|r| r.to),
            }
        })
        .collect()
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
    /// Where it looked, for the verdict's message.
    #[serde(skip)]
    pub url: String,
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
        url: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stream::names::{Generation, Name};
    use crate::stream::objects::Listed;
    use crate::stream::records::{EndRecord, Read, Record, StartRecord, Vouch};

    fn summarize_all(view: &StreamView) -> Vec<GenerationRow> {
        summarize(view, None)
    }

    fn vouch() -> Vouch {
        Vouch {
            message: Vec::new(),
            signature: None,
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn g(s: i64) -> Generation {
        Generation(t(s))
    }

    fn listed(name: Name, size: u64, at: i64) -> Listed {
        Listed {
            name,
            size,
            last_modified: t(at),
        }
    }

    fn seg(gen: i64, first: i64, last: i64, at: i64) -> Listed {
        let name = Name::Segment {
            generation: g(gen),
            first,
            last,
            encrypted: false,
        };
        listed(name, 100, at)
    }

    fn start(gen: i64, base: i64) -> (Name, Read) {
        let r = StartRecord {
            cluster_id: "c".into(),
            base: "b.db.zst".into(),
            base_revision: base,
            started: t(gen),
            completed: None,
        };
        (Name::Start(g(gen)), Some(Ok((Record::Start(r), vouch()))))
    }

    #[test]
    fn generations_with_their_continuity_and_the_lag_verdict() {
        let objects = vec![
            listed(Name::Start(g(0)), 10, 0),
            seg(0, 11, 20, 10),
            seg(0, 24, 30, 20),
            listed(Name::End(g(0)), 10, 30),
            listed(Name::Start(g(100)), 10, 100),
            seg(1_00, 51, 60, 110),
            seg(1_00, 61, 70, 120),
            listed(
                Name::Base {
                    generation: g(100),
                    revision: 65,
                },
                10,
                121,
            ),
        ];
        let end = EndRecord {
            reason: "compacted".into(),
            last: 30,
            ended: t(30),
        };
        let records = BTreeMap::from([
            start(0, 10),
            start(100, 50),
            (Name::End(g(0)), Some(Ok((Record::End(end), vouch())))),
        ]);
        let rows = summarize_all(&StreamView::of(&objects, &records));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].verdict(), "gap 21..23");
        assert_eq!(
            (rows[0].restorable_from, rows[0].restorable_to),
            (Some(10), Some(20))
        );
        assert_eq!(
            (rows[1].restorable_from, rows[1].restorable_to),
            (Some(50), Some(70))
        );
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
        // A generation whose start record is missing, or not ours, cannot be restored.
        for records in [
            BTreeMap::new(),
            BTreeMap::from([(Name::Start(g(0)), Some(Err("not JSON".to_string())))]),
        ] {
            let rows = summarize_all(&StreamView::of(&objects[..3], &records));
            assert!(rows[0].verdict().starts_with("no start record"));
            assert!(lag(&rows, t(20), minute).problem.is_some());
        }
        // An end record that cannot be read still ends the generation.
        let rows = summarize_all(&StreamView::of(
            &objects[..4],
            &BTreeMap::from([start(0, 10)]),
        ));
        assert_eq!(
            rows[0].ended.as_deref(),
            Some("ended (its end record is not readable)")
        );
    }
}
