//! The `etcd-backup` binary: logging, configuration, dispatch. This is the one place that
//! prints a fatal error and picks the exit code: 0 success, 1 runtime failure, 2 configuration
//! or usage error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use etcd_backup::commands::{self, restore};
use etcd_backup::config::{self, Env, LogFormat, Logging, Problems};
use etcd_backup::output::{self, Format};
use etcd_backup::shutdown::Shutdown;
use etcd_backup::{store::Store, Usage};
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
        output: Format,
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
        #[command(flatten)]
        flags: RestoreFlags,
    },
    /// Health, member, leader, raft index, revision and DB size of every endpoint.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Defragment etcd members one at a time, followers first, when the rule says it pays.
    Defrag {
        /// Print the plan (per member: sizes, the rule's result, the order) and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Exit 1 unless the newest verified backup is younger than --max-age (reads the bucket only).
    Check {
        /// Default: BACKUP_MAX_AGE (13h: two 6-hour periods and an hour's slack).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_age: Option<Duration>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Check a snapshot file (raw, .gz or .zst): SHA-256 trailer and bbolt walk.
    Verify {
        path: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
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
    let result = runtime.block_on(async {
        let shutdown = Shutdown::on_signals()?;
        let command = cli.command.unwrap_or(Command::Backup);
        shutdown.bounded(dispatch(command, &env, &shutdown)).await
    });
    // Dropping a runtime waits for its blocking threads (a bbolt walk, a decode) to finish;
    // after a shutdown, that could outlast the grace period. Their scratch files are already
    // removed (their owners were dropped), so give them a moment and no more.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
    Ok(write!(std::io::stdout().lock(), "{text}")?)
}

async fn dispatch(command: Command, env: &Env, shutdown: &Shutdown) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    match command {
        Command::Backup => {
            let cfg = env.backup()?;
            let store = Store::s3(&cfg.store)?;
            commands::backup::run(&cfg, &store, now, shutdown)
                .await?
                .log();
        }
        Command::Prune { dry_run } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let pruned =
                commands::prune::prune(&store, &cfg.policy, now, None, dry_run, shutdown).await?;
            print(&pruned.plan)?;
            pruned.log(dry_run);
        }
        Command::List { output } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let rows = commands::list::list(&store, &cfg.policy, now, shutdown).await?;
            print(output.render(&rows, |r| output::list_table(r))?)?;
        }
        Command::Restore {
            backup,
            output,
            force,
            flags,
        } => {
            let cfg = env.restore()?;
            let store = Store::s3(&cfg.store)?;
            let key = shutdown
                .or_interrupted(restore::resolve(&store, backup))
                .await?;
            tracing::info!(key = %store.url(&key), output = %output.display(), "restoring");
            let r = restore::restore(
                &store,
                key,
                &output,
                force,
                shutdown,
                cfg.progress,
                cfg.identities,
            )
            .await?;
            print(restore::report(&r, &flags))?;
        }
        Command::Status { output } => {
            let cfg = env.etcd()?;
            let rows = commands::status::status(&cfg, now).await;
            print(output.render(&rows, |r| output::status_table(r))?)?;
            commands::status::healthy(&rows)?;
        }
        Command::Defrag { dry_run, output } => {
            let cfg = env.defrag()?;
            let report = commands::defrag::run(&cfg, dry_run, now, shutdown).await?;
            print(output.render(&report, |r| r.table())?)?;
        }
        Command::Check { max_age, output } => {
            let cfg = env.check(max_age)?;
            let store = Store::s3(&cfg.store)?;
            let f = commands::check::check(&store, now, cfg.max_age, shutdown).await?;
            print(output.render(&f, |f| f.table())?)?;
            f.verdict(store.url_prefix())?;
        }
        Command::Verify { path, output } => {
            let ids = env.verify()?;
            let c = commands::verify::run(path, env.tmp_dir(), ids, shutdown).await?;
            let codec = c.codec;
            let v = c.into_valid()?;
            let json = output::verified_json(&v, codec);
            print(output.render(&json, |_| output::verified_table(&v, codec))?)?;
        }
    }
    Ok(())
}
