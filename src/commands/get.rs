//! `get KEY --at P`: one key as it was at a point, from the segments after the nearest base,
//! and from the base only when none of them touched the key.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

use super::{Context, Outcome, Verdict};
use crate::config::RestoreConfig;
use crate::pitr::archive::{latest_in_base, Archive, Choice};
use crate::pitr::feed::revisions_between;
use crate::pitr::k8s::{self, Decoded};
use crate::pitr::plan::Point;
use crate::store::Store;
use crate::stream::kv::KeyValue;
use crate::stream::segment::Kind;

/// `get`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct GetArgs {
    pub key: String,
    /// A revision, or an RFC 3339 time (the last revision received by then).
    #[arg(long)]
    pub at: Point,
    /// Write the value's bytes to this file.
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
    #[command(flatten)]
    pub history: Choice,
}

/// The `get` command: the key at the point, its value written to `--value-file` when it
/// existed. A key that did not exist then is printed, then fails the run.
pub async fn run(
    store: &Store,
    cfg: &RestoreConfig,
    args: &GetArgs,
    ctx: &Context,
) -> anyhow::Result<Got> {
    let way = Archive::new(store, cfg, &ctx.shutdown, &args.history);
    let got = get(&way, args.key.as_bytes(), args.at).await?;
    if let (Some(path), Some(v)) = (&args.value_file, &got.found) {
        std::fs::write(path, &v.bytes)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(got)
}

impl Outcome for Got {
    fn verdict(&self) -> Verdict {
        match self.found {
            Some(_) => Verdict::Pass,
            None => Verdict::Fail(format!(
                "{} did not exist at revision {} (deleted, or not yet created)",
                self.key, self.revision
            )),
        }
    }
}

/// One key's state at a point: `None` when it did not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Got {
    pub key: String,
    pub revision: i64,
    pub found: Option<GotValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GotValue {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
    pub size: usize,
    /// Base64 of the value (JSON output only).
    pub value: String,
    pub object: Decoded,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

impl GotValue {
    fn of(kv: KeyValue) -> GotValue {
        use base64::Engine;
        GotValue {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
            size: kv.value.len(),
            value: base64::engine::general_purpose::STANDARD.encode(&kv.value),
            object: k8s::decode(&kv.value),
            bytes: kv.value,
        }
    }
}

/// `get KEY --at P`: the segments after the nearest base first; the base only when none of
/// them touched the key.
pub async fn get(way: &Archive<'_>, key: &[u8], at: Point) -> anyhow::Result<Got> {
    let sources = way.sources().await?;
    let plan = way.plan(&sources, at).await?;
    let revision = plan.revision;
    let wanted = key.to_vec();
    let base_revision = plan.base_revision;
    let from_segments = way
        .over(&plan, plan.segments.clone(), move |next| {
            let mut state: Option<(Kind, KeyValue)> = None;
            revisions_between(next, base_revision, revision, |r| {
                for e in r.events {
                    if e.kv.key == wanted {
                        state = Some((e.kind, e.kv));
                    }
                }
            })?;
            Ok(state)
        })
        .await?;
    let found = match from_segments {
        Some((Kind::Put, kv)) => Some(kv),
        Some((Kind::Delete, _)) => None,
        None => {
            let (base, _) = way.restore_base(&plan).await?;
            let wanted = key.to_vec();
            tokio::task::spawn_blocking(move || latest_in_base(&base, &wanted))
                .await
                .context("the thread reading the base panicked")??
        }
    };
    Ok(Got {
        key: String::from_utf8_lossy(key).into_owned(),
        revision,
        found: found.map(GotValue::of),
    })
}
