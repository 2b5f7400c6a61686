//! Retention of a stream's history, a pure plan like [`crate::retention`]: which stream
//! objects prune deletes, and which bases it must keep, so that every moment of the last
//! `window` (BACKUP_PITR_WINDOW) stays reachable and no segment is left without its base.
//!
//! For each generation, the **anchor** is the newest base taken at or before the window's
//! start (the generation's own base if none was): everything from it on is kept, the anchor and
//! every later base included. Segments that end at or before the anchor's revision, and bases
//! older than it, are deleted: no moment of the window needs them. A generation that ended
//! before the window started is deleted whole (its start record last), and its bases follow
//! the ordinary retention. An open generation is never deleted whole, however old.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::names::{Generation, Name};

/// A base of a generation: its revision, its backup's object name, and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub revision: i64,
    pub key: String,
    pub taken: DateTime<Utc>,
    /// The record naming it (`None` for the generation's own base, named by its start record).
    pub record: Option<Name>,
}

/// What prune knows of one generation.
#[derive(Debug, Clone)]
pub struct View {
    pub generation: Generation,
    /// The generation's own base; `None` when its start record is missing.
    pub start: Option<Base>,
    /// Later bases, in any order.
    pub bases: Vec<Base>,
    /// Segments: name, first and last revision, when stored.
    pub segments: Vec<(Name, i64, i64, DateTime<Utc>)>,
    /// Revisions prune trimmed it to before (`trimmed-` markers).
    pub trims: Vec<i64>,
    /// When it ended, if it did.
    pub ended: Option<DateTime<Utc>>,
}

/// What to do with a prefix's stream objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPlan {
    /// Markers to write before anything is deleted: this generation is trimmed to the base at
    /// this revision, so that its continuity counts from there.
    pub trims: Vec<Name>,
    /// Objects to delete, in the order to delete them (segments before the records that name
    /// their base; a generation's start record last), each with the reason.
    pub delete: Vec<(Name, String)>,
    /// Backups (object names under the prefix) a generation needs, with why.
    pub needed: BTreeMap<String, String>,
}

