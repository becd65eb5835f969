//! Server configuration: defaults, a TOML file, an Apache `zoo.cfg`, and command-line flags,
//! each layer overriding the ones before it.
//!
//! Every setting is defined once, in the `settings!` table below: its `Config` field, type,
//! default, flag, TOML key, zoo.cfg key, check and doc line. The table generates `Config`,
//! `ServeArgs`, `ConfigLayer`, the merge and the per-setting checks, and `SETTINGS`, against
//! which a test checks the table of `docs/CONFIGURATION.md`.
//!
//! The only I/O here is reading the files named by `--config` and `--zoo-cfg`, the `myid` file
//! a zoo.cfg ensemble names this member with, and resolving members' host names.

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::admin::FourLetter;

/// Config files larger than this are refused (they are a few hundred bytes in practice).
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// ringkeeper's default four-letter-word whitelist: words that reveal no session ids, paths,
/// client addresses or raft positions (ZooKeeper's default is only `srvr`). Health checks and
/// exporters list `mntr`; `cons`, `stat`, `conf`, `envi` and the `wch*` words must be listed.
pub const DEFAULT_FOUR_LETTER_WHITELIST: &[&str] = &["ruok", "srvr", "isro"];

/// A peer secret shorter than this is refused: it is the whole of the ensemble's protection.
pub const MIN_PEER_SECRET_BYTES: usize = 16;

/// The default tickTime; the session timeout bounds default to multiples of the final one.
const DEFAULT_TICK_MS: i32 = 2000;

// Ranges accepted by validation.
const MAX_SHARDS: usize = 256; // a request's routing tag has 8 bits for the shard
const MIN_PACKET_BYTES: usize = 1024;
const MAX_PACKET_BYTES: usize = 1 << 30;
const MIN_SEGMENT_BYTES: u64 = 1 << 20;
const MAX_SEGMENT_BYTES: u64 = 1 << 40;
const SEGMENT_ALIGN: u64 = 4096;
const MAX_INTERVAL_MS: u64 = 86_400_000;
const MAX_OUTSTANDING_PER_CONN: u32 = 1_000_000;
/// Bounds of `max_send_queue_bytes`, in bytes.
const MIN_SEND_QUEUE_BYTES: usize = 64 << 10;
const MAX_SEND_QUEUE_BYTES: usize = 16 << 20;

/// One setting as `docs/CONFIGURATION.md` and `--help` describe it (from the `settings!`
/// table, like everything else about it).
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Its key in the TOML file.
    pub toml: &'static str,
    /// Its command-line flag, `--` included.
    pub flag: &'static str,
    /// What the flag's value is (`BOOL`: the flag alone means true).
    pub value_name: &'static str,
    /// The zoo.cfg keys that set it; for the settings read by dedicated code (addresses,
    /// `server.N`, `myid`) as the docs write them.
    pub zoo_cfg: &'static [&'static str],
    /// One line of doc: the `Config` field's and `--help`'s.
    pub doc: &'static str,
    /// The default as the docs table shows it (code in backticks).
    pub default: fn() -> String,
}

impl Setting {
    /// The flag as the docs table's flag column writes it.
    pub fn usage(&self) -> String {
        if self.value_name == "BOOL" {
            format!("{}[=BOOL]", self.flag)
        } else {
            format!("{} {}", self.flag, self.value_name)
        }
    }
}

/// The table of settings: each row defines one setting, as
///
/// ```text
/// /// doc line (the Config field's and --help's)
/// field: ConfigType [LayerType, flag FlagType] {   // the types in brackets when they differ
///     default EXPR [, shown "as the docs write it"];
///     [toml "key";]                   // the TOML key when it is not the field's name
///     flag "long-name" "VALUE" [clap attributes] [=> from_flag];
///     [zoo ["key", ...] [sysprop] [=> parser];]   // no parser: dedicated code reads it
///     [resolve |value, default, config, warnings| ...;]  // when not `value or default`
///     check none | positive | range(lo, hi) | with(fn);
/// }
/// ```
///
/// `sysprop`: ZooKeeper reads the key as a system property, so zoo.cfg may also write it with
/// a `zookeeper.` prefix. Resolvers run after every setting without one has its value.
macro_rules! settings {
    // Rows are first brought to one shape (three types each), then expanded together.
    (@rows [$($done:tt)*]) => { settings!(@emit $($done)*); };
    (@rows [$($done:tt)*] #[doc = $doc:literal] $field:ident : $ty:ty [$lty:ty, flag $fty:ty]
        { $($body:tt)* } $($rest:tt)*) => {
        settings!(@rows [$($done)* { [$doc] $field $ty, $lty, $fty; $($body)* }] $($rest)*);
    };
    (@rows [$($done:tt)*] #[doc = $doc:literal] $field:ident : $ty:ty [$lty:ty]
        { $($body:tt)* } $($rest:tt)*) => {
        settings!(@rows [$($done)* { [$doc] $field $ty, $lty, Option<$lty>; $($body)* }] $($rest)*);
    };
    (@rows [$($done:tt)*] #[doc = $doc:literal] $field:ident : $ty:ty
        { $($body:tt)* } $($rest:tt)*) => {
        settings!(@rows [$($done)* { [$doc] $field $ty, $ty, Option<$ty>; $($body)* }] $($rest)*);
    };

    (@emit $({
        [$doc:literal] $field:ident $ty:ty, $lty:ty, $fty:ty;
        default $default:expr $(, shown $shown:literal)?;
        $(toml $toml:literal;)?
        flag $long:literal $vn:literal $([$($attr:tt)*])? $(=> $from_flag:expr)?;
        $(zoo [$($zkey:literal),*] $($zkind:ident)? $(=> $zparse:expr)?;)?
        $(resolve $resolve:expr;)?
        check $ck:ident $(($($ca:expr),*))?;
    })*) => {
        /// Every setting of a member, resolved and validated.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            $( #[doc = $doc] pub $field: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default, )* }
            }
        }

        /// `ringkeeper serve` flags. Each one overrides the config files.
        #[derive(clap::Args, Clone, Debug, Default, PartialEq)]
        pub struct ServeArgs {
            /// TOML configuration file (keys as in docs/CONFIGURATION.md).
            #[arg(long, value_name = "FILE")]
            pub config: Option<PathBuf>,
            /// Apache ZooKeeper zoo.cfg to take settings from (overrides --config).
            #[arg(long, value_name = "FILE")]
            pub zoo_cfg: Option<PathBuf>,
            $(
                #[arg(long = $long, value_name = $vn, help = flag_help(concat!("--", $long))
                    $(, $($attr)*)?)]
                pub $field: $fty,
            )*
        }

        /// One source of settings: every field optional; `None` leaves the earlier value.
        /// Also the schema of the TOML file (unknown keys are an error there).
        #[derive(Clone, Debug, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ConfigLayer {
            $( $(#[serde(rename = $toml)])? pub $field: Option<$lty>, )*
        }

        /// Every setting, in the table's order.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                toml: settings!(@toml $field $(, $toml)?),
                flag: concat!("--", $long),
                value_name: $vn,
                zoo_cfg: &[$($($zkey),*)?],
                doc: $doc,
                default: settings!(@shown $field $(, $shown)?),
            },
        )*];

        impl ConfigLayer {
            /// Values set in `later` replace those of `self` (a member list as a whole).
            pub fn overlay(&mut self, later: ConfigLayer) {
                $( if later.$field.is_some() { self.$field = later.$field; } )*
            }

            /// The layer the command-line flags make (`--config`/`--zoo-cfg` are not settings).
            pub fn from_args(args: &ServeArgs) -> Result<ConfigLayer, ConfigError> {
                Ok(ConfigLayer { $( $field: settings!(@from_flag args.$field $(, $from_flag)?), )* })
            }
        }

        impl Config {
            /// The merged layer over the defaults, not yet validated.
            fn resolve(
                mut merged: ConfigLayer,
                warnings: &mut Vec<String>,
            ) -> Result<Config, ConfigError> {
                let d = Config::default();
                let mut config = d.clone();
                $( settings!(@plain config.$field, merged $(, $resolve)?); )*
                $( settings!(@resolve config.$field, merged, d, warnings $(, $resolve)?); )*
                Ok(config)
            }

            /// Each setting's own check, in the table's order.
            fn check_settings(&self) -> Result<(), ConfigError> {
                $( settings!(@check $ck, self.$field, stringify!($field) $(, $($ca),*)?); )*
                Ok(())
            }
        }

        /// Applies zoo.cfg `key` when a setting's parser reads it; false when none does.
        fn apply_zoo_key(
            layer: &mut ConfigLayer,
            key: &str,
            entry: &ZooEntry,
        ) -> Result<bool, ConfigError> {
            $( $( settings!(@zoo layer.$field, key, entry, [$($zkey),*] $(, $zparse)?); )? )*
            Ok(false)
        }

        /// Keys ZooKeeper reads as system properties: zoo.cfg may prefix them `zookeeper.`.
        fn is_system_property_key(key: &str) -> bool {
            $( $( settings!(@sysprop key, [$($zkey),*] $(, $zkind)?); )? )*
            false
        }
    };

    (@toml $field:ident) => { stringify!($field) };
    (@toml $field:ident, $toml:literal) => { $toml };
    (@shown $field:ident) => { || format!("`{}`", Config::default().$field.doc_text()) };
    (@shown $field:ident, $shown:literal) => { || $shown.to_string() };
    (@from_flag $args:ident . $field:ident) => { $args.$field.clone() };
    (@from_flag $args:ident . $field:ident, $from:expr) => {
        match &$args.$field {
            Some(value) => Some(($from)(value)?),
            None => None,
        }
    };
    (@plain $config:ident . $field:ident, $merged:ident) => {
        if let Some(value) = $merged.$field.take() {
            $config.$field = value;
        }
    };
    (@plain $config:ident . $field:ident, $merged:ident, $resolve:expr) => {};
    (@resolve $config:ident . $field:ident, $merged:ident, $d:ident, $w:ident) => {};
    (@resolve $config:ident . $field:ident, $merged:ident, $d:ident, $w:ident, $resolve:expr) => {
        $config.$field = resolve_with($resolve, $merged.$field.take(), $d.$field, &$config, $w)?;
    };
    (@check none, $value:expr, $name:expr) => {};
    (@check positive, $value:expr, $name:expr) => { check_positive($name, $value)?; };
    (@check range, $value:expr, $name:expr, $lo:expr, $hi:expr) => {
        check_range($name, $value, $lo, $hi)?;
    };
    (@check with, $value:expr, $name:expr, $check:expr) => { ($check)(&$value)?; };
    (@zoo $layer:ident . $field:ident, $key:ident, $entry:ident, [$($zkey:literal),*]) => {};
    (@zoo $layer:ident . $field:ident, $key:ident, $entry:ident, [$($zkey:literal),*],
        $parse:expr) => {
        if [$($zkey),*].contains(&$key) {
            $layer.$field = zoo_value($parse, $entry)?;
            return Ok(true);
        }
    };
    (@sysprop $key:ident, [$($zkey:literal),*]) => {};
    (@sysprop $key:ident, [$($zkey:literal),*], sysprop) => {
        if [$($zkey),*].contains(&$key) {
            return true;
        }
    };
    ($($rows:tt)*) => { settings!(@rows [] $($rows)*); };
}

