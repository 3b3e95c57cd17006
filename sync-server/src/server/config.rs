//! `concord serve` settings: command line, environment (`CONCORD_*`) and an optional TOML file,
//! in that order of precedence, over defaults that work on a fresh machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting `{0}`: {1}")]
    Invalid(&'static str, String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Command-line options of `concord serve` (each also an environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the long options, with `_`).
    #[arg(long, env = "CONCORD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:3030].
    #[arg(long, env = "CONCORD_BIND")]
    pub bind: Option<SocketAddr>,
    /// Data directory; the SQLite database is `<data>/concord.db` [default: ./concord-data].
    #[arg(long, env = "CONCORD_DATA")]
    pub data: Option<PathBuf>,
    /// Name of this server's region [default: local].
    #[arg(long, env = "CONCORD_REGION")]
    pub region: Option<String>,
    /// Largest WebSocket message accepted, in bytes [default: 1048576].
    #[arg(long, env = "CONCORD_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Frames queued per connection before a slow reader is disconnected [default: 1024].
    #[arg(long, env = "CONCORD_OUTGOING_QUEUE")]
    pub outgoing_queue: Option<usize>,
    /// Evict documents idle for this many seconds [default: 300].
    #[arg(long, env = "CONCORD_EVICT_IDLE_SECS")]
    pub evict_idle_secs: Option<u64>,
    /// Keep at most this many documents in memory [default: 10000].
    #[arg(long, env = "CONCORD_MAX_RESIDENT")]
    pub max_resident: Option<usize>,
    /// Seconds a client may take to complete the handshake [default: 10].
    #[arg(long, env = "CONCORD_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds between keepalive pings [default: 5].
    #[arg(long, env = "CONCORD_PING_SECS")]
    pub ping_secs: Option<u64>,
    /// Log format.
    #[arg(long, env = "CONCORD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Token key file (JSON, see `concord token`) [default: <data>/auth-keys.json, created if missing].
    #[arg(long, env = "CONCORD_AUTH_KEYS")]
    pub auth_keys: Option<PathBuf>,
    /// DEVELOPMENT ONLY: accept peers without a token, with full access.
    #[arg(long, env = "CONCORD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Allowed `Origin` of browser clients (repeatable); when set, other origins are refused.
    #[arg(
        long = "allow-origin",
        env = "CONCORD_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,
    /// Concurrent connections per client IP [default: 64].
    #[arg(long, env = "CONCORD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Concurrent connections per authenticated principal [default: 64].
    #[arg(long, env = "CONCORD_MAX_CONNECTIONS_PER_PRINCIPAL")]
    pub max_connections_per_principal: Option<usize>,
    /// Messages per second per connection before it is closed [default: 500].
    #[arg(long, env = "CONCORD_MAX_MESSAGES_PER_SEC")]
    pub max_messages_per_sec: Option<u32>,
    /// Bytes per second per connection before it is closed [default: 16777216].
    #[arg(long, env = "CONCORD_MAX_BYTES_PER_SEC")]
    pub max_bytes_per_sec: Option<u32>,
    /// Bytes the changes of one sync message may decompress to [default: 67108864].
    #[arg(long, env = "CONCORD_MAX_DECOMPRESSED_BYTES")]
    pub max_decompressed_bytes: Option<u64>,
    /// Operations the changes of one sync message may declare [default: 200000].
    #[arg(long, env = "CONCORD_MAX_OPS_PER_MESSAGE")]
    pub max_ops_per_message: Option<u64>,
    /// Documents of at least this many ops have incoming changes validated, committed and
    /// relayed at once but applied later, in batches (when idle, or 4096 at a time); smaller
    /// ones are applied as they arrive. 0 defers for every document [default: 10000].
    #[arg(long, env = "CONCORD_DEFER_APPLY_MIN_OPS")]
    pub defer_apply_min_ops: Option<u64>,
    /// Independently locked engine shards documents are split between (1 to 256), so that
    /// long work on one document never stalls the others [default: 16].
    #[arg(long, env = "CONCORD_SHARDS")]
    pub shards: Option<u16>,
    /// Close connections silent for this many seconds (pongs count) [default: 60].
    #[arg(long, env = "CONCORD_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Another region's sync URL to replicate with (repeatable); needs --peer-secret.
    #[arg(long = "peer", env = "CONCORD_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Secret shared by the regions of a deployment (at least 16 bytes); enables region
    /// replication and authenticates region links both ways. Prefer the environment variable.
    #[arg(long, env = "CONCORD_PEER_SECRET", hide_env_values = true)]
    pub peer_secret: Option<String>,
    /// Seconds between anti-entropy digests on a region link [default: 30].
    #[arg(long, env = "CONCORD_ANTI_ENTROPY_SECS")]
    pub anti_entropy_secs: Option<u64>,
    /// A region link with no frame received for this long is reported `stalled` in
    /// /admin/replication and does not count as reachable; a link this server dialled is
    /// closed and dialled again after three times as long [default: 5].
    #[arg(long, env = "CONCORD_REGION_STALL_SECS")]
    pub region_stall_secs: Option<u64>,
    /// PostgreSQL URL (`postgres://user:password@host:port/db?sslmode=...`): store documents,
    /// token keys and revocations there, and form a cluster with every node using the same
    /// database. Without it, documents live in SQLite under --data. Prefer the environment
    /// variable (the URL may hold a password).
    #[arg(long, env = "CONCORD_DATABASE_URL", hide_env_values = true)]
    pub database: Option<DatabaseUrl>,
    /// This node's id in the cluster, unique among its nodes (letters, digits, `.`, `_`, `-`,
    /// `:`) [default: <hostname>-<random>].
    #[arg(long, env = "CONCORD_NODE_ID")]
    pub node_id: Option<String>,
    /// PostgreSQL connections this node keeps at most [default: 10].
    #[arg(long, env = "CONCORD_DATABASE_POOL")]
    pub database_pool: Option<u32>,
    /// Seconds a PostgreSQL statement may run (or wait for a lock) [default: 30].
    #[arg(long, env = "CONCORD_DATABASE_STATEMENT_TIMEOUT_SECS")]
    pub database_statement_timeout_secs: Option<u64>,
    /// Seconds to open a PostgreSQL connection or wait for a pooled one [default: 10].
    #[arg(long, env = "CONCORD_DATABASE_CONNECT_TIMEOUT_SECS")]
    pub database_connect_timeout_secs: Option<u64>,
    /// Lifetime of the region tokens this server mints, and the longest it accepts (plus 60 s of
    /// clock skew); a region link is closed when its token expires and redialled with a fresh
    /// one [default: 3600].
    #[arg(long, env = "CONCORD_REGION_TOKEN_TTL_SECS")]
    pub region_token_ttl_secs: Option<u64>,
    /// Per-principal quotas.
    #[command(flatten)]
    pub quotas: super::quotas::QuotaArgs,
    /// Persisted sync state with a peer that has not synced for this long is deleted (the peer
    /// then syncs from scratch, nothing is lost) [default: 2592000, 30 days].
    #[arg(long, env = "CONCORD_SYNC_STATE_TTL_SECS")]
    pub sync_state_ttl_secs: Option<u64>,
    /// A deleted document's stored data is reclaimed this long after its deletion (a purge
    /// erases it at once) [default: 604800, 7 days].
    #[arg(long, env = "CONCORD_DELETED_RETENTION_SECS")]
    pub deleted_retention_secs: Option<u64>,
    /// A deletion's tombstone is kept this long: a replica offline for longer could bring the
    /// document back [default: 15552000, 180 days].
    #[arg(long, env = "CONCORD_TOMBSTONE_RETENTION_SECS")]
    pub tombstone_retention_secs: Option<u64>,
    /// Serve the admin API (`/admin/*`, plus `/healthz` and `/metrics`) on this separate
    /// address, and not on the main listener; without a value: 127.0.0.1:4030.
    #[arg(
        long,
        env = "CONCORD_ADMIN_BIND",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:4030",
        value_name = "ADDR"
    )]
    pub admin_bind: Option<SocketAddr>,
    /// Seconds a client may take to send a request's headers (and the longest an idle
    /// keep-alive connection is kept) [default: 10].
    #[arg(long, env = "CONCORD_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Connections from one IP not yet admitted (no WebSocket accepted yet: headers in flight,
    /// plain HTTP); more are closed at once [default: 32].
    #[arg(long, env = "CONCORD_MAX_PENDING_CONNECTIONS_PER_IP")]
    pub max_pending_connections_per_ip: Option<usize>,
    /// Connections not yet admitted, from all IPs together; more are closed at once
    /// [default: 512].
    #[arg(long, env = "CONCORD_MAX_PENDING_CONNECTIONS")]
    pub max_pending_connections: Option<usize>,
    /// Start even when the data directory is accessible by group or others (it is refused
    /// otherwise; new data directories are created 0700 and their files 0600).
    #[arg(long, env = "CONCORD_ALLOW_INSECURE_DATA_DIR")]
    pub allow_insecure_data_dir: bool,
    /// DEVELOPMENT: print a full-access admin token (1 h) at start, on a loopback address only.
    #[arg(long, env = "CONCORD_DEV")]
    pub dev: bool,
}

