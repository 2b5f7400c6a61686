//! The stream's segments on the way back: fetched one ahead of the thread that reads them,
//! each to an unnamed scratch file while its SHA-256 is computed (memory holds one revision,
//! disk one segment or two), and each checked against the plan before a record of it is
//! used: it must name the plan's generation and cluster, hold the revisions its name says, and,
//! where it follows a segment read before it, name that segment's hash. A segment planted in
//! the bucket, renamed, or written by another stream is refused by name, never restored.
//!
//! Also here: the revisions between two points ([`revisions_between`]) and the time lookup
//! ([`resolve`]: a time is the last revision the stream had received by then).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::plan::{Plan, Point, Source};
use crate::crypt::Identities;
use crate::shutdown::Shutdown;
use crate::sign::{BadSignature, VerifyKeys, SEGMENT_NAMESPACE};
use crate::snapshot::verify;
use crate::store::Store;
use crate::stream::names::Name;
use crate::stream::objects;
use crate::stream::segment::{Reader, Record, Revision};

/// What reading segments needs besides the store: where to put them while they are read, the
/// identities that open encrypted ones, and the shutdown that stops it all.
#[derive(Clone, Copy)]
pub struct Reading<'a> {
    pub tmp_dir: &'a Path,
    pub identities: &'a Option<std::sync::Arc<Identities>>,
    pub trust: &'a Trusting,
    pub shutdown: &'a Shutdown,
}

/// One downloaded segment: its stored bytes on an unnamed scratch file, and their SHA-256.
struct Fetched {
    name: Name,
    file: File,
    sha256: String,
}

async fn fetch_one(store: &Store, name: Name, dir: &Path) -> anyhow::Result<Fetched> {
    let (_, mut stream) = objects::download(store, &name).await?;
    let mut file = tempfile::tempfile_in(dir)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
    let mut sha = Sha256::new();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| anyhow!("reading {}: {}", objects::url(store, &name), e))?
    {
        sha.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("writing a scratch file in {}", dir.display()))?;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(Fetched {
        name,
        file,
        sha256: verify::hex(&sha.finalize()),
    })
}

/// Downloads `names` in order into `tx`, one ahead of the reader; stops when it goes.
async fn fetch(
    store: &Store,
    names: Vec<Name>,
    dir: &Path,
    tx: mpsc::Sender<anyhow::Result<Fetched>>,
) {
    for name in names {
        let got = fetch_one(store, name, dir).await;
        let failed = got.is_err();
        if tx.send(got).await.is_err() || failed {
            return;
        }
    }
}

/// The records of a run of segments, in order, each segment checked as the module says.
struct Feed<'a> {
    rx: mpsc::Receiver<anyhow::Result<Fetched>>,
    ids: Option<&'a Identities>,
    trust: Trusting,
    url: String,
    generation: String,
    cluster_id: String,
    /// The revision, hash and name of the segment read last; at first, the base the run
    /// starts at when the generation's first segment chains to it.
    previous: Option<(i64, String, String)>,
    current: Option<(Name, Reader<Box<dyn Read + Send + 'a>>)>,
    /// The newest revision of the segments read whole and vouched for.
    reached: Option<i64>,
}