settings! {
    /// Where clients connect.
    client_addr: SocketAddr [String] {
        default SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2181);
        flag "client-addr" "IP:PORT";
        zoo ["clientPortAddress", "clientPort"];
        // Without one, this member's own entry in the member list may give it (from_layers).
        resolve |value, default, _, _| value.map_or(Ok(default), |s| parse_addr(&s));
        check none;
    }
    /// Snapshots, and the log unless `data_log_dir` is set.
    data_dir: PathBuf {
        default PathBuf::from("./data");
        flag "data-dir" "DIR";
        zoo ["dataDir"] => ZooEntry::path;
        check with(|dir: &PathBuf| {
            if dir.as_os_str().is_empty() {
                return Err(invalid("data_dir must not be empty".to_string()));
            }
            Ok(())
        });
    }
    /// The write-ahead log directory; `None` means inside `data_dir`.
    data_log_dir: Option<PathBuf> [PathBuf] {
        default None, shown "same as `data_dir`";
        flag "data-log-dir" "DIR";
        zoo ["dataLogDir"] => ZooEntry::path;
        resolve |value, _, _, _| Ok(value.filter(|p| !p.as_os_str().is_empty()));
        check none;
    }
    /// Executor threads, one pinned per core.
    shards: usize {
        default default_shards(), shown "number of available cores";
        flag "shards" "N";
        check range(1, MAX_SHARDS);
    }
    /// ZooKeeper's tickTime: session expiry granularity and the default timeout bounds.
    tick_time_ms: i32 {
        default DEFAULT_TICK_MS;
        flag "tick-time" "MS" [allow_negative_numbers = true];
        zoo ["tickTime"] => |e| e.int(1, i32::MAX.into()).map(Some);
        check positive;
    }
    /// Smallest negotiated session timeout.
    min_session_timeout_ms: i32 {
        default 2 * DEFAULT_TICK_MS, shown "2 × tick";
        flag "min-session-timeout" "MS" [allow_negative_numbers = true];
        zoo ["minSessionTimeout"] => ZooEntry::session_timeout;
        resolve |value, _, config, _| from_tick(value, config, 2, "min_session_timeout_ms");
        check positive;
    }
    /// Largest negotiated session timeout.
    max_session_timeout_ms: i32 {
        default 20 * DEFAULT_TICK_MS, shown "20 × tick";
        flag "max-session-timeout" "MS" [allow_negative_numbers = true];
        zoo ["maxSessionTimeout"] => ZooEntry::session_timeout;
        resolve |value, _, config, _| from_tick(value, config, 20, "max_session_timeout_ms");
        check none;
    }
    /// Largest frame payload accepted (jute.maxbuffer); larger frames close the connection.
    max_packet_bytes: usize {
        default 1_048_575;
        flag "max-packet-size" "BYTES";
        zoo ["jute.maxbuffer"] sysprop => |e| e.int(0, i32::MAX.into()).map(Some);
        check range(MIN_PACKET_BYTES, MAX_PACKET_BYTES);
    }
    /// Concurrent connections per client IP; 0 = unlimited.
    max_client_cnxns: u32 {
        default 60;
        flag "max-client-cnxns" "N";
        zoo ["maxClientCnxns"] => |e| e.int(0, u32::MAX.into()).map(Some);
        check none;
    }
    /// `user:base64(sha1(user:password))`; a client that authenticates as it is super.
    super_digest: Option<String> [String] {
        default None, shown "none";
        flag "super-digest" "USER:HASH";
        zoo ["DigestAuthenticationProvider.superDigest"] sysprop => ZooEntry::text;
        resolve |value, _, _, _| Ok(value.filter(|s| !s.is_empty()));
        check with(|digest: &Option<String>| digest.as_deref().map_or(Ok(()), check_super_digest));
    }
    /// The ensemble's shared secret, read from a file (at least 16 bytes, trailing whitespace trimmed); members prove they hold it before any peer message is read (`None`: the peer port is open to anyone who reaches it).
    peer_secret: Option<PeerSecret> [PathBuf] {
        default None, shown "none";
        toml "peer_secret_file";
        flag "peer-secret-file" "FILE";
        zoo ["ringkeeper.peerSecretFile"] => ZooEntry::path;
        resolve |value, _, _, _| {
            value
                .filter(|p| !p.as_os_str().is_empty())
                .map(|path| PeerSecret::read(&path))
                .transpose()
        };
        check none;
    }
    /// Four-letter words that are answered, `*` for all (`srvr` always is, as in ZooKeeper).
    four_letter_whitelist: Vec<String> {
        default DEFAULT_FOUR_LETTER_WHITELIST.iter().map(|s| s.to_string()).collect();
        flag "four-letter-whitelist" "CMDS" [value_delimiter = ','];
        zoo ["4lw.commands.whitelist"] sysprop => ZooEntry::list;
        resolve |value, default, _, warnings| {
            Ok(value.map_or(default, |list| normalize_whitelist(&list, warnings)))
        };
        check none;
    }
    /// TTL nodes (ZooKeeper's extendedTypesEnabled).
    ttl_enabled: bool {
        default false;
        flag "ttl-enabled" "BOOL" [
            num_args = 0..=1, require_equals = true, default_missing_value = "true"
        ];
        zoo ["extendedTypesEnabled"] sysprop => ZooEntry::boolean;
        check none;
    }
    /// Membership changes at run time (ZooKeeper's reconfigEnabled; off by default there too).
    reconfig_enabled: bool {
        default false;
        flag "reconfig-enabled" "BOOL" [
            num_args = 0..=1, require_equals = true, default_missing_value = "true"
        ];
        zoo ["reconfigEnabled"] => ZooEntry::boolean;
        check none;
    }
    /// This member joins a running ensemble: it starts with no configuration of its own and takes the ensemble's (with its state) from the leader once a reconfig adds it.
    join: bool {
        default false;
        flag "join" "BOOL" [
            num_args = 0..=1, require_equals = true, default_missing_value = "true"
        ];
        check none;
    }
    /// How often empty containers and expired TTL nodes are looked for, in ms.
    container_check_interval_ms: u64 {
        default 1000;
        flag "container-check-interval" "MS";
        zoo ["znode.container.checkIntervalMs"] sysprop => |e| e.int(0, i64::MAX).map(Some);
        check range(1, MAX_INTERVAL_MS);
    }
    /// A connection that has not completed its handshake by then (ms) is closed.
    sessionless_timeout_ms: u64 {
        default 10_000;
        flag "sessionless-timeout" "MS";
        check range(1, MAX_INTERVAL_MS);
    }
    /// Requests a connection may have in flight before the server stops reading from it.
    max_outstanding_per_conn: u32 {
        default 1000;
        flag "max-outstanding-per-conn" "N";
        check range(1, MAX_OUTSTANDING_PER_CONN);
    }
    /// Bytes of replies queued for a connection beyond which the server stops reading its requests until the client reads them.
    max_send_queue_bytes: usize {
        default 4 << 20;
        flag "max-send-queue-bytes" "BYTES";
        check range(MIN_SEND_QUEUE_BYTES, MAX_SEND_QUEUE_BYTES);
    }
    /// Watched paths one session may hold on this member (0: no watches); past it a watch request fails QuotaExceeded.
    max_watches_per_session: usize {
        default crate::watch::DEFAULT_MAX_WATCHES_PER_SESSION;
        flag "max-watches-per-session" "N";
        check none;
    }
    /// Watched (session, path) pairs on this member, all sessions together.
    max_watches: usize {
        default crate::watch::DEFAULT_MAX_WATCHES_TOTAL;
        flag "max-watches" "N";
        check none;
    }
    /// Size of one preallocated log segment file, a multiple of 4096.
    log_segment_bytes: u64 {
        default 64 << 20;
        flag "log-segment-bytes" "BYTES";
        check with(|&seg: &u64| {
            if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&seg) || seg % SEGMENT_ALIGN != 0 {
                return Err(invalid(format!(
                    "log_segment_bytes must be a multiple of {SEGMENT_ALIGN} between \
                     {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES} (got {seg})"
                )));
            }
            Ok(())
        });
    }
    /// A snapshot is taken after this many transactions (ZooKeeper's snapCount) ...
    snap_count: u64 {
        default 100_000;
        flag "snap-count" "N";
        zoo ["snapCount"] => |e| e.int(1, i64::MAX).map(Some);
        check positive;
    }
    /// ... or this many bytes of log entries since the last one, whichever comes first.
    snap_bytes: u64 {
        default 256 << 20;
        flag "snap-bytes" "BYTES";
        zoo ["snapSizeLimitInKb"] => ZooEntry::size_kb;
        check positive;
    }
    /// Snapshots kept (at least 2); log segments older than the oldest kept one are removed.
    snap_retain_count: usize {
        default 3;
        flag "snap-retain-count" "N";
        // ZooKeeper's minimum is 3.
        zoo ["autopurge.snapRetainCount"] => |e| Ok(Some(e.number()?.clamp(3, 1000) as usize));
        // One snapshot could be the one a crash left corrupt: keep one to fall back on.
        check range(2, 1000);
    }
    /// This member's id (1-255): the top byte of the session ids it creates.
    server_id: u64 {
        default 1;
        flag "server-id" "ID";
        // Read by Config::from_args when zoo.cfg lists the servers.
        zoo ["dataDir/myid"];
        check range(1, 255);
    }
    /// A `tracing` filter: `info`, `debug`, `ringkeeper=debug,warn`, ...
    log_level: String {
        default "info".to_string();
        flag "log-level" "FILTER";
        check with(|filter: &String| match tracing_subscriber::EnvFilter::try_new(filter) {
            Ok(_) => Ok(()),
            Err(e) => Err(invalid(format!(
                "log_level `{filter}`: {}",
                one_line(&e.to_string())
            ))),
        });
    }
    /// Every member of the ensemble, this one included (flag: `ID=` and then what follows `server.ID=` in a zoo.cfg; the election port is ignored); none for a standalone server.
    members: Vec<MemberConfig> [Vec<MemberSpec>, flag Option<Vec<String>>] {
        default Vec::new(), shown "none";
        flag "member" "ID=HOST:PEER_PORT[:ELECTION_PORT][:observer][;[HOST:]CLIENT_PORT]"
            [action = clap::ArgAction::Append] => |specs: &Vec<String>| {
                specs.iter().map(|s| MemberSpec::parse_flag(s)).collect::<Result<Vec<_>, _>>()
            };
        // server.N lines: dedicated code in parse_zoo_cfg.
        zoo ["server.N"];
        resolve |value, _, _, _| {
            value.unwrap_or_default().iter().map(MemberSpec::resolve).collect()
        };
        check none;
    }
}

