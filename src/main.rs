//! The `etcd-backup` binary: logging, configuration, dispatch. This is the one place that
//! prints a fatal error and picks the exit code: 0 success, 1 runtime failure, 2 configuration
//! or usage error.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use etcd_backup::commands::{self, restore};
use etcd_backup::config::{Env, LogFormat, Problems, Process};
use etcd_backup::output::Format;
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
        tracing::warn!(
            "could not lower the priority (BACKUP_NICE={}): {e}",
            process.nice
        );
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
        let shutdown = Shutdown::on_signals()?;
        let command = cli.command.unwrap_or(Command::Backup);
        let now = cli.now.unwrap_or_else(chrono::Utc::now);
        shutdown
            .bounded(dispatch(command, &env, now, &shutdown))
            .await
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

fn print(text: impl std::fmt::Display) -> anyhow::Result<()> {
    Ok(write!(std::io::stdout().lock(), "{text}")?)
}

/// Runs `command` as if the clock said `now`.
async fn dispatch(
    command: Command,
    env: &Env,
    now: chrono::DateTime<chrono::Utc>,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    match command {
        Command::Backup => {
            let cfg = env.backup()?;
            let store = Store::s3(&cfg.store)?;
            commands::backup::run(&cfg, &store, now, shutdown)
                .await?
                .log();
        }
        Command::Stream => {
            let cfg = env.stream()?;
            let store = Store::s3(&cfg.backup.store)?;
            let status = std::sync::Arc::default();
            commands::stream::run(&cfg, &store, status, shutdown)
                .await?
                .log();
        }
        Command::Prune { args, output } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let pruned = commands::prune::prune(
                &store,
                &cfg.policy,
                now,
                None,
                cfg.verify_keys.as_ref(),
                args,
                shutdown,
            )
            .await?;
            print(output.render(&pruned)?)?;
            pruned.log(args.dry_run);
        }
        Command::List {
            output,
            generations: true,
            check: true,
        } => {
            let cfg = env.restore()?;
            let checks = commands::pitr::cross_check(cfg, shutdown).await?;
            print(output.render(&checks)?)?;
            let bad = checks.iter().filter(|c| !c.ok()).count();
            if bad > 0 {
                anyhow::bail!("{bad} of {} cross-checks failed (see above)", checks.len());
            }
        }
        Command::List {
            output,
            generations: true,
            ..
        } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let rows = shutdown
                .or_interrupted(commands::generations::generations(&store))
                .await?;
            print(output.render(&rows)?)?;
        }
        Command::List { output, .. } => {
            let cfg = env.prune()?;
            let store = Store::s3(&cfg.store)?;
            let rows =
                commands::list::list(&store, &cfg.policy, now, cfg.verify_keys.as_ref(), shutdown)
                    .await?;
            print(output.render(&rows)?)?;
        }
        Command::Restore(args) => {
            if args.point.bump_revision.is_some() && args.point.point().is_none() {
                return Err(Usage(
                    "--bump-revision goes with --to-revision or --to-time (a backup's file is restored as it was taken; pass --bump-revision to etcdutl instead)".into(),
                )
                .into());
            }
            let cfg = env.restore()?;
            match args.point.point() {
                Some(point) => {
                    let rebuilt = commands::pitr::restore_to(
                        cfg,
                        point,
                        args.point.bump_revision,
                        &args.output,
                        args.force,
                        &args.flags,
                        shutdown,
                    )
                    .await?;
                    print(Format::Table.render(&rebuilt)?)?;
                }
                None => {
                    let restored = restore::run(cfg, &args, shutdown).await?;
                    print(Format::Table.render(&restored)?)?;
                }
            }
        }
        Command::History {
            key,
            prefix,
            since,
            output,
        } => {
            let cfg = env.restore()?;
            let rows =
                commands::pitr::history(cfg, key.as_bytes(), prefix, since, shutdown).await?;
            print(output.render(&rows)?)?;
        }
        Command::Get {
            key,
            at,
            value_file,
            output,
        } => {
            let cfg = env.restore()?;
            let got = commands::pitr::get(cfg, key.as_bytes(), at, shutdown).await?;
            if let (Some(path), Some(v)) = (&value_file, &got.found) {
                std::fs::write(path, &v.bytes)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            print(output.render(&got)?)?;
            if got.found.is_none() {
                anyhow::bail!(
                    "{key} did not exist at revision {} (deleted, or not yet created)",
                    got.revision
                );
            }
        }
        Command::Diff {
            from,
            to,
            prefix,
            output,
        } => {
            let cfg = env.restore()?;
            let rows = commands::pitr::diff(cfg, from, to, prefix.as_bytes(), shutdown).await?;
            print(output.render(&rows)?)?;
        }
        Command::Status { output } => {
            let cfg = env.etcd()?;
            let rows = commands::status::status(&cfg, now).await;
            print(output.render(&rows)?)?;
            commands::status::healthy(&rows)?;
        }
        Command::Defrag { args, output } => {
            let cfg = env.defrag()?;
            let defragged = commands::defrag::run(&cfg, args, now, shutdown).await?;
            print(output.render(&defragged)?)?;
        }
        Command::Check {
            max_lag: Some(max_lag),
            output,
            ..
        } => {
            let cfg = env.check(None)?;
            let store = Store::s3(&cfg.store)?;
            let rows = shutdown
                .or_interrupted(commands::generations::generations(&store))
                .await?;
            let lag = commands::generations::lag(&rows, now, max_lag);
            print(output.render(&lag)?)?;
            if let Some(p) = lag.problem {
                anyhow::bail!("{p} ({})", store.url_prefix());
            }
        }
        Command::Check {
            max_age, output, ..
        } => {
            let cfg = env.check(max_age)?;
            let store = Store::s3(&cfg.store)?;
            let f = commands::check::check(
                &store,
                now,
                cfg.max_age,
                cfg.verify_keys.as_ref(),
                shutdown,
            )
            .await?;
            print(output.render(&f)?)?;
            f.verdict(store.url_prefix())?;
        }
        Command::Doctor { output } => {
            let cfg = env.backup()?;
            let store = Store::s3(&cfg.store)?;
            let findings = shutdown
                .or_interrupted(async { Ok(commands::doctor::run(&cfg, &store, now).await) })
                .await?;
            print(output.render(&findings)?)?;
            commands::doctor::verdict(&findings)?;
        }
        Command::Keygen { file, output } => {
            let generated = etcd_backup::sign::keygen(&file)?;
            print(output.render(&generated)?)?;
        }
        Command::Verify { path, output } => {
            let cfg = env.verify()?;
            let checked = commands::verify::run(path, cfg, shutdown).await?;
            print(output.render(&checked.valid()?)?)?;
        }
    }
    Ok(())
}
