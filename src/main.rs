//! The `etcd-backup` binary: logging, configuration, dispatch. This is the one place that
//! prints a fatal error and picks the exit code: 0 success, 1 runtime failure, 2 configuration
//! or usage error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use etcd_backup::config::{self, Env, LogFormat, Problems};
use etcd_backup::{backup, compress, store::Store, verify};

#[derive(Parser)]
#[command(name = "etcd-backup", version, about = "Streamed, verified etcd snapshots to S3-compatible storage.",
    after_help = config::help_table() + "\nExit codes: 0 success, 1 runtime failure, 2 configuration or usage error.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot etcd, verify, compress, upload, then prune (the default).
    Backup,
    /// Delete backups past retention, keeping the newest BACKUP_KEEP_LAST.
    Prune {
        /// Print the plan (keep/delete, with reasons) and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a snapshot file (raw, .gz or .zst): SHA-256 trailer and bbolt walk.
    Verify {
        path: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// A failure that is the operator's input, not the world: exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let format = match env.log_format() {
        Ok(f) => f,
        Err(p) => return fail(&p.into()),
    };
    init_logging(format);
    // Two TLS stacks share rustls (tonic for etcd, reqwest for S3); name the provider once.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Backup), &env)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    let usage = e.downcast_ref::<Problems>().is_some() || e.downcast_ref::<Usage>().is_some();
    let text = etcd_backup::describe(e.as_ref());
    tracing::error!("{text}");
    if !tracing::dispatcher::has_been_set() {
        eprintln!("etcd-backup: {text}");
    }
    ExitCode::from(if usage { 2 } else { 1 })
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BACKUP_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

async fn run(command: Command, env: &Env) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match command {
        Command::Backup => {
            let cfg = env.backup()?;
            let s = backup::run(&cfg, now).await?;
            let p = &s.published;
            tracing::info!(
                key = %p.url,
                raw_bytes = p.raw_bytes,
                stored_bytes = p.stored_bytes,
                ratio = format!("{:.2}", p.raw_bytes as f64 / p.stored_bytes.max(1) as f64),
                revision = p.verified.status.revision,
                hash = p.verified.status.hash,
                total_keys = p.verified.status.total_key,
                member = %s.member.member_id,
                snapshot_s = format!("{:.2}", p.snapshot_time.as_secs_f64()),
                verify_s = format!("{:.2}", p.verify_time.as_secs_f64()),
                upload_s = format!("{:.2}", p.upload_time.as_secs_f64()),
                prune_s = format!("{:.2}", s.prune_time.as_secs_f64()),
                pruned = s.pruned,
                prune_failed = s.prune_error.is_some(),
                "backup complete"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { dry_run } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let pruned = backup::prune(&store, &cfg.policy, now, None, dry_run).await?;
            print!("{}", pruned.plan);
            tracing::info!(
                deleted = pruned.deleted.len(),
                planned = pruned.plan.delete_count(),
                dry_run,
                "prune complete"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { path, output } => {
            let tmp = env.tmp_dir();
            let (codec, result) =
                tokio::task::spawn_blocking(move || verify_path(&path, &tmp)).await??;
            match result {
                Ok(v) => {
                    print_status(&v, codec, output)?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(invalid) => {
                    tracing::error!("snapshot is not valid: {invalid}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Opens `path`, decoding it into a scratch file first when it is compressed (the walk needs
/// random access), and checks it. The outer error is an I/O problem; the inner, the verdict.
fn verify_path(
    path: &std::path::Path,
    tmp: &std::path::Path,
) -> anyhow::Result<(compress::Codec, Result<verify::Verified, verify::Invalid>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| Usage(format!("cannot open {}: {e}", path.display())))?;
    let (codec, mut reader) = compress::decoder(std::io::BufReader::new(file))?;
    if codec == compress::Codec::None {
        let mut f = std::fs::File::open(path)?;
        return Ok((codec, verify::check_file(&mut f)));
    }
    let scratch = tempfile::Builder::new()
        .prefix(".etcd-backup-verify-")
        .tempfile_in(tmp)
        .with_context(|| {
            format!(
                "creating a scratch file in {} (BACKUP_TMP_DIR)",
                tmp.display()
            )
        })?;
    let mut trailer = verify::TrailerCheck::default();
    let mut out = std::io::BufWriter::new(scratch.reopen()?);
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                return Ok((
                    codec,
                    Err(verify::Invalid::Io(std::io::Error::new(
                        e.kind(),
                        format!("decoding {codec}: {e}"),
                    ))),
                ))
            }
        };
        if n == 0 {
            break;
        }
        trailer.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing to {} (BACKUP_TMP_DIR)", tmp.display()))?;
    }
    out.flush()?;
    Ok((codec, verify::check_spooled(scratch.as_file(), trailer)))
}

use std::io::Read;

fn print_status(
    v: &verify::Verified,
    codec: compress::Codec,
    output: Output,
) -> anyhow::Result<()> {
    let s = &v.status;
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let mut json = serde_json::to_value(s)?;
            json["sha256"] = verify::hex(&v.sha256).into();
            json["compression"] = codec.to_string().into();
            writeln!(out, "{json}")?;
        }
        Output::Table => {
            let rows = [
                ("hash", s.hash.to_string()),
                ("revision", s.revision.to_string()),
                ("total keys", s.total_key.to_string()),
                ("total size", s.total_size.to_string()),
                ("sha256", verify::hex(&v.sha256)),
                ("compression", codec.to_string()),
                (
                    "consistent index",
                    s.consistent_index
                        .map(|c| c.to_string())
                        .unwrap_or("-".into()),
                ),
                ("term", s.term.map(|c| c.to_string()).unwrap_or("-".into())),
                (
                    "storage version",
                    s.storage_version.clone().unwrap_or("-".into()),
                ),
            ];
            for (k, v) in rows {
                writeln!(out, "{k:<17} {v}")?;
            }
        }
    }
    Ok(())
}