/// `--help` for a setting's flag: its doc line and default.
fn flag_help(flag: &str) -> String {
    match SETTINGS.iter().find(|s| s.flag == flag) {
        Some(s) => format!("{} [default: {}]", s.doc, (s.default)().replace('`', "")),
        None => String::new(),
    }
}

/// A default as the docs show it.
trait DocText {
    fn doc_text(&self) -> String;
}

macro_rules! doc_text_by_display {
    ($($t:ty),*) => {
        $( impl DocText for $t {
            fn doc_text(&self) -> String {
                self.to_string()
            }
        } )*
    };
}
doc_text_by_display!(bool, i32, u32, u64, usize, String, SocketAddr);

impl DocText for PathBuf {
    fn doc_text(&self) -> String {
        self.display().to_string()
    }
}

impl DocText for Vec<String> {
    fn doc_text(&self) -> String {
        self.join(", ")
    }
}

/// Runs a setting's resolver (a function, so that its closure's types are inferred).
fn resolve_with<L, T>(
    resolve: impl FnOnce(Option<L>, T, &Config, &mut Vec<String>) -> Result<T, ConfigError>,
    value: Option<L>,
    default: T,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Result<T, ConfigError> {
    resolve(value, default, config, warnings)
}

/// A session timeout bound: the value given, or `factor` x the final tick.
fn from_tick(
    value: Option<i32>,
    config: &Config,
    factor: i32,
    name: &str,
) -> Result<i32, ConfigError> {
    if let Some(v) = value {
        return Ok(v);
    }
    let tick = config.tick_time_ms;
    // Checked before deriving: a negative tick would derive a misleading bound.
    check_positive("tick_time_ms", tick)?;
    tick.checked_mul(factor)
        .ok_or_else(|| invalid(format!("{name}: {factor} x tick_time_ms {tick} overflows")))
}

fn check_positive<T: PartialOrd + Default + Display>(
    name: &str,
    value: T,
) -> Result<(), ConfigError> {
    if value <= T::default() {
        return Err(invalid(format!("{name} must be > 0 (got {value})")));
    }
    Ok(())
}

fn check_range<T: PartialOrd + Display>(
    name: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if value < lo || value > hi {
        return Err(invalid(format!("{name} must be {lo}-{hi} (got {value})")));
    }
    Ok(())
}

/// One member of an ensemble, as every member's configuration names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberConfig {
    pub id: u64,
    /// Where this member listens for (and others dial) the peer protocol.
    pub peer_addr: SocketAddr,
    /// Its client address, when given (informational for others; for this member it sets
    /// client_addr unless client_addr was set explicitly).
    pub client_addr: Option<SocketAddr>,
    /// A non-voting member (raft learner, ZooKeeper observer).
    pub observer: bool,
}

fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_SHARDS)
}

/// Why a configuration was refused: always one readable line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}:{line}: {message}")]
    File {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A member as a layer gives it (a `[[members]]` table, a `--member` flag or a zoo.cfg
/// `server.N` line), before its addresses are resolved.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub id: u64,
    /// `host:port` of the peer protocol.
    pub peer: String,
    /// ZooKeeper's election port, kept only to be written back (ringkeeper has one peer port).
    #[serde(default)]
    pub election: Option<u16>,
    /// `host:port` clients connect to.
    pub client: Option<String>,
    #[serde(default)]
    pub observer: bool,
}

impl MemberSpec {
    /// `ID=` followed by the right-hand side of a zoo.cfg `server.ID=` line.
    pub fn parse_flag(spec: &str) -> Result<MemberSpec, ConfigError> {
        let bad = |why: String| invalid(format!("--member `{spec}`: {why}"));
        let (id, rest) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected ID=HOST:PORT[:PORT][:observer][;[HOST:]PORT]".into()))?;
        let id = id
            .trim()
            .parse::<u64>()
            .map_err(|_| bad(format!("`{id}` is not a member id")))?;
        parse_server_line(id, rest).map_err(bad)
    }

    /// The right-hand side of a zoo.cfg `server.ID=` line (ZooKeeper's dynamic configuration
    /// format, which wants an election port: the peer port stands in when none was given).
    pub fn server_line(&self) -> String {
        let port = self.peer.rsplit_once(':').map_or("", |(_, p)| p);
        let election = self
            .election
            .map_or_else(|| port.to_string(), |p| p.to_string());
        let role = if self.observer {
            "observer"
        } else {
            "participant"
        };
        match &self.client {
            Some(client) => format!("{}:{election}:{role};{client}", self.peer),
            None => format!("{}:{election}:{role}", self.peer),
        }
    }

    /// `server.ID=...` text (a zoo.cfg line, or an entry of reconfig's joining list).
    pub fn parse_server(text: &str) -> Result<MemberSpec, String> {
        let (key, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not server.ID=HOST:PORT:PORT[:ROLE][;CLIENT]"))?;
        let id = key
            .trim()
            .strip_prefix("server.")
            .and_then(|id| id.parse::<u64>().ok())
            .ok_or_else(|| format!("`{}` is not server.ID", key.trim()))?;
        parse_server_line(id, rest)
    }

    pub fn resolve(&self) -> Result<MemberConfig, ConfigError> {
        let addr = |s: &str, what: &str| {
            resolve_addr(s).map_err(|e| invalid(format!("member {}: {what} `{s}`: {e}", self.id)))
        };
        Ok(MemberConfig {
            id: self.id,
            peer_addr: addr(&self.peer, "peer")?,
            client_addr: self
                .client
                .as_deref()
                .map(|c| addr(c, "client"))
                .transpose()?,
            observer: self.observer,
        })
    }
}

impl ConfigLayer {
    /// Parses a TOML config file's text; `path` only labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<ConfigLayer, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            message: one_line(e.message()),
        })
    }
}

impl Config {
    /// Defaults < `--config` < `--zoo-cfg` < flags. Returns the warnings to print once at
    /// start-up (zoo.cfg keys that do not apply, unknown four-letter words).
    pub fn from_args(args: &ServeArgs) -> Result<(Config, Vec<String>), ConfigError> {
        let mut layers = Vec::new();
        let mut warnings = Vec::new();
        if let Some(path) = &args.config {
            layers.push(ConfigLayer::from_toml(&read_limited(path)?, path)?);
        }
        if let Some(path) = &args.zoo_cfg {
            let (mut layer, mut w) = parse_zoo_cfg(&read_limited(path)?, path)?;
            // ZooKeeper names the member a zoo.cfg ensemble runs as in `<dataDir>/myid`.
            if layer.members.is_some() && args.server_id.is_none() {
                let data_dir = args
                    .data_dir
                    .clone()
                    .or_else(|| layer.data_dir.clone())
                    .or_else(|| layers.iter().rev().find_map(|l| l.data_dir.clone()))
                    .unwrap_or_else(|| Config::default().data_dir);
                layer.server_id = Some(read_myid(&data_dir.join("myid"))?);
            }
            layers.push(layer);
            warnings.append(&mut w);
        }
        layers.push(ConfigLayer::from_args(args)?);
        let (config, mut w) = Config::from_layers(layers)?;
        warnings.append(&mut w);
        Ok((config, warnings))
    }

    /// Applies `layers` in order over the defaults, then validates.
    pub fn from_layers(
        layers: impl IntoIterator<Item = ConfigLayer>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut merged = ConfigLayer::default();
        for layer in layers {
            merged.overlay(layer);
        }
        let mut warnings = Vec::new();
        let client_addr_given = merged.client_addr.is_some();
        let mut config = Config::resolve(merged, &mut warnings)?;
        // ZooKeeper's dynamic-config style: the client address on this member's own line.
        if !client_addr_given {
            if let Some(addr) = config.member(config.server_id).and_then(|m| m.client_addr) {
                config.client_addr = addr;
            }
        }
        config.validate()?;
        Ok((config, warnings))
    }

    /// Checks each setting's range, then the rules between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_settings()?;
        if self.min_session_timeout_ms > self.max_session_timeout_ms {
            return Err(invalid(format!(
                "min_session_timeout_ms ({}) must not be larger than max_session_timeout_ms ({})",
                self.min_session_timeout_ms, self.max_session_timeout_ms
            )));
        }
        self.validate_members()
    }

    fn validate_members(&self) -> Result<(), ConfigError> {
        if self.members.is_empty() {
            if self.join {
                return Err(invalid(
                    "join needs the ensemble's members (and this one) in the member list"
                        .to_string(),
                ));
            }
            return Ok(());
        }
        for (i, m) in self.members.iter().enumerate() {
            // Member ids are server ids: the top byte of the session ids the member creates.
            if !(1..=255).contains(&m.id) {
                return Err(invalid(format!("member id must be 1-255 (got {})", m.id)));
            }
            if m.peer_addr.port() == 0 {
                return Err(invalid(format!(
                    "member {}: peer port must not be 0 ({})",
                    m.id, m.peer_addr
                )));
            }
            for earlier in &self.members[..i] {
                if earlier.id == m.id {
                    return Err(invalid(format!("member id {} is given twice", m.id)));
                }
                if earlier.peer_addr == m.peer_addr {
                    return Err(invalid(format!(
                        "members {} and {} have the same peer address {}",
                        earlier.id, m.id, m.peer_addr
                    )));
                }
            }
            if m.peer_addr == self.client_addr {
                return Err(invalid(format!(
                    "client_addr {} is also member {}'s peer address",
                    self.client_addr, m.id
                )));
            }
        }
        if self.member(self.server_id).is_none() {
            let ids: Vec<String> = self.members.iter().map(|m| m.id.to_string()).collect();
            return Err(invalid(format!(
                "server_id {} is not one of the members ({})",
                self.server_id,
                ids.join(", ")
            )));
        }
        if self.members.iter().all(|m| m.observer) {
            return Err(invalid(
                "the members include no voter (every one is an observer)".to_string(),
            ));
        }
        Ok(())
    }

    /// Whether this server is a member of a replicated ensemble.
    pub fn is_ensemble(&self) -> bool {
        !self.members.is_empty()
    }

    /// The ids of the voting members, sorted; a standalone server is its own only voter.
    pub fn voters(&self) -> Vec<u64> {
        if self.members.is_empty() {
            return vec![self.server_id];
        }
        let mut ids: Vec<u64> = self
            .members
            .iter()
            .filter(|m| !m.observer)
            .map(|m| m.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The ids of the observers (raft learners), sorted.
    pub fn learners(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.observer)
            .map(|m| m.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The member with id `id`.
    pub fn member(&self, id: u64) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == id)
    }

    /// What the `conf` four-letter word prints of this configuration.
    pub fn conf_stats(&self) -> crate::admin::ConfStats {
        crate::admin::ConfStats {
            client_port: self.client_addr.port(),
            data_dir: self.data_dir.display().to_string(),
            data_log_dir: self.effective_data_log_dir().display().to_string(),
            tick_time_ms: self.tick_time_ms,
            max_client_cnxns: self.max_client_cnxns,
            min_session_timeout_ms: self.min_session_timeout_ms,
            max_session_timeout_ms: self.max_session_timeout_ms,
            server_id: self.server_id,
            membership: None,
        }
    }

    /// The state machine's settings (every member of an ensemble must share them).
    pub fn machine_config(&self) -> crate::machine::MachineConfig {
        crate::machine::MachineConfig {
            ttl_enabled: self.ttl_enabled,
            ..Default::default()
        }
    }

    /// The session timeout granted for a requested one: `min(max(requested, min), max)`.
    pub fn negotiate_timeout(&self, requested: i32) -> i32 {
        requested
            .max(self.min_session_timeout_ms)
            .min(self.max_session_timeout_ms)
    }

    /// Where the log lives: `data_log_dir`, or `data_dir` when unset.
    pub fn effective_data_log_dir(&self) -> &Path {
        self.data_log_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// Whether the four-letter word `cmd` is answered.
    pub fn four_letter_allowed(&self, cmd: &str) -> bool {
        self.four_letter_whitelist.iter().any(|c| c == cmd)
    }
}

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn read_limited(path: &Path) -> Result<String, ConfigError> {
    let bytes = read_limited_bytes(path)?;
    String::from_utf8(bytes).map_err(|_| ConfigError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

fn read_limited_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_FILE_BYTES,
        });
    }
    Ok(bytes)
}

