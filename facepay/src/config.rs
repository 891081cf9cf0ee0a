//! facepay's configuration, read once from the environment over built-in defaults into one
//! typed value ([`Config`]); secrets wrapped so that no log prints them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use facepay_domain::auth::Pepper;
use facepay_domain::limits::{KEY_PEPPER_BYTES_MIN, SWEEP_INTERVAL_MS};
use facepay_ingest::authenticity::DeviceVerifier;
use facepay_ingest::faces::{FaceStore, Shard};
use facepay_ingest::PipelineConfig;
use facepay_ledger::face_keys::FaceKeyFile;
use facepay_ledger::LedgerStore;
use facepay_matcher::vault::{MasterKey, Vault};
use facepay_matcher::MatchPolicy;

/// A value that must never reach a log: `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// facepay's configuration, from the environment over built-in defaults. With nothing set
/// it runs embedded: SQLite under `./facepay-data`, in-process channels.
#[derive(Debug, Clone)]
pub struct Config {
    /// `FACEPAY_DATABASE_URL`: `sqlite://…` (embedded) or `postgres://…` (production). May
    /// hold a password, hence secret.
    pub database_url: Secret,
    /// `FACEPAY_KAFKA_BROKERS`: unset → the in-process bus.
    pub kafka_brokers: Option<String>,
    /// `FACEPAY_HTTP_ADDR`, default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// `FACEPAY_METRICS_ADDR`: where Prometheus scrapes `/metrics` (its own port); unset: off.
    pub metrics_addr: Option<SocketAddr>,
    /// `FACEPAY_DATA_DIR`, default `./facepay-data`: where the embedded database lives.
    pub data_dir: PathBuf,
    /// `FACEPAY_MATCH_*`: the match policy's thresholds over its documented defaults
    /// (see [`MatchPolicy::ENV_VARS`]).
    pub match_policy: MatchPolicy,
    /// `FACEPAY_FACE_MASTER_KEY`: 64 hex digits, the key that wraps every payer's template
    /// key. Set: the gallery is kept in the store, sealed, and loaded at start-up; unset: the
    /// gallery lives in memory only.
    pub face_master_key: Option<Secret>,
    /// `FACEPAY_FACE_KEYS_PATH`: the face key file, where each payer's wrapped data key lives
    /// apart from the ledger's tables (deleting one there is real; see docs/SECURITY.md).
    /// Default: `face-keys.db` beside an SQLite database; with PostgreSQL it must be set
    /// (every matcher process on the host shares it).
    pub face_keys_path: Option<PathBuf>,
    /// `FACEPAY_MATCHER_SHARD` = `i/N`, default `0/1`: this process serves the payers with
    /// `shard_hash % N == i`.
    pub matcher_shard: Shard,
    /// `FACEPAY_KEY_PEPPER` (at least 32 bytes): the key of every stored API-key hash and of
    /// every device secret. Unset: read from (or created in) `<data dir>/key-pepper`.
    pub key_pepper: Pepper,
    /// `FACEPAY_SWEEP_INTERVAL_MS`, default [`SWEEP_INTERVAL_MS`]: how often the ledger's
    /// clock revokes orders unpaid after 45 s and expires 30-day holds; `0`: never.
    pub sweep_interval: std::time::Duration,
}

/// The data directory's database when `FACEPAY_DATABASE_URL` is unset: every command's, the
/// demo's too.
pub const DATABASE_FILE: &str = "facepay.db";

impl Config {
    /// Where the database is, for a message: `FACEPAY_DATABASE_URL` without its credentials
    /// or parameters.
    pub fn database_shown(&self) -> String {
        let url = self.database_url.expose();
        let url = url.split('?').next().unwrap_or_default();
        match url.split_once("://") {
            Some((scheme, rest)) => {
                format!("{scheme}://{}", rest.rsplit_once('@').map_or(rest, |(_, host)| host))
            }
            None => url.to_string(),
        }
    }

