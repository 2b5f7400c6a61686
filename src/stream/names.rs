//! The names of a stream's objects, under `{prefix}stream/`, and what a listing of them says
//! about each generation. Pure: tested with tables.
//!
//! ```text
//! stream/{generation}/generation.json                 where it starts: base, revision, cluster
//! stream/{generation}/{first}-{last}.seg.zst[.age]    a segment; revisions zero-padded to 19
//! stream/{generation}/base-{revision}.json            a later base inside the generation
//! stream/{generation}/trimmed-{revision}.json         prune dropped the segments up to here
//! stream/{generation}/end.json                        why it ended
//! ```
//!
//! A generation is named by the time it started (`20261204T170000Z`), so names sort by time,
//! and a segment by its revisions, so they sort by revision.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};

/// The folder of stream objects under the prefix.
pub const DIR: &str = crate::store::objects::STREAM_DIR;

const TIME: &str = "%Y%m%dT%H%M%SZ";

/// A generation: one unbroken chain of revisions from one base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub DateTime<Utc>);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format(TIME))
    }
}

impl Generation {
    pub fn parse(s: &str) -> Option<Generation> {
        if s.len() != 16 {
            return None;
        }
        let t = NaiveDateTime::parse_from_str(s, TIME).ok()?;
        Some(Generation(t.and_utc()))
    }
}

/// One of our stream objects, by its name below `stream/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Name {
    Start(Generation),
    Segment {
        generation: Generation,
        first: i64,
        last: i64,
        encrypted: bool,
    },
    /// A base taken while the generation ran, at this revision.
    Base {
        generation: Generation,
        revision: i64,
    },
    /// Prune deleted the segments up to this revision (a base of the generation's):
    /// continuity counts from here.
    Trimmed {
        generation: Generation,
        revision: i64,
    },
    End(Generation),
}

impl Name {
    pub fn generation(&self) -> Generation {
        match *self {
            Name::Start(g) | Name::End(g) => g,
            Name::Segment { generation, .. }
            | Name::Base { generation, .. }
            | Name::Trimmed { generation, .. } => generation,
        }
    }

    /// The name below `stream/`, or `None` for a name we did not write.
    pub fn parse(s: &str) -> Option<Name> {
        let (g, rest) = s.split_once('/')?;
        let generation = Generation::parse(g)?;
        match rest {
            "generation.json" => return Some(Name::Start(generation)),
            "end.json" => return Some(Name::End(generation)),
            _ => {}
        }
        if let Some(r) = rest
            .strip_prefix("base-")
            .and_then(|r| r.strip_suffix(".json"))
        {
            let revision = revision(r)?;
            return Some(Name::Base {
                generation,
                revision,
            });
        }
        if let Some(r) = rest
            .strip_prefix("trimmed-")
            .and_then(|r| r.strip_suffix(".json"))
        {
            let revision = revision(r)?;
            return Some(Name::Trimmed {
                generation,
                revision,
            });
        }
        let (range, encrypted) = match rest.strip_suffix(".seg.zst.age") {
            Some(r) => (r, true),
            None => (rest.strip_suffix(".seg.zst")?, false),
        };
        let (a, b) = range.split_once('-')?;
        let (first, last) = (revision(a)?, revision(b)?);
        (1 <= first && first <= last).then_some(Name::Segment {
            generation,
            first,
            last,
            encrypted,
        })
    }
}

/// A revision as names write it: 19 digits.
fn revision(s: &str) -> Option<i64> {
    (s.len() == 19 && s.bytes().all(|c| c.is_ascii_digit()))
        .then(|| s.parse::<i64>().ok())
        .flatten()
        .filter(|r| *r >= 1)
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Start(g) => write!(f, "{g}/generation.json"),
            Name::End(g) => write!(f, "{g}/end.json"),
            Name::Base {
                generation,
                revision,
            } => write!(f, "{generation}/base-{revision:019}.json"),
            Name::Trimmed {
                generation,
                revision,
            } => write!(f, "{generation}/trimmed-{revision:019}.json"),
            Name::Segment {
                generation,
                first,
                last,
                encrypted,
            } => write!(
                f,
                "{generation}/{first:019}-{last:019}.seg.zst{}",
                if *encrypted { ".age" } else { "" }
            ),
        }
    }
}

/// What a generation's segments cover from its base on: covered runs, and the gaps between
/// them (a segment lost, or one that overlaps another).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Span {
    Ok { first: i64, last: i64 },
    Gap { first: i64, last: i64 },
    Overlap { first: i64, last: i64 },
}