/// The ensemble's shared peer secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSecret(Vec<u8>);

impl PeerSecret {
    /// Reads a secret file: its bytes without trailing whitespace (an editor's newline must
    /// not make two members' secrets differ), at least `MIN_PEER_SECRET_BYTES` of them.
    pub fn read(path: &Path) -> Result<PeerSecret, ConfigError> {
        let mut bytes = read_limited_bytes(path)?;
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        if bytes.len() < MIN_PEER_SECRET_BYTES {
            return Err(invalid(format!(
                "peer secret file {}: {} bytes, at least {MIN_PEER_SECRET_BYTES} needed \
                 (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
                path.display(),
                bytes.len()
            )));
        }
        Ok(PeerSecret(bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> PeerSecret {
        PeerSecret(bytes.to_vec())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

/// `ip:port`, `[v6]:port` or `localhost:port` (no name resolution here).
fn parse_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
    }
    Err(invalid(format!(
        "client_addr `{s}` is not IP:PORT (e.g. 127.0.0.1:2181 or [::1]:2181)"
    )))
}

/// `ip:port`, `[v6]:port`, `localhost:port`, or `name:port` through the system resolver,
/// the first IPv4 result preferred (so that members agree on one address for a name).
fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = s.rsplit_once(':').ok_or("not HOST:PORT")?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port"))?;
    if host.is_empty() || host.contains(['[', ']', ':']) {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {}", one_line(&e.to_string())))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

/// The right-hand side of a zoo.cfg `server.ID=` line:
/// `host:peerPort[:electionPort][:participant|:observer][;[clientHost:]clientPort]`.
/// ringkeeper has one peer port, so the election port is accepted and ignored. A client part
/// with only a port takes the member's host. Addresses stay unresolved (`host:port`).
fn parse_server_line(id: u64, rest: &str) -> Result<MemberSpec, String> {
    let rest = rest.trim();
    let (addr, client) = match rest.split_once(';') {
        Some((addr, client)) => (addr.trim(), Some(client.trim())),
        None => (rest, None),
    };
    let (host, ports) = split_host(addr)?;
    let mut parts: Vec<&str> = ports.split(':').map(str::trim).collect();
    let peer_port = parts.remove(0);
    let peer_port = peer_port
        .parse::<u16>()
        .map_err(|_| format!("`{peer_port}` is not a port"))?;
    let election = match parts.first().map(|p| p.parse::<u16>()) {
        Some(Ok(port)) => {
            parts.remove(0);
            Some(port)
        }
        _ => None,
    };
    let observer = match parts.as_slice() {
        [] => false,
        [role] if role.eq_ignore_ascii_case("participant") => false,
        [role] if role.eq_ignore_ascii_case("observer") => true,
        _ => {
            return Err(format!(
                "`{addr}` is not HOST:PORT[:PORT][:participant|:observer]"
            ))
        }
    };
    let client = match client {
        None => None,
        Some(c) => {
            let (client_host, port) = match c.rsplit_once(':') {
                Some((h, p)) => (h.trim(), p.trim()),
                None => (host, c),
            };
            if client_host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("client address `{c}` is not [HOST:]PORT"));
            }
            Some(format!("{client_host}:{port}"))
        }
    };
    Ok(MemberSpec {
        id,
        peer: format!("{host}:{peer_port}"),
        election,
        client,
        observer,
    })
}

/// Splits `host:rest` or `[v6]:rest` into the host (brackets kept) and `rest`.
fn split_host(addr: &str) -> Result<(&str, &str), String> {
    let split = if addr.starts_with('[') {
        addr.find(']')
            .and_then(|end| Some((&addr[..=end], addr[end + 1..].strip_prefix(':')?)))
    } else {
        addr.split_once(':')
    };
    match split {
        Some((host, rest)) if !host.is_empty() && host != "[]" => Ok((host, rest)),
        _ => Err(format!("`{addr}` is not HOST:PORT")),
    }
}

/// ZooKeeper's `myid`: this member's id as a decimal number, whitespace around it allowed.
fn read_myid(path: &Path) -> Result<u64, ConfigError> {
    let text = read_limited(path).map_err(|e| {
        let why = match e {
            ConfigError::Read { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        invalid(format!(
            "zoo.cfg lists the ensemble's servers, so this member's id must be in {} \
             (or given with --server-id): {}",
            path.display(),
            one_line(&why)
        ))
    })?;
    let text = text.trim();
    text.parse::<u64>().map_err(|_| {
        let shown: String = text.chars().take(32).collect();
        invalid(format!(
            "{}: `{}` is not a server id (a decimal number)",
            path.display(),
            one_line(&shown)
        ))
    })
}

/// `user:hash` where hash is base64 of a 20-byte SHA-1 (ZooKeeper's superDigest form).
fn check_super_digest(digest: &str) -> Result<(), ConfigError> {
    use base64::Engine;
    let bad = || {
        invalid(format!(
            "super_digest must be `user:base64(sha1(user:password))` (got `{digest}`)"
        ))
    };
    let (user, hash) = digest.rsplit_once(':').ok_or_else(bad)?;
    if user.is_empty() {
        return Err(bad());
    }
    match base64::engine::general_purpose::STANDARD.decode(hash) {
        Ok(bytes) if bytes.len() == 20 => Ok(()),
        _ => Err(bad()),
    }
}

/// Expands `*`, trims, drops unknown words (with a warning) and duplicates, and adds `srvr`
/// (ZooKeeper always answers it: zkServer.sh depends on it).
fn normalize_whitelist(list: &[String], warnings: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let push = |name: &str, out: &mut Vec<String>| {
        if !out.iter().any(|c| c == name) {
            out.push(name.to_string());
        }
    };
    for entry in list {
        let name = entry.trim();
        if name.is_empty() {
            continue;
        }
        if name == "*" {
            for cmd in FourLetter::ALL {
                push(cmd.name(), &mut out);
            }
        } else if FourLetter::from_name(name).is_some() {
            push(name, &mut out);
        } else {
            warnings.push(format!(
                "four_letter_whitelist: unknown command `{name}` ignored"
            ));
        }
    }
    push("srvr", &mut out);
    out
}

// ---- zoo.cfg ----

/// zoo.cfg keys ringkeeper understands but does not apply, and why.
const ZOO_IGNORED: &[(&str, &str)] = &[
    ("initLimit", "quorum timing is raft's"),
    ("syncLimit", "quorum timing is raft's"),
    ("electionAlg", "raft elects leaders"),
    ("electionPortBindRetry", "raft elects leaders"),
    ("peerType", "a member's role is on its server.N line"),
    ("standaloneEnabled", "no ZooKeeper quorum layer"),
    (
        "dynamicConfigFile",
        "after a reconfig the members live in /zookeeper/config",
    ),
    ("syncEnabled", "every member logs transactions"),
    ("quorumListenOnAllIPs", "no ZooKeeper quorum layer"),
    ("cnxTimeout", "no ZooKeeper quorum layer"),
    ("connectToLearnerMasterLimit", "no ZooKeeper quorum layer"),
    ("observerMasterPort", "observers follow the leader"),
    ("leaderServes", "every member serves clients"),
    ("serverCnxnFactory", "ringkeeper has its own network layer"),
    ("clientPortListenBacklog", "not configurable"),
    ("globalOutstandingLimit", "use max_outstanding_per_conn"),
    ("maxCnxns", "only the per-IP limit (maxClientCnxns) exists"),
    ("preAllocSize", "use log_segment_bytes"),
    (
        "autopurge.purgeInterval",
        "old snapshots and log segments go after each snapshot",
    ),
    ("txnLogSizeLimitInKb", "use log_segment_bytes"),
    ("forceSync", "every write is fsynced"),
    ("localSessionsEnabled", "no local sessions"),
    ("localSessionsUpgradingEnabled", "no local sessions"),
    ("skipACL", "ACLs are always checked"),
    ("maxResponseCacheSize", "no response cache"),
    ("maxGetChildrenResponseCacheSize", "no response cache"),
];

/// Security settings ringkeeper does not implement: asking for one is a start-up error
/// naming it (never a server without it), unless its value turns it off.
const ZOO_UNSUPPORTED_SECURITY: &[&str] = &[
    "secureClientPort",
    "secureClientPortAddress",
    "sslQuorum",
    "sslQuorumReloadCertFiles",
    "portUnification",
    "client.portUnification",
    "client.secure",
    "enforce.auth.enabled",
    "enforce.auth.schemes",
    "sessionRequireClientSASLAuth",
    "superUser",
    "X509AuthenticationProvider.superUser",
    "jaasLoginRenew",
    "kerberos.removeHostFromPrincipal",
    "kerberos.removeRealmFromPrincipal",
    "kerberos.canonicalizeHostNames",
    "authMeta.",
    "ssl.",
    "quorum.auth.",
    "authProvider.",
];

/// authProvider classes ringkeeper has built in (naming one changes nothing).
const BUILT_IN_AUTH_PROVIDERS: &[&str] = &[
    "org.apache.zookeeper.server.auth.DigestAuthenticationProvider",
    "org.apache.zookeeper.server.auth.IPAuthenticationProvider",
];

/// Whether zoo.cfg key `key` = `value` asks for a security feature ringkeeper lacks.
fn unsupported_security(key: &str, value: &str) -> bool {
    let key = key.strip_prefix("zookeeper.").unwrap_or(key);
    let listed = ZOO_UNSUPPORTED_SECURITY
        .iter()
        .any(|k| key == *k || (k.ends_with('.') && key.starts_with(k)));
    if !listed {
        return false;
    }
    if key.starts_with("authProvider.") {
        return !BUILT_IN_AUTH_PROVIDERS.contains(&value);
    }
    // `sslQuorum=false`, `quorum.auth.enableSasl=false`: asks for nothing.
    !value.eq_ignore_ascii_case("false")
}

/// Prefixes of zoo.cfg keys that do not apply.
const ZOO_IGNORED_PREFIXES: &[(&str, &str)] = &[
    ("group.", "no hierarchical quorums"),
    ("weight.", "no hierarchical quorums"),
    (
        "autopurge.",
        "old log segments and snapshots are removed automatically",
    ),
    ("admin.", "no AdminServer (four-letter words only)"),
    ("metricsProvider.", "metrics are in mntr"),
    ("quorum.", "no ZooKeeper quorum layer"),
    ("multiAddress.", "no ZooKeeper quorum layer"),
];

/// Reads an Apache `zoo.cfg` (Java properties syntax). Returns the settings that apply and a
/// warning for each key that does not (or is unknown).
pub fn parse_zoo_cfg(text: &str, path: &Path) -> Result<(ConfigLayer, Vec<String>), ConfigError> {
    let mut layer = ConfigLayer::default();
    let mut warnings = Vec::new();
    let mut port: Option<u16> = None;
    let mut host: Option<(String, usize)> = None;
    let err = |line: usize, message: String| ConfigError::File {
        path: path.to_path_buf(),
        line,
        message,
    };
    let entries = properties(text);
    // A single server line is a standalone member, as in ZooKeeper; two or more an ensemble.
    let ensemble = entries
        .iter()
        .filter(|(_, k, _)| k.starts_with("server."))
        .count()
        > 1;
    let mut members = Vec::new();
    for (line, raw_key, value) in entries {
        // zoo.cfg keys ZooKeeper does not know become `zookeeper.<key>` system properties, so
        // both spellings of the system-property settings work there.
        let key = match raw_key.strip_prefix("zookeeper.") {
            Some(k) if is_system_property_key(k) => k,
            _ => raw_key.as_str(),
        };
        let value = value.trim();
        if unsupported_security(&raw_key, value) {
            return Err(err(
                line,
                format!(
                    "`{raw_key}` is a security setting ringkeeper does not implement; \
                     remove it (or set it to false) rather than run without it"
                ),
            ));
        }
        let entry = ZooEntry {
            path,
            line,
            key: &raw_key,
            value,
        };
        if apply_zoo_key(&mut layer, key, &entry)? {
            continue;
        }
        match key {
            "clientPort" => port = Some(entry.int_as("a port", 1, 65535)?),
            "clientPortAddress" => host = Some((value.to_string(), line)),
            k if k.starts_with("server.") && ensemble => {
                let id = &k["server.".len()..];
                let id = id
                    .parse::<u64>()
                    .map_err(|_| err(line, format!("{raw_key}: `{id}` is not a server id")))?;
                members.push(
                    parse_server_line(id, value)
                        .map_err(|why| err(line, format!("{raw_key}: {why}")))?,
                );
            }
            k if k.starts_with("server.") => warnings.push(zoo_ignored(
                path,
                line,
                &raw_key,
                "a one-server ensemble is a standalone member",
            )),
            _ => warnings.push(zoo_warning(path, line, &raw_key)),
        }
    }
    if ensemble {
        layer.members = Some(members);
    }
    match (host, port) {
        (Some((_, line)), None) => {
            return Err(err(
                line,
                "clientPortAddress is set but clientPort is not set".into(),
            ))
        }
        (Some((host, line)), Some(port)) => {
            let ip = if host == "localhost" {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                host.parse::<IpAddr>().map_err(|_| {
                    err(
                        line,
                        format!("clientPortAddress `{host}` is not an IP address"),
                    )
                })?
            };
            layer.client_addr = Some(SocketAddr::new(ip, port).to_string());
        }
        // ZooKeeper binds every interface when only clientPort is given.
        (None, Some(port)) => {
            layer.client_addr =
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).to_string())
        }
        (None, None) => {}
    }
    Ok((layer, warnings))
}

/// One `key=value` entry of a zoo.cfg, as the settings' parsers read it; errors name the file,
/// the line and the key as written.
struct ZooEntry<'a> {
    path: &'a Path,
    line: usize,
    key: &'a str,
    value: &'a str,
}

impl ZooEntry<'_> {
    fn err(&self, message: String) -> ConfigError {
        ConfigError::File {
            path: self.path.to_path_buf(),
            line: self.line,
            message: format!("{}: {message}", self.key),
        }
    }

