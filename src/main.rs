//! The `etcd-backup` binary: logging, configuration, dispatch. This is the one place that
//! prints a fatal error and picks the exit code: 0 success, 1 runtime failure or a check that
//! failed, 2 configuration or usage error.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use etcd_backup::commands::{self, Context, Outcome, Verdict};
use etcd_backup::config::{Env, LogFormat, Problems, Process, StoreConfig};
use etcd_backup::output::{Format, Render};
use etcd_backup::shutdown::Shutdown;
use etcd_backup::{store::Store, Usage};

mod cli;
use cli::{Cli, Command};

/// The static (musl) build's allocator: musl's own costs this pipeline about 40% more CPU
/// (`bench/RESULTS.md`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    let process = match env.process() {
        Ok(p) => p,
        Err(p) => return fail(&p.into()),
    };
    // Before any thread starts: they inherit it (niceness is per thread on Linux).
    let niced = rustix::process::nice(process.nice);
    init_logging(&process);
    if let Err(e) = niced {
        let nice = process.nice;
        tracing::warn!("could not lower the priority (BACKUP_NICE={nice}): {e}");
    }
    // Two TLS stacks share rustls (tonic for etcd, reqwest for S3); name the provider once.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // One thread for all async work: it is only I/O (the snapshot stream, the upload), and every
    // stage that computes runs on threads of its own. With a thread pool, each frame of the
    // snapshot woke a second thread: receiving took 1.34 CPU-s per GB, on one thread 0.76
    // (`examples/stages.rs`, `bench/RESULTS.md`), and peak RSS fell by 4-10 MiB.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let result = runtime.block_on(async {
        let ctx = Context {
            now: cli.now.unwrap_or_else(chrono::Utc::now),
            shutdown: Shutdown::on_signals()?,
        };
        let command = cli.command.unwrap_or(Command::Backup);
        ctx.shutdown.bounded(dispatch(command, &env, &ctx)).await
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

fn init_logging(logging: &Process) {
    // Colours only on a terminal: `kubectl logs` and log shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(logging.filter.as_str())
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

/// Prints `outcome` in `format`, then turns a failed verdict into the run's error (exit 1).
fn show(format: Format, outcome: &(impl Render + Outcome)) -> anyhow::Result<()> {
    write!(std::io::stdout().lock(), "{}", format.render(outcome)?)?;
    match outcome.verdict() {
        Verdict::Pass => Ok(()),
        Verdict::Fail(why) => Err(anyhow::anyhow!(why)),
    }
}

/// The one store of a run.
fn store(cfg: &StoreConfig) -> anyhow::Result<Store> {
    Ok(Store::s3(cfg)?)
}

/// Reads the command's settings, builds what it needs, runs it and shows its outcome.
async fn dispatch(command: Command, env: &Env, ctx: &Context) -> anyhow::Result<()> {
    use commands::*;
    match command {
        Command::Backup => {
            let cfg = env.backup()?;
            backup::run(&store(&cfg.store)?, &cfg, ctx).await?.log();
        }
        Command::Stream => {
            let cfg = env.stream()?;
            let s = store(&cfg.backup.store)?;
            stream::run(&s, &cfg, ctx).await?.log();
        }
        Command::Prune { args, output } => {
            let cfg = env.prune()?;
            let pruned = prune::run(&store(&cfg.store)?, &cfg, args, ctx).await?;
            show(output, &pruned)?;
            pruned.log(args.dry_run);
        }
        Command::List {
            output,
            generations,
            check,
            history,
        } => {
            if check {
                let cfg = env.restore()?;
                let s = store(&cfg.store)?;
                return show(output, &pitr::check(&s, &cfg, &history, ctx).await?);
            }
            let cfg = env.prune()?;
            let s = store(&cfg.store)?;
            match generations {
                true => show(output, &list::generations(&s, &cfg, ctx).await?)?,
                false => show(output, &list::run(&s, &cfg, ctx).await?)?,
            }
        }
        Command::Restore(args) => {
            let cfg = env.restore()?;
            let s = store(&cfg.store)?;
            show(Format::Table, &restore::run(&s, &cfg, &args, ctx).await?)?;
        }
        Command::History { args, output } => {
            let cfg = env.restore()?;
            let s = store(&cfg.store)?;
            show(output, &history::run(&s, &cfg, &args, ctx).await?)?;
        }
        Command::Get { args, output } => {
            let cfg = env.restore()?;
            let s = store(&cfg.store)?;
            show(output, &get::run(&s, &cfg, &args, ctx).await?)?;
        }
        Command::Diff { args, output } => {
            let cfg = env.restore()?;
            let s = store(&cfg.store)?;
            show(output, &diff::run(&s, &cfg, &args, ctx).await?)?;
        }
        Command::Status { output } => show(output, &status::run(&env.etcd()?, ctx).await)?,
        Command::Defrag { args, output } => {
            show(output, &defrag::run(&env.defrag()?, args, ctx).await?)?;
        }
        Command::Check {
            max_age,
            max_lag,
            output,
        } => {
            let cfg = env.check(max_age)?;
            let s = store(&cfg.store)?;
            match max_lag {
                Some(lag) => show(output, &check::lag(&s, lag, ctx).await?)?,
                None => show(output, &check::run(&s, &cfg, ctx).await?)?,
            }
        }
        Command::Doctor { output } => {
            let cfg = env.backup()?;
            show(output, &doctor::run(&store(&cfg.store)?, &cfg, ctx).await?)?;
        }
        Command::Keygen { file, output } => show(output, &keygen::run(&file)?)?,
        Command::Verify { path, output } => {
            show(output, &verify::run(&env.verify()?, &path, ctx).await?)?;
        }
    }
    Ok(())
}
