//! A generation's records (start, base, trimmed, end) and [`StreamView`], the one read of the
//! stream's prefix: it lists it once, reads each record once, and is what `list
//! --generations`, `check --max-lag`, prune's survey, the point-in-time plan and a resuming
//! stream all look at.
//!
//! A record that is not ours (unparsable, larger than [`MAX_RECORD`], a base record that names
//! another revision than its object's name) is logged and left out, never trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::names::{continuity, floor, Generation, Name, Span};
use super::objects::{self, Listed};
use super::retention::{Base, View};
use crate::sign::{BadSignature, SigningKey, VerifyKeys, RECORD_NAMESPACE};
use crate::store::{Store, StoreError};

pub use super::objects::MAX_RECORD;

/// A generation's start record (`generation.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    pub cluster_id: String,
    /// The base backup's object name under the prefix.
    pub base: String,
    /// The base's revision, read from the snapshot file itself.
    pub base_revision: i64,
    pub started: DateTime<Utc>,
    /// When the base had been published, by the stream's clock: the earliest moment a restore
    /// "to a time" can reach (absent in records of older releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<DateTime<Utc>>,
}

/// A base taken inside a generation (`base-{revision}.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// The backup's object name under the prefix.
    pub base: String,
    pub revision: i64,
    pub taken: DateTime<Utc>,
}

/// A generation's end record (`end.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndRecord {
    pub reason: String,
    /// The newest revision the generation holds.
    pub last: i64,
    pub ended: DateTime<Utc>,
}

/// A record as stored: its fields, and when the stream has a signing key, a signature of
/// [`signed_message`] (namespace `etcd-backup-record`). Readers that do not check signatures
/// see the fields as before.
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    #[serde(flatten)]
    record: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

/// What a record's signature signs: the record's object name (so that a record moved to
/// another name or generation no longer passes) and its fields as compact JSON.
pub fn signed_message<T: Serialize>(name: &Name, record: &T) -> Vec<u8> {
    let mut m = format!("{name}\n").into_bytes();
    m.extend(serde_json::to_vec(record).expect("plain struct"));
    m
}

/// What vouches for a record: the message its signature would sign, and the signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouch {
    pub message: Vec<u8>,
    pub signature: Option<String>,
}

impl Vouch {
    /// With `keys`: who signed the record, or why its signature does not pass; `None` when it
    /// is not signed.
    pub fn check(&self, keys: &VerifyKeys) -> Option<Result<String, BadSignature>> {
        let sig = self.signature.as_ref()?;
        Some(keys.check_in(RECORD_NAMESPACE, &self.message, sig.as_bytes()))
    }
}

/// Writes a record whole, signed with `signing` when there is one.
pub async fn put<T: Serialize>(
    store: &Store,
    name: &Name,
    record: &T,
    signing: Option<&SigningKey>,
) -> anyhow::Result<()> {
    let signature = match signing {
        Some(key) => Some(key.sign_in(RECORD_NAMESPACE, &signed_message(name, record))?),
        None => None,
    };
    let stored = Stored { record, signature };
    let body = serde_json::to_vec_pretty(&stored).expect("plain struct");
    Ok(objects::put(store, name, body.into()).await?)
}

