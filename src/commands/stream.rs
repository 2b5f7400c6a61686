//! The `stream` command: continuous backup until a shutdown. Its life (the lock, generations,
//! bases, resuming) is [`crate::stream::run`].

use super::Context;
use crate::config::StreamConfig;
use crate::store::Store;
pub use crate::stream::run::Streamed;

/// Runs the stream until `ctx.shutdown` fires. Only a failure to stop cleanly is an error: etcd
/// or the bucket going away is waited out.
pub async fn run(store: &Store, cfg: &StreamConfig, ctx: &Context) -> anyhow::Result<Streamed> {
    crate::scratch::sweep_logged(&cfg.backup.pipeline.tmp_dir);
    crate::stream::run::run(cfg, store, std::sync::Arc::default(), &ctx.shutdown).await
}
