//! One writer per prefix: a stream holds `stream/lock.json` while it writes, renewing it every
//! [`RENEW`]; a second stream waits until the holder lets go (on SIGTERM) or stops renewing
//! (a crash: the lock expires after [`TTL`]), then continues the generation from the bucket. A
//! stream restarted in the same pod (the same HOSTNAME) after a crash takes its own dead lock at
//! once instead of waiting it out.
//!
//! S3 has no compare-and-swap every server supports, so taking the lock is write, wait
//! [`SETTLE`], read back: of two streams that both found it free, the one whose write landed
//! last holds it, and the other sees that and waits. A holder that finds another's name in the
//! lock (it was paused past the expiry) stops writing at once and waits again, dropping what it
//! had not uploaded: the new holder continues from the bucket's last segment.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::names::DIR;
use super::objects::MAX_RECORD;
use crate::shutdown::{Interrupted, Shutdown};
use crate::store::objects::Kind;
use crate::store::{Store, StoreError};

/// How long a lock holds without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// How often the holder renews it.
pub const RENEW: Duration = Duration::from_secs(10);
/// How long a new holder waits before reading its lock back.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The lock object's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Who holds it: the host (the pod's name in Kubernetes), the process and a nonce.
    pub holder: String,
    pub expires: DateTime<Utc>,
}

/// What a stream may do, given the lock it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Take,
    Wait {
        holder: String,
        until: DateTime<Utc>,
    },
}

/// Whether `me` may take the lock `current` at `now`: when there is none, it is ours, it
/// expired, or its holder was a process of this host (this pod: HOSTNAME survives a container's
/// restart) that no longer runs ([`gone`], with `alive` telling whether a process id of this
/// host runs).
pub fn decide(
    current: Option<&Lock>,
    me: &str,
    now: DateTime<Utc>,
    alive: impl Fn(u32) -> bool,
) -> Decision {
    match current {
        Some(l) if l.holder != me && l.expires > now && !gone(&l.holder, me, alive) => {
            Decision::Wait {
                holder: l.holder.clone(),
                until: l.expires,
            }
        }
        _ => Decision::Take,
    }
}

/// Whether `holder` was an earlier process of this host that is gone: the same host, and
/// either this very process id (a restarted container is process 1 again) or one not running.
pub fn gone(holder: &str, me: &str, alive: impl Fn(u32) -> bool) -> bool {
    let parts = |h: &str| {
        let mut p = h.rsplitn(3, '/');
        let (_nonce, pid, host) = (p.next()?, p.next()?.parse::<u32>().ok()?, p.next()?);
        Some((host.to_string(), pid))
    };
    match (parts(holder), parts(me)) {
        (Some((host, pid)), Some((my_host, my_pid))) if host == my_host => {
            pid == my_pid || !alive(pid)
        }
        _ => false,
    }
}

/// This process's name in the lock.
pub fn holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        });
    let nonce = Utc::now().timestamp_subsec_nanos();
    format!("{host}/{}/{nonce:08x}", std::process::id())
}

/// The lock object, beside the generations.
const LOCK: &str = "lock.json";

fn path() -> String {
    format!("{DIR}{LOCK}")
}

/// The lock object's URL, for messages.
pub fn url(store: &Store) -> String {
    store.url_of(&path())
}

/// The lock as stored; `None` when there is none, or it is not a lock we wrote (which a stream
/// may then take: only streams write it).
pub async fn read(store: &Store) -> Result<Option<Lock>, StoreError> {
    let body = store.get_small(&path(), MAX_RECORD).await?;
    Ok(body.and_then(|b| match serde_json::from_slice(&b) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("{} is not a lock ({e}); taking it over", url(store));
            None
        }
    }))
}

async fn write(store: &Store, lock: &Lock) -> Result<(), StoreError> {
    let body = serde_json::to_vec(lock).expect("plain struct");
    store.put_object(&path(), body.into(), Kind::Record).await
}

/// Waits until this stream holds the lock; an error only for a shutdown.
pub async fn acquire(store: &Store, me: &str, shutdown: &Shutdown) -> Result<(), Interrupted> {
    let mut told = false;
    let pause = |d: Duration| async move {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            i = shutdown.requested() => Err(i),
        }
    };
    loop {
        let now = Utc::now();
        let current = match read(store).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reading the stream's lock failed: {e}; trying again");
                pause(Duration::from_secs(5)).await?;
                continue;
            }
        };
        match decide(current.as_ref(), me, now, crate::scratch::running) {
            Decision::Take => {
                let mine = Lock {
                    holder: me.to_string(),
                    expires: now + TTL,
                };
                if let Err(e) = write(store, &mine).await {
                    tracing::warn!("writing the stream's lock failed: {e}; trying again");
                    pause(Duration::from_secs(5)).await?;
                    continue;
                }
                pause(SETTLE).await?;
                if let Ok(Some(l)) = read(store).await {
                    if l.holder == me {
                        tracing::info!(lock = %url(store), holder = me, "this stream writes to the prefix");
                        return Ok(());
                    }
                }
            }
            Decision::Wait { holder, until } => {
                if !told {
                    tracing::warn!(lock = %url(store), "another stream ({holder}) writes to this prefix; waiting until it stops or its lock expires (at {until})");
                    told = true;
                }
                let left = (until - now).to_std().unwrap_or_default();
                pause(left.min(RENEW) + Duration::from_secs(1)).await?;
            }
        }
    }
}

