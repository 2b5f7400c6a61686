//! [`Archive`]: the bucket as the way back reads it, one handle for the commands over the
//! stream's history. It reads the [`StreamView`] once into [`Source`]s, resolves points,
//! restores a plan's base (checked as `restore` checks any backup: trailer, walk, HashKV
//! against its manifest, signature with BACKUP_VERIFY_KEY), reads segments through
//! [`super::feed`], and rebuilds a database at a revision ([`super::rebuild`]).

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context};

use super::feed::{self, Reading, Trusting};
use super::plan::{self, Plan, Point, Source, Unreachable};
use super::rebuild::{self, Rebuild, Rebuilt};
use crate::config::RestoreConfig;
use crate::restore::{choose, restore, Destination, Which};
use crate::shutdown::Shutdown;
use crate::sign::BadSignature;
use crate::snapshot::verify::{self, Verified};
use crate::store::Store;
use crate::stream::kv::KeyValue;
use crate::stream::names::Name;
use crate::stream::objects;
use crate::stream::records::{StreamView, Vouch};
use crate::stream::segment::Record;

/// Which history the way back reads: `--allow-unsigned-history` and `--cluster-id`, the flags
/// of every command over the stream.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Choice {
    /// With BACKUP_VERIFY_KEY: read the stream's unsigned segments and records too (written
    /// before the stream had BACKUP_SIGNING_KEY_FILE). A bad signature is never allowed.
    #[arg(long)]
    pub allow_unsigned_history: bool,
    /// Read only the generations of this etcd cluster (its id, as `list --generations` shows
    /// it); needed when streams of several clusters share the prefix.
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
}

/// The bucket, the settings of the way back, what it trusts, and the shutdown that stops it.
pub struct Archive<'a> {
    pub store: &'a Store,
    pub cfg: &'a RestoreConfig,
    pub shutdown: &'a Shutdown,
    /// With BACKUP_VERIFY_KEY: only what one of its keys signed.
    pub trust: Trusting,
    /// Only this cluster's generations.
    pub cluster_id: Option<String>,
}

