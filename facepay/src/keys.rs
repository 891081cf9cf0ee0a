//! `facepay keys`: API keys created (the token printed once), listed and revoked over the
//! configured store and pepper, each change audited as `cli`.

use clap::Subcommand;
use facepay_api::auth::{Actor, Auth, NewKey};
use facepay_domain::auth::{KeyId, Role};
use facepay_domain::limits::PAGE_LIMIT_MAX;
use facepay_domain::{DeviceId, MerchantId, StoreId};
use facepay_ledger::credentials::KeyPosition;

use crate::app::open_store;
use crate::config::Config;

#[derive(Subcommand)]
pub enum KeysWhat {
    /// Create a key and print its token (shown this once; only its hash is kept).
    Create {
        /// merchant, finance, device or admin.
        #[arg(long)]
        role: String,
        /// Merchant and device keys: the merchant.
        #[arg(long)]
        merchant: Option<String>,
        /// A merchant key scoped to one store, or a device's store.
        #[arg(long)]
        store: Option<String>,
        /// Device keys: the registered device.
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        expires_days: Option<i64>,
    },
    /// List every key (ids, roles, scopes, expiry, revocation; never a secret).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { key_id: String },
}

/// `facepay keys …` over the configured store and pepper, audited as `cli`.
pub async fn run(what: KeysWhat, config: &Config) -> anyhow::Result<()> {
    let store = open_store(&config.database_url).await?.ledger;
    let auth = Auth::new(store.clone(), config.key_pepper.clone());
    let actor = Actor::cli();
    match what {
        KeysWhat::Create { role, merchant, store: store_id, device, label, expires_days } => {
            let spec = NewKey {
                role: Role::parse(&role)?,
                merchant_id: merchant.map(MerchantId::parse).transpose()?,
                store_id: store_id.map(StoreId::parse).transpose()?,
                device_id: device.map(DeviceId::parse).transpose()?,
                label,
                expires_in_days: expires_days,
            };
            let (key, token) = auth.create_key(spec, &actor).await?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "key": key, "token": token }))?);
            eprintln!("the token is shown once: keep it now");
        }
        KeysWhat::List { json } => {
            let mut keys = Vec::new();
            loop {
                let page = store.key_list(keys.last().map(KeyPosition::of).as_ref(), PAGE_LIMIT_MAX).await?;
                let last_page = page.len() < PAGE_LIMIT_MAX as usize;
                keys.extend(page);
                if last_page {
                    break;
                }
            }
            match json {
                true => println!("{}", serde_json::to_string_pretty(&keys)?),
                false => keys.iter().for_each(|k| {
                    let scope = [
                        k.merchant_id.as_ref().map(|m| m.to_string()),
                        k.store_id.as_ref().map(|s| s.to_string()),
                        k.device_id.as_ref().map(|d| d.to_string()),
                    ];
                    let scope: Vec<String> = scope.into_iter().flatten().collect();
                    let state = if k.revoked_at.is_some() { "revoked" } else { "live" };
                    println!(
                        "{} {:8} {:24} expires {} {state} {}",
                        k.key_id,
                        k.role,
                        scope.join("/"),
                        k.expires_at,
                        k.label
                    );
                }),
            }
        }
        KeysWhat::Revoke { key_id } => {
            let key_id = KeyId::parse(key_id)?;
            anyhow::ensure!(auth.revoke(&key_id, &actor).await?, "no live key {key_id}");
            println!("revoked {key_id}");
        }
    }
    Ok(())
}
