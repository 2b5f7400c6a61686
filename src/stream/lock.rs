//! One writer per prefix: a stream holds `stream/lock.json` while it writes, renewing it every
//! [`RENEW`]; a second stream waits until the holder lets go (on SIGTERM) or stops renewing
//! (a crash: the lock expires after [`TTL`]), then continues the generation from the bucket. A
//! stream restarted in the same pod (the same HOSTNAME) after a crash takes its own dead lock at
//! once instead of waiting it out.
//!
//! The lock is taken and renewed with S3's conditional writes (created only if absent,
//! replaced only if its ETag is the one read), so two streams can never both hold it; on a
//! store without them, taking it is write, wait [`SETTLE`], read back: of two streams that both
//! found it free, the one whose write landed last holds it, and the other sees that and waits.
//! A holder that finds another's name in the lock (it was paused past the expiry), or whose
//! conditional renewal fails, stops writing at once and waits again, dropping what it had not
//! uploaded: the new holder continues from the bucket's last segment.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::names::DIR;
use super::objects::MAX_RECORD;
use crate::shutdown::{Interrupted, Shutdown};
use crate::store::objects::{Condition, Conditional, Kind};
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

/// The lock as stored with its ETag: `None` when there is none; the lock `None` when it is
/// not one we wrote.
async fn read_tagged(store: &Store) -> Result<Option<(Option<Lock>, Option<String>)>, StoreError> {
    let got = store.get_small_tagged(&path(), MAX_RECORD).await?;
    Ok(got.map(|(b, tag)| (serde_json::from_slice(&b).ok(), tag)))
}

/// How taking the lock went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// It is ours, with the ETag it was written with (when the store gives one).
    Ours(Option<String>),
    /// Another stream holds it, or wrote it first.
    Theirs {
        holder: String,
        until: DateTime<Utc>,
    },
    /// Another stream wrote it between our read and our write: read it again.
    Raced,
    /// The store does not do conditional writes: write, wait, read back.
    Unconditional,
}

/// One try at the lock at `now`: read it, decide, and write it only if it is still as read
/// (created only if absent, replaced only if its ETag is the one read), so that of two streams
/// that found it free, exactly one holds it.
pub async fn try_take(store: &Store, me: &str, now: DateTime<Utc>) -> Result<Taken, StoreError> {
    let current = read_tagged(store).await?;
    let lock = current.as_ref().and_then(|(l, _)| l.as_ref());
    if let Decision::Wait { holder, until } = decide(lock, me, now, crate::scratch::running) {
        return Ok(Taken::Theirs { holder, until });
    }
    let condition = match current {
        None => Condition::Absent,
        Some((_, Some(tag))) => Condition::Unchanged(tag),
        Some((_, None)) => return Ok(Taken::Unconditional),
    };
    let mine = Lock {
        holder: me.to_string(),
        expires: now + TTL,
    };
    let body = serde_json::to_vec(&mine).expect("plain struct");
    Ok(match store.put_if(&path(), body.into(), condition).await? {
        Conditional::Written(tag) => Taken::Ours(tag),
        Conditional::Lost => Taken::Raced,
        Conditional::Unsupported => Taken::Unconditional,
    })
}

