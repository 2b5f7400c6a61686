//! The stream section: how often segments are cut and bases taken, how much may wait on
//! scratch disk, and where the stream serves its metrics.

use std::net::SocketAddr;
use std::time::Duration;

use super::reader::{parse_size, Reader};
use super::vars::Key;

/// What `stream` needs beyond what `backup` does.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub segment_interval: Duration,
    pub segment_max_bytes: u64,
    pub base_interval: Duration,
    pub spool_max_bytes: u64,
    pub listen: Option<SocketAddr>,
}

pub(super) fn stream(r: &mut Reader<'_>) -> Option<StreamSettings> {
    let before = r.count();
    let segment_interval = r.parse(
        Key::BackupSegmentInterval,
        "expected a duration from 1s to 1h, such as 10s",
        |v| {
            humantime::parse_duration(v)
                .ok()
                .filter(|d| (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(d))
        },
    );
    let segment_max_bytes = r.parse(
        Key::BackupSegmentMaxBytes,
        "expected a size from 64KiB to 1GiB, such as 8MiB",
        |v| parse_size(v).filter(|b| (64 << 10..=1 << 30).contains(b)),
    );
    let base_interval = r.parse(
        Key::BackupBaseInterval,
        "expected a duration of at least 10s, such as 1h",
        |v| {
            humantime::parse_duration(v)
                .ok()
                .filter(|d| *d >= Duration::from_secs(10))
        },
    );
    let spool_max_bytes = r.parse(
        Key::BackupSpoolMaxBytes,
        "expected a size of at least 16MiB, such as 1GiB",
        |v| parse_size(v).filter(|b| *b >= 16 << 20),
    );
    let listen = r.parse(
        Key::BackupMetricsListen,
        "expected an address and port such as 0.0.0.0:9402 or 127.0.0.1:9402",
        |v| v.parse::<SocketAddr>().ok(),
    );
    (r.count() == before).then_some(StreamSettings {
        segment_interval: segment_interval?,
        segment_max_bytes: segment_max_bytes?,
        base_interval: base_interval?,
        spool_max_bytes: spool_max_bytes?,
        listen,
    })
}