/// A database URL; its password never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&concord::storage::postgres::redact(&self.0))
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The same settings as they appear in the TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<SocketAddr>,
    data: Option<PathBuf>,
    region: Option<String>,
    max_message_bytes: Option<usize>,
    outgoing_queue: Option<usize>,
    evict_idle_secs: Option<u64>,
    max_resident: Option<usize>,
    handshake_timeout_secs: Option<u64>,
    ping_secs: Option<u64>,
    log_format: Option<LogFormat>,
    auth_keys: Option<PathBuf>,
    insecure_no_auth: Option<bool>,
    allow_origins: Option<Vec<String>>,
    max_connections_per_ip: Option<usize>,
    max_connections_per_principal: Option<usize>,
    max_messages_per_sec: Option<u32>,
    max_bytes_per_sec: Option<u32>,
    idle_timeout_secs: Option<u64>,
    max_decompressed_bytes: Option<u64>,
    max_ops_per_message: Option<u64>,
    defer_apply_min_ops: Option<u64>,
    shards: Option<u16>,
    peers: Option<Vec<String>>,
    peer_secret: Option<String>,
    anti_entropy_secs: Option<u64>,
    region_stall_secs: Option<u64>,
    database: Option<DatabaseUrl>,
    node_id: Option<String>,
    database_pool: Option<u32>,
    database_statement_timeout_secs: Option<u64>,
    database_connect_timeout_secs: Option<u64>,
    region_token_ttl_secs: Option<u64>,
    admin_bind: Option<SocketAddr>,
    header_read_timeout_secs: Option<u64>,
    max_pending_connections_per_ip: Option<usize>,
    max_pending_connections: Option<usize>,
    allow_insecure_data_dir: Option<bool>,
    #[serde(default)]
    quotas: super::quotas::QuotaFile,
    sync_state_ttl_secs: Option<u64>,
    deleted_retention_secs: Option<u64>,
    tombstone_retention_secs: Option<u64>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub bind: SocketAddr,
    /// Data directory.
    pub data: PathBuf,
    /// Region name.
    pub region: String,
    /// Max WebSocket message size.
    pub max_message_bytes: usize,
    /// Per-connection outgoing queue.
    pub outgoing_queue: usize,
    /// Idle eviction, seconds.
    pub evict_idle_secs: u64,
    /// Max resident documents.
    pub max_resident: usize,
    /// Handshake timeout, seconds.
    pub handshake_timeout_secs: u64,
    /// Keepalive ping period, seconds.
    pub ping_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Token key file.
    pub auth_keys: PathBuf,
    /// Accept unauthenticated peers (development only).
    pub insecure_no_auth: bool,
    /// Allowed browser origins (empty: any).
    pub allow_origins: Vec<String>,
    /// Connections per IP.
    pub max_connections_per_ip: usize,
    /// Connections per principal.
    pub max_connections_per_principal: usize,
    /// Messages per second per connection.
    pub max_messages_per_sec: u32,
    /// Bytes per second per connection.
    pub max_bytes_per_sec: u32,
    /// Idle timeout, seconds.
    pub idle_timeout_secs: u64,
    /// Decompressed bytes per sync message.
    pub max_decompressed_bytes: u64,
    /// Operations per sync message.
    pub max_ops_per_message: u64,
    /// Document size (ops) from which incoming changes are applied in deferred batches.
    pub defer_apply_min_ops: u64,
    /// Engine shards.
    pub shards: u16,
    /// Other regions to dial.
    pub peers: Vec<String>,
    /// Shared region secret (`None`: no region replication).
    pub peer_secret: Option<String>,
    /// Anti-entropy period, seconds.
    pub anti_entropy_secs: u64,
    /// A region link silent this long is stalled (dialled links are redialled after 3x), seconds.
    pub region_stall_secs: u64,
    /// Per-principal quotas.
    pub quotas: concord::core::Quotas,
    /// Sync state unused this long is deleted, seconds.
    pub sync_state_ttl_secs: u64,
    /// Deleted documents' data is reclaimed after this, seconds.
    pub deleted_retention_secs: u64,
    /// Tombstones are forgotten after this, seconds.
    pub tombstone_retention_secs: u64,
    /// PostgreSQL (cluster mode) instead of SQLite under `data`.
    pub database: Option<DatabaseUrl>,
    /// This node's id (`None`: derived from the host name at start).
    pub node_id: Option<String>,
    /// PostgreSQL pool size.
    pub database_pool: u32,
    /// PostgreSQL statement timeout, seconds.
    pub database_statement_timeout_secs: u64,
    /// PostgreSQL connect (and pool acquire) timeout, seconds.
    pub database_connect_timeout_secs: u64,
    /// Region token lifetime (minted, and longest accepted), seconds.
    pub region_token_ttl_secs: u64,
    /// Separate admin listener (`None`: the admin API is on the main listener).
    pub admin_bind: Option<SocketAddr>,
    /// Header read timeout (and keep-alive idle limit), seconds.
    pub header_read_timeout_secs: u64,
    /// Not-yet-admitted connections per IP.
    pub max_pending_connections_per_ip: usize,
    /// Not-yet-admitted connections in total.
    pub max_pending_connections: usize,
    /// Start with a data directory that group or others can access.
    pub allow_insecure_data_dir: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 3030)),
            data: PathBuf::from("concord-data"),
            region: "local".into(),
            max_message_bytes: 1 << 20,
            outgoing_queue: 1024,
            evict_idle_secs: 300,
            max_resident: 10_000,
            handshake_timeout_secs: 10,
            ping_secs: 5,
            log_format: LogFormat::Text,
            auth_keys: PathBuf::from("concord-data").join("auth-keys.json"),
            insecure_no_auth: false,
            allow_origins: Vec::new(),
            max_connections_per_ip: 64,
            max_connections_per_principal: 64,
            max_messages_per_sec: 500,
            max_bytes_per_sec: 16 << 20,
            idle_timeout_secs: 60,
            max_decompressed_bytes: 64 << 20,
            max_ops_per_message: 200_000,
            defer_apply_min_ops: 10_000,
            shards: 16,
            peers: Vec::new(),
            peer_secret: None,
            anti_entropy_secs: 30,
            region_stall_secs: 5,
            quotas: concord::core::Quotas::default(),
            sync_state_ttl_secs: 30 * 24 * 3600,
            deleted_retention_secs: 7 * 24 * 3600,
            tombstone_retention_secs: 180 * 24 * 3600,
            database: None,
            node_id: None,
            database_pool: 10,
            database_statement_timeout_secs: 30,
            database_connect_timeout_secs: 10,
            region_token_ttl_secs: 3600,
            admin_bind: None,
            header_read_timeout_secs: 10,
            max_pending_connections_per_ip: 32,
            max_pending_connections: 512,
            allow_insecure_data_dir: false,
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

