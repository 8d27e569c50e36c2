//! `saga-orchestrator serve | migrate`: parse the command line, set up logs, load settings, run.

use clap::{Parser, Subcommand};
use saga_orchestrator::{auth, check_participant, config, startup::Application, store, telemetry};
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
    /// API tokens.
    Token {
        #[command(subcommand)]
        action: TokenCmd,
    },
    /// Named definitions kept as files (docs/api.md, "Definitions").
    Definitions {
        #[command(subcommand)]
        action: DefinitionsCmd,
    },
}

#[derive(Subcommand)]
enum DefinitionsCmd {
    /// Check every *.json / *.toml definition of DIR as the service would at start-up (with the
    /// settings' defaults and outbound policy), without a database; exits 1 on a problem.
    Check {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print a new random token and the `[[auth.tokens]]` lines to paste into config.toml.
    New {
        /// Its name, recorded as `who` on operator actions and access-log lines.
        name: String,
        /// Comma-separated scopes out of read, write, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
    },
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Cmd::Serve { demo: false });
    // These two run without the service's settings or logs (a participant's CI, a new client).
    match &command {
        Cmd::CheckParticipant(args) => return check(args).await,
        Cmd::Token {
            action: TokenCmd::New { name, scopes },
        } => return new_token(name, scopes),
        _ => {}
    }
    let settings = match config::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("saga-orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    if let Cmd::Definitions {
        action: DefinitionsCmd::Check { dir },
    } = &command
    {
        return check_definitions(&settings, dir);
    }
    // Export is set up before anything logs, so that no span of ours is missed.
    let export = match telemetry::export::Export::start(&settings.tracing) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("saga-orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_subscriber(telemetry::get_subscriber(
        &settings.log.level,
        std::io::stdout,
        export.as_ref().map(|e| e.tracer.clone()),
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
        // Answered above.
        Cmd::CheckParticipant(_) | Cmd::Token { .. } | Cmd::Definitions { .. } => Ok(()),
    };
    if let Some(e) = export {
        // What ended before the stop still goes (within the export timeout).
        e.shutdown();
    }
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

/// Runs `definitions check DIR`: 0 when every file is a valid definition, 1 when one is not,
/// 2 when the settings are.
fn check_definitions(settings: &config::Settings, dir: &std::path::Path) -> ExitCode {
    let policy = match settings.participant.outbound() {
        Ok(p) => p,
        Err(errs) => {
            eprintln!("saga-orchestrator definitions check: {}", errs.join("; "));
            return ExitCode::from(2);
        }
    };
    match saga_orchestrator::definition_files::read_dir(dir, &settings.defaults(), &policy) {
        Ok(defs) => {
            for d in &defs {
                println!("ok {} ({})", d.name, d.file.display());
            }
            println!("{} definition(s) valid", defs.len());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in &errs {
                println!("FAIL {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Prints a new token once, and the lines that configure its hash (the service never sees it).
fn new_token(name: &str, scopes: &[String]) -> ExitCode {
    let (token, hash) = auth::new_token();
    // The same checks as the config file's, so that the printed lines load.
    if let Err(errs) = auth::Tokens::new([(name, hash.as_str(), scopes)], "") {
        eprintln!("saga-orchestrator token new: {}", errs.join("; "));
        return ExitCode::from(2);
    }
    let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
    println!("token: {token}");
    println!("(shown once: give it to the client; the service keeps only its SHA-256)");
    println!();
    println!("[[auth.tokens]]");
    println!("name = {name:?}");
    println!("sha256 = \"{hash}\"");
    println!("scopes = [{}]", scopes.join(", "));
    ExitCode::SUCCESS
}
