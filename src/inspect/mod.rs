//! Operator tools that read a data dir and change nothing in it: `ringkeeper log dump`,
//! `ringkeeper snapshot dump` (ZooKeeper's LogFormatter and SnapshotFormatter) and
//! `ringkeeper verify`, a health check of the whole dir.
//!
//! They open files with plain std I/O and use only the sans-IO halves of the log and snapshot
//! code (`log::record`, `snapshot`): `Wal::open` repairs a torn tail and `snapshots::list`
//! removes unfinished files, and a tool an operator points at a damaged dir must not do either.
//! Corrupt input is what they are for: every problem becomes a line of output, never a panic.
//!
//! ringkeeper logs commands, and zxids and results exist only once a command is applied, so
//! the dump and the check replay the log through `Machine::apply_batch` from an empty state or
//! from a snapshot. What a command does depends on `MachineConfig::ttl_enabled` (a TTL create
//! fails with Unimplemented when TTL nodes are off), so `--ttl-enabled` must match the server's
//! setting; it defaults to off, as the server's does.
//!
//! - [`layout`]: where the log and snapshots are, listing and reading their files.
//! - [`survey`]: one pass over every segment: damage, and which entries make up the log.
//! - [`replay`]: where a replay can start, and applying entries to learn zxids and results.
//! - [`describe`]: commands, results and ACLs as text and JSON.
//! - [`log_dump`], [`snapshot_dump`], [`verify`]: the three tools.

pub mod describe;
pub mod layout;
pub mod log_dump;
pub mod replay;
pub mod snapshot_dump;
pub mod survey;
pub mod verify;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::log::snapshots::SnapshotFileError;

/// Exit status of `verify` for a healthy dir; the dumps use it for success.
pub const EXIT_OK: u8 = 0;
/// Exit status of `verify` when a check failed.
pub const EXIT_UNHEALTHY: u8 = 1;
/// Exit status when the input cannot be read at all (no such dir, not a data dir, ...).
pub const EXIT_UNREADABLE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a ringkeeper data dir (it has no log/ or snap/ dir and no .seg files)", .0.display())]
    NotDataDir(PathBuf),
    #[error("no snapshot in {}", .0.display())]
    NoSnapshot(PathBuf),
    #[error("{0}")]
    Snapshot(#[from] SnapshotFileError),
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

impl InspectError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> InspectError {
        let path = path.into();
        move |source| InspectError::Io { path, source }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum LogCommand {
    /// Print every record of the write-ahead log, one line per command, with the zxid and the
    /// result a replay gives it.
    Dump(LogDumpArgs),
}

#[derive(clap::Args, Debug)]
pub struct LogDumpArgs {
    /// The data dir (holding log/ and snap/), or its log dir.
    pub dir: PathBuf,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Replay as a server started with --ttl-enabled does (must match the server that wrote
    /// the log, or TTL creates get different results).
    #[arg(long)]
    pub ttl_enabled: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Print a snapshot: its position, every znode with its Stat and ACL, every session.
    Dump(SnapshotDumpArgs),
}

#[derive(clap::Args, Debug)]
pub struct SnapshotDumpArgs {
    /// A snapshot file; a data dir or snap dir means its newest snapshot.
    pub file: PathBuf,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The data dir (holding log/ and snap/), or its log dir.
    pub dir: PathBuf,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Replay as a server started with --ttl-enabled does (must match the server that wrote
    /// the log, or replayed state differs from the snapshots).
    #[arg(long)]
    pub ttl_enabled: bool,
}

/// `ringkeeper log ...`
pub fn log_command(cmd: LogCommand) -> ExitCode {
    match cmd {
        LogCommand::Dump(args) => {
            let opts = log_dump::Options {
                json: args.json,
                ttl_enabled: args.ttl_enabled,
            };
            finish(
                "log dump",
                with_stdout(|out| log_dump::dump(&args.dir, &opts, out)),
            )
        }
    }
}

/// `ringkeeper snapshot ...`
pub fn snapshot_command(cmd: SnapshotCommand) -> ExitCode {
    match cmd {
        SnapshotCommand::Dump(args) => finish(
            "snapshot dump",
            with_stdout(|out| snapshot_dump::dump(&args.file, args.json, out)),
        ),
    }
}

/// `ringkeeper verify ...`: 0 healthy, 1 not healthy, 2 unreadable.
pub fn verify_command(args: VerifyArgs) -> ExitCode {
    let opts = verify::Options {
        json: args.json,
        ttl_enabled: args.ttl_enabled,
    };
    match with_stdout(|out| verify::verify(&args.dir, &opts, out)) {
        Ok(Some(v)) if v.healthy() => ExitCode::from(EXIT_OK),
        Ok(Some(_)) => ExitCode::from(EXIT_UNHEALTHY),
        // The reader went away (`| head`): nobody is left to tell.
        Ok(None) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("ringkeeper verify: {e}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

fn finish(tool: &str, result: Result<Option<()>, InspectError>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("ringkeeper {tool}: {e}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

/// Runs `f` on buffered stdout; `Ok(None)` when stdout was closed under it (a pipe into
/// `head`), which is not worth an error message.
fn with_stdout<T>(
    f: impl FnOnce(&mut dyn Write) -> Result<T, InspectError>,
) -> Result<Option<T>, InspectError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = f(&mut out).and_then(|v| out.flush().map(|()| v).map_err(InspectError::Output));
    match result {
        Err(InspectError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(None),
        other => other.map(Some),
    }
}

/// Writes one line of output: `text` as is, or `json` as one compact JSON object.
pub(crate) fn emit(
    out: &mut dyn Write,
    json: bool,
    text: impl FnOnce() -> String,
    value: impl FnOnce() -> serde_json::Value,
) -> Result<(), InspectError> {
    let r = if json {
        serde_json::to_writer(&mut *out, &value())
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        let mut line = text();
        line.push('\n');
        out.write_all(line.as_bytes())
    };
    r.map_err(InspectError::Output)
}
