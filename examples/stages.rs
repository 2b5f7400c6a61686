//! CPU seconds per GB of snapshot for each stage of a backup, each stage run alone over the
//! same snapshot, so a change to one stage shows in its own line. The backup runs the stages
//! at once; on a small control-plane node their sum, with etcd's and the object store's, is
//! what bounds its time (bench/RESULTS.md).
//!
//! Stages, and beside some the way it was done before (`-before`), measured in the same run:
//! - `receive`: etcd's gRPC stream into chunks, on one thread as the backup reads it;
//!   `receive-before` on a pool of threads, as it did until the runtime became single-threaded;
//! - `hash`: the SHA-256 trailer check;
//! - `spool`: the scratch file the walk reads, written and flushed. Most of its cost is the
//!   kernel's, and depends on the node's memory: new page-cache pages are cheap while memory is
//!   free and cost reclaim once it is full of cache (0.3-2.4 s/GB measured on one machine);
//! - `gzip` at the default level and threads (its output feeds `age` and `upload`);
//!   `gzip-before` at level 6, the default until it became 4; `zstd` at its default;
//! - `age`: encryption of the gzip output;
//! - `walk`: the bbolt walk with the offline HashKV;
//! - `upload`: the gzip output as parts to the S3 server, at the default concurrency.
//!
//! CPU is this process's user and system time (getrusage): the kernel's copies count, etcd's
//! and the S3 server's work does not. Settings come from the environment as for `etcd-backup
//! backup` (ETCD_ENDPOINTS, BACKUP_BUCKET, AWS_*, BACKUP_TMP_DIR); RECIPIENT is an age public
//! key for `age`; STAGES=receive,hash times only those. One line per stage:
//! `stage cpu_s user_s sys_s wall_s cpu_s_per_gb`, and `# gzip level L: N bytes`.
//!
//! cargo run --release --example stages

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_backup::compress::{Codec, Encoder};
use etcd_backup::config::{Env, EtcdConfig};
use etcd_backup::crypt::Sealer;
use etcd_backup::etcd::members::Members;
use etcd_backup::key::BackupKey;
use etcd_backup::pipeline::SPOOL_BUFFER;
use etcd_backup::shutdown::Shutdown;
use etcd_backup::snapshot::verify::{self, TrailerCheck};
use etcd_backup::store::Store;
use futures::StreamExt;
use tokio::runtime::{Builder, Runtime};

/// As the binary: the static build's allocator changes what every stage costs.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// User and system time of this process so far.
fn cpu() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into the one we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(u.ru_utime), tv(u.ru_stime))
}

struct Meter {
    gb: f64,
    /// The stages to time (STAGES, comma-separated; all by default).
    only: Option<Vec<String>>,
}

impl Meter {
    fn wants(&self, stage: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|v| v.iter().any(|s| s == stage))
    }

    /// Runs `f` and prints what it cost, if `stage` is wanted; untimed otherwise (a later
    /// stage needs its output).
    fn run<T>(&self, stage: &str, f: impl FnOnce() -> T) -> T {
        if !self.wants(stage) {
            return f();
        }
        let ((u0, s0), w0) = (cpu(), Instant::now());
        let t = f();
        let ((u1, s1), wall) = (cpu(), w0.elapsed().as_secs_f64());
        let (u, s) = ((u1 - u0).as_secs_f64(), (s1 - s0).as_secs_f64());
        let gb = self.gb;
        println!(
            "{stage} {:.3} {u:.3} {s:.3} {wall:.3} {:.3}",
            u + s,
            (u + s) / gb
        );
        t
    }
}

/// One snapshot from the first member that serves it, counted, or kept when `keep`.
fn receive(rt: &Runtime, cfg: &EtcdConfig, keep: bool) -> anyhow::Result<(u64, Vec<Bytes>)> {
    rt.block_on(async {
        let (_, snap) = Members::new(cfg).start_snapshot().await?;
        let mut s = std::pin::pin!(snap.into_stream());
        let (mut n, mut v) = (0u64, Vec::new());
        while let Some(c) = s.next().await {
            let c = c?;
            n += c.len() as u64;
            if keep {
                v.push(c);
            }
        }
        Ok((n, v))
    })
}

