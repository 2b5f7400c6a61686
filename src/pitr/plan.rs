//! Which base and which segments rebuild a revision: a pure decision over what the bucket
//! lists, tested with tables.
//!
//! A revision `R` is reachable from a base at `B <= R` of a generation when the generation's
//! segments cover every revision from `B + 1` to `R` without a gap. The plan takes the newest
//! generation that reaches `R`, and in it the newest such base (the least to replay); a
//! revision nothing reaches is refused with the runs that can be reached, nearest first.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use crate::stream::names::{Generation, Name};
use crate::stream::records::StreamView;

/// A point in the stream: a revision, or a time (RFC 3339) meaning the last revision the
/// stream had received by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Revision(i64),
    Time(DateTime<Utc>),
}

impl FromStr for Point {
    type Err = String;
    fn from_str(s: &str) -> Result<Point, String> {
        if let Ok(r) = s.parse::<i64>() {
            return if r >= 1 {
                Ok(Point::Revision(r))
            } else {
                Err(format!("revision {r}: revisions start at 1"))
            };
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Point::Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                format!("{s:?} is neither a revision (a number) nor an RFC 3339 time such as 2026-12-04T10:30:00Z ({e})")
            })
    }
}

/// Every generation of `view` that has a start record, as the plan reads them.
pub fn sources(view: &StreamView) -> Vec<Source> {
    view.generations
        .iter()
        .filter_map(|v| {
            let start = v.start.as_ref()?;
            let mut bases = vec![(start.base_revision, start.base.clone())];
            bases.extend(
                v.bases
                    .iter()
                    .filter_map(|b| Some((b.revision, b.record.as_ref()?.base.clone()))),
            );
            Some(Source {
                generation: v.generation,
                cluster_id: start.cluster_id.clone(),
                bases,
                floor: v.floor()?,
                base_completed: start.completed,
                segments: v
                    .segments
                    .iter()
                    .map(|s| Segment {
                        name: s.name,
                        first: s.first,
                        last: s.last,
                        uploaded: s.uploaded,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// One generation, as the bucket lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub generation: Generation,
    pub cluster_id: String,
    /// Its bases, as (revision, backup name under the prefix), the start base among them.
    pub bases: Vec<(i64, String)>,
    /// Revisions at or below this have been pruned (a `trimmed-` marker; else the start base).
    pub floor: i64,
    /// Its segments, as listed.
    pub segments: Vec<Segment>,
    /// When its first base had been published (the stream's clock), when its record says.
    pub base_completed: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: Name,
    pub first: i64,
    pub last: i64,
    /// When it reached the bucket: every revision in it was received before.
    pub uploaded: DateTime<Utc>,
}

/// How to rebuild one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub generation: Generation,
    pub cluster_id: String,
    pub base_revision: i64,
    /// The base's backup name under the prefix.
    pub base: String,
    /// Whether the base is the generation's first, so the first segment chains to it.
    pub start_base: bool,
    /// The segments holding `base_revision + 1 ..= revision`, in order.
    pub segments: Vec<Name>,
    pub revision: i64,
}

/// A run of revisions a restore can reach: from a base through unbroken segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub generation: Generation,
    pub first: i64,
    pub last: i64,
}

/// Why no plan reaches a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// The first revision asked for (the same as `revision` but for a span).
    pub from: i64,
    pub revision: i64,
    /// Every reachable run, sorted by distance from the revision.
    pub runs: Vec<Run>,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.runs.is_empty() {
            return write!(
                f,
                "revision {} cannot be rebuilt: the bucket holds no stream generation with a base (is `etcd-backup stream` running with this BACKUP_BUCKET and BACKUP_PREFIX? `list --generations` shows what is there)",
                self.revision
            );
        }
        if self.from == self.revision {
            write!(f, "revision {}", self.revision)?;
        } else {
            write!(f, "revisions {}..={}", self.from, self.revision)?;
        }
        write!(
            f,
            " in no unbroken run of the stream (a gap, pruned, or not yet streamed); the nearest that can be rebuilt: "
        )?;
        let shown: Vec<String> = self
            .runs
            .iter()
            .take(3)
            .map(|r| format!("{}..={} (generation {})", r.first, r.last, r.generation))
            .collect();
        write!(
            f,
            "{} (`list --generations` shows every gap)",
            shown.join(", ")
        )
    }
}

/// The revisions reachable from `base`: up to the last one before the first gap after it.
fn reach(base: i64, segments: &[Segment]) -> i64 {
    let mut covered = base;
    for s in segments {
        if s.last <= covered {
            continue;
        }
        if s.first > covered + 1 {
            break;
        }
        covered = s.last;
    }
    covered
}

/// Every reachable run of `sources`, one per usable base (bases below the floor have lost
/// the segments after them).
pub fn runs(sources: &[Source]) -> Vec<Run> {
    let mut out = Vec::new();
    for s in sources {
        let segments = sorted(&s.segments);
        for &(b, _) in &s.bases {
            if b >= s.floor {
                out.push(Run {
                    generation: s.generation,
                    first: b,
                    last: reach(b, &segments),
                });
            }
        }
    }
    out
}

fn sorted(segments: &[Segment]) -> Vec<Segment> {
    let mut v = segments.to_vec();
    v.sort_by_key(|s| (s.first, s.last));
    v
}

/// The cross-checks a listing allows: each base of a generation rebuilt from the base before it
/// (when the segments between them are whole), to compare with the later base itself.
pub fn pairs(sources: &[Source]) -> Vec<Plan> {
    let mut out = Vec::new();
    for s in sources {
        let segments = sorted(&s.segments);
        let mut bases: Vec<&(i64, String)> = s.bases.iter().filter(|b| b.0 >= s.floor).collect();
        bases.sort_by_key(|b| b.0);
        bases.dedup_by_key(|b| b.0);
        let start = s.bases.iter().map(|b| b.0).min();
        for w in bases.windows(2) {
            let (from, to) = (w[0], w[1]);
            if reach(from.0, &segments) < to.0 {
                continue;
            }
            out.push(Plan {
                generation: s.generation,
                cluster_id: s.cluster_id.clone(),
                base_revision: from.0,
                base: from.1.clone(),
                start_base: Some(from.0) == start,
                segments: segments
                    .iter()
                    .filter(|g| g.last > from.0 && g.first <= to.0)
                    .map(|g| g.name)
                    .collect(),
                revision: to.0,
            });
        }
    }
    out
}

/// The plan for `revision`: see the module.
pub fn plan(sources: &[Source], revision: i64) -> Result<Plan, Unreachable> {
    find(sources, revision, revision, true)
}

/// The segments holding every revision after `from` up to `to`, in one unbroken run (for
/// `diff`: no base is read, so the segments start after `from`).
pub fn span(sources: &[Source], from: i64, to: i64) -> Result<Plan, Unreachable> {
    find(sources, from, to, false)
}

fn find(
    sources: &[Source],
    from: i64,
    revision: i64,
    after_base: bool,
) -> Result<Plan, Unreachable> {
    for s in sources.iter().rev() {
        let segments = sorted(&s.segments);
        let start = s.bases.iter().map(|b| b.0).min();
        let best = s
            .bases
            .iter()
            .filter(|&&(b, _)| b >= s.floor && b <= from && reach(b, &segments) >= revision)
            .max_by_key(|b| b.0);
        if let Some((b, base)) = best {
            let after = if after_base { *b } else { from };
            return Ok(Plan {
                generation: s.generation,
                cluster_id: s.cluster_id.clone(),
                base_revision: *b,
                base: base.clone(),
                start_base: Some(*b) == start,
                segments: segments
                    .iter()
                    .filter(|g| g.last > after && g.first <= revision)
                    .map(|g| g.name)
                    .collect(),
                revision,
            });
        }
    }
    let mut runs = runs(sources);
    // Nearest first; of equally near runs, the one with the newer base (less to replay).
    runs.sort_by_key(|r| {
        let distance = if revision < r.first {
            r.first - revision
        } else {
            revision.saturating_sub(r.last).max(0)
        };
        (distance, std::cmp::Reverse(r.first))
    });
    Err(Unreachable {
        from,
        revision,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> Generation {
        Generation::parse(s).unwrap()
    }

    fn seg(gen: Generation, first: i64, last: i64) -> Segment {
        Segment {
            name: Name::Segment {
                generation: gen,
                first,
                last,
                encrypted: false,
            },
            first,
            last,
            uploaded: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn source(gen: &str, bases: &[i64], floor: i64, segs: &[(i64, i64)]) -> Source {
        let generation = g(gen);
        Source {
            generation,
            cluster_id: "c".into(),
            bases: bases.iter().map(|&b| (b, format!("base-{b}"))).collect(),
            floor,
            segments: segs.iter().map(|&(a, b)| seg(generation, a, b)).collect(),
            base_completed: None,
        }
    }

    #[test]
    fn plans_pick_the_newest_base_below_and_the_segments_after_it() {
        let one = source(
            "20261201T000000Z",
            &[10, 25],
            10,
            &[(11, 20), (21, 30), (31, 40), (45, 50)],
        );
        let two = source("20261202T000000Z", &[100], 100, &[(101, 110)]);
        let both = [one, two];
        // Ok((base, first revisions of the segments)) or Err(the nearest run)
        type Case<'a> = (i64, Result<(i64, &'a [i64]), (i64, i64)>);
        let cases: &[Case] = &[
            (10, Ok((10, &[]))),
            (11, Ok((10, &[11]))),
            (24, Ok((10, &[11, 21]))),
            (25, Ok((25, &[21]))),
            (26, Ok((25, &[21]))),
            (40, Ok((25, &[21, 31]))),
            (41, Err((25, 40))),
            (47, Err((25, 40))),
            (9, Err((10, 40))),
            (100, Ok((100, &[]))),
            (110, Ok((100, &[101]))),
            (111, Err((100, 110))),
        ];
        for (rev, want) in cases {
            let got = plan(&both, *rev);
            match (want, got) {
                (Ok((base, firsts)), Ok(p)) => {
                    assert_eq!(p.base_revision, *base, "revision {rev}");
                    assert_eq!(p.start_base, *base == 10 || *base == 100, "revision {rev}");
                    let f: Vec<i64> = p
                        .segments
                        .iter()
                        .map(|n| match n {
                            Name::Segment { first, .. } => *first,
                            _ => unreachable!(),
                        })
                        .collect();
                    assert_eq!(&f, firsts, "revision {rev}");
                }
                (Err((a, b)), Err(u)) => {
                    assert_eq!(
                        (u.runs[0].first, u.runs[0].last),
                        (*a, *b),
                        "revision {rev}"
                    );
                    assert!(u.to_string().contains(&format!("{a}..={b}")), "{u}");
                }
                (w, g) => panic!("revision {rev}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn pruned_bases_and_overlaps() {
        // Trimmed at 25: base 10 has lost its segments; an overlapping segment (from a writer
        // that resumed) does not break the run.
        let s = source(
            "20261201T000000Z",
            &[10, 25],
            25,
            &[(21, 30), (26, 35), (31, 40)],
        );
        assert!(plan(std::slice::from_ref(&s), 15).is_err());
        let p = plan(std::slice::from_ref(&s), 38).unwrap();
        assert_eq!(p.base_revision, 25);
        assert_eq!(p.segments.len(), 3);
        assert!(!p.start_base);
        // diff 27..=33 needs no base at or below 27 but one that reaches 33: base 25.
        let d = span(std::slice::from_ref(&s), 27, 33).unwrap();
        assert_eq!((d.base_revision, d.segments.len()), (25, 3));
        let u = span(std::slice::from_ref(&s), 27, 45).unwrap_err();
        assert!(u.to_string().starts_with("revisions 27..=45 in no"), "{u}");
        // Cross-checks: base 25 from base 10 is not possible (trimmed); from a whole run it is.
        assert!(pairs(std::slice::from_ref(&s)).is_empty());
        let whole = source("20261201T000000Z", &[10, 25, 40], 10, &[(11, 30), (31, 45)]);
        let p = pairs(std::slice::from_ref(&whole));
        let got: Vec<_> = p
            .iter()
            .map(|p| (p.base_revision, p.revision, p.segments.len()))
            .collect();
        assert_eq!(got, [(10, 25, 1), (25, 40, 2)]);
        assert!(p[0].start_base && !p[1].start_base);
        let gap = source("20261201T000000Z", &[10, 25], 10, &[(11, 20), (22, 30)]);
        assert!(pairs(std::slice::from_ref(&gap)).is_empty());
        let u = plan(&[], 5).unwrap_err();
        assert!(u.to_string().contains("no stream generation"), "{u}");
    }
}