/// The spans of the segments `(first, last)` after a base at `base`: the revisions from
/// `base + 1` on, in order, as `wal-g wal-verify` shows a WAL: runs that are there, and what is
/// missing or doubled between them. Segments that end at or before the base are left out, and
/// one that straddles it counts from `base + 1` (prune leaves such a segment when it trims a
/// generation to a later base).
pub fn continuity(base: i64, segments: &[(i64, i64)]) -> Vec<Span> {
    let mut sorted: Vec<(i64, i64)> = segments.iter().copied().filter(|s| s.1 > base).collect();
    sorted.sort();
    let mut spans: Vec<Span> = Vec::new();
    let mut next = base + 1;
    for (i, (first, last)) in sorted.into_iter().enumerate() {
        if first > next {
            spans.push(Span::Gap {
                first: next,
                last: first - 1,
            });
        } else if first < next && i > 0 {
            spans.push(Span::Overlap {
                first,
                last: last.min(next - 1),
            });
            if last < next {
                continue;
            }
        }
        let from = first.max(next);
        match spans.last_mut() {
            Some(Span::Ok { last: l, .. }) if *l + 1 == from => *l = last,
            _ => spans.push(Span::Ok { first: from, last }),
        }
        next = last + 1;
    }
    spans
}

/// The base a generation's continuity counts from: its own, or the newest one prune trimmed
/// its segments to (a `trimmed-` marker, written before the segments went).
pub fn floor(start_base: i64, trims: &[i64]) -> i64 {
    trims.iter().copied().fold(start_base, i64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen() -> Generation {
        Generation::parse("20261204T170000Z").unwrap()
    }

    #[test]
    fn names_round_trip_and_foreign_ones_are_not_ours() {
        let g = gen();
        let names = [
            Name::Start(g),
            Name::End(g),
            Name::Segment {
                generation: g,
                first: 1,
                last: 1,
                encrypted: false,
            },
            Name::Segment {
                generation: g,
                first: 42,
                last: 9_000_000_000,
                encrypted: true,
            },
            Name::Base {
                generation: g,
                revision: 77,
            },
            Name::Trimmed {
                generation: g,
                revision: 78,
            },
        ];
        for n in names {
            assert_eq!(Name::parse(&n.to_string()), Some(n), "{n}");
        }
        assert_eq!(
            names[3].to_string(),
            "20261204T170000Z/0000000000000000042-0000000009000000000.seg.zst.age"
        );
        for foreign in [
            "20261204T170000Z/notes.txt",
            "20261204T170000Z/0000000000000000042-0000000000000000041.seg.zst",
            "20261204T170000Z/42-43.seg.zst",
            "20261204T170000Z/0000000000000000000-0000000000000000001.seg.zst",
            "2026-12-04/generation.json",
            "20261304T170000Z/generation.json",
            "generation.json",
            "20261204T170000Z/+000000000000000042-0000000000000000043.seg.zst",
            "20261204T170000Z/base-77.json",
            "20261204T170000Z/base-0000000000000000000.json",
        ] {
            assert_eq!(Name::parse(foreign), None, "{foreign}");
        }
        // Segment names sort by revision.
        let a = Name::Segment {
            generation: g,
            first: 9,
            last: 10,
            encrypted: false,
        };
        let b = Name::Segment {
            generation: g,
            first: 11,
            last: 100,
            encrypted: false,
        };
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn continuity_shows_runs_gaps_and_overlaps() {
        use Span::*;
        type Case = (&'static [(i64, i64)], Vec<Span>);
        let cases: &[Case] = &[
            (&[], vec![]),
            (
                &[(11, 20), (21, 25)],
                vec![Ok {
                    first: 11,
                    last: 25,
                }],
            ),
            (
                &[(21, 25), (11, 20)],
                vec![Ok {
                    first: 11,
                    last: 25,
                }],
            ),
            (
                &[(12, 20)],
                vec![
                    Gap {
                        first: 11,
                        last: 11,
                    },
                    Ok {
                        first: 12,
                        last: 20,
                    },
                ],
            ),
            (
                &[(11, 20), (31, 40)],
                vec![
                    Ok {
                        first: 11,
                        last: 20,
                    },
                    Gap {
                        first: 21,
                        last: 30,
                    },
                    Ok {
                        first: 31,
                        last: 40,
                    },
                ],
            ),
            (
                &[(11, 20), (18, 25)],
                vec![
                    Ok {
                        first: 11,
                        last: 20,
                    },
                    Overlap {
                        first: 18,
                        last: 20,
                    },
                    Ok {
                        first: 21,
                        last: 25,
                    },
                ],
            ),
            (
                &[(11, 20), (12, 13)],
                vec![
                    Ok {
                        first: 11,
                        last: 20,
                    },
                    Overlap {
                        first: 12,
                        last: 13,
                    },
                ],
            ),
            // Below or across the base: what prune leaves after trimming.
            (
                &[(5, 12)],
                vec![Ok {
                    first: 11,
                    last: 12,
                }],
            ),
            (
                &[(1, 4), (5, 10), (11, 12)],
                vec![Ok {
                    first: 11,
                    last: 12,
                }],
            ),
        ];
        for (segments, want) in cases {
            assert_eq!(&continuity(10, segments), want, "{segments:?}");
        }
        // The floor: the own base until prune trims to a later one.
        assert_eq!(floor(10, &[]), 10);
        assert_eq!(floor(10, &[25, 35]), 35);
    }
}