    pub fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let data_dir = PathBuf::from(var("FACEPAY_DATA_DIR").unwrap_or_else(|| "facepay-data".into()));
        let database_url = match var("FACEPAY_DATABASE_URL") {
            Some(url) => url,
            None => sqlite_url(&data_dir.join(DATABASE_FILE)),
        };
        let http_addr = var("FACEPAY_HTTP_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
            .context("FACEPAY_HTTP_ADDR must be host:port")?;
        let face_master_key = var("FACEPAY_FACE_MASTER_KEY").map(Secret::new);
        if let Some(key) = &face_master_key {
            MasterKey::from_hex(key.expose()).context("FACEPAY_FACE_MASTER_KEY")?;
        }
        let face_keys_path = var("FACEPAY_FACE_KEYS_PATH").map(PathBuf::from).or_else(|| beside_sqlite(&database_url));
        anyhow::ensure!(
            face_master_key.is_none() || face_keys_path.is_some(),
            "FACEPAY_FACE_MASTER_KEY with PostgreSQL needs FACEPAY_FACE_KEYS_PATH (the face key file, on this host)"
        );
        let key_pepper = key_pepper(var("FACEPAY_KEY_PEPPER"), &data_dir)?;
        let matcher_shard = match var("FACEPAY_MATCHER_SHARD") {
            None => Shard::ALL,
            Some(s) => parse_shard(&s).context("FACEPAY_MATCHER_SHARD must be i/N with i < N")?,
        };
        // Split over processes, each shard's part of the gallery must be kept (sealed) and
        // reach the others' decisions through Kafka.
        anyhow::ensure!(
            matcher_shard.count <= 1 || (face_master_key.is_some() && var("FACEPAY_KAFKA_BROKERS").is_some()),
            "FACEPAY_MATCHER_SHARD of more than one shard needs FACEPAY_FACE_MASTER_KEY and FACEPAY_KAFKA_BROKERS"
        );
        Ok(Self {
            database_url: Secret::new(database_url),
            kafka_brokers: var("FACEPAY_KAFKA_BROKERS"),
            http_addr,
            metrics_addr: var("FACEPAY_METRICS_ADDR")
                .map(|a| a.parse())
                .transpose()
                .context("FACEPAY_METRICS_ADDR must be host:port")?,
            data_dir,
            match_policy: MatchPolicy::from_env()?,
            face_master_key,
            face_keys_path,
            key_pepper,
            matcher_shard,
            sweep_interval: std::time::Duration::from_millis(match var("FACEPAY_SWEEP_INTERVAL_MS") {
                Some(ms) => ms.parse().context("FACEPAY_SWEEP_INTERVAL_MS must be a whole number of milliseconds")?,
                None => SWEEP_INTERVAL_MS,
            }),
        })
    }

    /// The pipeline settings this configuration asks for, the gallery at rest over `store`
    /// and the face key file.
    pub async fn pipeline(&self, store: &Arc<dyn LedgerStore>) -> anyhow::Result<PipelineConfig> {
        let faces = match (&self.face_master_key, &self.face_keys_path) {
            (Some(key), Some(path)) => {
                let vault = Vault::new(MasterKey::from_hex(key.expose())?);
                let keys = FaceKeyFile::open(path).await?;
                Some(FaceStore::new(store.clone(), keys, vault, self.matcher_shard))
            }
            _ => None,
        };
        let verifier = Arc::new(DeviceVerifier::new(self.key_pepper.clone()));
        Ok(PipelineConfig {
            match_policy: self.match_policy,
            faces,
            verifier,
            sweep_interval: self.sweep_interval,
            ..PipelineConfig::default()
        })
    }
}

/// The pepper from `FACEPAY_KEY_PEPPER`, else from `<data dir>/key-pepper` (created, owner
/// read/write only, with 32 random bytes in hex, the first time).
fn key_pepper(var: Option<String>, data_dir: &Path) -> anyhow::Result<Pepper> {
    let text = match var {
        Some(v) => v,
        None => {
            let path = data_dir.join("key-pepper");
            if !path.exists() {
                use rand::RngCore;
                let mut bytes = [0_u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
                write_private(&path, hex::encode(bytes).as_bytes())?;
            }
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?.trim().to_string()
        }
    };
    anyhow::ensure!(text.len() >= KEY_PEPPER_BYTES_MIN, "FACEPAY_KEY_PEPPER: at least {KEY_PEPPER_BYTES_MIN} bytes");
    Ok(Pepper::new(text.into_bytes()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// `i/N` → shard `i` of `N`.
fn parse_shard(s: &str) -> Option<Shard> {
    let (i, n) = s.split_once('/')?;
    let (index, count): (u32, u32) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
    (index < count).then_some(Shard { index, count })
}

/// `face-keys.db` in the folder of the SQLite database at `url`, if it is one.
fn beside_sqlite(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = Path::new(path.split('?').next()?);
    (!path.as_os_str().is_empty() && !path.to_string_lossy().contains(":memory:"))
        .then(|| path.parent().unwrap_or(Path::new("")).join(FACE_KEYS_FILE))
}

/// The face key file's name beside an SQLite database.
pub const FACE_KEYS_FILE: &str = "face-keys.db";

pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}