/// Renews the lock every [`RENEW`] while the stream runs; returns only when another
/// stream holds it. A renewal that fails (the bucket is away) is tried again at the next
/// interval.
pub async fn hold(store: &Store, me: &str, shutdown: &Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            // The stream is stopping: it lets go of the lock itself.
            _ = shutdown.requested() => std::future::pending::<()>().await,
        }
        match read(store).await {
            Ok(Some(l)) if l.holder != me => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    "reading the stream's lock failed: {e}; trying again in {}s",
                    RENEW.as_secs()
                );
                continue;
            }
        }
        let mine = Lock {
            holder: me.to_string(),
            expires: Utc::now() + TTL,
        };
        if let Err(e) = write(store, &mine).await {
            tracing::warn!(
                "renewing the stream's lock failed: {e}; trying again in {}s",
                RENEW.as_secs()
            );
        }
    }
}

/// The lock as its holder carries it while it writes: who it is, and where a writer says
/// that the lock is no longer its own. Checked before every upload, so that a stream that was
/// paused past its lock's expiry never writes after the next holder began.
pub struct Held {
    pub me: String,
    lost: tokio::sync::Notify,
}

impl Held {
    pub fn new(me: String) -> Held {
        Held {
            me,
            lost: tokio::sync::Notify::new(),
        }
    }

    /// Whether the lock is still this stream's; when another's name is in it, says so to
    /// [`Held::lost`]. A lock that cannot be read (the bucket is away) counts as still held:
    /// the upload it guards cannot land either.
    pub async fn still_ours(&self, store: &Store) -> bool {
        match read(store).await {
            Ok(Some(l)) if l.holder != self.me => {
                self.lost.notify_waiters();
                false
            }
            _ => true,
        }
    }

    /// Returns once a writer found another's name in the lock (after this was first polled:
    /// nothing is remembered from an earlier hold).
    pub async fn lost(&self) {
        self.lost.notified().await
    }
}

/// Lets go of the lock if it is still ours, so that a waiting stream continues at once.
pub async fn release(store: &Store, me: &str) {
    match read(store).await {
        Ok(Some(l)) if l.holder == me => {
            if let Err(e) = store.delete_object(&path()).await {
                tracing::warn!("deleting the stream's lock failed: {e}; it expires by itself");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("reading the stream's lock failed: {e}; it expires by itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lock_of_another_waits_everything_else_takes() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let lock = |holder: &str, secs: i64| Lock {
            holder: holder.into(),
            expires: now + chrono::TimeDelta::seconds(secs),
        };
        let cases = [
            (None, Decision::Take),
            (Some(lock("me", 20)), Decision::Take),
            (Some(lock("me", -5)), Decision::Take),
            (Some(lock("other", -1)), Decision::Take),
            (Some(lock("other", 0)), Decision::Take),
            (
                Some(lock("other", 20)),
                Decision::Wait {
                    holder: "other".into(),
                    until: now + chrono::TimeDelta::seconds(20),
                },
            ),
        ];
        for (current, want) in cases {
            assert_eq!(
                decide(current.as_ref(), "me", now, |_| true),
                want,
                "{current:?}"
            );
        }
        assert!(holder().contains(&format!("/{}/", std::process::id())));

        // A holder of this host that is gone is taken at once; one that runs, or of another
        // host, is waited for. (holder, alive, taken)
        let me = "pod-0/1/0000beef";
        let cases = [
            ("pod-0/1/0000cafe", true, true),
            ("pod-0/77/0000cafe", false, true),
            ("pod-0/77/0000cafe", true, false),
            ("pod-1/1/0000cafe", false, false),
            ("a/b/pod-0/77/0000cafe", false, false),
            ("not a holder", false, false),
        ];
        for (other, runs, taken) in cases {
            let got = decide(Some(&lock(other, 20)), me, now, |_| runs);
            assert_eq!(
                got == Decision::Take,
                taken,
                "{other} alive {runs}: {got:?}"
            );
        }
        assert!(crate::scratch::running(std::process::id()));
        assert!(!crate::scratch::running(u32::MAX >> 2), "no such process");
    }
}