impl ServeConfig {
    /// Merges command line/environment over the file over the defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let d = Self::default();
        // Command line (and environment), then file, then default.
        macro_rules! pick {
            ($field:ident) => {
                args.$field
                    .clone()
                    .or(file.$field.clone())
                    .unwrap_or(d.$field)
            };
        }
        let data = pick!(data);
        let c = Self {
            bind: pick!(bind),
            auth_keys: args
                .auth_keys
                .clone()
                .or(file.auth_keys.clone())
                .unwrap_or_else(|| crate::auth::default_key_file(&data)),
            data,
            region: pick!(region),
            max_message_bytes: pick!(max_message_bytes),
            outgoing_queue: pick!(outgoing_queue),
            evict_idle_secs: pick!(evict_idle_secs),
            max_resident: pick!(max_resident),
            handshake_timeout_secs: pick!(handshake_timeout_secs),
            ping_secs: pick!(ping_secs),
            log_format: pick!(log_format),
            insecure_no_auth: args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
            allow_origins: if args.allow_origins.is_empty() {
                file.allow_origins.clone().unwrap_or_default()
            } else {
                args.allow_origins.clone()
            },
            max_connections_per_ip: pick!(max_connections_per_ip),
            max_connections_per_principal: pick!(max_connections_per_principal),
            max_messages_per_sec: pick!(max_messages_per_sec),
            max_bytes_per_sec: pick!(max_bytes_per_sec),
            idle_timeout_secs: pick!(idle_timeout_secs),
            max_decompressed_bytes: pick!(max_decompressed_bytes),
            max_ops_per_message: pick!(max_ops_per_message),
            defer_apply_min_ops: pick!(defer_apply_min_ops),
            shards: pick!(shards),
            peers: if args.peers.is_empty() {
                file.peers.clone().unwrap_or_default()
            } else {
                args.peers.clone()
            },
            peer_secret: args.peer_secret.clone().or(file.peer_secret.clone()),
            anti_entropy_secs: pick!(anti_entropy_secs),
            region_stall_secs: pick!(region_stall_secs),
            quotas: args
                .quotas
                .resolve(&file.quotas, pick!(max_decompressed_bytes))?,
            sync_state_ttl_secs: pick!(sync_state_ttl_secs),
            deleted_retention_secs: pick!(deleted_retention_secs),
            tombstone_retention_secs: pick!(tombstone_retention_secs),
            database: args.database.clone().or(file.database.clone()),
            node_id: args.node_id.clone().or(file.node_id.clone()),
            database_pool: pick!(database_pool),
            database_statement_timeout_secs: pick!(database_statement_timeout_secs),
            database_connect_timeout_secs: pick!(database_connect_timeout_secs),
            region_token_ttl_secs: pick!(region_token_ttl_secs),
            admin_bind: args.admin_bind.or(file.admin_bind),
            header_read_timeout_secs: pick!(header_read_timeout_secs),
            max_pending_connections_per_ip: pick!(max_pending_connections_per_ip),
            max_pending_connections: pick!(max_pending_connections),
            allow_insecure_data_dir: args.allow_insecure_data_dir
                || file.allow_insecure_data_dir.unwrap_or(false),
        };
        if let Some(node) = &c.node_id {
            concord::storage::postgres::validate_node_id(node)
                .map_err(|e| ConfigError::Invalid("node_id", e.to_string()))?;
        }
        if c.database_pool == 0
            || c.database_statement_timeout_secs == 0
            || c.database_connect_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "database_pool/database_statement_timeout_secs/database_connect_timeout_secs",
                "must be greater than zero".into(),
            ));
        }
        if !c.peers.is_empty() && c.peer_secret.is_none() {
            return Err(ConfigError::Invalid(
                "peers",
                "region peers need --peer-secret (CONCORD_PEER_SECRET) to authenticate".into(),
            ));
        }
        if c.peer_secret
            .as_ref()
            .is_some_and(|s| s.len() < crate::auth::MIN_SECRET_BYTES)
        {
            return Err(ConfigError::Invalid(
                "peer_secret",
                format!("must be at least {} bytes", crate::auth::MIN_SECRET_BYTES),
            ));
        }
        if !(1..=256).contains(&c.shards) {
            return Err(ConfigError::Invalid(
                "shards",
                format!("must be between 1 and 256 (got {})", c.shards),
            ));
        }
        if c.anti_entropy_secs == 0 || c.region_stall_secs == 0 {
            return Err(ConfigError::Invalid(
                "anti_entropy_secs/region_stall_secs",
                "must be greater than zero".into(),
            ));
        }
        if c.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_message_bytes",
                "must be at least 1024".into(),
            ));
        }
        if c.outgoing_queue == 0
            || c.max_resident == 0
            || c.ping_secs == 0
            || c.max_messages_per_sec == 0
            || c.max_bytes_per_sec < 1024
            || c.idle_timeout_secs == 0
            || c.region_token_ttl_secs == 0
            || c.header_read_timeout_secs == 0
            || c.max_pending_connections_per_ip == 0
            || c.max_pending_connections == 0
        {
            return Err(ConfigError::Invalid(
                "outgoing_queue/max_resident/ping_secs/max_messages_per_sec/max_bytes_per_sec/idle_timeout_secs/region_token_ttl_secs/header_read_timeout_secs/max_pending_connections(_per_ip)",
                "must be greater than zero".into(),
            ));
        }
        if c.region.is_empty() {
            return Err(ConfigError::Invalid("region", "must not be empty".into()));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_on_a_fresh_machine() {
        let c = ServeConfig::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:3030");
        assert_eq!(c.data, PathBuf::from("concord-data"));
        assert_eq!(c.region, "local");
        assert_eq!(c.max_message_bytes, 1 << 20);
        assert_eq!(c.admin_bind, None);
        assert_eq!(c.region_token_ttl_secs, 3600);
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn admin_bind_without_an_address_is_loopback() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut argv = vec!["serve"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).unwrap().serve.admin_bind
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(
            parse(&["--admin-bind"]).map(|a| a.to_string()),
            Some("127.0.0.1:4030".to_owned())
        );
        assert_eq!(
            parse(&["--admin-bind", "--dev"]).map(|a| a.to_string()),
            Some("127.0.0.1:4030".to_owned())
        );
        assert_eq!(
            parse(&["--admin-bind", "127.0.0.1:9000"]).map(|a| a.port()),
            Some(9000)
        );
    }

    #[test]
    fn command_line_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "region = \"eu\"\nmax_resident = 5\nbind = \"127.0.0.1:4000\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            region: Some("us".into()),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.region, "us");
        assert_eq!(c.max_resident, 5);
        assert_eq!(c.bind.port(), 4000);
    }

    #[test]
    fn database_settings_come_from_the_file_and_never_show_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "database = \"postgres://u:secret@db/concord\"\nnode_id = \"eu-1\"\ndatabase_pool = 4\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(
            c.database.as_ref().unwrap().0,
            "postgres://u:secret@db/concord"
        );
        assert_eq!((c.node_id.as_deref(), c.database_pool), (Some("eu-1"), 4));
        assert!(!format!("{c:?}").contains(":secret@"), "{c:?}");
        let bad_node = ServeArgs {
            node_id: Some("has space".into()),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServeConfig::resolve(&bad_node),
            Err(ConfigError::Invalid("node_id", _))
        ));
    }

    #[test]
    fn bad_files_and_values_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServeConfig::resolve(&args),
            Err(ConfigError::Parse { .. })
        ));
        let missing = ServeArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServeConfig::resolve(&missing),
            Err(ConfigError::Read { .. })
        ));
        let tiny = ServeArgs {
            max_message_bytes: Some(10),
            ..ServeArgs::default()
        };
        assert!(matches!(
            ServeConfig::resolve(&tiny),
            Err(ConfigError::Invalid(..))
        ));
    }
}