/// Writes the end record of a generation that broke. Retried: without it, a restart would try
/// to continue the generation and find the same break again (which is safe, only slower).
pub async fn put_end(
    store: &Store,
    generation: Generation,
    record: &EndRecord,
    signing: Option<&SigningKey>,
) {
    let name = Name::End(generation);
    for attempt in 1..=3 {
        match put(store, &name, record, signing).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    "writing {} failed (attempt {attempt} of 3): {e}",
                    objects::url(store, &name)
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// A record read and parsed, with what vouches for it; `None` when it is missing, an error
/// when it is not ours (logged).
async fn get<T: for<'de> Deserialize<'de> + Serialize>(
    store: &Store,
    name: &Name,
) -> Result<Option<Result<(T, Vouch), String>>, StoreError> {
    let Some(body) = objects::get_record(store, name).await? else {
        return Ok(None);
    };
    let parsed = serde_json::from_slice::<Stored<T>>(&body).map_err(|e| {
        let url = objects::url(store, name);
        let why = format!("{url} is not a record of ours ({e}); ignoring it");
        tracing::warn!("{why}");
        why
    });
    Ok(Some(parsed.map(|s| {
        let vouch = Vouch {
            message: signed_message(name, &s.record),
            signature: s.signature,
        };
        (s.record, vouch)
    })))
}

/// A segment as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub name: Name,
    pub first: i64,
    pub last: i64,
    pub size: u64,
    /// When it reached the bucket (the server's clock).
    pub uploaded: DateTime<Utc>,
}

/// A later base of a generation, as listed, with its record when that is readable and ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaterBase {
    pub name: Name,
    pub revision: i64,
    pub record: Option<BaseRecord>,
    pub vouch: Option<Vouch>,
}

/// That a generation ended, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub reason: String,
    /// When its end record reached the bucket.
    pub listed: DateTime<Utc>,
}

/// One generation as the bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationView {
    pub generation: Generation,
    /// `None` when the start record is missing or not ours: nothing of it can be restored.
    pub start: Option<StartRecord>,
    pub start_vouch: Option<Vouch>,
    /// Later bases, by revision.
    pub bases: Vec<LaterBase>,
    /// Segments, by name (so by revision).
    pub segments: Vec<Segment>,
    /// Revisions prune trimmed it to (`trimmed-` markers).
    pub trims: Vec<i64>,
    pub end: Option<Ending>,
}

impl GenerationView {
    fn new(generation: Generation) -> GenerationView {
        GenerationView {
            generation,
            start: None,
            start_vouch: None,
            bases: Vec::new(),
            segments: Vec::new(),
            trims: Vec::new(),
            end: None,
        }
    }

    /// The revision its history counts from: its base's, or the newest base prune trimmed it
    /// to. `None` without a start record.
    pub fn floor(&self) -> Option<i64> {
        self.start
            .as_ref()
            .map(|s| floor(s.base_revision, &self.trims))
    }

    /// Runs, gaps and overlaps of its revisions after the floor.
    pub fn continuity(&self) -> Vec<Span> {
        let spans: Vec<(i64, i64)> = self.segments.iter().map(|s| (s.first, s.last)).collect();
        self.floor()
            .map(|f| continuity(f, &spans))
            .unwrap_or_default()
    }

    /// The newest revision it holds: its newest segment's, else its base's.
    pub fn last_revision(&self) -> Option<i64> {
        self.segments
            .iter()
            .map(|s| s.last)
            .max()
            .or(self.start.as_ref().map(|s| s.base_revision))
    }

    /// The revisions a restore can reach in it, from the base it counts from (its own, or the
    /// one prune trimmed it to) to the last before the first gap or overlap, with when that
    /// base had been taken (the stream's clock); `None` without a start record.
    pub fn restorable(&self) -> Option<Restorable> {
        let start = self.start.as_ref()?;
        let from = self.floor()?;
        let at = if from == start.base_revision {
            start.completed.unwrap_or(start.started)
        } else {
            self.bases
                .iter()
                .filter(|b| b.revision == from)
                .find_map(|b| b.record.as_ref().map(|r| r.taken))
                .unwrap_or(start.started)
        };
        let mut to = from;
        for span in self.continuity() {
            match span {
                Span::Ok { first, last } if first == to + 1 => to = last,
                _ => break,
            }
        }
        Some(Restorable { from, at, to })
    }