impl<'a> Archive<'a> {
    /// The way back through `store`, reading the history `choice` says.
    pub fn new(
        store: &'a Store,
        cfg: &'a RestoreConfig,
        shutdown: &'a Shutdown,
        choice: &Choice,
    ) -> Archive<'a> {
        Archive {
            store,
            cfg,
            shutdown,
            trust: Trusting {
                keys: cfg.verify_keys.clone(),
                allow_unsigned: choice.allow_unsigned_history,
            },
            cluster_id: choice.cluster_id.clone(),
        }
    }

    /// Every generation the bucket holds, as the plan reads them. With verify keys, a start
    /// record that does not pass leaves its generation out, a base record its base, each
    /// refusal logged by name: what is left is what a signed history reaches.
    pub async fn sources(&self) -> anyhow::Result<Vec<Source>> {
        let mut view = self
            .shutdown
            .or_interrupted(async { Ok(StreamView::read(self.store).await?) })
            .await?;
        let url = |n: &Name| objects::url(self.store, n);
        for g in &mut view.generations {
            if let Some(why) =
                refusal(&self.trust, g.start_vouch.as_ref()).filter(|_| g.start.is_some())
            {
                tracing::warn!(
                    "refusing {}: {why}; the generation is left out",
                    url(&Name::Start(g.generation))
                );
                g.start = None;
            }
            g.bases.retain(|b| {
                match refusal(&self.trust, b.vouch.as_ref()).filter(|_| b.record.is_some()) {
                    Some(why) => {
                        tracing::warn!("refusing {}: {why}; the base is left out", url(&b.name));
                        false
                    }
                    None => true,
                }
            });
        }
        one_cluster(plan::sources(&view), self.cluster_id.as_deref())
    }

    fn reading(&self) -> Reading<'_> {
        Reading {
            tmp_dir: &self.cfg.tmp_dir,
            identities: &self.cfg.identities,
            trust: &self.trust,
            shutdown: self.shutdown,
        }
    }

    /// A point as a revision ([`feed::resolve`]).
    pub async fn resolve(&self, sources: &[Source], point: Point) -> anyhow::Result<i64> {
        feed::resolve(self.store, sources, point, &self.reading()).await
    }

    /// The plan that reaches `point`, and the revision it resolved to.
    pub async fn plan(&self, sources: &[Source], point: Point) -> anyhow::Result<Plan> {
        let revision = self.resolve(sources, point).await?;
        plan::plan(sources, revision).map_err(|u: Unreachable| anyhow!("{u}"))
    }

    /// Runs `work` over the records of `names`, checked against `plan` ([`feed::over_segments`]).
    pub async fn over<T: Send + 'static>(
        &self,
        plan: &Plan,
        names: Vec<crate::stream::names::Name>,
        work: impl FnOnce(&mut dyn FnMut() -> anyhow::Result<Option<Record>>) -> anyhow::Result<T>
            + Send
            + 'static,
    ) -> anyhow::Result<T> {
        feed::over_segments(self.store, plan, names, &self.reading(), work).await
    }

    /// Writes the database at `plan.revision` into `out` (`shown` names it in errors): the base
    /// restored to a scratch file (gone on return), then the segments read beside the writer.
    /// Returns the base's own check and the written file with what went into it.
    pub async fn rebuild(
        &self,
        plan: &Plan,
        bump: Option<i64>,
        out: File,
        shown: String,
    ) -> anyhow::Result<(Verified, (File, Rebuilt))> {
        let (base, base_verified) = self.restore_base(plan).await?;
        let base_file = File::open(&base).with_context(|| format!("opening {}", base.display()))?;
        let base_len = base_file.metadata()?.len() - verify::TRAILER_LEN as u64;
        let (base_revision, revision) = (plan.base_revision, plan.revision);
        let written = self
            .over(plan, plan.segments.clone(), move |next| {
                let r = Rebuild {
                    base: &base_file,
                    base_len,
                    base_revision,
                    revision,
                    bump,
                };
                rebuild::rebuild(&r, next, out).with_context(|| format!("writing {shown}"))
            })
            .await?;
        drop(base);
        Ok((base_verified, written))
    }

    /// Restores the plan's base (checked as `restore` checks any backup: trailer, walk, HashKV
    /// against its manifest, signature with BACKUP_VERIFY_KEY) to a scratch file, removed on drop.
    pub async fn restore_base(
        &self,
        plan: &Plan,
    ) -> anyhow::Result<(tempfile::TempPath, Verified)> {
        let (store, cfg, shutdown) = (self.store, self.cfg, self.shutdown);
        let which: Which = plan.base.parse().map_err(|e| {
            anyhow!(
                "the base {:?} named by generation {}: {e}",
                plan.base,
                plan.generation
            )
        })?;
        let (key, trust, _) = shutdown
            .or_interrupted(choose(store, which, cfg.verify_keys.as_ref(), &[]))
            .await?;
        let path = crate::scratch::file(&cfg.tmp_dir, ".base.db")?.into_temp_path();
        let to = Destination {
            path: path.to_path_buf(),
            force: true,
        };
        let restored = restore(
            store,
            key,
            &to,
            shutdown,
            cfg.progress,
            cfg.identities.clone(),
            &trust,
        )
        .await
        .with_context(|| format!("restoring the base {}", plan.base))?;
        // The record that named the base must be the base's own: an older backup named as a
        // later base would silently drop every change between the two.
        let got = restored.verified.status.opened_at();
        if got.max(1) != plan.base_revision.max(1) {
            bail!("refusing the base {} of generation {}: its snapshot is at revision {got}, but the generation's record says {} (a record naming another backup, or one planted)", plan.base, plan.generation, plan.base_revision);
        }
        // The cluster its (signed, when there are verify keys) manifest names; without one,
        // what the object's metadata says.
        let cluster = match trust.vouched() {
            Some(v) => v.get("etcd-cluster-id").map(str::to_string),
            None => store
                .metadata(&key)
                .await?
                .into_iter()
                .find(|(k, _)| k == "etcd-cluster-id")
                .map(|(_, v)| v),
        };
        if let Some(cluster) = cluster.filter(|c| *c != plan.cluster_id) {
            bail!("refusing the base {} of generation {}: it is a backup of cluster {cluster}, the generation's record says {} (a record naming another cluster's backup, or one planted)", plan.base, plan.generation, plan.cluster_id);
        }
        Ok((path, restored.verified))
    }
}