    fn number(&self) -> Result<i64, ConfigError> {
        self.parse_number("a number")
    }

    fn parse_number(&self, what: &str) -> Result<i64, ConfigError> {
        parse_java_int(self.value)
            .ok_or_else(|| self.err(format!("`{}` is not {what}", self.value)))
    }

    /// A number within `lo..=hi`.
    fn int<T: TryFrom<i64>>(&self, lo: i64, hi: i64) -> Result<T, ConfigError> {
        self.int_as("a number", lo, hi)
    }

    fn int_as<T: TryFrom<i64>>(&self, what: &str, lo: i64, hi: i64) -> Result<T, ConfigError> {
        let v = self.parse_number(what)?;
        let out_of_range = || self.err(format!("{v} is out of range {lo}-{hi}"));
        if !(lo..=hi).contains(&v) {
            return Err(out_of_range());
        }
        T::try_from(v).map_err(|_| out_of_range())
    }

    /// `-1` means "derive from tickTime", as in ZooKeeper.
    fn session_timeout(&self) -> Result<Option<i32>, ConfigError> {
        let v: i32 = self.int(-1, i32::MAX.into())?;
        Ok((v != -1).then_some(v))
    }

    /// Kilobytes; ZooKeeper: 0 or less disables the size trigger.
    fn size_kb(&self) -> Result<Option<u64>, ConfigError> {
        let kb = self.number()?;
        Ok(Some(if kb <= 0 {
            u64::MAX
        } else {
            (kb as u64).saturating_mul(1024)
        }))
    }

    fn boolean(&self) -> Result<Option<bool>, ConfigError> {
        match self.value.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(self.err(format!("`{}` is not true/false", self.value))),
        }
    }

    fn path(&self) -> Result<Option<PathBuf>, ConfigError> {
        Ok(Some(PathBuf::from(self.value)))
    }

    fn text(&self) -> Result<Option<String>, ConfigError> {
        Ok(Some(self.value.to_string()))
    }

    fn list(&self) -> Result<Option<Vec<String>>, ConfigError> {
        Ok(Some(
            self.value
                .split(',')
                .map(|s| s.trim().to_string())
                .collect(),
        ))
    }
}

/// Runs a setting's zoo.cfg parser (a function, so that its closure's types are inferred).
fn zoo_value<'a, L>(
    parse: impl FnOnce(&ZooEntry<'a>) -> Result<Option<L>, ConfigError>,
    entry: &ZooEntry<'a>,
) -> Result<Option<L>, ConfigError> {
    parse(entry)
}

fn zoo_warning(path: &Path, line: usize, key: &str) -> String {
    let reason = ZOO_IGNORED
        .iter()
        .find(|(k, _)| *k == key)
        .or_else(|| {
            ZOO_IGNORED_PREFIXES
                .iter()
                .find(|(p, _)| key.starts_with(p))
        })
        .map(|(_, why)| *why);
    match reason {
        Some(why) => zoo_ignored(path, line, key, why),
        None => format!("{}:{line}: unknown key `{key}`; ignored", path.display()),
    }
}

fn zoo_ignored(path: &Path, line: usize, key: &str, why: &str) -> String {
    format!(
        "{}:{line}: `{key}` does not apply to ringkeeper ({why}); ignored",
        path.display()
    )
}

/// Java's `Integer.decode` forms: decimal, `0x`/`#` hex, leading-zero octal, optional sign.
fn parse_java_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(hex) = body.strip_prefix('#') {
        i64::from_str_radix(hex, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        body.parse::<i64>().ok()?
    };
    Some(if neg { -magnitude } else { magnitude })
}

/// `(line, key, value)` of each entry of a Java properties text: `#`/`!` comments, `=`, `:` or
/// whitespace separators, backslash line continuations and escapes.
fn properties(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, first)) = lines.next() {
        let start = first.trim_start();
        if start.is_empty() || start.starts_with('#') || start.starts_with('!') {
            continue;
        }
        // Join continuation lines: an odd number of trailing backslashes continues the line.
        let mut logical = String::from(start);
        while ends_with_odd_backslashes(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split_property(&logical);
        out.push((index + 1, unescape(&key), unescape(&value)));
    }
    out
}