/// The plan for `views` at `now`.
pub fn plan(views: &[View], now: DateTime<Utc>, window: Duration) -> StreamPlan {
    let start_of_window =
        now - chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
    let mut out = StreamPlan::default();
    for v in views {
        let last_activity = v
            .segments
            .iter()
            .map(|s| s.3)
            .chain(v.ended)
            .chain(v.start.as_ref().map(|b| b.taken))
            .max()
            .unwrap_or(v.generation.0);
        if v.ended.is_some() && last_activity < start_of_window {
            let why = format!(
                "generation {} ended {}, before BACKUP_PITR_WINDOW {}",
                v.generation,
                v.ended
                    .unwrap_or(last_activity)
                    .format("%Y-%m-%d %H:%M UTC"),
                crate::retention::human(window)
            );
            for (name, ..) in &v.segments {
                out.delete.push((*name, why.clone()));
            }
            for b in &v.bases {
                if let Some(r) = b.record {
                    out.delete.push((r, why.clone()));
                }
            }
            for &revision in &v.trims {
                let name = Name::Trimmed {
                    generation: v.generation,
                    revision,
                };
                out.delete.push((name, why.clone()));
            }
            out.delete.push((Name::End(v.generation), why.clone()));
            out.delete.push((Name::Start(v.generation), why));
            continue;
        }
        let mut bases: Vec<&Base> = v.start.iter().chain(&v.bases).collect();
        bases.sort_by_key(|b| b.revision);
        let anchor = bases
            .iter()
            .rev()
            .find(|b| b.taken <= start_of_window)
            .or(bases.first())
            .copied();
        let Some(anchor) = anchor else {
            continue;
        };
        for b in bases.iter().filter(|b| b.revision >= anchor.revision) {
            out.needed.insert(
                b.key.clone(),
                format!(
                    "base at revision {} of stream generation {}, inside BACKUP_PITR_WINDOW",
                    b.revision, v.generation
                ),
            );
        }
        let why = format!(
            "before the base at revision {} of generation {}, which starts BACKUP_PITR_WINDOW {}",
            anchor.revision,
            v.generation,
            crate::retention::human(window)
        );
        for (name, _, last, _) in &v.segments {
            if *last <= anchor.revision {
                out.delete.push((*name, why.clone()));
            }
        }
        for b in bases.iter().filter(|b| b.revision < anchor.revision) {
            if let Some(r) = b.record {
                out.delete.push((r, why.clone()));
            }
        }
        for &revision in v.trims.iter().filter(|r| **r < anchor.revision) {
            let name = Name::Trimmed {
                generation: v.generation,
                revision,
            };
            out.delete.push((name, why.clone()));
        }
        // The marker goes first, so that the remaining segments count from the anchor even if
        // this prune stops midway; it is written whenever the window moved past the floor, even
        // with nothing to delete (a segment lost before the anchor no longer matters).
        let floor = super::names::floor(bases.first().map_or(0, |b| b.revision), &v.trims);
        if anchor.revision > floor {
            out.trims.push(Name::Trimmed {
                generation: v.generation,
                revision: anchor.revision,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn gen(s: i64) -> Generation {
        Generation(t(s))
    }

    fn base(g: i64, rev: i64, at: i64, record: bool) -> Base {
        Base {
            revision: rev,
            key: format!("base-{rev}.db.gz"),
            taken: t(at),
            record: record.then_some(Name::Base {
                generation: gen(g),
                revision: rev,
            }),
        }
    }

    fn seg(g: i64, first: i64, last: i64, at: i64) -> (Name, i64, i64, DateTime<Utc>) {
        let name = Name::Segment {
            generation: gen(g),
            first,
            last,
            encrypted: false,
        };
        (name, first, last, t(at))
    }

    fn names(p: &StreamPlan) -> Vec<String> {
        p.delete.iter().map(|(n, _)| n.to_string()).collect()
    }

    #[test]
    fn the_window_keeps_its_anchor_and_everything_after() {
        let window = Duration::from_secs(24 * HOUR as u64);
        // An open generation from t=0 with a base every 10 hours and a segment an hour.
        let open = View {
            generation: gen(0),
            start: Some(base(0, 100, 0, false)),
            bases: vec![
                base(0, 1100, 10 * HOUR, true),
                base(0, 2100, 20 * HOUR, true),
                base(0, 3100, 30 * HOUR, true),
            ],
            segments: (0..35)
                .map(|h| seg(0, 101 + h * 100, 200 + h * 100, (h + 1) * HOUR))
                .collect(),
            trims: vec![],
            ended: None,
        };
        // At 25h the window starts at 1h: the anchor is still the start base.
        let p = plan(std::slice::from_ref(&open), t(25 * HOUR), window);
        assert!(p.delete.is_empty(), "{:?}", names(&p));
        assert_eq!(p.needed.len(), 4);
        // At 35h it starts at 11h: the anchor is the base at 10h (revision 1100).
        let p = plan(std::slice::from_ref(&open), t(35 * HOUR), window);
        let deleted = names(&p);
        assert_eq!(deleted.len(), 10, "{deleted:?}");
        assert!(deleted.iter().all(|n| n.ends_with(".seg.zst")));
        let marker = Name::Trimmed {
            generation: gen(0),
            revision: 1100,
        };
        assert_eq!(p.trims, [marker]);
        // Once the marker and the trim are there, the next prune at 55h replaces the marker.
        let mut trimmed = open.clone();
        trimmed.segments.retain(|s| s.2 > 1100);
        trimmed.trims = vec![1100];
        let p55 = plan(std::slice::from_ref(&trimmed), t(55 * HOUR), window);
        assert_eq!(p55.trims.len(), 1);
        assert!(names(&p55).contains(&marker.to_string()));
        assert!(deleted
            .last()
            .unwrap()
            .ends_with("0000000000000001100.seg.zst"));
        assert_eq!(
            p.needed.keys().cloned().collect::<Vec<_>>(),
            ["base-1100.db.gz", "base-2100.db.gz", "base-3100.db.gz"]
        );
        // At 55h it starts at 31h: anchor 3100; the older base records go too.
        let p = plan(std::slice::from_ref(&open), t(55 * HOUR), window);
        let deleted = names(&p);
        assert_eq!(
            deleted.iter().filter(|n| n.ends_with(".seg.zst")).count(),
            30
        );
        assert!(
            deleted.contains(&"20270115T080000Z/base-0000000000000001100.json".to_string()),
            "{deleted:?}"
        );
        assert!(deleted.contains(&"20270115T080000Z/base-0000000000000002100.json".to_string()));
        assert_eq!(
            p.needed.keys().cloned().collect::<Vec<_>>(),
            ["base-3100.db.gz"]
        );
        // An open generation is never deleted whole, however old.
        let p = plan(std::slice::from_ref(&open), t(1000 * HOUR), window);
        assert!(!names(&p).iter().any(|n| n.ends_with("generation.json")));
        assert_eq!(
            p.needed.keys().cloned().collect::<Vec<_>>(),
            ["base-3100.db.gz"]
        );
    }

    #[test]
    fn an_ended_generation_goes_whole_once_the_window_passed_it() {
        let window = Duration::from_secs(24 * HOUR as u64);
        let ended = View {
            generation: gen(0),
            start: Some(base(0, 100, 0, false)),
            bases: vec![base(0, 500, 5 * HOUR, true)],
            segments: vec![seg(0, 101, 500, 5 * HOUR), seg(0, 501, 900, 9 * HOUR)],
            trims: vec![],
            ended: Some(t(10 * HOUR)),
        };
        // Ended at 10h; at 33h the window starts at 9h: still inside, anchored at the base at 5h.
        let p = plan(std::slice::from_ref(&ended), t(33 * HOUR), window);
        assert_eq!(
            names(&p),
            ["20270115T080000Z/0000000000000000101-0000000000000000500.seg.zst"]
        );
        // At 35h it starts at 11h: all of it goes, segments first and the start record last.
        let p = plan(std::slice::from_ref(&ended), t(35 * HOUR), window);
        let deleted = names(&p);
        assert_eq!(deleted.len(), 5, "{deleted:?}");
        assert!(deleted[0].ends_with(".seg.zst") && deleted[1].ends_with(".seg.zst"));
        assert!(deleted[4].ends_with("generation.json"));
        assert!(p.needed.is_empty());
        assert!(p.delete[0].1.contains("ended"), "{}", p.delete[0].1);
    }
}
