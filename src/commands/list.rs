//! `list`: our backups under the prefix, newest first, with their recorded figures and what
//! retention would do with each. Reads the bucket only.

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
            Ok(output::list_rows(
                store.prefix(),
                &listing.backups,
                &meta,
                &plan,
            ))
        })
        .await
}
