//! `diff P1 P2 [--prefix P]`: the keys whose state differs between two points, from the
//! segments between them (one unbroken run of one generation).

use anyhow::{anyhow, bail};
use serde::Serialize;

use super::{Context, Outcome};
use crate::config::RestoreConfig;
use crate::pitr::archive::{Archive, Choice};
use crate::pitr::changes::{Change, Changes};
use crate::pitr::feed::revisions_between;
use crate::pitr::plan::{self, Point};
use crate::store::Store;

/// `diff`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    pub from: Point,
    pub to: Point,
    /// Only keys under this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub history: Choice,
}

/// The `diff` command.
pub async fn run(
    store: &Store,
    cfg: &RestoreConfig,
    args: &DiffArgs,
    ctx: &Context,
) -> anyhow::Result<Vec<DiffRow>> {
    let way = Archive::new(store, cfg, &ctx.shutdown, &args.history);
    diff(&way, args.from, args.to, args.prefix.as_bytes()).await
}

impl Outcome for Vec<DiffRow> {}

/// One key `diff` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffRow {
    pub key: String,
    pub change: Change,
    /// The revision of its last change in the range.
    pub revision: i64,
}

/// `diff P1 P2 [--prefix P]`: the keys whose state differs between the two points, from the
/// segments between them (one unbroken run of one generation).
pub async fn diff(
    way: &Archive<'_>,
    from: Point,
    to: Point,
    prefix: &[u8],
) -> anyhow::Result<Vec<DiffRow>> {
    let sources = way.sources().await?;
    let r1 = way.resolve(&sources, from).await?;
    let r2 = way.resolve(&sources, to).await?;
    if r2 < r1 {
        bail!("the second point (revision {r2}) is before the first (revision {r1})");
    }
    let plan = plan::span(&sources, r1, r2).map_err(|u| anyhow!("{u}"))?;
    let prefix = prefix.to_vec();
    way.over(&plan, plan.segments.clone(), move |next| {
        let mut changes = Changes::new(r1);
        revisions_between(next, r1, r2, |r| {
            for e in &r.events {
                if e.kv.key.starts_with(&prefix) {
                    changes.observe(r.revision, e);
                }
            }
        })?;
        Ok(changes
            .finish()
            .into_iter()
            .map(|(k, change, revision)| DiffRow {
                key: String::from_utf8_lossy(&k).into_owned(),
                change,
                revision,
            })
            .collect())
    })
    .await
}
