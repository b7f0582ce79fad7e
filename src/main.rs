//! The one binary, with one subcommand per process type (12-factor). Each subcommand parses
//! its configuration and hands over to its process in `scaleout::process`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use scaleout::config::{
    ConfigError, DatabaseConfig, InstanceConfig, InternalConfig, LogConfig, ProcessEnv,
    ServeConfig, WorkerConfig,
};
use scaleout::{process, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "scaleout",
    version,
    about = "A reference horizontally scaled SaaS backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (run as many as you like).
    Serve,
    /// Run background jobs (scaled independently of serve).
    Worker,
    /// Apply migrations/ to the primary, once per deploy.
    Migrate,
    /// Exit 0 if this container's process answers /health on SCALEOUT_METRICS_ADDR within 2 s,
    /// else 1 (the image's HEALTHCHECK).
    Healthcheck,
    /// Fill the database with a workspace data set for benchmarks (COPY; about a minute).
    Seed {
        /// `full` (1,000 organizations, 1,000,000 tasks, 3,000,000 events) or `small` (a
        /// hundredth, in seconds).
        #[arg(long, value_enum, default_value = "full")]
        size: SeedSize,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SeedSize {
    Full,
    Small,
}

/// Start-up failures are printed as one line, never as a panic with a backtrace.
enum Failure {
    Config(ConfigError),
    Runtime(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Healthcheck = cli.command {
        // Before any logging or telemetry set-up: a probe every few seconds must stay cheap
        // and print one line at most.
        return healthcheck();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("scaleout: configuration error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            tracing::error!(error = format!("{e:#}"), "exiting on error");
            eprintln!("scaleout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Docker reads 0 as healthy and 1 as unhealthy (2 is reserved): every failure is 1.
fn healthcheck() -> ExitCode {
    let addr = match InternalConfig::from_source(&ProcessEnv) {
        Ok(config) => process::healthcheck::target(config.addr),
        Err(e) => {
            eprintln!("scaleout healthcheck: configuration error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match process::healthcheck::check(addr, process::healthcheck::TIMEOUT) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scaleout healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    // Before any client is made (the trace exporter's is the first).
    scaleout::install_tls_provider();
    let env = ProcessEnv;
    let instance = InstanceConfig::from_source(&env)?;
    let process = match cli.command {
        Command::Serve => process::serve::NAME,
        Command::Worker => process::worker::NAME,
        Command::Migrate => process::migrate::NAME,
        Command::Seed { .. } => process::seed::NAME,
        Command::Healthcheck => unreachable!("answered in main, before any set-up"),
    };
    let tracer = telemetry::init_telemetry(&LogConfig::from_source(&env)?, &instance.id, process)?;
    // Parse all configuration before starting the runtime: a bad variable fails in
    // milliseconds, before any connection is attempted.
    let runtime = tokio::runtime::Runtime::new().map_err(anyhow::Error::from)?;
    match cli.command {
        Command::Serve => {
            let config = ServeConfig::from_source(&env)?;
            runtime.block_on(process::serve::run(config))?;
        }
        Command::Worker => {
            let config = WorkerConfig::from_source(&env)?;
            runtime.block_on(process::worker::run(config))?;
        }
        Command::Migrate => {
            let config = DatabaseConfig::from_source(&env)?;
            runtime.block_on(process::migrate::run(config))?;
        }
        Command::Seed { size } => {
            let config = DatabaseConfig::from_source(&env)?;
            let size = match size {
                SeedSize::Full => process::seed::Size::FULL,
                SeedSize::Small => process::seed::Size::SMALL,
            };
            runtime.block_on(process::seed::run(config, size))?;
        }
        // Answered in main, before any set-up.
        Command::Healthcheck => {}
    }
    if let Some(tracer) = tracer {
        // Spans still batched in memory are sent before the process exits.
        let _ = tracer.shutdown();
    }
    Ok(())
}
