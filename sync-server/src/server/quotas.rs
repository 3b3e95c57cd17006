//! Per-principal quota settings of `concord serve` (flags, `CONCORD_*` variables, and a
//! `[quotas]` table in the TOML file), resolved into the engine's [`Quotas`].

use concord::core::Quotas;
use serde::Deserialize;

use super::config::ConfigError;

/// Quota flags (each also an environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QuotaArgs {
    /// Operations a principal's changes may carry per second, over all its connections
    /// [default: 50000].
    #[arg(long, env = "CONCORD_QUOTA_OPS_PER_SEC")]
    pub quota_ops_per_sec: Option<u64>,
    /// Largest burst of operations per principal [default: 200000].
    #[arg(long, env = "CONCORD_QUOTA_OPS_BURST")]
    pub quota_ops_burst: Option<u64>,
    /// Decompressed bytes a principal's changes may carry per second [default: 16777216].
    #[arg(long, env = "CONCORD_QUOTA_BYTES_PER_SEC")]
    pub quota_bytes_per_sec: Option<u64>,
    /// Documents a principal may create per hour (also the burst) [default: 1000].
    #[arg(long, env = "CONCORD_QUOTA_DOCS_PER_HOUR")]
    pub quota_docs_per_hour: Option<u64>,
    /// Documents a principal may keep subscribed at once [default: 10000].
    #[arg(long, env = "CONCORD_QUOTA_SUBSCRIPTIONS")]
    pub quota_subscriptions: Option<u64>,
    /// Storage ids per principal whose sync state is persisted [default: 32].
    #[arg(long, env = "CONCORD_QUOTA_STORAGE_IDS")]
    pub quota_storage_ids: Option<usize>,
    /// Ephemeral (presence) bytes per second one connection may fan out [default: 65536].
    #[arg(long, env = "CONCORD_QUOTA_EPHEMERAL_BYTES_PER_SEC")]
    pub quota_ephemeral_bytes_per_sec: Option<u64>,
}

/// The `[quotas]` table of the TOML file (keys without the `quota_` prefix).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaFile {
    ops_per_sec: Option<u64>,
    ops_burst: Option<u64>,
    bytes_per_sec: Option<u64>,
    docs_per_hour: Option<u64>,
    subscriptions: Option<u64>,
    storage_ids: Option<usize>,
    ephemeral_bytes_per_sec: Option<u64>,
}

impl QuotaArgs {
    /// Flags over the file over the defaults; every quota must be positive.
    pub fn resolve(&self, file: &QuotaFile, max_decompressed: u64) -> Result<Quotas, ConfigError> {
        let d = Quotas::default();
        let q = Quotas {
            ops_per_sec: self
                .quota_ops_per_sec
                .or(file.ops_per_sec)
                .unwrap_or(d.ops_per_sec),
            ops_burst: self
                .quota_ops_burst
                .or(file.ops_burst)
                .unwrap_or(d.ops_burst),
            bytes_per_sec: self
                .quota_bytes_per_sec
                .or(file.bytes_per_sec)
                .unwrap_or(d.bytes_per_sec),
            // One message may always be as large as the per-message limit allows.
            bytes_burst: max_decompressed,
            docs_per_hour: self
                .quota_docs_per_hour
                .or(file.docs_per_hour)
                .unwrap_or(d.docs_per_hour),
            subscriptions: self
                .quota_subscriptions
                .or(file.subscriptions)
                .unwrap_or(d.subscriptions),
            storage_ids: self
                .quota_storage_ids
                .or(file.storage_ids)
                .unwrap_or(d.storage_ids),
            ephemeral_bytes_per_sec: self
                .quota_ephemeral_bytes_per_sec
                .or(file.ephemeral_bytes_per_sec)
                .unwrap_or(d.ephemeral_bytes_per_sec),
            ..d
        };
        let q = Quotas {
            ephemeral_burst: q.ephemeral_bytes_per_sec.saturating_mul(4),
            ..q
        };
        for (name, value) in [
            ("quota_ops_per_sec", q.ops_per_sec),
            ("quota_ops_burst", q.ops_burst),
            ("quota_bytes_per_sec", q.bytes_per_sec),
            ("quota_docs_per_hour", q.docs_per_hour),
            ("quota_subscriptions", q.subscriptions),
            ("quota_ephemeral_bytes_per_sec", q.ephemeral_bytes_per_sec),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(name, "must be at least 1".into()));
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_over_defaults() {
        let file: QuotaFile =
            toml::from_str("docs_per_hour = 5\nsubscriptions = 7").unwrap_or_default();
        let args = QuotaArgs {
            quota_subscriptions: Some(9),
            ..QuotaArgs::default()
        };
        let q = args.resolve(&file, 1 << 20).unwrap_or_default();
        assert_eq!((q.docs_per_hour, q.subscriptions), (5, 9));
        assert_eq!(q.ops_per_sec, Quotas::default().ops_per_sec);
        let zero = QuotaArgs {
            quota_ops_per_sec: Some(0),
            ..QuotaArgs::default()
        };
        assert!(zero.resolve(&QuotaFile::default(), 1).is_err());
    }
}
