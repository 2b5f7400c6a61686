//! `history KEY [--prefix] [--since T]`: every change of a key (or of the keys under a prefix)
//! in the segments of every generation, oldest first, from the segments alone.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Context, Outcome};
use crate::config::RestoreConfig;
use crate::pitr::archive::{Archive, Choice};
use crate::pitr::k8s::{self, Decoded};
use crate::pitr::plan::Plan;
use crate::store::Store;
use crate::stream::names::Name;
use crate::stream::segment::{Kind, Record};

/// `history`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    pub key: String,
    /// KEY is a prefix: every key under it.
    #[arg(long)]
    pub prefix: bool,
    /// Only changes received at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub history: Choice,
}

/// The `history` command.
pub async fn run(
    store: &Store,
    cfg: &RestoreConfig,
    args: &HistoryArgs,
    ctx: &Context,
) -> anyhow::Result<Vec<HistoryRow>> {
    let way = Archive::new(store, cfg, &ctx.shutdown, &args.history);
    history(&way, args).await
}

impl Outcome for Vec<HistoryRow> {}

/// One change of a key, as `history` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub revision: i64,
    pub received: DateTime<Utc>,
    pub key: String,
    pub action: &'static str,
    pub size: usize,
    pub lease: i64,
    pub object: Decoded,
}

/// `history KEY [--prefix] [--since T]`: every change of the key (or the keys under the
/// prefix) in the segments of every generation, oldest first, from the segments alone.
pub async fn history(way: &Archive<'_>, args: &HistoryArgs) -> anyhow::Result<Vec<HistoryRow>> {
    let (key, prefix, since) = (args.key.as_bytes(), args.prefix, args.since);
    let sources = way.sources().await?;
    let mut rows = Vec::new();
    for s in &sources {
        let mut segments = s.segments.clone();
        segments.sort_by_key(|g| (g.first, g.last));
        // A segment stored before T holds only revisions received before it.
        let names: Vec<Name> = segments
            .iter()
            .filter(|g| since.is_none_or(|t| g.uploaded >= t))
            .map(|g| g.name)
            .collect();
        if names.is_empty() {
            continue;
        }
        let plan = Plan {
            generation: s.generation,
            cluster_id: s.cluster_id.clone(),
            base_revision: 0,
            base: String::new(),
            start_base: false,
            segments: Vec::new(),
            revision: 0,
        };
        let (wanted, since_ms) = (key.to_vec(), since.map(|t| t.timestamp_millis()));
        let mut got = way
            .over(&plan, names, move |next| {
                let mut rows = Vec::new();
                let mut seen = 0;
                while let Some(rec) = next()? {
                    let Record::Revision(r) = rec else { continue };
                    // Segments of two writers may overlap: each revision once.
                    if r.revision <= seen || since_ms.is_some_and(|t| r.received_ms < t) {
                        continue;
                    }
                    seen = r.revision;
                    for e in r.events {
                        let hit = if prefix {
                            e.kv.key.starts_with(&wanted)
                        } else {
                            e.kv.key == wanted
                        };
                        if hit {
                            rows.push(HistoryRow {
                                revision: r.revision,
                                received: DateTime::from_timestamp_millis(r.received_ms)
                                    .unwrap_or_default(),
                                key: String::from_utf8_lossy(&e.kv.key).into_owned(),
                                action: match e.kind {
                                    Kind::Put => "put",
                                    Kind::Delete => "delete",
                                },
                                size: e.kv.value.len(),
                                lease: e.kv.lease,
                                object: k8s::decode(&e.kv.value),
                            });
                        }
                    }
                }
                Ok(rows)
            })
            .await?;
        rows.append(&mut got);
    }
    Ok(rows)
}