    /// What prune's stream retention needs to know of it.
    pub fn retention(&self) -> View {
        View {
            generation: self.generation,
            start: self.start.as_ref().map(|r| Base {
                revision: r.base_revision,
                key: r.base.clone(),
                taken: r.started,
                record: None,
            }),
            bases: self
                .bases
                .iter()
                .filter_map(|b| {
                    let r = b.record.as_ref()?;
                    Some(Base {
                        revision: b.revision,
                        key: r.base.clone(),
                        taken: r.taken,
                        record: Some(b.name),
                    })
                })
                .collect(),
            segments: self
                .segments
                .iter()
                .map(|s| (s.name, s.first, s.last, s.uploaded))
                .collect(),
            trims: self.trims.clone(),
            ended: self.end.as_ref().map(|e| e.listed),
        }
    }
}

/// The revisions of a generation a restore can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restorable {
    pub from: i64,
    /// When the base at `from` had been taken (the stream's clock).
    pub at: DateTime<Utc>,
    pub to: i64,
}

/// Every generation under the prefix, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamView {
    pub generations: Vec<GenerationView>,
}

impl StreamView {
    /// Lists the stream's prefix once and reads each record in it once.
    pub async fn read(store: &Store) -> Result<StreamView, StoreError> {
        let listed = objects::list(store).await?;
        let mut records = BTreeMap::new();
        for o in &listed {
            let record = match o.name {
                Name::Start(_) => read_as(store, &o.name, Record::Start).await?,
                Name::Base { .. } => read_as(store, &o.name, Record::Base).await?,
                Name::End(_) => read_as(store, &o.name, Record::End).await?,
                Name::Segment { .. } | Name::Trimmed { .. } => continue,
            };
            records.insert(o.name, record);
        }
        Ok(StreamView::of(&listed, &records))
    }

    /// The view of a listing, given the records read for it (pure).
    pub fn of(listed: &[Listed], records: &BTreeMap<Name, Read>) -> StreamView {
        let mut by: BTreeMap<Generation, GenerationView> = BTreeMap::new();
        for o in listed {
            let g = o.name.generation();
            let v = by.entry(g).or_insert_with(|| GenerationView::new(g));
            let record = records.get(&o.name);
            match o.name {
                Name::Start(_) => {
                    if let Some(Some(Ok((Record::Start(r), vouch)))) = record {
                        v.start = Some(r.clone());
                        v.start_vouch = Some(vouch.clone());
                    }
                }
                Name::Segment { first, last, .. } => v.segments.push(Segment {
                    name: o.name,
                    first,
                    last,
                    size: o.size,
                    uploaded: o.last_modified,
                }),
                Name::Base { revision, .. } => {
                    let (record, vouch) = match record {
                        Some(Some(Ok((Record::Base(r), vouch)))) if r.revision == revision => {
                            (Some(r.clone()), Some(vouch.clone()))
                        }
                        _ => (None, None),
                    };
                    v.bases.push(LaterBase {
                        name: o.name,
                        revision,
                        record,
                        vouch,
                    })
                }
                Name::Trimmed { revision, .. } => v.trims.push(revision),
                Name::End(_) => {
                    let reason = match record {
                        Some(Some(Ok((Record::End(r), _)))) => r.reason.clone(),
                        _ => "ended (its end record is not readable)".into(),
                    };
                    v.end = Some(Ending {
                        reason,
                        listed: o.last_modified,
                    });
                }
            }
        }
        for v in by.values_mut() {
            v.bases.sort_by_key(|b| b.revision);
        }
        StreamView {
            generations: by.into_values().collect(),
        }
    }

    /// The newest generation.
    pub fn newest(&self) -> Option<&GenerationView> {
        self.generations.last()
    }
}

/// A record as read: `None` when it was gone, an error when it is not ours.
pub type Read = Option<Result<(Record, Vouch), String>>;

async fn read_as<T: for<'de> Deserialize<'de> + Serialize>(
    store: &Store,
    name: &Name,
    kind: fn(T) -> Record,
) -> Result<Read, StoreError> {
    Ok(get::<T>(store, name)
        .await?
        .map(|r| r.map(|(t, v)| (kind(t), v))))
}

/// A record, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Start(StartRecord),
    Base(BaseRecord),
    End(EndRecord),
}
