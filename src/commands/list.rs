//! `list`: our backups under the prefix, newest first, with their recorded figures, what
//! retention would do with each and, on a bucket with object lock, until when each is locked.
//! Reads the bucket only.

use serde::Serialize;

use super::prune::{survey, Pruning, Survey};
use super::{Context, Outcome};
use crate::config::PruneConfig;
use crate::retention::Plan;
use crate::store::{Listed, Store};
use crate::stream::records::StreamView;
use crate::stream::report::{summarize, GenerationRow};

/// The `list` command.
pub async fn run(store: &Store, cfg: &PruneConfig, ctx: &Context) -> anyhow::Result<Vec<ListRow>> {
    rows(store, &Pruning::of(cfg), ctx).await
}

/// The rows of `list`. A shutdown stops it wherever it is waiting on the bucket.
pub async fn rows(store: &Store, by: &Pruning<'_>, ctx: &Context) -> anyhow::Result<Vec<ListRow>> {
    let keys = by.verify;
    ctx.shutdown
        .or_interrupted(async {
            let Survey {
                listing,
                plan,
                refused,
                mut vouched,
                ..
            } = survey(store, by, ctx.now).await?;
            let mut meta = Vec::new();
            for b in &listing.backups {
                meta.push(match vouched.remove(&b.key) {
                    Some(figures) => figures,
                    None => store.figures(b).await?,
                });
            }
            let mut rows = list_rows(store.prefix(), &listing.backups, &meta, &plan);
            if keys.is_some() {
                for (row, b) in rows.iter_mut().zip(&listing.backups) {
                    row.signed = match refused.get(&b.key) {
                        None => "ok".into(),
                        Some(why) if why.is_unsigned() => "no".into(),
                        Some(why) => {
                            tracing::warn!("{}: {why}", row.key);
                            "BAD".into()
                        }
                    };
                }
            }
            if let Some(bucket) = store.bucket() {
                if !rows.is_empty() && bucket.object_lock().await?.is_some() {
                    for (row, b) in rows.iter_mut().zip(&listing.backups) {
                        let until = bucket.retain_until(store.path(&b.key).as_ref()).await?;
                        row.locked_until =
                            until.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                    }
                }
            }
            Ok(rows)
        })
        .await
}

/// `list --generations`: the stream's generations, oldest first, each start record's signature
/// checked against BACKUP_VERIFY_KEY when it is set.
pub async fn generations(
    store: &Store,
    cfg: &PruneConfig,
    ctx: &Context,
) -> anyhow::Result<Vec<GenerationRow>> {
    let view = ctx
        .shutdown
        .or_interrupted(async { Ok(StreamView::read(store).await?) })
        .await?;
    Ok(summarize(&view, cfg.verify_keys.as_ref()))
}

impl Outcome for Vec<ListRow> {}
impl Outcome for Vec<GenerationRow> {}

/// One backup in `list`: the listing, its metadata, and what retention would do with it.
#[derive(Debug, Clone, Serialize)]
pub struct ListRow {
    pub key: String,
    pub time: String,
    pub stored_bytes: u64,
    pub raw_bytes: Option<u64>,
    pub revision: Option<i64>,
    pub compression: String,
    /// "age" when the object is encrypted, "none" otherwise.
    pub encryption: String,
    /// The files archive: "-" when the backup has none, "ok", or "missing" (the backup is
    /// incomplete: its manifest names an archive the bucket does not hold).
    pub files: String,
    /// "ok" (its signature passed BACKUP_VERIFY_KEY), "BAD" (it did not: the reason is
    /// logged), "no" (not signed), or without BACKUP_VERIFY_KEY "unchecked" (a signature is
    /// there but no key to check it).
    pub signed: String,
    pub keep: bool,
    pub reason: String,
    /// On a bucket with object lock: the date before which S3 refuses to delete the backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
}

pub fn list_rows(
    prefix: &str,
    backups: &[Listed],
    meta: &[Vec<(String, String)>],
    plan: &Plan,
) -> Vec<ListRow> {
    backups
        .iter()
        .zip(meta)
        .map(|(b, m)| {
            let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let d = plan.decisions.iter().find(|d| d.key == b.key);
            ListRow {
                key: format!("{prefix}{}", b.key),
                time: b.key.time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                stored_bytes: b.size,
                raw_bytes: get("snapshot-size").and_then(|v| v.parse().ok()),
                revision: get("etcd-revision").and_then(|v| v.parse().ok()),
                compression: get("compression").unwrap_or_else(|| b.key.codec.to_string()),
                encryption: if b.key.encrypted { "age" } else { "none" }.to_string(),
                files: match (get("files-archive"), b.files) {
                    (None, _) => "-",
                    (Some(_), true) => "ok",
                    (Some(_), false) => "missing",
                }
                .to_string(),
                signed: if b.signature { "unchecked" } else { "no" }.to_string(),
                keep: d.is_none_or(|d| d.keep),
                reason: d.map(|d| d.reason.to_string()).unwrap_or_default(),
                locked_until: None,
            }
        })
        .collect()
}