impl<'a> Feed<'a> {
    fn new(
        rx: mpsc::Receiver<anyhow::Result<Fetched>>,
        ids: Option<&'a Identities>,
        trust: Trusting,
        url: String,
        plan: &Plan,
    ) -> Feed<'a> {
        Feed {
            rx,
            ids,
            trust,
            url,
            generation: plan.generation.to_string(),
            cluster_id: plan.cluster_id.clone(),
            previous: plan.start_base.then(|| {
                let base = format!("base:{}", plan.base_revision);
                (plan.base_revision, base.clone(), base)
            }),
            current: None,
            reached: None,
        }
    }

    fn next(&mut self) -> anyhow::Result<Option<Record>> {
        loop {
            if let Some((name, r)) = &mut self.current {
                match r
                    .next_record()
                    .with_context(|| format!("reading {}{name}", self.url))?
                {
                    Some(rec) => return Ok(Some(rec)),
                    None => {
                        let last = r.header().last;
                        self.vouch()?;
                        self.reached = Some(last);
                        self.current = None;
                    }
                }
            }
            let Some(got) = self.rx.blocking_recv() else {
                return Ok(None);
            };
            let f = got?;
            let at = format!("{}{}", self.url, f.name);
            let r = crate::stream::seal::open(BufReader::with_capacity(1 << 16, f.file), self.ids)
                .with_context(|| format!("opening {at}"))?;
            let h = r.header().clone();
            let Name::Segment { first, last, .. } = f.name else {
                bail!("{at} is not a segment");
            };
            if h.generation != self.generation || h.cluster_id != self.cluster_id {
                bail!("refusing {at}: it says it is of generation {} of cluster {}, but it is stored under generation {} of cluster {} (it was copied or planted there)", h.generation, h.cluster_id, self.generation, self.cluster_id);
            }
            if (h.first, h.last) != (first, last) {
                bail!("refusing {at}: it holds revisions {}..={}, not those its name says (it was renamed or planted)", h.first, h.last);
            }
            if let Some((prev_last, prev_sha, prev_name)) = &self.previous {
                if h.first <= *prev_last {
                    bail!("refusing {at}: its revisions {}..={} overlap those of {}{prev_name}, read before it (two writers, or a segment planted beside the real ones); `list --generations` shows the overlap", h.first, h.last, self.url);
                }
                if h.first == prev_last + 1 && &h.previous != prev_sha {
                    bail!("refusing {at}: it does not continue the segment before it (it names {}, the one before is {prev_sha}); a segment was replaced or planted", h.previous);
                }
            }
            self.previous = Some((h.last, f.sha256, f.name.to_string()));
            self.current = Some((f.name, r));
        }
    }

    /// With verify keys, whether the segment just read to its end is signed by one of them.
    fn vouch(&self) -> anyhow::Result<()> {
        let (Some((name, r)), Some(keys)) = (&self.current, &self.trust.keys) else {
            return Ok(());
        };
        let at = format!("{}{name}", self.url);
        match r.signature() {
            Some((msg, sig)) => match keys.check_in(SEGMENT_NAMESPACE, msg, sig) {
                Ok(_) => Ok(()),
                Err(BadSignature::Invalid) => bail!("refusing {at}: its signature does not match its contents (it was changed after signing, by someone who can write to the bucket)"),
                Err(why) => bail!("refusing {at}: {why}; it was changed or planted by someone who can write to the bucket"),
            },
            None if self.trust.allow_unsigned => {
                tracing::warn!("{at} is not signed; reading it anyway (--allow-unsigned-history)");
                Ok(())
            }
            None => bail!("refusing {at}: it is not signed, and BACKUP_VERIFY_KEY is set (a segment from before the stream had BACKUP_SIGNING_KEY_FILE, or one planted in the bucket); pass --allow-unsigned-history to read unsigned segments anyway"),
        }
    }

    /// A refusal, with what is still reachable before the refused segment.
    fn reachable(&self, e: anyhow::Error) -> anyhow::Error {
        match self.reached {
            Some(r) if format!("{e:#}").contains("refusing ") => anyhow!(
                "{e:#}\nbefore it, revisions up to {r} are whole{} (`restore --to-revision {r}` reaches them)",
                if self.trust.keys.is_some() { " and signed" } else { "" }
            ),
            _ => e,
        }
    }

    /// Reads the segment in hand to its end, so that its hash and signature are checked even
    /// when the reader stopped inside it (the last segment of a plan is rarely read whole).
    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some((name, r)) = &mut self.current {
            while r
                .next_record()
                .with_context(|| format!("reading {}{name}", self.url))?
                .is_some()
            {}
            self.vouch()?;
            self.current = None;
        }
        Ok(())
    }
}

/// What the way back trusts: with verify keys, only segments signed by one of them (and with
/// `allow_unsigned` unsigned ones too; never a bad signature).
#[derive(Debug, Clone, Default)]
pub struct Trusting {
    pub keys: Option<VerifyKeys>,
    pub allow_unsigned: bool,
}

/// Runs `work` on a blocking thread over the records of `plan`'s segments, downloaded beside
/// it. A shutdown stops both.
pub async fn over_segments<T: Send + 'static>(
    store: &Store,
    plan: &Plan,
    names: Vec<Name>,
    read: &Reading<'_>,
    work: impl FnOnce(&mut dyn FnMut() -> anyhow::Result<Option<Record>>) -> anyhow::Result<T>
        + Send
        + 'static,
) -> anyhow::Result<T> {
    let (tx, rx) = mpsc::channel(1);
    let ids = read.identities.clone();
    let url = objects::url(store, &Name::Start(plan.generation));
    let url = url.trim_end_matches("generation.json").to_string();
    let plan = plan.clone();
    let trust = read.trust.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let mut feed = Feed::new(rx, ids.as_deref(), trust, url, &plan);
        let done = work(&mut || feed.next()).and_then(|d| feed.finish().map(|()| d));
        done.map_err(|e| feed.reachable(e))
    });
    let fetching = fetch(store, names, read.tmp_dir, tx);
    let (_, done) = read
        .shutdown
        .or_interrupted(async {
            Ok(tokio::join!(fetching, async {
                worker
                    .await
                    .context("the thread reading the segments panicked")
            }))
        })
        .await?;
    done?
}

