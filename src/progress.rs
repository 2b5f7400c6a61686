//! Progress lines for long transfers: at most one every `every` (BACKUP_PROGRESS_INTERVAL), with
//! the bytes so far, the rate and, when the total is known, the share done. A transfer shorter
//! than one interval logs none. JSON logs carry the same fields.

use std::time::{Duration, Instant};

pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    every: Option<Duration>,
    started: Instant,
    next: Option<Instant>,
    bytes: u64,
}

impl Progress {
    /// `what` names the transfer in the log line ("snapshot", "download"); `every` of `None`
    /// turns the lines off.
    pub fn new(what: &'static str, total: Option<u64>, every: Option<Duration>) -> Progress {
        let started = Instant::now();
        Progress {
            what,
            total,
            every,
            started,
            next: every.map(|e| started + e),
            bytes: 0,
        }
    }

    /// Counts `n` more bytes and logs a line if one is due.
    pub fn advance(&mut self, n: usize) {
        self.bytes += n as u64;
        let (Some(next), Some(every)) = (self.next, self.every) else {
            return;
        };
        let now = Instant::now();
        if now < next {
            return;
        }
        self.next = Some(now + every);
        let secs = now.duration_since(self.started).as_secs_f64();
        let rate = (self.bytes as f64 / secs.max(1e-3) / (1 << 20) as f64 * 10.0).round() / 10.0;
        match self.total.filter(|t| *t > 0) {
            Some(total) => tracing::info!(
                bytes = self.bytes,
                total_bytes = total,
                percent = (self.bytes as f64 * 1000.0 / total as f64).round() / 10.0,
                mib_per_s = rate,
                "{} in progress",
                self.what
            ),
            None => tracing::info!(
                bytes = self.bytes,
                mib_per_s = rate,
                "{} in progress",
                self.what
            ),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}