fn gzip(chunks: &[Bytes], level: u32, threads: usize) -> std::io::Result<Vec<u8>> {
    let mut e = Encoder::new(Codec::Gzip, level, threads, Vec::new())?;
    chunks.iter().try_for_each(|c| e.write_all(c))?;
    let out = e.finish()?;
    println!("# gzip level {level}: {} bytes", out.len());
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let cfg = Env::from_process()
        .backup()
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let p = &cfg.pipeline;
    let one = Builder::new_current_thread().enable_all().build()?;
    let pool = Builder::new_multi_thread().enable_all().build()?;

    // Untimed: the chunks every later stage works on (they drop theirs as they go).
    let (size, chunks) = receive(&one, &cfg.etcd, true)?;
    let m = Meter {
        gb: size as f64 / 1e9,
        only: std::env::var("STAGES")
            .ok()
            .map(|v| v.split(',').map(str::to_string).collect()),
    };
    println!("# snapshot {size} bytes");
    for (stage, rt) in [("receive", &one), ("receive-before", &pool)] {
        if m.wants(stage) {
            let (n, _) = m.run(stage, || receive(rt, &cfg.etcd, false))?;
            anyhow::ensure!(n == size, "two snapshots differ in size: {size} and {n}");
        }
    }
    if m.wants("hash") {
        m.run("hash", || {
            let mut t = TrailerCheck::default();
            chunks.iter().for_each(|c| t.update(c));
            t.finish().map(|_| ())
        })?;
    }
    let file = tempfile::NamedTempFile::new_in(&p.tmp_dir)?;
    if m.wants("spool") || m.wants("walk") {
        m.run("spool", || {
            let mut w = BufWriter::with_capacity(SPOOL_BUFFER, file.reopen()?);
            chunks.iter().try_for_each(|c| w.write_all(c))?;
            w.flush()
        })?;
    }
    if m.wants("gzip-before") {
        m.run("gzip-before", || gzip(&chunks, 6, p.threads))?;
    }
    let gz = if m.wants("gzip") || m.wants("age") || m.wants("upload") {
        m.run("gzip", || {
            gzip(&chunks, Codec::Gzip.default_level(), p.threads)
        })?
    } else {
        Vec::new()
    };
    if m.wants("zstd") {
        m.run("zstd", || {
            let codec = Codec::Zstd;
            let mut e = Encoder::new(codec, codec.default_level(), p.threads, std::io::sink())?;
            chunks.iter().try_for_each(|c| e.write_all(c))?;
            e.finish().map(|_| ())
        })?;
    }
    if let (true, Ok(r)) = (m.wants("age"), std::env::var("RECIPIENT")) {
        m.run("age", || {
            let mut s = Sealer::new(std::io::sink(), &[r])?;
            gz.chunks(32 << 10).try_for_each(|c| s.write_all(c))?;
            s.finish().map(|_| ())
        })?;
    }
    if m.wants("walk") {
        let mut trailer = TrailerCheck::default();
        chunks.iter().for_each(|c| trailer.update(c));
        m.run("walk", || verify::check_spooled(file.as_file(), trailer))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    drop(chunks);
    if m.wants("upload") {
        let store = Store::s3(&cfg.store)?;
        let key = BackupKey::new(chrono::Utc::now(), Codec::Gzip);
        let parts: Vec<_> = gz
            .chunks(p.part_size)
            .map(|c| anyhow::Ok(Bytes::copy_from_slice(c)))
            .collect();
        m.run("upload", || {
            one.block_on(store.put_stream(
                &key,
                Vec::new(),
                futures::stream::iter(parts),
                p.concurrency,
                async { anyhow::Ok(()) },
                &Shutdown::never(),
            ))
        })?;
        one.block_on(store.delete(&key))?;
    }
    Ok(())
}
