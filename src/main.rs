//! The `ringkeeper` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ringkeeper::config::{Config, ServeArgs};

#[derive(Parser)]
#[command(
    name = "ringkeeper",
    version,
    about = "A ZooKeeper-compatible coordination service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a member (one-member ensemble by default) on the ZooKeeper client port.
    Serve(Box<ServeArgs>),
    /// Load generator speaking the ZooKeeper protocol (targets ringkeeper or ZooKeeper).
    Bench(Box<ringkeeper::bench::BenchArgs>),
    /// Make a ringkeeper data dir from an Apache ZooKeeper one (its version-2 snapshots and
    /// transaction logs): same tree, ACLs, Stats, sessions and zxids.
    Import(ImportArgs),
    /// Inspect the write-ahead log of a data dir (read-only).
    Log {
        #[command(subcommand)]
        command: ringkeeper::inspect::LogCommand,
    },
    /// Inspect snapshot files (read-only).
    Snapshot {
        #[command(subcommand)]
        command: ringkeeper::inspect::SnapshotCommand,
    },
    /// Check a data dir's snapshots and log, read-only: exit 0 healthy, 1 not, 2 unreadable.
    Verify(ringkeeper::inspect::VerifyArgs),
    /// Change an ensemble's members at run time (ZooKeeper's reconfig): add, remove, or
    /// change a member's role. Prints the new configuration.
    Reconfig(ReconfigArgs),
}

#[derive(clap::Args)]
struct ReconfigArgs {
    /// A member's client address (`host:port`); the request is passed to the leader.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:2181")]
    server: String,
    /// Add a member or change its role: `server.ID=HOST:PEER:ELECTION[:participant|:observer][;CLIENT]`.
    #[arg(long, value_name = "SERVER")]
    add: Vec<String>,
    /// Remove a member by id.
    #[arg(long, value_name = "ID")]
    remove: Vec<u64>,
    /// The whole new member list instead (`server.ID=...`, repeated or comma separated).
    #[arg(long, value_name = "SERVER", conflicts_with_all = ["add", "remove"])]
    members: Vec<String>,
    /// Only if the configuration is still this version (`version=` in /zookeeper/config).
    #[arg(long, value_name = "HEX")]
    from_config: Option<String>,
    /// Authenticate as `user:password` (digest), e.g. the super user.
    #[arg(long, value_name = "USER:PASSWORD")]
    auth: Option<String>,
    /// How long to wait for the server.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// ZooKeeper's dataDir (holding version-2/), or the version-2 dir itself.
    #[arg(long, value_name = "DIR")]
    zookeeper_data_dir: std::path::PathBuf,
    /// ZooKeeper's dataLogDir, when its transaction logs live apart from the snapshots.
    #[arg(long, value_name = "DIR")]
    zookeeper_log_dir: Option<std::path::PathBuf>,
    /// The ringkeeper data dir to create (must not hold ringkeeper data yet).
    #[arg(long, value_name = "DIR", default_value = "./data")]
    data_dir: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Bench(args) => bench(*args),
        Command::Import(args) => import(args),
        Command::Log { command } => ringkeeper::inspect::log_command(command),
        Command::Snapshot { command } => ringkeeper::inspect::snapshot_command(command),
        Command::Verify(args) => ringkeeper::inspect::verify_command(args),
        Command::Reconfig(args) => reconfig(args),
    }
}

fn import(args: ImportArgs) -> ExitCode {
    let started = std::time::Instant::now();
    match ringkeeper::import::import(
        &args.zookeeper_data_dir,
        args.zookeeper_log_dir.as_deref(),
        &args.data_dir,
    ) {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("ringkeeper import: warning: {w}");
            }
            println!(
                "imported {} znodes and {} sessions up to zxid {:#x} ({} transactions replayed \
                 from {}) into {} in {:.1} s",
                r.nodes,
                r.sessions,
                r.last_zxid,
                r.txns_replayed,
                r.sources.join(", "),
                r.snapshot.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkeeper import: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let (config, warnings) = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkeeper: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log_level);
    for w in warnings {
        tracing::warn!("{w}");
    }
    match ringkeeper::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ringkeeper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: ringkeeper::bench::BenchArgs) -> ExitCode {
    let json = args.json;
    match ringkeeper::bench::run(args) {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            if report.mostly_failed() {
                eprintln!("ringkeeper bench: the run failed (most operations failed, or sessions were lost): see above");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkeeper bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn reconfig(args: ReconfigArgs) -> ExitCode {
    use ringkeeper::client::{self, Client, ClientError};
    let joined = |items: &[String]| (!items.is_empty()).then(|| items.join(","));
    let leaving: Vec<String> = args.remove.iter().map(u64::to_string).collect();
    let run = || -> Result<String, String> {
        let from = match &args.from_config {
            None => -1,
            Some(v) => i64::from_str_radix(v.trim_start_matches("0x"), 16)
                .map_err(|_| format!("--from-config `{v}` is not a hex version"))?,
        };
        let timeout = std::time::Duration::from_secs(args.timeout.max(1));
        let mut c = Client::connect(&args.server, timeout).map_err(|e| e.to_string())?;
        if let Some(auth) = &args.auth {
            c.add_digest(auth)
                .map_err(|e| format!("authentication: {e}"))?;
        }
        client::reconfig(
            &mut c,
            joined(&args.add),
            joined(&leaving),
            joined(&args.members),
            from,
        )
        .map_err(|e| match e {
            ClientError::Server(code, _) => format!("the ensemble refused the change: {code:?}"),
            other => other.to_string(),
        })
    };
    match run() {
        Ok(config) => {
            print!("{config}");
            if !config.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringkeeper reconfig: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