/// Feeds `f` each revision after `after` up to `upto` from `next`, in order, and stops there.
pub fn revisions_between(
    next: &mut dyn FnMut() -> anyhow::Result<Option<Record>>,
    after: i64,
    upto: i64,
    mut f: impl FnMut(Revision),
) -> anyhow::Result<()> {
    while let Some(rec) = next()? {
        let Record::Revision(r) = rec else { continue };
        if r.revision > upto {
            break;
        }
        if r.revision > after {
            f(r);
        }
    }
    Ok(())
}

/// Resolves a point to a revision: a time is the newest revision the stream had received at
/// or before it, by the receipt times the segments themselves record (the S3 server's clock,
/// `Last-Modified`, is never asked), in the newest generation started by then. Receipt times
/// grow with the revisions, so the segment that holds the answer is found by a binary search
/// over the first receipt time of each (a download each, about log2 of the segments). A time
/// before the generation's first received revision reaches its base only if the base had been
/// published by then; else it is refused with the earliest time that can be reached.
pub async fn resolve(
    store: &Store,
    sources: &[Source],
    point: Point,
    read: &Reading<'_>,
) -> anyhow::Result<i64> {
    let t = match point {
        Point::Revision(r) => return Ok(r),
        Point::Time(t) => t,
    };
    let Some(s) = sources.iter().rev().find(|s| s.generation.0 <= t) else {
        bail!(
            "no stream generation under {} had started by {t} (`list --generations` shows when each began)",
            store.url_prefix()
        );
    };
    let mut segments = s.segments.clone();
    segments.sort_by_key(|g| (g.first, g.last));
    let t_ms = t.timestamp_millis();
    let plan = |names: Vec<Name>| Plan {
        generation: s.generation,
        cluster_id: s.cluster_id.clone(),
        base_revision: 0,
        base: String::new(),
        start_base: false,
        segments: names,
        revision: 0,
    };
    // Each probe reads one segment (whole: its hash and signature are checked).
    let first_received = |i: usize| {
        let names = vec![segments[i].name];
        let plan = plan(names.clone());
        async move {
            over_segments(store, &plan, names, read, |next| {
                while let Some(rec) = next()? {
                    if let Record::Revision(r) = rec {
                        return Ok(r.received_ms);
                    }
                }
                bail!("a segment without a revision")
            })
            .await
        }
    };
    // The number of segments whose first revision was received by T; the first segment's
    // time, once probed (a search that ends at 0 has probed it).
    let (mut lo, mut hi, mut first) = (0, segments.len(), None);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let received = first_received(mid).await?;
        if mid == 0 {
            first = Some(received);
        }
        if received <= t_ms {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        let base = s.bases.iter().map(|b| b.0).min().unwrap_or(0);
        return match s.base_completed {
            Some(done) if done <= t => Ok(base),
            done => {
                let earliest = match (done, first) {
                    (Some(done), _) => done.to_rfc3339(),
                    (None, Some(ms)) => DateTime::<Utc>::from_timestamp_millis(ms)
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_else(|| format!("{ms} ms")),
                    (None, None) => "not yet: it has no segment".into(),
                };
                bail!("{t} is before the earliest moment generation {} reaches: {earliest} (its base, revision {base}, was taken after {t}, so it may hold later changes)", s.generation)
            }
        };
    }
    let names = vec![segments[lo - 1].name];
    over_segments(store, &plan(names.clone()), names, read, move |next| {
        let mut found = None;
        while let Some(rec) = next()? {
            if let Record::Revision(r) = rec {
                if r.received_ms > t_ms {
                    break;
                }
                found = Some(r.revision);
            }
        }
        found
            .ok_or_else(|| anyhow!("a segment whose first revision was received by {t} holds none"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use crate::pitr::plan::Point;
    use crate::sign::SigningKey;
    use crate::stream::names::Generation;
    use crate::stream::segment::tests::{put, sealed_by};
    use crate::stream::segment::Header;

    const CLUSTER: &str = "cafe";

    fn generation(s: &str) -> Generation {
        Generation::parse(s).unwrap()
    }

    fn gen() -> Generation {
        generation("20261204T170000Z")
    }

    /// A segment of revisions `first..=last` as the stream seals it (zstd, no age), with the
    /// header fields the test gives.
    fn segment(g: Generation, cluster: &str, first: i64, last: i64, previous: &str) -> Vec<u8> {
        signed(g, cluster, (first, last), previous, None, b"v")
    }

    /// [`segment`], signed with `key`, every value `value`.
    fn signed(
        g: Generation,
        cluster: &str,
        (first, last): (i64, i64),
        previous: &str,
        key: Option<&SigningKey>,
        value: &[u8],
    ) -> Vec<u8> {
        let records: Vec<Record> = (first..=last)
            .map(|r| {
                Record::Revision(Revision {
                    revision: r,
                    received_ms: gen().0.timestamp_millis() + r * 1000,
                    events: vec![put(r, &format!("/k/{r}"), value)],
                })
            })
            .collect();
        let header = Header {
            generation: g.to_string(),
            cluster_id: cluster.into(),
            first,
            last,
            revisions: records.len() as u64,
            events: records.len() as u64,
            previous: previous.into(),
        };
        zstd::encode_all(&sealed_by(&records, &header, key)[..], 3).unwrap()
    }

    fn name(g: Generation, first: i64, last: i64) -> Name {
        Name::Segment {
            generation: g,
            first,
            last,
            encrypted: false,
        }
    }

    /// Stores `body` as `name`; returns its hash, as the next segment names it.
    async fn store_as(store: &Store, name: Name, body: Vec<u8>) -> String {
        let sha = verify::hex(&Sha256::digest(&body));
        objects::put(store, &name, body.into()).await.unwrap();
        sha
    }

    fn plan(segments: &[Name]) -> Plan {
        Plan {
            generation: gen(),
            cluster_id: CLUSTER.into(),
            base_revision: 10,
            base: "20261204-170000.db.zst".into(),
            start_base: true,
            segments: segments.to_vec(),
            revision: 40,
        }
    }

    /// Reads every record of `names` through the feed; the revisions read, or the refusal.
    async fn read(store: &Store, names: &[Name]) -> Result<Vec<i64>, String> {
        read_upto(store, names, &Trusting::default(), i64::MAX).await
    }

    /// [`read`] up to revision `upto`, trusting as `trust` says.
    async fn read_upto(
        store: &Store,
        names: &[Name],
        trust: &Trusting,
        upto: i64,
    ) -> Result<Vec<i64>, String> {
        let tmp = tempfile::tempdir().unwrap();
        let reading = Reading {
            tmp_dir: tmp.path(),
            identities: &None,
            trust,
            shutdown: &Shutdown::never(),
        };
        over_segments(store, &plan(names), names.to_vec(), &reading, move |next| {
            let mut seen = Vec::new();
            revisions_between(next, 0, upto, |r| seen.push(r.revision))?;
            Ok(seen)
        })
        .await
        .map_err(|e| format!("{e:#}"))
    }

    /// A whole chain of three segments after the base at 10: 11-20, 21-30, 31-40.
    async fn chain() -> (Store, Vec<Name>) {
        let store = Store::new(Arc::new(InMemory::new()), "memory://b", "etcd/", None);
        let mut previous = "base:10".to_string();
        let mut names = Vec::new();
        for (first, last) in [(11, 20), (21, 30), (31, 40)] {
            let n = name(gen(), first, last);
            previous = store_as(&store, n, segment(gen(), CLUSTER, first, last, &previous)).await;
            names.push(n);
        }
        (store, names)
    }

    #[tokio::test]
    async fn a_whole_chain_is_read_in_order() {
        let (store, names) = chain().await;
        assert_eq!(
            read(&store, &names).await.unwrap(),
            (11..=40).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn every_segment_that_is_not_the_chain_is_refused_by_name() {
        let (store, names) = chain().await;
        let real_sha = |i: usize| {
            let store = &store;
            let n = names[i];
            async move { verify::hex(&objects::sha256(store, &n).await.unwrap().unwrap().0) }
        };
        let after_first = real_sha(0).await;
        let other = generation("20261203T090000Z");
        // (what, the stored name, its bytes, the segments the plan reads, the refusal)
        type Case<'a> = (&'a str, Name, Vec<u8>, Vec<Name>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "rewritten with a changed chain (its hash recomputed)",
                names[1],
                segment(gen(), CLUSTER, 21, 30, "0000"),
                names.clone(),
                "does not continue the segment before it",
            ),
            (
                "planted from another generation",
                names[1],
                segment(other, CLUSTER, 21, 30, &after_first),
                names.clone(),
                "it says it is of generation 20261203T090000Z",
            ),
            (
                "planted from another cluster",
                names[1],
                segment(gen(), "beef", 21, 30, &after_first),
                names.clone(),
                "of cluster beef",
            ),
            (
                "renamed to another range",
                name(gen(), 21, 31),
                segment(gen(), CLUSTER, 21, 30, &after_first),
                vec![names[0], name(gen(), 21, 31)],
                "it holds revisions 21..=30, not those its name says",
            ),
            (
                "an overlapping segment beside the real ones",
                name(gen(), 15, 25),
                segment(gen(), CLUSTER, 15, 25, "whatever"),
                vec![names[0], name(gen(), 15, 25), names[1], names[2]],
                "overlap those of",
            ),
            (
                "a segment whose first is not the base's next",
                names[0],
                segment(gen(), CLUSTER, 11, 20, "base:9"),
                names.clone(),
                "does not continue the segment before it",
            ),
        ];
        for (what, stored_as, body, read_names, refusal) in cases {
            let (store, _) = chain().await;
            store_as(&store, stored_as, body).await;
            let e = read(&store, &read_names).await.unwrap_err();
            assert!(e.contains(refusal), "{what}: {e}");
            assert!(
                e.contains(&stored_as.to_string()),
                "{what}: names the segment: {e}"
            );
        }
        // The bite: the same reads pass on the untouched chain.
        assert!(read(&store, &names).await.is_ok());
    }

    /// A key pair: the signing key and the verify keys that accept it.
    fn keys(dir: &std::path::Path, name: &str) -> (SigningKey, VerifyKeys) {
        let made = crate::sign::keygen(&dir.join(name)).unwrap();
        let key = SigningKey::read(&made.private).unwrap();
        (key, VerifyKeys::parse(&made.public_key).unwrap())
    }

    /// The chain of [`chain`], each segment signed by `key`.
    async fn signed_chain(key: &SigningKey) -> (Store, Vec<Name>) {
        let store = Store::new(Arc::new(InMemory::new()), "memory://b", "etcd/", None);
        let mut previous = "base:10".to_string();
        let mut names = Vec::new();
        for (first, last) in [(11, 20), (21, 30), (31, 40)] {
            let n = name(gen(), first, last);
            let body = signed(gen(), CLUSTER, (first, last), &previous, Some(key), b"v");
            previous = store_as(&store, n, body).await;
            names.push(n);
        }
        (store, names)
    }

    #[tokio::test]
    async fn with_verify_keys_only_what_they_signed_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, ours_verify) = keys(dir.path(), "ours");
        let (theirs, _) = keys(dir.path(), "theirs");
        let trusting = |allow_unsigned| Trusting {
            keys: Some(ours_verify.clone()),
            allow_unsigned,
        };
        let (store, names) = signed_chain(&ours).await;
        let all: Vec<i64> = (11..=40).collect();
        assert_eq!(
            read_upto(&store, &names, &trusting(false), 40)
                .await
                .unwrap(),
            all
        );

        // The newest segment rewritten in place: one value changed, its inner SHA-256
        // recomputed, the same previous hash, the same name. Signed by another key, or keeping
        // the old signature, or with none: each refused by name, even when the reader stops
        // inside it (at revision 35).
        let prev = verify::hex(&objects::sha256(&store, &names[1]).await.unwrap().unwrap().0);
        let rewritten = |key| signed(gen(), CLUSTER, (31, 40), &prev, key, b"planted");
        let plain = |stored: &[u8]| zstd::decode_all(stored).unwrap();
        // Where the signature's length field starts: 4 bytes before its armor.
        let tail = |p: &[u8]| {
            let armor = b"-----BEGIN SSH SIGNATURE-----";
            p.len() - p.windows(armor.len()).rposition(|w| w == armor).unwrap() + 4
        };
        let original = {
            let mut body = Vec::new();
            let (_, mut stream) = objects::download(&store, &names[2]).await.unwrap();
            while let Some(chunk) = futures::TryStreamExt::try_next(&mut stream).await.unwrap() {
                body.extend_from_slice(&chunk);
            }
            plain(&body)
        };
        let old_signature_kept = {
            let planted = plain(&rewritten(Some(&ours)));
            let mut forged = planted[..planted.len() - tail(&planted)].to_vec();
            forged.extend_from_slice(&original[original.len() - tail(&original)..]);
            zstd::encode_all(&forged[..], 3).unwrap()
        };
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "signed by another key",
                rewritten(Some(&theirs)),
                "which is not one of BACKUP_VERIFY_KEY",
            ),
            (
                "the old signature kept",
                old_signature_kept,
                "its signature does not match its contents",
            ),
            ("unsigned", rewritten(None), "it is not signed"),
        ];
        for (what, body, refusal) in cases {
            let (store, names) = signed_chain(&ours).await;
            store_as(&store, names[2], body.clone()).await;
            for upto in [40, 35] {
                let e = read_upto(&store, &names, &trusting(false), upto)
                    .await
                    .unwrap_err();
                assert!(e.contains(refusal), "{what}, up to {upto}: {e}");
                assert!(e.contains(&names[2].to_string()), "{what}: names it: {e}");
                assert!(
                    e.contains("revisions up to 30 are whole and signed"),
                    "{what}: says what is reachable: {e}"
                );
            }
            // The bite: without verify keys the planted segment is read.
            assert_eq!(
                read_upto(&store, &names, &Trusting::default(), 40)
                    .await
                    .unwrap(),
                all,
                "{what}"
            );
            // --allow-unsigned-history reads an unsigned one, never a bad signature.
            let allowed = read_upto(&store, &names, &trusting(true), 40).await;
            assert_eq!(allowed.is_ok(), what == "unsigned", "{what}: {allowed:?}");
        }
    }

    #[tokio::test]
    async fn a_time_is_the_newest_revision_received_by_then_by_the_segments_own_times() {
        // Revision r was received r seconds after the generation started; its base (revision
        // 10) was published 5 s after.
        let (store, names) = chain().await;
        let at = |secs: i64| gen().0 + chrono::TimeDelta::milliseconds(secs * 1000 + 500);
        let source = |completed: Option<i64>| Source {
            generation: gen(),
            cluster_id: CLUSTER.into(),
            bases: vec![(10, "base".into())],
            floor: 10,
            segments: names
                .iter()
                .map(|&n| {
                    let Name::Segment { first, last, .. } = n else {
                        unreachable!()
                    };
                    crate::pitr::plan::Segment {
                        name: n,
                        first,
                        last,
                        // The server's clock says nothing of when a revision arrived.
                        uploaded: gen().0 - chrono::TimeDelta::days(1),
                    }
                })
                .collect(),
            base_completed: completed.map(|s| gen().0 + chrono::TimeDelta::seconds(s)),
        };
        let tmp = tempfile::tempdir().unwrap();
        let trust = Trusting::default();
        let reading = Reading {
            tmp_dir: tmp.path(),
            identities: &None,
            trust: &trust,
            shutdown: &Shutdown::never(),
        };
        // (seconds after the start, the base's publication, the revision or the refusal)
        let cases: Vec<(i64, Option<i64>, Result<i64, &str>)> = vec![
            (25, Some(5), Ok(25)),
            (20, Some(5), Ok(20)),
            (11, Some(5), Ok(11)),
            (31, Some(5), Ok(31)),
            (99, Some(5), Ok(40)),
            (7, Some(5), Ok(10)),
            (3, Some(5), Err("before the earliest moment generation 20261204T170000Z reaches: 2026-12-04T17:00:05")),
            (7, None, Err("reaches: 2026-12-04T17:00:11")),
        ];
        for (secs, completed, want) in cases {
            let got = resolve(
                &store,
                &[source(completed)],
                Point::Time(at(secs)),
                &reading,
            )
            .await
            .map_err(|e| e.to_string());
            match (&want, &got) {
                (Ok(w), Ok(g)) if w == g => {}
                (Err(w), Err(g)) if g.contains(w) => {}
                _ => {
                    panic!("at +{secs}s (base published {completed:?}): want {want:?}, got {got:?}")
                }
            }
        }
        let e = resolve(
            &store,
            &[source(None)],
            Point::Time(gen().0 - chrono::TimeDelta::seconds(1)),
            &reading,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no stream generation"), "{e}");
    }
}
