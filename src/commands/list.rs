//! `list`: our backups under the prefix, newest first, with their recorded figures, what
//! retention would do with each and, on a bucket with object lock, until when each is locked.
//! Reads the bucket only.

use chrono::{DateTime, Utc};

use crate::commands::prune::survey;
use crate::output::{self, ListRow};
use crate::retention::Policy;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// The rows of `list`. A shutdown stops it wherever it is waiting on the bucket.
pub async fn list(
    store: &Store,
    policy: &Policy,
    now: DateTime<Utc>,
    shutdown: &Shutdown,
) -> anyhow::Result<Vec<ListRow>> {
    shutdown
        .or_interrupted(async {
            let (listing, plan) = survey(store, policy, now, None).await?;
            let mut meta = Vec::new();
            for b in &listing.backups {
                meta.push(store.figures(b).await?);
            }
            let mut rows = output::list_rows(store.prefix(), &listing.backups, &meta, &plan);
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