/// Waits until this stream holds the lock; an error only for a shutdown. Where the store does
/// conditional writes the lock is taken by one ([`try_take`]); elsewhere by writing it,
/// waiting [`SETTLE`] and reading it back.
pub async fn acquire(store: &Store, held: &Held, shutdown: &Shutdown) -> Result<(), Interrupted> {
    let me = held.me.as_str();
    let mut told = false;
    let pause = |d: Duration| async move {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            i = shutdown.requested() => Err(i),
        }
    };
    loop {
        let now = Utc::now();
        let taken = match try_take(store, me, now).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("taking the stream's lock failed: {e}; trying again");
                pause(Duration::from_secs(5)).await?;
                continue;
            }
        };
        match taken {
            Taken::Ours(tag) => {
                *held.e_tag.lock().expect("not poisoned") = tag;
                tracing::info!(lock = %url(store), holder = me, "this stream writes to the prefix");
                return Ok(());
            }
            Taken::Raced => continue,
            Taken::Unconditional => {
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
                        *held.e_tag.lock().expect("not poisoned") = None;
                        tracing::info!(lock = %url(store), holder = me, "this stream writes to the prefix (written and read back: the store does not do conditional writes)");
                        return Ok(());
                    }
                }
            }
            Taken::Theirs { holder, until } => {
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
/// stream holds it. Each renewal replaces the lock only if it is as this stream last wrote it
/// (where the store does conditional writes). A renewal that fails (the bucket is away) is
/// tried again at the next interval.
pub async fn hold(store: &Store, held: &Held, shutdown: &Shutdown) {
    let me = held.me.as_str();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW) => {}
            // The stream is stopping: it lets go of the lock itself.
            _ = shutdown.requested() => std::future::pending::<()>().await,
        }
        let mine = Lock {
            holder: me.to_string(),
            expires: Utc::now() + TTL,
        };
        let tag = held.e_tag.lock().expect("not poisoned").clone();
        if let Some(tag) = tag {
            let body = serde_json::to_vec(&mine).expect("plain struct");
            match store
                .put_if(&path(), body.into(), Condition::Unchanged(tag))
                .await
            {
                Ok(Conditional::Written(t)) => {
                    *held.e_tag.lock().expect("not poisoned") = t;
                    continue;
                }
                Ok(Conditional::Lost) => return,
                Ok(Conditional::Unsupported) => {}
                Err(e) => {
                    tracing::warn!(
                        "renewing the stream's lock failed: {e}; trying again in {}s",
                        RENEW.as_secs()
                    );
                    continue;
                }
            }
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
    /// The ETag of the lock as this stream last wrote it (conditional renewals).
    e_tag: std::sync::Mutex<Option<String>>,
}

impl Held {
    pub fn new(me: String) -> Held {
        Held {
            me,
            lost: tokio::sync::Notify::new(),
            e_tag: std::sync::Mutex::new(None),
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

    #[tokio::test]
    async fn of_two_streams_that_find_the_lock_free_exactly_one_takes_it() {
        use std::sync::Arc;
        let store = Store::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://b",
            "etcd/",
            None,
        );
        let now = Utc::now();
        for round in 0..20 {
            let (a, b) = (format!("a/{round}/1"), format!("b/{round}/1"));
            let (ta, tb) = tokio::join!(try_take(&store, &a, now), try_take(&store, &b, now));
            let (ta, tb) = (ta.unwrap(), tb.unwrap());
            let ours = [&ta, &tb]
                .iter()
                .filter(|t| matches!(t, Taken::Ours(_)))
                .count();
            assert_eq!(ours, 1, "round {round}: {ta:?} {tb:?}");
            let holder = read(&store).await.unwrap().unwrap().holder;
            assert!(holder == a || holder == b);
            // The loser sees the winner's live lock.
            let loser = if holder == a { &b } else { &a };
            assert!(matches!(
                try_take(&store, loser, now).await.unwrap(),
                Taken::Theirs { .. }
            ));
            store.delete_object(&path()).await.unwrap();
        }

        // Past its expiry a lock is replaced only as it was read: the old holder's renewal,
        // conditional on what it wrote, then fails.
        let Taken::Ours(old_tag) = try_take(&store, "a/0/1", now).await.unwrap() else {
            panic!("a free lock is taken");
        };
        let later = now + chrono::TimeDelta::seconds(31);
        assert!(matches!(
            try_take(&store, "b/0/1", later).await.unwrap(),
            Taken::Ours(_)
        ));
        let renewal = store
            .put_if(
                &path(),
                b"{}".to_vec().into(),
                Condition::Unchanged(old_tag.unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(renewal, Conditional::Lost);
        assert_eq!(read(&store).await.unwrap().unwrap().holder, "b/0/1");
    }
}