/// The sources of one cluster: `chosen`'s, or the only one there is. Generations of two clusters
/// share no revision numbers' meaning, so a plan never mixes them: with several and none
/// chosen, a refusal that lists them.
pub fn one_cluster(sources: Vec<Source>, chosen: Option<&str>) -> anyhow::Result<Vec<Source>> {
    let mut clusters: Vec<(&str, String, String)> = Vec::new();
    for s in &sources {
        let g = s.generation.to_string();
        match clusters.iter_mut().find(|c| c.0 == s.cluster_id) {
            Some(c) => c.2 = g,
            None => clusters.push((&s.cluster_id, g.clone(), g)),
        }
    }
    if let Some(id) = chosen {
        if !clusters.iter().any(|c| c.0 == id) {
            let there: Vec<&str> = clusters.iter().map(|c| c.0).collect();
            bail!("no stream generation of cluster {id} here (the clusters there are: {}); check --cluster-id against `list --generations`", there.join(", "));
        }
        return Ok(sources.into_iter().filter(|s| s.cluster_id == id).collect());
    }
    if clusters.len() > 1 {
        let listed: Vec<String> = clusters
            .iter()
            .map(|(id, first, last)| format!("{id} (generations {first} to {last})"))
            .collect();
        bail!(
            "streams of {} clusters share this prefix: {}; pass --cluster-id to choose one",
            clusters.len(),
            listed.join(", ")
        );
    }
    Ok(sources)
}

/// Why a stream record does not count, with verify keys set; `None` when it does.
pub fn refusal(trust: &Trusting, vouch: Option<&Vouch>) -> Option<String> {
    let keys = trust.keys.as_ref()?;
    match vouch.and_then(|v| v.check(keys)) {
        Some(Ok(_)) => None,
        Some(Err(BadSignature::Invalid)) => Some("its signature does not match its contents or its name (it was changed or moved after signing, by someone who can write to the bucket)".into()),
        Some(Err(why)) => Some(format!("{why}; it was planted by someone who can write to the bucket")),
        None if trust.allow_unsigned => None,
        None => Some("it is not signed, and BACKUP_VERIFY_KEY is set (pass --allow-unsigned-history to use unsigned history)".into()),
    }
}

/// The newest state of `key` in a snapshot file: a scan of the whole `key` bucket (it is
/// ordered by revision, not by key).
pub fn latest_in_base(path: &Path, key: &[u8]) -> anyhow::Result<Option<KeyValue>> {
    use crate::snapshot::hashkv::{parse_key, user_key};
    let file = File::open(path)?;
    let len = file.metadata()?.len() - verify::TRAILER_LEN as u64;
    let mut db = crate::snapshot::bbolt::Db::open(&file, len)?;
    let mut latest: Option<(bool, Vec<u8>)> = None;
    db.scan(b"key", b"", &mut |k, v| {
        let bad = |e: crate::snapshot::hashkv::BadEntry| crate::snapshot::bbolt::Corruption::Page {
            page: 0,
            offset: 0,
            what: format!("key bucket: {e}"),
        };
        if user_key(v).map_err(bad)? == key {
            let (_, tomb) = parse_key(k).map_err(bad)?;
            latest = Some((tomb, v.to_vec()));
        }
        Ok(())
    })?;
    match latest {
        Some((false, v)) => Ok(Some(KeyValue::decode(&v)?)),
        _ => Ok(None),
    }
}

