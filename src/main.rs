//! `saga-orchestrator serve | migrate`: parse the command line, set up logs, load settings, run.

use clap::{Parser, Subcommand};
use saga_orchestrator::{check_participant, config, startup::Application, store, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of glibc malloc: under load glibc spent a third of the service's CPU in
/// malloc/free (perf), and it keeps freed memory in per-thread arenas.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "saga-orchestrator",
    version,
    about = "Durable saga and TCC orchestrator"
)]
struct Cli {
    /// Settings file (default: ./config.toml when present).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service (the default).
    Serve {
        /// Also serve the demo shop under /demo.
        #[arg(long)]
        demo: bool,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Check that a participant keeps the barrier rules (docs/barrier.md); exits 1 on a FAIL.
    CheckParticipant(Box<check_participant::CheckArgs>),
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Cmd::Serve { demo: false });
    if let Cmd::CheckParticipant(args) = &command {
        // A participant's CI runs this without the service's settings or logs.
        return check(args).await;
    }
    let settings = match config::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("saga-orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_subscriber(telemetry::get_subscriber(
        &settings.log.level,
        std::io::stdout,
    ));
    let result = match command {
        Cmd::Migrate => store::connect(
            &settings.database.url,
            1,
            std::time::Duration::from_millis(settings.cluster.lease_ms),
        )
            .await
            .map(|_| tracing::info!("migrations applied"))
            .map_err(|e| e.to_string()),
        Cmd::Serve { demo } => {
            let mut settings = settings;
            settings.demo.enabled |= demo;
            match Application::build(settings).await {
                Ok(app) => app.run_until_stopped().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        Cmd::CheckParticipant(_) => Ok(()), // answered above
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "saga-orchestrator failed");
            ExitCode::FAILURE
        }
    }
}

/// Runs `check-participant`: 0 when every rule held, 1 on a FAIL, 2 on a usage error.
async fn check(args: &check_participant::CheckArgs) -> ExitCode {
    let outcomes = match check_participant::target(args) {
        Ok(t) => check_participant::run(&t).await,
        Err(e) => Err(e),
    };
    match outcomes {
        Ok(outcomes) => {
            let (text, passed) = check_participant::report(&outcomes);
            print!("{text}");
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("saga-orchestrator check-participant: {e}");
            ExitCode::from(2)
        }
    }
}