fn ends_with_odd_backslashes(s: &str) -> bool {
    s.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// Splits at the first unescaped `=`, `:` or whitespace (and the separator's surroundings).
fn split_property(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                key.push(c);
                if let Some(n) = chars.next() {
                    key.push(n);
                }
            }
            '=' | ':' => {
                let rest: String = chars.collect();
                return (key, rest.trim_start().to_string());
            }
            c if c.is_whitespace() => {
                let rest: String = chars.collect();
                let rest = rest.trim_start();
                let rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
                return (key, rest.trim_start().to_string());
            }
            c => key.push(c),
        }
    }
    (key, String::new())
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(ch);
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    #[test]
    fn conf_stats_of_the_defaults() {
        let c = Config::default().conf_stats();
        assert_eq!(c.client_port, 2181);
        assert_eq!(c.data_dir, "./data");
        assert_eq!(c.data_log_dir, "./data");
        assert_eq!(
            (c.min_session_timeout_ms, c.max_session_timeout_ms),
            (4000, 40000)
        );
        assert_eq!(c.server_id, 1);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn args(list: &[&str]) -> ServeArgs {
        let mut argv = vec!["ringkeeper"];
        argv.extend_from_slice(list);
        Cli::try_parse_from(argv).expect("flags parse").serve
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn zoo(text: &str) -> (ConfigLayer, Vec<String>) {
        parse_zoo_cfg(text, Path::new("zoo.cfg")).expect("zoo.cfg parses")
    }

    /// Each flag set is refused with one line naming the problem.
    fn assert_invalid(cases: &[(&[&str], &str)]) {
        for (flags, want) in cases {
            let e = err_text(Config::from_args(&args(flags)));
            assert!(e.contains(want), "{flags:?}: {e}");
            assert!(e.starts_with("invalid configuration: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    fn err_text(r: Result<(Config, Vec<String>), ConfigError>) -> String {
        r.expect_err("must be refused").to_string()
    }

    #[test]
    fn defaults() {
        let (c, warnings) = Config::from_args(&ServeArgs::default()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.client_addr, sa("127.0.0.1:2181"));
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.effective_data_log_dir(), Path::new("./data"));
        assert!(c.shards >= 1);
        assert_eq!(
            (
                c.tick_time_ms,
                c.min_session_timeout_ms,
                c.max_session_timeout_ms
            ),
            (2000, 4000, 40000)
        );
        assert_eq!(c.max_packet_bytes, 1_048_575);
        assert_eq!(c.max_client_cnxns, 60);
        assert_eq!(c.super_digest, None);
        assert_eq!(c.four_letter_whitelist, DEFAULT_FOUR_LETTER_WHITELIST);
        assert!(!c.ttl_enabled);
        assert_eq!(c.container_check_interval_ms, 1000);
        assert_eq!(c.sessionless_timeout_ms, 10_000);
        assert_eq!(c.server_id, 1);
        assert_eq!(c.log_level, "info");
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    #[test]
    fn negotiate_clamps() {
        let c = Config::default();
        assert_eq!(c.negotiate_timeout(1), 4000);
        assert_eq!(c.negotiate_timeout(-5), 4000);
        assert_eq!(c.negotiate_timeout(30000), 30000);
        assert_eq!(c.negotiate_timeout(100_000), 40000);
        assert_eq!(c.negotiate_timeout(i32::MAX), 40000);
    }

    #[test]
    fn every_flag_parses() {
        let a = args(&[
            "--client-addr=0.0.0.0:3000",
            "--data-dir=/d",
            "--data-log-dir=/l",
            "--shards=3",
            "--tick-time=100",
            "--min-session-timeout=150",
            "--max-session-timeout=5000",
            "--max-packet-size=4096",
            "--max-client-cnxns=0",
            "--super-digest=super:D/InIHSb7yEEbrWz8b9l71RjZJU=",
            "--four-letter-whitelist=ruok,mntr",
            "--ttl-enabled",
            "--container-check-interval=50",
            "--sessionless-timeout=7",
            "--max-outstanding-per-conn=9",
            "--log-segment-bytes=2097152",
            "--server-id=7",
            "--log-level=debug",
        ]);
        let (c, w) = Config::from_args(&a).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.client_addr, sa("0.0.0.0:3000"));
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.effective_data_log_dir(), Path::new("/l"));
        assert_eq!(c.shards, 3);
        assert_eq!(
            (
                c.tick_time_ms,
                c.min_session_timeout_ms,
                c.max_session_timeout_ms
            ),
            (100, 150, 5000)
        );
        assert_eq!(c.max_packet_bytes, 4096);
        assert_eq!(c.max_client_cnxns, 0);
        assert_eq!(
            c.super_digest.as_deref(),
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU=")
        );
        assert_eq!(c.four_letter_whitelist, ["ruok", "mntr", "srvr"]);
        assert!(c.ttl_enabled);
        assert_eq!(c.container_check_interval_ms, 50);
        assert_eq!(c.sessionless_timeout_ms, 7);
        assert_eq!(c.max_outstanding_per_conn, 9);
        assert_eq!(c.log_segment_bytes, 2 << 20);
        assert_eq!(c.server_id, 7);
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn ttl_flag_forms() {
        assert_eq!(args(&[]).ttl_enabled, None);
        assert_eq!(args(&["--ttl-enabled"]).ttl_enabled, Some(true));
        assert_eq!(args(&["--ttl-enabled=false"]).ttl_enabled, Some(false));
    }

    #[test]
    fn session_bounds_follow_final_tick() {
        let (c, _) = Config::from_args(&args(&["--tick-time=500"])).unwrap();
        assert_eq!(
            (c.min_session_timeout_ms, c.max_session_timeout_ms),
            (1000, 10000)
        );
        let (c, _) =
            Config::from_args(&args(&["--tick-time=500", "--max-session-timeout=60000"])).unwrap();
        assert_eq!(
            (c.min_session_timeout_ms, c.max_session_timeout_ms),
            (1000, 60000)
        );
    }

    #[test]
    fn toml_layer() {
        let f = file(
            r#"
client_addr = "[::1]:2182"
data_dir = "/var/lib/rk"
tick_time_ms = 1000
four_letter_whitelist = ["*"]
ttl_enabled = true
super_digest = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
"#,
        );
        let a = ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let (c, w) = Config::from_args(&a).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.client_addr, sa("[::1]:2182"));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/rk"));
        assert_eq!((c.tick_time_ms, c.min_session_timeout_ms), (1000, 2000));
        assert_eq!(c.four_letter_whitelist.len(), FourLetter::ALL.len());
        assert!(c.four_letter_allowed("dump") && c.four_letter_allowed("wchc"));
        assert!(c.ttl_enabled);
    }

    #[test]
    fn toml_errors_name_file_and_line() {
        let f = file("tick_time_ms = 1000\nticktime = 5\n");
        let a = ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let e = err_text(Config::from_args(&a));
        assert!(e.contains(":2: unknown field `ticktime`"), "{e}");
        assert!(!e.contains('\n'));
        let f = file("shards = \"many\"\n");
        let a = ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let e = err_text(Config::from_args(&a));
        assert!(e.contains(":1:"), "{e}");
        let a = ServeArgs {
            config: Some("/nonexistent/rk.toml".into()),
            ..Default::default()
        };
        assert!(err_text(Config::from_args(&a)).starts_with("cannot read /nonexistent/rk.toml"));
    }

    #[test]
    fn oversized_file_refused() {
        let f = file(&"#".repeat(MAX_CONFIG_FILE_BYTES as usize + 1));
        let a = ServeArgs {
            zoo_cfg: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        assert!(matches!(
            Config::from_args(&a),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    const DEBIAN_ZOO_CFG: &str = "\
# http://hadoop.apache.org/zookeeper/docs/current/zookeeperAdmin.html
tickTime=2000
initLimit=10
syncLimit=5
dataDir=/var/lib/zookeeper
clientPort=2181
#server.1=zookeeper1:2888:3888
server.1 = zk1:2888:3888
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
admin.enableServer=false
4lw.commands.whitelist=ruok, srvr ,mntr
fooBar=1
";

    #[test]
    fn zoo_cfg_keys_and_warnings() {
        let (layer, warnings) = zoo(DEBIAN_ZOO_CFG);
        assert_eq!(layer.tick_time_ms, Some(2000));
        assert_eq!(layer.data_dir, Some(PathBuf::from("/var/lib/zookeeper")));
        assert_eq!(
            layer.client_addr.as_deref(),
            Some("0.0.0.0:2181"),
            "clientPort alone: all interfaces"
        );
        assert_eq!(
            layer.four_letter_whitelist,
            Some(vec![
                "ruok".to_string(),
                "srvr".to_string(),
                "mntr".to_string()
            ])
        );
        assert_eq!(layer.snap_retain_count, Some(3));
        assert_eq!(warnings.len(), 6, "{warnings:#?}");
        assert!(
            warnings[0].contains("zoo.cfg:3: `initLimit` does not apply"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[2].contains(":8: `server.1` does not apply"),
            "{}",
            warnings[2]
        );
        assert!(warnings[3].contains("`autopurge.purgeInterval` does not apply"));
        assert!(warnings[4].contains("`admin.enableServer` does not apply"));
        assert!(warnings[5].contains(":13: unknown key `fooBar`"));
    }

    fn member(id: u64, peer: &str, client: Option<&str>, observer: bool) -> MemberConfig {
        MemberConfig {
            id,
            peer_addr: sa(peer),
            client_addr: client.map(sa),
            observer,
        }
    }

    /// A data directory holding `myid` (when given) and a zoo.cfg that points at it.
    fn zoo_ensemble(servers: &str, myid: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(id) = myid {
            std::fs::write(dir.path().join("myid"), id).unwrap();
        }
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!("tickTime=2000\ndataDir={}\n{servers}", dir.path().display()),
        )
        .unwrap();
        (dir, cfg)
    }

    const THREE_SERVERS: &str = "\
server.1=127.0.0.1:2888:3888;2181
server.2=127.0.0.1:2889:3889:participant;127.0.0.1:2182
server.3 = localhost:2890:3890:observer;0.0.0.0:2183
";

    #[test]
    fn member_flag_forms() {
        let a = args(&[
            "--member=1=127.0.0.1:2888:3888",
            "--member",
            "2=127.0.0.1:2889;127.0.0.2:2182",
            "--member=3=localhost:2890:3890:participant;2183",
            "--member=4=127.0.0.1:2891:3891:observer;2184",
            "--member=5=[::1]:2892:OBSERVER;[::1]:2185",
            "--server-id=2",
        ]);
        assert_eq!(a.members.as_ref().map(Vec::len), Some(5));
        let (c, w) = Config::from_args(&a).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.members,
            [
                member(1, "127.0.0.1:2888", None, false),
                member(2, "127.0.0.1:2889", Some("127.0.0.2:2182"), false),
                member(3, "127.0.0.1:2890", Some("127.0.0.1:2183"), false),
                member(4, "127.0.0.1:2891", Some("127.0.0.1:2184"), true),
                member(5, "[::1]:2892", Some("[::1]:2185"), true),
            ]
        );
        assert!(c.is_ensemble());
        assert_eq!(c.voters(), [1, 2, 3]);
        assert_eq!(c.learners(), [4, 5]);
        assert_eq!(c.member(4).map(|m| m.observer), Some(true));
        assert_eq!(c.member(9), None);
        assert_eq!(
            c.client_addr,
            sa("127.0.0.2:2182"),
            "from its own member entry"
        );
    }

    #[test]
    fn standalone_members() {
        let c = Config::default();
        assert!(!c.is_ensemble());
        assert_eq!(c.voters(), [1]);
        assert!(c.learners().is_empty());
        let (c, _) = Config::from_args(&args(&["--server-id=9"])).unwrap();
        assert_eq!(c.voters(), [9]);
    }

    #[test]
    fn server_line_syntax() {
        let spec = |rest: &str| parse_server_line(7, rest);
        assert_eq!(
            spec(" zk1:2888 ").unwrap(),
            MemberSpec {
                id: 7,
                peer: "zk1:2888".into(),
                election: None,
                client: None,
                observer: false
            }
        );
        let s = MemberSpec::parse_server("server.4=127.0.0.1:2891:3891:participant;2184").unwrap();
        assert_eq!((s.id, s.election), (4, Some(3891)));
        assert_eq!(
            s.server_line(),
            "127.0.0.1:2891:3891:participant;127.0.0.1:2184"
        );
        let s = MemberSpec::parse_server("server.5 = h:1:observer").unwrap();
        assert_eq!(s.server_line(), "h:1:1:observer");
        assert!(MemberSpec::parse_server("srv.5=h:1").is_err());
        let s = spec("[fe80::1]:2888:3888:observer;2181").unwrap();
        assert_eq!(
            (s.peer.as_str(), s.client.as_deref(), s.observer),
            ("[fe80::1]:2888", Some("[fe80::1]:2181"), true)
        );
        let s = spec("zk1:2888:observer;zk1-client:2181").unwrap();
        assert_eq!(
            (s.peer.as_str(), s.client.as_deref(), s.observer),
            ("zk1:2888", Some("zk1-client:2181"), true)
        );
        for bad in [
            "",
            "zk1",
            ":2888",
            "zk1:port",
            "zk1:2888:3888:4888",
            "zk1:2888:3888:leader",
            "zk1:2888:3888:observer:x",
            "[::1:2888",
            "zk1:2888;",
            "zk1:2888;zk1:x",
            "zk1:2888;:2181",
        ] {
            assert!(spec(bad).is_err(), "`{bad}` must be refused");
        }
        for bad in ["2", "x=zk1:2888", "2=zk1"] {
            let e = MemberSpec::parse_flag(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("--member `{bad}`")), "{e}");
        }
        let e = err_text(Config::from_args(&args(&[
            "--member=1=zk1",
            "--member=2=zk2:2888",
        ])));
        assert!(e.contains("--member `1=zk1`"), "{e}");
    }

    #[test]
    fn toml_members() {
        let f = file(
            r#"
server_id = 2
[[members]]
id = 1
peer = "127.0.0.1:2888"
[[members]]
id = 2
peer = "localhost:2889"
client = "127.0.0.1:2182"
[[members]]
id = 3
peer = "127.0.0.1:2890"
observer = true
"#,
        );
        let mut a = ServeArgs {
            config: Some(f.path().to_path_buf()),
            ..Default::default()
        };
        let (c, _) = Config::from_args(&a).unwrap();
        assert_eq!(
            c.members,
            [
                member(1, "127.0.0.1:2888", None, false),
                member(2, "127.0.0.1:2889", Some("127.0.0.1:2182"), false),
                member(3, "127.0.0.1:2890", None, true),
            ]
        );
        assert_eq!(c.client_addr, sa("127.0.0.1:2182"));
        assert_eq!((c.voters(), c.learners()), (vec![1, 2], vec![3]));
        // Flags replace the whole list.
        a.members = Some(vec!["2=127.0.0.1:3000".into()]);
        let (c, _) = Config::from_args(&a).unwrap();
        assert_eq!(c.members, [member(2, "127.0.0.1:3000", None, false)]);
        assert_eq!(c.client_addr, sa("127.0.0.1:2181"));
        let e = ConfigLayer::from_toml(
            "[[members]]\nid = 1\npeer = \"a:1\"\nrole = \"x\"\n",
            Path::new("rk.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rk.toml:4: unknown field `role`"), "{e}");
    }

    #[test]
    fn zoo_cfg_ensemble_with_myid() {
        let (_dir, cfg) = zoo_ensemble(THREE_SERVERS, Some(" 2\n"));
        let a = ServeArgs {
            zoo_cfg: Some(cfg),
            ..Default::default()
        };
        let (c, w) = Config::from_args(&a).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.server_id, 2);
        assert_eq!(
            c.members,
            [
                member(1, "127.0.0.1:2888", Some("127.0.0.1:2181"), false),
                member(2, "127.0.0.1:2889", Some("127.0.0.1:2182"), false),
                member(3, "127.0.0.1:2890", Some("0.0.0.0:2183"), true),
            ]
        );
        assert_eq!(c.client_addr, sa("127.0.0.1:2182"));
        assert_eq!((c.voters(), c.learners()), (vec![1, 2], vec![3]));
    }

    #[test]
    fn zoo_cfg_client_port_is_explicit() {
        let (_dir, cfg) = zoo_ensemble(&format!("clientPort=2500\n{THREE_SERVERS}"), Some("3"));
        let a = ServeArgs {
            zoo_cfg: Some(cfg),
            ..Default::default()
        };
        let (c, _) = Config::from_args(&a).unwrap();
        assert_eq!((c.server_id, c.client_addr), (3, sa("0.0.0.0:2500")));
    }

    #[test]
    fn zoo_cfg_myid_missing_or_invalid() {
        let (dir, cfg) = zoo_ensemble(THREE_SERVERS, None);
        let a = ServeArgs {
            zoo_cfg: Some(cfg.clone()),
            ..Default::default()
        };
        let e = err_text(Config::from_args(&a));
        let myid = dir.path().join("myid");
        assert!(e.contains(&myid.display().to_string()), "{e}");
        assert!(e.contains("--server-id") && !e.contains('\n'), "{e}");
        std::fs::write(&myid, "two\n").unwrap();
        let e = err_text(Config::from_args(&a));
        assert!(
            e.contains(&format!("{}: `two` is not a server id", myid.display())),
            "{e}"
        );
        // --data-dir moves where myid is looked for.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("myid"), "1").unwrap();
        let mut a = args(&[]);
        a.zoo_cfg = Some(cfg);
        a.data_dir = Some(other.path().to_path_buf());
        assert_eq!(Config::from_args(&a).unwrap().0.server_id, 1);
    }

    #[test]
    fn server_id_flag_overrides_myid() {
        let (_dir, cfg) = zoo_ensemble(THREE_SERVERS, Some("2"));
        let mut a = args(&["--server-id=1"]);
        a.zoo_cfg = Some(cfg);
        let (c, _) = Config::from_args(&a).unwrap();
        assert_eq!(c.server_id, 1);
        assert_eq!(c.client_addr, sa("127.0.0.1:2181"));
        // No myid file is needed then.
        let (_dir, cfg) = zoo_ensemble(THREE_SERVERS, None);
        a.zoo_cfg = Some(cfg);
        assert_eq!(Config::from_args(&a).unwrap().0.server_id, 1);
    }

    #[test]
    fn zoo_cfg_server_line_errors() {
        let p = Path::new("zoo.cfg");
        let e = parse_zoo_cfg("server.1=a:1:2\nserver.x=b:1:2\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "zoo.cfg:2: server.x: `x` is not a server id");
        let e = parse_zoo_cfg("server.1=a:1:2\nserver.2=b:1:2:leader\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("zoo.cfg:2: server.2: "), "{e}");
        let (layer, w) = zoo("server.1=a:1:2\nserver.2=b:1:2\ngroup.1=1:2\n");
        assert_eq!(layer.members.map(|m| m.len()), Some(2));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("`group.1` does not apply"), "{w:?}");
        let (layer, _) = zoo("server.1=a:1:2\n");
        assert_eq!(layer.members, None, "one server line: standalone");
    }

    #[test]
    fn member_validation_errors() {
        let (m1, m2) = ("--member=1=127.0.0.1:2888", "--member=2=127.0.0.1:2889");
        let cases: &[(&[&str], &str)] = &[
            (
                &[m1, m2, "--member=1=127.0.0.1:2890"],
                "member id 1 is given twice",
            ),
            (
                &[m1, "--member=2=127.0.0.1:2888"],
                "members 1 and 2 have the same peer address 127.0.0.1:2888",
            ),
            (
                &[m1, m2, "--server-id=3"],
                "server_id 3 is not one of the members (1, 2)",
            ),
            (
                &[m1, "--member=0=127.0.0.1:2889"],
                "member id must be 1-255",
            ),
            (
                &[m1, "--member=256=127.0.0.1:2889"],
                "member id must be 1-255",
            ),
            (
                &["--member=1=127.0.0.1:0"],
                "member 1: peer port must not be 0",
            ),
            (
                &["--member=1=127.0.0.1:2888:observer"],
                "the members include no voter",
            ),
            (
                &[m1, "--client-addr=127.0.0.1:2889", m2],
                "client_addr 127.0.0.1:2889 is also member 2's peer address",
            ),
        ];
        assert_invalid(cases);
    }

    #[test]
    fn explicit_client_addr_wins_over_member_entry() {
        let member = "--member=1=127.0.0.1:2888;2181";
        let (c, _) = Config::from_args(&args(&[member])).unwrap();
        assert_eq!(c.client_addr, sa("127.0.0.1:2181"));
        let (c, _) = Config::from_args(&args(&[member, "--client-addr=0.0.0.0:3000"])).unwrap();
        assert_eq!(c.client_addr, sa("0.0.0.0:3000"));
        assert_eq!(c.member(1).unwrap().client_addr, Some(sa("127.0.0.1:2181")));
    }

    #[test]
    fn zoo_cfg_all_applied_keys() {
        let (layer, warnings) = zoo(
            "clientPort 2190\n\
             clientPortAddress : 127.0.0.2\n\
             dataDir=/d\n\
             dataLogDir=/l\n\
             tickTime=0x64\n\
             minSessionTimeout=-1\n\
             maxSessionTimeout=9000\n\
             maxClientCnxns=0\n\
             jute.maxbuffer=4194304\n\
             zookeeper.extendedTypesEnabled=TRUE\n\
             znode.container.checkIntervalMs=250\n\
             zookeeper.DigestAuthenticationProvider.superDigest=super:D/InIHSb7yEEbrWz8b9l71RjZJU=\n",
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let (c, _) = Config::from_layers([layer]).unwrap();
        assert_eq!(c.client_addr, sa("127.0.0.2:2190"));
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.data_log_dir, Some(PathBuf::from("/l")));
        assert_eq!(c.tick_time_ms, 100);
        assert_eq!(c.min_session_timeout_ms, 200, "-1 means 2 x tick");
        assert_eq!(c.max_session_timeout_ms, 9000);
        assert_eq!(c.max_client_cnxns, 0);
        assert_eq!(c.max_packet_bytes, 4 << 20);
        assert!(c.ttl_enabled);
        assert_eq!(c.container_check_interval_ms, 250);
        assert!(c.super_digest.is_some());
    }

    #[test]
    fn zoo_cfg_errors() {
        let p = Path::new("zoo.cfg");
        let e = parse_zoo_cfg("clientPortAddress=127.0.0.1\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "zoo.cfg:1: clientPortAddress is set but clientPort is not set"
        );
        let e = parse_zoo_cfg("\n\ntickTime=fast\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "zoo.cfg:3: tickTime: `fast` is not a number");
        let e = parse_zoo_cfg("clientPort=70000\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "zoo.cfg:1: clientPort: 70000 is out of range 1-65535");
        let e = parse_zoo_cfg("extendedTypesEnabled=yes\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not true/false"));
    }

    #[test]
    fn properties_syntax() {
        let got = properties(
            "  # comment\n! also\n\na=1\nb : 2\nc   3\nd\\\n   ontinued=x\\\n  y\ne=C:\\\\data\\tx\nf\\=g=h\nempty=\n",
        );
        let got: Vec<(usize, &str, &str)> = got
            .iter()
            .map(|(l, k, v)| (*l, k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (4, "a", "1"),
                (5, "b", "2"),
                (6, "c", "3"),
                (7, "dontinued", "xy"),
                (10, "e", "C:\\data\tx"),
                (11, "f=g", "h"),
                (12, "empty", ""),
            ]
        );
    }

    #[test]
    fn java_ints() {
        assert_eq!(parse_java_int("10"), Some(10));
        assert_eq!(parse_java_int("-1"), Some(-1));
        assert_eq!(parse_java_int("0xfffff"), Some(1_048_575));
        assert_eq!(parse_java_int("#10"), Some(16));
        assert_eq!(parse_java_int("010"), Some(8));
        assert_eq!(parse_java_int("0"), Some(0));
        assert_eq!(parse_java_int("1e3"), None);
        assert_eq!(parse_java_int(""), None);
    }

    #[test]
    fn precedence_defaults_toml_zoo_flags() {
        let toml = file("tick_time_ms = 1000\ndata_dir = \"/toml\"\nshards = 2\nserver_id = 3\n");
        let zoo_cfg = file("tickTime=3000\ndataDir=/zoo\n");
        // TOML over defaults.
        let a = ServeArgs {
            config: Some(toml.path().to_path_buf()),
            ..Default::default()
        };
        let (c, _) = Config::from_args(&a).unwrap();
        assert_eq!(
            (c.tick_time_ms, c.data_dir.to_str(), c.shards),
            (1000, Some("/toml"), 2)
        );
        // zoo.cfg over TOML; TOML keys zoo.cfg does not set survive.
        let a = ServeArgs {
            config: Some(toml.path().to_path_buf()),
            zoo_cfg: Some(zoo_cfg.path().to_path_buf()),
            ..Default::default()
        };
        let (c, _) = Config::from_args(&a).unwrap();
        assert_eq!(
            (c.tick_time_ms, c.data_dir.to_str(), c.shards),
            (3000, Some("/zoo"), 2)
        );
        assert_eq!(
            c.max_session_timeout_ms, 60000,
            "derived from the winning tick"
        );
        assert_eq!(c.server_id, 3);
        // Flags over both.
        let mut a = args(&["--data-dir=/flag", "--shards=4"]);
        a.config = Some(toml.path().to_path_buf());
        a.zoo_cfg = Some(zoo_cfg.path().to_path_buf());
        let (c, _) = Config::from_args(&a).unwrap();
        assert_eq!(
            (c.tick_time_ms, c.data_dir.to_str(), c.shards),
            (3000, Some("/flag"), 4)
        );
    }

    #[test]
    fn validation_errors_are_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["--tick-time=0"], "tick_time_ms must be > 0"),
            (
                &["--min-session-timeout=5000", "--max-session-timeout=4000"],
                "must not be larger",
            ),
            (&["--tick-time=-3"], "tick_time_ms must be > 0"),
            (&["--tick-time=200000000"], "overflows"),
            (&["--shards=0"], "shards must be"),
            (&["--max-packet-size=10"], "max_packet_bytes must be"),
            (&["--super-digest=nocolon"], "super_digest must be"),
            (&["--super-digest=super:short"], "super_digest must be"),
            (
                &["--container-check-interval=0"],
                "container_check_interval_ms must be",
            ),
            (
                &["--sessionless-timeout=0"],
                "sessionless_timeout_ms must be",
            ),
            (
                &["--max-outstanding-per-conn=0"],
                "max_outstanding_per_conn must be",
            ),
            (
                &["--log-segment-bytes=1000000"],
                "log_segment_bytes must be",
            ),
            (&["--server-id=0"], "server_id must be"),
            (&["--server-id=256"], "server_id must be"),
            (&["--join"], "join needs the ensemble's members"),
            (&["--log-level=info,[[["], "log_level"),
            (&["--client-addr=nohost"], "client_addr `nohost`"),
        ];
        assert_invalid(cases);
    }

    #[test]
    fn empty_data_dir_refused() {
        let layer = ConfigLayer {
            data_dir: Some(PathBuf::new()),
            ..Default::default()
        };
        let e = Config::from_layers([layer]).unwrap_err().to_string();
        assert_eq!(e, "invalid configuration: data_dir must not be empty");
    }

    #[test]
    fn whitelist_normalization() {
        let (c, w) =
            Config::from_args(&args(&["--four-letter-whitelist=ruok, bogus,ruok,"])).unwrap();
        assert_eq!(c.four_letter_whitelist, ["ruok", "srvr"]);
        assert_eq!(
            w,
            ["four_letter_whitelist: unknown command `bogus` ignored"]
        );
        assert!(
            c.four_letter_allowed("srvr"),
            "srvr is always answered, as in ZooKeeper"
        );
        assert!(!c.four_letter_allowed("stat"));
    }

    #[test]
    fn security_settings_ringkeeper_lacks_are_start_up_errors() {
        let p = Path::new("zoo.cfg");
        for line in [
            "secureClientPort=2281",
            "secureClientPortAddress=0.0.0.0",
            "sslQuorum=true",
            "portUnification=true",
            "ssl.keyStore.location=/etc/zk/key.pem",
            "zookeeper.ssl.quorum.trustStore.location=/etc/zk/ca.pem",
            "authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider",
            "authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider",
            "enforce.auth.enabled=true",
            "enforce.auth.schemes=sasl",
            "quorum.auth.enableSasl=true",
            "zookeeper.superUser=admin",
            "sessionRequireClientSASLAuth=true",
        ] {
            let key = line.split('=').next().unwrap();
            let e = parse_zoo_cfg(&format!("tickTime=2000\n{line}\n"), p)
                .expect_err(line)
                .to_string();
            assert!(
                e.starts_with("zoo.cfg:2: `") && e.contains(key) && e.contains("security"),
                "{line}: {e}"
            );
        }
        // Turned off, or a provider ringkeeper has built in: nothing is asked for.
        for line in [
            "sslQuorum=false",
            "quorum.auth.enableSasl=false",
            "enforce.auth.enabled=false",
            "authProvider.1=org.apache.zookeeper.server.auth.DigestAuthenticationProvider",
        ] {
            parse_zoo_cfg(&format!("{line}\n"), p).expect(line);
        }
    }

    #[test]
    fn peer_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("secret");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        let path = good.to_str().unwrap();
        let (c, _) = Config::from_args(&args(&["--peer-secret-file", path])).unwrap();
        let secret = c.peer_secret.as_ref().unwrap();
        assert_eq!(
            secret.bytes(),
            b"0123456789abcdef0123",
            "trailing newline trimmed"
        );
        assert!(
            !format!("{c:?}").contains("0123456789"),
            "Debug shows no secret"
        );

        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(&cfg, format!("ringkeeper.peerSecretFile={path}\n")).unwrap();
        let (c, _) = Config::from_args(&args(&["--zoo-cfg", cfg.to_str().unwrap()])).unwrap();
        assert_eq!(c.peer_secret.as_ref(), Some(secret));

        let short = dir.path().join("short");
        std::fs::write(&short, "tooshort\n").unwrap();
        let e = Config::from_args(&args(&["--peer-secret-file", short.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16"), "{e}");
        let missing = dir.path().join("missing");
        let e = Config::from_args(&args(&["--peer-secret-file", missing.to_str().unwrap()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn default_whitelist_reveals_no_sessions_or_positions() {
        let c = Config::default();
        for word in [
            "cons", "stat", "mntr", "conf", "envi", "wchc", "wchp", "dump",
        ] {
            assert!(!c.four_letter_allowed(word), "{word}");
        }
        assert!(c.four_letter_allowed("srvr") && c.four_letter_allowed("ruok"));
    }

    #[test]
    fn localhost_addr() {
        let (c, _) = Config::from_args(&args(&["--client-addr=localhost:2999"])).unwrap();
        assert_eq!(c.client_addr, sa("127.0.0.1:2999"));
    }

    /// The cells of a markdown table row (`\|` is a pipe inside a cell).
    fn table_cells(row: &str) -> Vec<String> {
        let mut cells = vec![String::new()];
        let row = row.trim().trim_start_matches('|').trim_end_matches('|');
        let mut chars = row.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&'|') => {
                    chars.next();
                    cells.last_mut().unwrap().push('|');
                }
                '|' => cells.push(String::new()),
                c => cells.last_mut().unwrap().push(c),
            }
        }
        cells.into_iter().map(|c| c.trim().to_string()).collect()
    }

    /// The `code` spans of `text`; with `top_level`, only those outside parentheses.
    fn code_spans(text: &str, top_level: bool) -> Vec<String> {
        let (mut spans, mut depth, mut code) = (Vec::new(), 0, None::<String>);
        for c in text.chars() {
            match (&mut code, c) {
                (Some(span), '`') => {
                    if depth == 0 || !top_level {
                        spans.push(std::mem::take(span));
                    }
                    code = None;
                }
                (Some(span), c) => span.push(c),
                (None, '`') => code = Some(String::new()),
                (None, '(') => depth += 1,
                (None, ')') => depth -= 1,
                (None, _) => {}
            }
        }
        spans
    }

    #[test]
    fn configuration_md_matches_the_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIGURATION.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let header = "| TOML key | flag | zoo.cfg key | default | meaning |";
        let rows: Vec<Vec<String>> = text
            .lines()
            .skip_while(|l| l.trim() != header)
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(table_cells)
            .collect();
        assert!(rows.len() > 1, "no settings table in {}", path.display());
        let mut documented = Vec::new();
        for cells in &rows {
            assert_eq!(cells.len(), 5, "{cells:?}");
            let key = code_spans(&cells[0], false).remove(0);
            let key = key.trim_start_matches("[[").trim_end_matches("]]");
            let s = SETTINGS
                .iter()
                .find(|s| s.toml == key)
                .unwrap_or_else(|| panic!("CONFIGURATION.md: `{key}` is no setting"));
            assert!(!documented.contains(&s.toml), "`{key}` has two rows");
            documented.push(s.toml);
            assert_eq!(
                code_spans(&cells[1], false)[0],
                s.usage(),
                "flag of `{key}`"
            );
            // zoo.cfg keys: the code outside parentheses (notes), up to any `=`.
            let zoo: Vec<String> = code_spans(&cells[2], true)
                .into_iter()
                .map(|k| k.split('=').next().unwrap().to_string())
                .collect();
            assert_eq!(zoo, s.zoo_cfg, "zoo.cfg keys of `{key}`");
            if zoo.is_empty() {
                assert_eq!(cells[2], "–", "zoo.cfg cell of `{key}`");
            }
            // A note in parentheses may follow the default.
            let default = match cells[3].rsplit_once(" (") {
                Some((d, note)) if note.ends_with(')') => d,
                _ => cells[3].as_str(),
            };
            assert_eq!(default, (s.default)(), "default of `{key}`");
        }
        for s in SETTINGS {
            assert!(
                documented.contains(&s.toml),
                "`{}` has no row in CONFIGURATION.md",
                s.toml
            );
        }
        // The paragraph after the table lists the system-property keys.
        let paragraph: String = text
            .lines()
            .skip_while(|l| !l.starts_with("System-property keys ("))
            .take_while(|l| !l.contains("also accepted"))
            .chain(text.lines().filter(|l| l.contains("also accepted")).take(1))
            .collect::<Vec<_>>()
            .join(" ");
        let paragraph = paragraph.split(") are also accepted").next().unwrap();
        let mut listed = code_spans(paragraph, false);
        let mut defined: Vec<String> = SETTINGS
            .iter()
            .flat_map(|s| s.zoo_cfg.iter())
            .filter(|k| is_system_property_key(k))
            .map(|k| k.to_string())
            .collect();
        listed.sort();
        defined.sort();
        assert_eq!(listed, defined, "system-property keys in CONFIGURATION.md");
    }

    #[test]
    fn every_setting_has_its_flag_and_toml_key() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for s in SETTINGS {
            let long = s.flag.trim_start_matches("--");
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("no flag {}", s.flag));
            assert!(arg
                .get_help()
                .is_some_and(|h| h.to_string().starts_with(s.doc)));
            // Each TOML key is accepted (a wrong type is refused, an unknown key too).
            let e = ConfigLayer::from_toml(&format!("{} = {{}}\n", s.toml), Path::new("t"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("unknown field"), "{}: {e}", s.toml);
        }
    }
}
