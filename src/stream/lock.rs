//! One writer per prefix: a stream holds `stream/lock.json` while it writes, renewing it every
//! [`RENEW`]; a second stream waits until the holder lets go (on SIGTERM) or stops renewing
//! (a crash: the lock expires after [`TTL`]), then continues the generation from the bucket.
//!
//! S3 has no compare-and-swap every server supports, so taking the lock is write, wait
//! [`SETTLE`], read back: of two streams that both found it free, the one whose write landed
//! last holds it, and the other sees that and waits. A holder that finds another's name in the
//! lock (it was paused past the expiry) stops writing at once and waits again, dropping what it
//! had not uploaded: the new holder continues from the bucket's last segment.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

/// Whether `me` may take the lock `current` at `now`: when there is none, it is ours, or it
/// expired.
pub fn decide(current: Option<&Lock>, me: &str, now: DateTime<Utc>) -> Decision {
    match current {
        Some(l) if l.holder != me && l.expires > now => Decision::Wait {
            holder: l.holder.clone(),
            until: l.expires,
        },
        _ => Decision::Take,
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
            assert_eq!(decide(current.as_ref(), "me", now), want, "{current:?}");
        }
        assert!(holder().contains(&format!("/{}/", std::process::id())));
    }
}
