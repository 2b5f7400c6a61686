//! A download read by a blocking thread: the decoders, the bbolt walk and tar are synchronous,
//! and the object is larger than memory. tokio-util bridges the two (`StreamReader`, then
//! `SyncIoBridge`), so the thread pulls each chunk as it needs it and memory holds about one.

use std::io::{BufReader, Read};
use std::sync::Arc;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::crypt::Identities;
use crate::progress::Progress;
use crate::shutdown::Shutdown;
use crate::store::ByteStream;

/// Runs `work` on a blocking thread over a download, decrypted first when it is an age file
/// (`what` names it in the error). A shutdown ends the download, so the thread's input fails
/// short and it stops; the caller gets [`crate::shutdown::Interrupted`] at once, and whatever
/// the thread wrote goes with the caller's guards.
pub async fn read_on_thread<T: Send + 'static>(
    (size, stream): (u64, ByteStream),
    what: &'static str,
    identities: Option<Arc<Identities>>,
    progress: Option<std::time::Duration>,
    shutdown: &Shutdown,
    work: impl FnOnce(Box<dyn Read + Send + '_>) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let mut progress = Progress::new("download", Some(size), progress);
    let stop = shutdown.clone();
    let bytes = stream
        .take_until(Box::pin(async move { stop.requested().await }))
        .inspect_ok(move |chunk| progress.advance(chunk.len()))
        // object_store's message already holds its sources: one line, as `describe` prints it.
        .map_err(|e| std::io::Error::other(crate::describe(&e)));
    // Made here, on the runtime: the bridge keeps its handle to wait for chunks from the thread.
    let reader = SyncIoBridge::new(StreamReader::new(bytes));
    let worker = tokio::task::spawn_blocking(move || {
        let (_, opened) = crate::crypt::open(
            BufReader::with_capacity(1 << 20, reader),
            identities.as_deref(),
        )
        .with_context(|| format!("opening {what}"))?;
        work(opened)
    });
    tokio::select! {
        biased;
        i = shutdown.requested() => Err(i.into()),
        r = worker => r.with_context(|| format!("the thread reading {what} panicked"))?,
    }
}
