//! The `etcd-backup` binary: logging, configuration, dispatch. This is the one place that
//! prints a fatal error and picks the exit code: 0 success, 1 runtime failure, 2 configuration
//! or usage error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use etcd_backup::commands::{self, restore};
use etcd_backup::config::{self, Env, LogFormat, Logging, Problems};
use etcd_backup::shutdown::Shutdown;
use etcd_backup::{output, store::Store, Usage};
use restore::{RestoreFlags, Which};

/// The static (musl) build's allocator: musl's own costs this pipeline about 40% more CPU
/// (`bench/RESULTS.md`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// List the backups under the prefix, newest first, with what retention would do.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Download a backup, check it, and write a file ready for `etcdutl snapshot restore`.
    Restore {
        /// A backup name (20260529-060000.db.gz, with or without the prefix) or `latest`.
        #[arg(default_value = "latest")]
        backup: Which,
        /// Where to write the snapshot.
        #[arg(long, short = 'O')]
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
        /// For the printed etcdutl command: this member's name.
        #[arg(long)]
        name: Option<String>,
        /// For the printed etcdutl command: e.g. cp1=https://10.0.1.10:2380,cp2=...
        #[arg(long)]
        initial_cluster: Option<String>,
        /// For the printed etcdutl command: this member's peer URL.
        #[arg(long)]
        initial_advertise_peer_urls: Option<String>,
        /// For the printed etcdutl command: the new data directory.
        #[arg(long)]
        data_dir: Option<String>,
    },
    /// Health, member, leader, raft index, revision and DB size of every endpoint.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Check a snapshot file (raw, .gz or .zst): SHA-256 trailer and bbolt walk.
    Verify {
        path: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let logging = match env.logging() {
        Ok(l) => l,
        Err(p) => return fail(&p.into()),
    };
    init_logging(logging);
    // Two TLS stacks share rustls (tonic for etcd, reqwest for S3); name the provider once.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let result = runtime.block_on(run(cli.command.unwrap_or(Command::Backup), &env));
    // Dropping a runtime waits for its blocking threads (a bbolt walk, a decode) to finish;
    // after a shutdown, that could outlast the grace period. Their scratch files are already
    // removed (their owners were dropped), so give them a moment and no more.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// After SIGTERM/SIGINT, how long the command may take to abort its upload and clean up
/// (Kubernetes waits 30 s by default before SIGKILL).
const GRACE: Duration = Duration::from_secs(10);

/// Runs `work` to the end, or, after a signal, for at most [`GRACE`] more: the stages watch the
/// same signal and stop by themselves; what is still running after that is dropped, which
/// removes scratch and `.part` files.
async fn until_shutdown<T>(
    shutdown: &Shutdown,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        i = shutdown.requested() => match tokio::time::timeout(GRACE, &mut work).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::Error::new(i).context("did not stop within 10s")),
        },
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

fn init_logging(logging: Logging) {
    // Colours only on a terminal: `kubectl logs` and log shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(logging.filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match logging.format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn print(text: impl std::fmt::Display) -> anyhow::Result<()> {
    write!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

fn print_as<T: serde::Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => print(format_args!("{}\n", serde_json::to_string(value)?)),
        Output::Table => print(table(value)),
    }
}

async fn run(command: Command, env: &Env) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::on_signals()?;
    until_shutdown(&shutdown, dispatch(command, env, &shutdown)).await
}

async fn dispatch(command: Command, env: &Env, shutdown: &Shutdown) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match command {
        Command::Backup => {
            let cfg = env.backup()?;
            let store = Store::s3(&cfg.store)?;
            let s = commands::backup::run(&cfg, &store, now, shutdown).await?;
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
                stream_s = format!("{:.2}", p.stream_time.as_secs_f64()),
                verify_s = format!("{:.2}", p.verify_time.as_secs_f64()),
                finish_s = format!("{:.2}", p.finish_time.as_secs_f64()),
                prune_s = format!("{:.2}", s.prune_time.as_secs_f64()),
                pruned = s.pruned,
                prune_failed = s.prune_error.is_some(),
                manifest_failed = p.manifest_error.is_some(),
                "backup complete"
            );
        }
        Command::Prune { dry_run } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let pruned =
                commands::prune::prune(&store, &cfg.policy, now, None, dry_run, shutdown).await?;
            print(&pruned.plan)?;
            tracing::info!(
                deleted = pruned.deleted.len(),
                planned = pruned.plan.delete_count(),
                dry_run,
                "prune complete"
            );
        }
        Command::List { output } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let rows = commands::list::list(&store, &cfg.policy, now, shutdown).await?;
            print_as(output, &rows, |r| output::list_table(r))?;
        }
        Command::Restore {
            backup,
            output,
            force,
            name,
            initial_cluster,
            initial_advertise_peer_urls,
            data_dir,
        } => {
            let cfg = env.store()?;
            let store = Store::s3(&cfg)?;
            let key = restore::resolve(&store, backup).await?;
            tracing::info!(key = %store.url(&key), output = %output.display(), "restoring");
            let r = restore::restore(&store, key, &output, force, shutdown).await?;
            print(output::verified_table(&r.verified, r.codec))?;
            let flags = RestoreFlags {
                name,
                initial_cluster,
                initial_advertise_peer_urls,
                data_dir,
            };
            print(format_args!(
                "\n{} is verified. Next, on each member (see the README's runbook):\n\n{}\n",
                r.path.display(),
                restore::etcdutl_command(&r.path, &flags)
            ))?;
        }
        Command::Status { output } => {
            let cfg = env.etcd()?;
            let rows = commands::status::status(&cfg).await;
            for w in rows.iter().filter_map(|r| r.warning.as_ref()) {
                tracing::warn!("{w}");
            }
            print_as(output, &rows, |r| output::status_table(r))?;
            if !rows.iter().any(|r| r.healthy) {
                tracing::error!(
                    "no endpoint is healthy: check ETCD_ENDPOINTS and the PKI settings"
                );
                return Ok(ExitCode::from(1));
            }
        }
        Command::Verify { path, output } => {
            let tmp = env.tmp_dir();
            let stop = shutdown.clone();
            let shown = path.display().to_string();
            let checked =
                tokio::task::spawn_blocking(move || commands::verify::verify(&path, &tmp, &stop))
                    .await??;
            match checked.verdict {
                Ok(v) => match output {
                    Output::Json => print(format_args!(
                        "{}\n",
                        output::verified_json(&v, checked.codec)
                    ))?,
                    Output::Table => print(output::verified_table(&v, checked.codec))?,
                },
                Err(invalid) => {
                    tracing::error!("{shown} is not a valid snapshot: {invalid}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
