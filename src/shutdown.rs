//! Stopping cleanly on SIGTERM and SIGINT (a Job reaching `activeDeadlineSeconds`, a node
//! drain, Ctrl-C): the stages that wait on the network watch a [`Shutdown`] and, when it fires,
//! return [`Interrupted`], so the multipart upload is aborted and scratch files are removed by
//! the ordinary error path. It is a value passed in, not a global, so tests fire their own.

use std::time::Duration;

use tokio::sync::watch;

/// After SIGTERM/SIGINT, how long a command may take to abort its upload and clean up
/// (Kubernetes waits 30 s by default before SIGKILL).
pub const GRACE: Duration = Duration::from_secs(10);

/// Fired once, with the name of what asked us to stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<Option<&'static str>>);

/// Fires a [`Shutdown`].
pub struct Trigger(watch::Sender<Option<&'static str>>);

/// The error a stage returns when it stopped because of a shutdown.
#[derive(Debug, Clone, thiserror::Error)]
#[error("interrupted by {0}")]
pub struct Interrupted(pub &'static str);

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(None);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self, why: &'static str) {
        self.0.send_replace(Some(why));
    }
}

impl Shutdown {
    /// A shutdown that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(None);
        // Keep the sender alive for the life of the process, so `requested` pends forever.
        std::mem::forget(tx);
        Shutdown(rx)
    }

    /// Fires on the first SIGTERM or SIGINT. Must be called inside the runtime.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        use tokio::signal::unix::{signal, SignalKind};
        let (trigger, shutdown) = channel();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            let why = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::warn!(
                "{why} received: stopping, aborting any upload and removing scratch files"
            );
            trigger.fire(why);
            // Keep the trigger (and so the channel) alive after firing.
            std::future::pending::<()>().await;
        });
        Ok(shutdown)
    }

    /// Runs `work` to the end, or, after the shutdown fired, for at most [`GRACE`] more: the
    /// stages watch the same signal and stop by themselves; what still runs after that is
    /// dropped, which removes scratch and `.part` files.
    pub async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => r,
            i = self.requested() => match tokio::time::timeout(GRACE, &mut work).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::Error::new(i).context(format!(
                    "did not stop within {}s",
                    GRACE.as_secs()
                ))),
            },
        }
    }

    /// Runs `work` unless the shutdown fires first, which drops `work` and returns
    /// [`Interrupted`]. For stages with nothing to clean up beyond what dropping does.
    pub async fn or_interrupted<T>(
        &self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            biased;
            i = self.requested() => Err(i.into()),
            r = work => r,
        }
    }

    /// Whether it has fired.
    pub fn fired(&self) -> Option<&'static str> {
        *self.0.borrow()
    }

    /// Resolves when it fires.
    pub async fn requested(&self) -> Interrupted {
        let mut rx = self.0.clone();
        let fired = rx
            .wait_for(Option::is_some)
            .await
            .map(|why| why.expect("checked"));
        match fired {
            Ok(why) => Interrupted(why),
            // The trigger is gone without firing: never resolve.
            Err(_) => std::future::pending().await,
        }
    }
}

/// A `Read` that fails once the shutdown fired, so that a blocking loop over a large input (a
/// decode, a download) stops at its next read instead of running to the end. The error is not
/// of kind `Interrupted`, which `io::copy` and `read_to_end` retry forever.
pub struct StopOnShutdown<R> {
    pub inner: R,
    pub shutdown: Shutdown,
}

impl<R: std::io::Read> std::io::Read for StopOnShutdown<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(why) = self.shutdown.fired() {
            return Err(std::io::Error::other(Interrupted(why)));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_fired_shutdown_ends_read_to_end_instead_of_being_retried() {
        let (trigger, shutdown) = channel();
        trigger.fire("SIGTERM");
        let mut r = StopOnShutdown {
            inner: std::io::repeat(0),
            shutdown,
        };
        // `read_to_end` retries ErrorKind::Interrupted: with that kind this would never return.
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_ne!(e.kind(), std::io::ErrorKind::Interrupted);
        assert_eq!(e.to_string(), "interrupted by SIGTERM");
    }
}
