//! The watch a new generation opens before its base. A base may take as long as it needs (an
//! 8 GiB database under adaptive pacing takes a quarter of an hour), while Kubernetes compacts
//! etcd every five minutes: a watch opened after the base, from the base's revision + 1, would
//! find that revision compacted, end the generation and take another base, for ever. So the
//! watch opens first, at the member's current revision, and spools what it delivers to scratch
//! disk (at most BACKUP_SPOOL_MAX_BYTES) while the base is taken; the revisions the base does
//! not hold are then replayed into the generation's first segments ([`super::follow`]) and the
//! live watch continues after the spool's last. An established watch is not cut by a
//! compaction: only a watch that must catch up from history is.
//!
//! Anything that goes wrong here (no member, the watch breaking, the spool's limit) only costs
//! what it costs today: the generation watches from the base's revision + 1, logged.

use std::path::PathBuf;

use etcd_client::WatchOptions;
use tokio::sync::oneshot;

use super::chain::{follows, Assembler};
use super::segment::{Header, Record, Records, Revision};
use crate::config::EtcdConfig;
use crate::etcd::Members;

/// What the early watch received, on scratch disk.
pub struct Spooled {
    pub records: Records,
    pub cluster_id: String,
}

impl Spooled {
    /// The spool, sealed (unsigned, uncompressed) to a scratch file in `dir` and opened to be
    /// read back through the segment reader's checks, a batch at a time.
    pub fn replay(self, dir: &std::path::Path) -> anyhow::Result<Replay> {
        let (Some(first), Some(last)) = (self.records.first, self.records.last) else {
            return Ok(Replay { reader: None });
        };
        let header = Header {
            generation: String::new(),
            cluster_id: self.cluster_id.clone(),
            first,
            last,
            revisions: self.records.revisions,
            events: self.records.events,
            previous: String::new(),
        };
        let file = crate::scratch::file(dir, ".prelude")?;
        self.records
            .seal(&header, None, std::io::BufWriter::new(file.as_file()))?;
        let reader = super::segment::Reader::new(std::io::BufReader::new(file.reopen()?))?;
        Ok(Replay {
            reader: Some((reader, file)),
        })
    }
}

/// The spooled revisions, read back in order.
pub struct Replay {
    reader: Option<(
        super::segment::Reader<std::io::BufReader<std::fs::File>>,
        tempfile::NamedTempFile,
    )>,
}

impl Replay {
    /// The next revisions after `after`, until their values and keys reach `max_bytes` (at
    /// least one revision); empty at the end. Memory holds one batch.
    pub fn next(&mut self, after: i64, max_bytes: usize) -> anyhow::Result<Vec<Revision>> {
        let mut out = Vec::new();
        let Some((r, _)) = &mut self.reader else {
            return Ok(out);
        };
        let mut bytes = 0;
        while out.is_empty() || bytes < max_bytes {
            match r.next_record()? {
                Some(Record::Revision(rev)) if rev.revision > after => {
                    bytes += rev
                        .events
                        .iter()
                        .map(|e| e.kv.key.len() + e.kv.value.len())
                        .sum::<usize>();
                    out.push(rev)
                }
                Some(_) => {}
                None => {
                    self.reader = None;
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// The early watch while it runs.
pub struct Holding {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Spooled>>,
}

/// Opens the early watch on a member of `etcd`; `None` (logged) when it cannot.
pub async fn open(etcd: &EtcdConfig, tmp_dir: PathBuf, max_bytes: u64) -> Option<Holding> {
    let mut members = Members::new(etcd);
    let member = match members.choose().await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("the watch cannot open before the base ({e}); it opens after it");
            return None;
        }
    };
    let from = member.status.revision + 1;
    let opts = WatchOptions::new()
        .with_all_keys()
        .with_start_revision(from)
        .with_fragment();
    let mut client = member
        .client
        .watch_client()
        .max_decoding_message_size(256 << 20);
    let mut stream = match client.watch(vec![0u8], Some(opts)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("the watch cannot open before the base ({e}); it opens after it");
            return None;
        }
    };
    tracing::info!(endpoint = %member.status.endpoint, from, "the watch opened before the base");
    let cluster_id = member.status.cluster_id.clone();
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut records = Records::new(&tmp_dir)?;
        let mut assembler = Assembler::default();
        let mut last = from - 1;
        loop {
            let message = tokio::select! {
                biased;
                _ = &mut stopped => break,
                m = stream.message() => m,
            };
            let Some(resp) = message? else {
                anyhow::bail!("the watch ended");
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                anyhow::bail!(
                    "etcd cancelled the watch ({}, compacted to {})",
                    resp.cancel_reason(),
                    resp.compact_revision()
                );
            }
            let received = chrono::Utc::now().timestamp_millis();
            for rev in assembler.push_response(&resp, received) {
                follows(last, rev.revision).map_err(|b| anyhow::anyhow!("{b}"))?;
                last = rev.revision;
                records.push(&Record::Revision(rev))?;
            }
            if records.bytes > max_bytes {
                anyhow::bail!("it holds more than BACKUP_SPOOL_MAX_BYTES ({max_bytes})");
            }
        }
        Ok(Spooled {
            records,
            cluster_id,
        })
    });
    Some(Holding { stop, task })
}

impl Holding {
    /// Stops the early watch; what it received, or `None` (logged) when it broke.
    pub async fn finish(self) -> Option<Spooled> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::warn!("the watch opened before the base broke ({e:#}); the generation watches from the base's revision");
                None
            }
            Err(e) => {
                tracing::warn!("the watch opened before the base failed ({e}); the generation watches from the base's revision");
                None
            }
        }
    }
}