/// The backup name of the base at `plan.revision` in its generation.
pub fn base_name(sources: &[Source], plan: &Plan) -> String {
    sources
        .iter()
        .filter(|s| s.generation == plan.generation)
        .flat_map(|s| &s.bases)
        .find(|b| b.0 == plan.revision)
        .map(|b| b.1.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{SigningKey, VerifyKeys, RECORD_NAMESPACE};
    use crate::stream::names::Generation;
    use crate::stream::records::{signed_message, StartRecord};

    #[test]
    fn a_record_counts_only_signed_by_a_verify_key_for_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let key = |name: &str| {
            let made = crate::sign::keygen(&dir.path().join(name)).unwrap();
            let verify = VerifyKeys::parse(&made.public_key).unwrap();
            (SigningKey::read(&made.private).unwrap(), verify)
        };
        let ((ours, verify), (theirs, _)) = (key("ours"), key("theirs"));
        let g = |s| Name::Start(Generation::parse(s).unwrap());
        let (here, elsewhere) = (g("20261204T170000Z"), g("20261203T090000Z"));
        let record = StartRecord {
            cluster_id: "cafe".into(),
            base: "20261204-170000.db.zst".into(),
            base_revision: 10,
            started: Generation::parse("20261204T170000Z").unwrap().0,
            completed: None,
        };
        let sign = |k: &SigningKey, name: &Name| {
            k.sign_in(RECORD_NAMESPACE, &signed_message(name, &record))
                .unwrap()
        };
        let stored_here = |signature: Option<String>| Vouch {
            message: signed_message(&here, &record),
            signature,
        };
        let mut changed = record.clone();
        changed.base_revision = 9;
        let trust = |allow_unsigned| Trusting {
            keys: Some(verify.clone()),
            allow_unsigned,
        };
        // (what, the vouch as read, allow unsigned, the refusal or None)
        let cases: Vec<(&str, Vouch, bool, Option<&str>)> = vec![
            (
                "signed here",
                stored_here(Some(sign(&ours, &here))),
                false,
                None,
            ),
            (
                "moved from another generation",
                stored_here(Some(sign(&ours, &elsewhere))),
                false,
                Some("does not match its contents or its name"),
            ),
            (
                "changed after signing",
                Vouch {
                    message: signed_message(&here, &changed),
                    signature: Some(sign(&ours, &here)),
                },
                false,
                Some("does not match"),
            ),
            (
                "signed by another key",
                stored_here(Some(sign(&theirs, &here))),
                false,
                Some("not one of BACKUP_VERIFY_KEY"),
            ),
            (
                "unsigned",
                stored_here(None),
                false,
                Some("it is not signed"),
            ),
            ("unsigned, allowed", stored_here(None), true, None),
            (
                "a bad signature, allowed unsigned",
                stored_here(Some(sign(&theirs, &here))),
                true,
                Some("not one of BACKUP_VERIFY_KEY"),
            ),
        ];
        for (what, vouch, allow, want) in cases {
            let got = refusal(&trust(allow), Some(&vouch));
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) => {}
                _ => panic!("{what}: want {want:?}, got {got:?}"),
            }
            // Without verify keys nothing is refused.
            assert_eq!(refusal(&Trusting::default(), Some(&vouch)), None, "{what}");
        }
    }

    #[test]
    fn a_plan_reads_one_cluster_the_one_chosen_or_the_only_one() {
        let source = |g: &str, cluster: &str| Source {
            generation: Generation::parse(g).unwrap(),
            cluster_id: cluster.into(),
            bases: vec![(10, "b".into())],
            floor: 10,
            segments: vec![],
            base_completed: None,
        };
        let one = vec![
            source("20261201T000000Z", "aa"),
            source("20261202T000000Z", "aa"),
        ];
        let two = vec![
            source("20261201T000000Z", "aa"),
            source("20261202T000000Z", "bb"),
            source("20261203T000000Z", "aa"),
        ];
        let ids = |r: anyhow::Result<Vec<Source>>| {
            r.map(|v| {
                v.iter()
                    .map(|s| s.generation.to_string())
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
        };
        assert_eq!(ids(one_cluster(one.clone(), None)).unwrap().len(), 2);
        assert_eq!(ids(one_cluster(one, Some("aa"))).unwrap().len(), 2);
        let e = ids(one_cluster(two.clone(), None)).unwrap_err();
        assert!(
            e.contains("streams of 2 clusters share this prefix: aa (generations 20261201T000000Z to 20261203T000000Z), bb (generations 20261202T000000Z to 20261202T000000Z); pass --cluster-id"),
            "{e}"
        );
        assert_eq!(
            ids(one_cluster(two.clone(), Some("bb"))).unwrap(),
            ["20261202T000000Z"]
        );
        let e = ids(one_cluster(two, Some("cc"))).unwrap_err();
        assert!(
            e.contains("no stream generation of cluster cc here (the clusters there are: aa, bb)"),
            "{e}"
        );
        assert!(ids(one_cluster(vec![], None)).unwrap().is_empty());
    }
}
