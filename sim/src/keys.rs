//! Keys for a simulated fleet (the demo, `facepay simulate`, the benchmarks and tests): one
//! device key per device, stored like any other, and the signatures their events carry.

use std::collections::HashMap;

use chrono::Utc;
use facepay_domain::auth::{device_secret, platform_secret, EventSignature, KeyId, Pepper, Role, SecretBytes};
use facepay_domain::{DeviceId, DeviceRef};
use facepay_ledger::credentials::Credential;
use facepay_ledger::LedgerStore;
use serde::Deserialize;
use uuid::Uuid;

use facepay_api::auth::{mint, Actor, NewKey};

/// Signs a fleet's events as its devices (and the platform) would.
#[derive(Debug, Clone)]
pub struct FleetSigner {
    platform: SecretBytes,
    devices: HashMap<DeviceId, (KeyId, SecretBytes)>,
    /// The device keys' rows, for [`FleetSigner::install`].
    keys: Vec<Credential>,
}

/// The envelope fields a signature needs; everything else is skipped.
#[derive(Deserialize)]
struct Head {
    event_id: Option<Uuid>,
    device_id: Option<String>,
}

impl FleetSigner {
    /// Creates (and stores) one device key per device of `devices`.
    pub async fn enrol(store: &dyn LedgerStore, pepper: &Pepper, devices: &[DeviceRef]) -> anyhow::Result<Self> {
        let signer = Self::new(pepper, devices)?;
        signer.install(store).await?;
        Ok(signer)
    }

    /// One new device key per device of `devices`, not stored yet.
    pub fn new(pepper: &Pepper, devices: &[DeviceRef]) -> anyhow::Result<Self> {
        let mut signer = Self { platform: platform_secret(pepper), devices: HashMap::new(), keys: Vec::new() };
        for d in devices {
            let spec = NewKey {
                role: Role::Device,
                merchant_id: Some(d.merchant_id.clone()),
                store_id: Some(d.store_id.clone()),
                device_id: Some(d.device_id.clone()),
                label: format!("simulated {}", d.device_id),
                expires_in_days: None,
            };
            let (key, _) = mint(pepper, spec, &Self::actor())?;
            signer.devices.insert(d.device_id.clone(), (key.key_id.clone(), device_secret(pepper, &key.key_id)));
            signer.keys.push(key);
        }
        Ok(signer)
    }

    /// Each device's key id: with the pepper, all a signer of this fleet needs elsewhere
    /// ([`FleetSigner::from_key_ids`], e.g. a load generator in a process of its own).
    pub fn key_ids(&self) -> Vec<(DeviceId, KeyId)> {
        self.devices.iter().map(|(d, (k, _))| (d.clone(), k.clone())).collect()
    }

    /// A signer for devices whose keys were made under `pepper` with these ids (their
    /// secrets derive from both); it has no key rows to install.
    pub fn from_key_ids(pepper: &Pepper, keys: Vec<(DeviceId, KeyId)>) -> Self {
        let devices = keys.into_iter().map(|(d, k)| (d, (k.clone(), device_secret(pepper, &k)))).collect();
        Self { platform: platform_secret(pepper), devices, keys: Vec::new() }
    }

    fn actor() -> Actor {
        Actor { principal: "fleet".into(), role: "operator".into() }
    }

    /// Stores the fleet's device keys in `store`.
    pub async fn install(&self, store: &dyn LedgerStore) -> anyhow::Result<()> {
        for key in &self.keys {
            let detail = serde_json::json!({ "device_id": key.device_id });
            store.key_insert(key, &Self::actor().entry("key_created", key.key_id.as_str(), detail)).await?;
        }
        Ok(())
    }

    /// The `facepay-signature` for `bytes`, signed now: by its device's key when it names a
    /// device of this fleet, by the platform when it names none; `None` when it cannot be
    /// read at all (it will be refused anyway).
    pub fn sign(&self, bytes: &[u8]) -> Option<String> {
        self.sign_at(bytes, Utc::now().timestamp())
    }

    /// As [`Self::sign`], signed at `signed_at` (unix seconds): a simulated moment.
    pub fn sign_at(&self, bytes: &[u8], signed_at: i64) -> Option<String> {
        let head: Head = serde_json::from_slice(bytes).ok()?;
        let event_id = head.event_id?;
        let (key_id, secret) = match head.device_id {
            Some(d) => {
                let (k, s) = DeviceId::parse(d).ok().and_then(|d| self.devices.get(&d))?;
                (k.clone(), s)
            }
            None => (KeyId::platform(), &self.platform),
        };
        Some(EventSignature::sign(key_id, secret, signed_at, event_id, bytes).header())
    }
}

/// 32 random bytes: a pepper for a fleet whose keys live no longer than its run (the demo's
/// default, tests).
pub fn random_pepper() -> Pepper {
    use rand::RngCore;
    let mut bytes = vec![0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    Pepper::new(bytes)
}
