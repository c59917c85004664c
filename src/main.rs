//! The `s3-failback` binary: parse arguments, start logging and progress, run the command
//! on a tokio runtime, turn Ctrl-C into cancellation, print the final error, exit.

use std::process::ExitCode;

use clap::Parser;
use s3_failback::cli::Cli;
use s3_failback::{RunContext, progress, report};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "s3_failback=debug,info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("S3_FAILBACK_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_target(cli.global.verbose > 0)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    progress::init(cli.global.quiet);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let ctx = RunContext {
        started: jiff::Timestamp::now(),
        args: report::redact_args(std::env::args()),
        cancel: cancel.clone(),
        quiet: cli.global.quiet,
    };
    let result = runtime.block_on(async move {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted: finishing in-flight work and flushing the journal (Ctrl-C again to quit at once)"
                );
                cancel.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        s3_failback::run(cli, ctx).await
    });
    // Background tasks (listing partitions) may still hold connections; do not wait.
    runtime.shutdown_background();
    match result {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
