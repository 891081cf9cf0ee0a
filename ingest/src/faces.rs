//! The gallery at rest: enrolments and deletions go to the store sealed by the matcher's
//! [`Vault`]; a matcher process loads its shard of the gallery at start-up. The sealed
//! templates are in the ledger's append-only log; each payer's wrapped data key is in the
//! face key file ([`FaceKeyFile`]), where deleting it is real.
//!
//! Sharding: payer `p` belongs to shard `shard_hash(p) % count` (a stable FNV-1a hash of the
//! payer id), so N matcher processes split a large gallery between them, each loading and
//! searching only its own payers; every shard answers each capture with a partial, and the
//! gather ([`crate::gather`]) decides on their union.
//!
//! The matcher's recent captures are kept here too ([`FaceStore::remember_captures`]): what
//! each face code resolved to, so that a matcher restarted between a capture and its
//! payment still pays from the payer the capture identified.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use facepay_domain::limits::{GALLERY_FEED_BATCH_MAX, MATCH_CAPTURE_MEMO_WINDOW_MS, MATCH_MEMORY_CAPTURES_MAX};
use facepay_domain::{Embedding, FaceCode, MerchantId, PayerId, PhoneLast4};
use facepay_ledger::face_keys::{FaceKeyFile, KeyFileError, KeyRecord, Trace};
use facepay_ledger::store::{CaptureMemo, StoredFace};
use facepay_ledger::{Identity, LedgerStore, StoreError};
use facepay_matcher::vault::{Sealed, Vault, VaultError};
use facepay_matcher::Gallery;

/// Loading or storing a face failed. Never carries template values.
#[derive(Debug, thiserror::Error)]
pub enum FaceStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file's files could not be read for an erasure audit.
    #[error("scanning the face key file: {0}")]
    Scan(String),
    /// The face key file failed, or a deletion's erasure is not final yet (retry it).
    #[error(transparent)]
    Keys(#[from] KeyFileError),
    /// A stored template did not open (wrong master key or tampered data); names the payer.
    #[error("face of payer {payer}: {source}")]
    Vault {
        payer: String,
        #[source]
        source: VaultError,
    },
}

/// A payer whose face changed, with their live face now (embedding and phone digits), or
/// `None` when it was deleted.
pub type FaceChange = (PayerId, Option<(Embedding, Option<PhoneLast4>)>);

/// What the gallery feed holds past a matcher's position.
pub enum FeedRead {
    /// The changed payers of this shard, each with their live face (`None`: deleted), and
    /// the position they bring the reader to.
    Changes { to: i64, faces: Vec<FaceChange> },
    /// Changes past the position were pruned (the reader was away longer than the feed
    /// keeps them): reload the whole gallery.
    Gap,
}

/// Which part of the gallery this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's shard, `0..count`.
    pub index: u32,
    /// How many matcher processes split the gallery.
    pub count: u32,
}

impl Shard {
    /// The whole gallery in one process.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether `payer`'s face belongs to this shard.
    pub fn owns(&self, payer: &PayerId) -> bool {
        shard_hash(payer) % self.count.max(1) == self.index
    }
}

fn memo_window() -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(MATCH_CAPTURE_MEMO_WINDOW_MS).unwrap_or(i64::MAX))
}

/// The stable hash that places a payer in a shard: 32-bit FNV-1a of the payer id.
pub fn shard_hash(payer: &PayerId) -> u32 {
    payer.as_str().bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// What [`FaceStore::verify_erasure`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErasureReport {
    pub payer_id: String,
    /// Everything below says the face is gone.
    pub erased: bool,
    /// The ledger still names a live face for the payer.
    pub live_face: bool,
    /// Keys of the payer the key file still holds.
    pub keys_kept: u64,
    /// Sealed templates of the payer in the append-only log (they stay; sealed).
    pub templates_logged: usize,
    /// Of those, how many still open.
    pub templates_opening: usize,
    /// The files searched.
    pub key_files: Vec<String>,
    /// Bytes of the payer's key records found in them.
    pub traces: Vec<Trace>,
}

/// Legacy keys moved from the ledger's database to the key file per round.
const LEGACY_KEYS_BATCH: u32 = 1_000;

/// The store, the key file and the vault of one matcher process.
#[derive(Clone)]
pub struct FaceStore {
    store: Arc<dyn LedgerStore>,
    keys: FaceKeyFile,
    vault: Arc<Vault>,
    shard: Shard,
}

impl std::fmt::Debug for FaceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceStore").field("shard", &self.shard).field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl FaceStore {
    pub fn new(store: Arc<dyn LedgerStore>, keys: FaceKeyFile, vault: Vault, shard: Shard) -> Self {
        Self { store, keys, vault: Arc::new(vault), shard }
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The face key file.
    pub fn keys(&self) -> &FaceKeyFile {
        &self.keys
    }

    /// Seals and stores `payer`'s template under a fresh data key: the key is kept first, the
    /// template and its gallery change next, and then the key of the template the ledger
    /// replaced is shredded. Only a key the ledger replaced goes, so two enrolments of one
    /// payer at once (two matchers) never shred each other's live key; a crash in between
    /// leaves an extra key (shredded with the payer's face), never a face without one.
    pub async fn enrol(
        &self,
        payer: &PayerId,
        embedding: &Embedding,
        phone_last4: Option<PhoneLast4>,
        at: DateTime<Utc>,
    ) -> Result<(), FaceStoreError> {
        let Sealed { key_id, wrapped_key, ciphertext } = self.vault.seal(payer, embedding);
        let shard_hash = shard_hash(payer);
        let key = KeyRecord { payer_id: payer.clone(), key_id, shard_hash, phone_last4, wrapped_key };
        self.keys.put(&key, at).await?;
        let face = StoredFace { payer_id: payer.clone(), shard_hash, key_id, ciphertext };
        if let Some(replaced) = self.store.face_enrol(&face, at).await? {
            self.keys.shred_key(replaced).await?;
        }
        Ok(())
    }

    /// Keeps what `captures` resolved to, identified `at`, and forgets those older than
    /// [`MATCH_CAPTURE_MEMO_WINDOW_MS`]: a restarted matcher restores them with
    /// [`Self::recent_captures`].
    pub async fn remember_captures(
        &self,
        captures: Vec<(FaceCode, Identity)>,
        at: DateTime<Utc>,
    ) -> Result<(), FaceStoreError> {
        let memos: Vec<CaptureMemo> = captures
            .into_iter()
            .map(|(face_code, identity)| {
                let (payer_id, rule) = match identity {
                    Identity::Resolved { payer_id, rule } => (Some(payer_id), rule),
                    Identity::Unresolved { rule } => (None, rule),
                };
                CaptureMemo { face_code, payer_id, rule, captured_at: at }
            })
            .collect();
        Ok(self.store.captures_remember(&memos, at - memo_window()).await?)
    }

    /// The captures identified within [`MATCH_CAPTURE_MEMO_WINDOW_MS`] of `now`, oldest first
    /// (at most [`MATCH_MEMORY_CAPTURES_MAX`], the newest).
    pub async fn recent_captures(&self, now: DateTime<Utc>) -> Result<Vec<(FaceCode, Identity)>, FaceStoreError> {
        let limit = u32::try_from(MATCH_MEMORY_CAPTURES_MAX).unwrap_or(u32::MAX);
        let memos = self.store.captures_recent(now - memo_window(), limit).await?;
        Ok(memos
            .into_iter()
            .map(|m| {
                let identity = match m.payer_id {
                    Some(payer_id) => Identity::Resolved { payer_id, rule: m.rule },
                    None => Identity::Unresolved { rule: m.rule },
                };
                (m.face_code, identity)
            })
            .collect())
    }

    /// Destroys `payer`'s data keys for good (see [`FaceKeyFile`]), then forgets their live
    /// face and tells every matcher: every template of theirs in the log becomes noise.
    /// Whether they had a face. Repeating it is harmless.
    pub async fn delete(&self, payer: &PayerId) -> Result<bool, FaceStoreError> {
        let shredded = self.keys.shred(payer).await?;
        let live = self.store.face_delete(payer).await?;
        Ok(live || shredded > 0)
    }

    /// Moves wrapped keys the ledger's database still holds from before migration 0020 into
    /// the key file, then deletes them there. How many were moved.
    pub async fn move_legacy_keys(&self) -> Result<usize, FaceStoreError> {
        let mut moved = 0;
        loop {
            let legacy = self.store.face_keys_legacy(LEGACY_KEYS_BATCH).await?;
            if legacy.is_empty() {
                return Ok(moved);
            }
            let now = Utc::now();
            for key in &legacy {
                self.keys.put(key, now).await?;
            }
            let ids: Vec<uuid::Uuid> = legacy.iter().map(|k| k.key_id).collect();
            self.store.face_keys_legacy_forget(&ids).await?;
            moved += legacy.len();
        }
    }

    /// This shard's gallery as [`Self::load`] reads it, and the gallery feed's position it is
    /// current to: read first, so a change that lands while the gallery loads is applied
    /// again when the feed is followed (applying a change twice is harmless).
    pub async fn load_following(&self) -> Result<(Gallery, i64), FaceStoreError> {
        self.move_legacy_keys().await?;
        let head = self.store.face_feed_head().await?;
        Ok((self.load().await?, head))
    }

    /// The changes to this shard's faces after `after` in the gallery feed: each changed
    /// payer's live face opened (`None`: deleted), up to [`GALLERY_FEED_BATCH_MAX`] changes.
    pub async fn changes_after(&self, after: i64) -> Result<FeedRead, FaceStoreError> {
        let changes = self.store.face_feed_after(after, GALLERY_FEED_BATCH_MAX).await?;
        let Some(&(to, _)) = changes.last() else { return Ok(FeedRead::Changes { to: after, faces: Vec::new() }) };
        if changes[0].0 != after + 1 {
            return Ok(FeedRead::Gap);
        }
        let mut payers: Vec<PayerId> = changes.into_iter().map(|(_, p)| p).filter(|p| self.shard.owns(p)).collect();
        payers.sort();
        payers.dedup();
        let mut faces = Vec::with_capacity(payers.len());
        for payer in payers {
            let face = match self.store.face_of(&payer).await? {
                Some(face) => match self.keys.get(face.key_id).await? {
                    Some(key) => Some(self.open(face, key)?),
                    None => None, // shredded: its deletion is on its way
                },
                None => None,
            };
            faces.push((payer, face));
        }
        Ok(FeedRead::Changes { to, faces })
    }

    /// A stored face opened with its key: its embedding and phone digits.
    fn open(&self, face: StoredFace, key: KeyRecord) -> Result<(Embedding, Option<PhoneLast4>), FaceStoreError> {
        let sealed = Sealed { key_id: face.key_id, wrapped_key: key.wrapped_key, ciphertext: face.ciphertext };
        let embedding = self
            .vault
            .open(&face.payer_id, &sealed)
            .map_err(|source| FaceStoreError::Vault { payer: face.payer_id.to_string(), source })?;
        Ok((embedding, key.phone_last4))
    }

    /// This shard's gallery, opened and enrolled into a fresh [`Gallery`], with the open
    /// memberships of its payers as the ledger keeps them (its member cards), so that a
    /// restarted matcher still searches a merchant's members first.
    pub async fn load(&self) -> Result<Gallery, FaceStoreError> {
        let mut gallery = Gallery::new();
        self.restore_members(&mut gallery).await?;
        let (index, count) = (self.shard.index, self.shard.count.max(1));
        let mut keys: std::collections::HashMap<uuid::Uuid, KeyRecord> =
            self.keys.shard(index, count).await?.into_iter().map(|k| (k.key_id, k)).collect();
        for face in self.store.face_gallery(index, count).await? {
            // A live face without its key: shredded, its deletion on its way.
            let Some(key) = keys.remove(&face.key_id) else { continue };
            let payer = face.payer_id.clone();
            let (embedding, phone_last4) = self.open(face, key)?;
            gallery.enroll(payer, &embedding, phone_last4);
        }
        Ok(gallery)
    }

    /// Marks this shard's payers with an open member card as members of its merchant. A card
    /// opened in an event the ledger has not decided yet is marked when the matcher reads that
    /// event again (it resumes from its last committed offset).
    async fn restore_members(&self, gallery: &mut Gallery) -> Result<(), FaceStoreError> {
        gallery.set_members(self.members().await?);
        Ok(())
    }

    /// The open member cards of this shard's payers, as the ledger keeps them: what the
    /// gallery's member lists must say (the matcher refreshes them from here every
    /// `MATCH_MEMBERS_REFRESH_MS`, so they follow the ledger's decisions, and reach every
    /// shard whichever process's gather resolved the card's capture).
    pub async fn members(&self) -> Result<Vec<(MerchantId, PayerId)>, FaceStoreError> {
        let mut open = self.store.open_cards().await?;
        open.retain(|(_, payer)| self.shard.owns(payer));
        Ok(open)
    }

    /// Whether `payer`'s face is gone for good: no live face, no key in the key file, none of
    /// their logged templates opens, and no trace of any of their keys' records (payer id,
    /// key ids) in the key file's files.
    pub async fn verify_erasure(&self, payer: &PayerId) -> Result<ErasureReport, FaceStoreError> {
        let live_face = self.store.face_of(payer).await?.is_some();
        let keys_kept = self.keys.count_of(payer).await?;
        let logged = self.store.face_ciphertexts(payer).await?;
        let mut needles = vec![("payer id".to_string(), payer.as_str().as_bytes().to_vec())];
        needles.extend(logged.iter().map(|(key_id, _)| (format!("key id {key_id}"), key_id.to_string().into_bytes())));
        let templates = self.open_logged(payer, logged).await?;
        let traces = self.keys.traces(&needles).map_err(|e| FaceStoreError::Scan(e.to_string()))?;
        let templates_opening = templates.iter().filter(|t| t.is_ok()).count();
        Ok(ErasureReport {
            payer_id: payer.to_string(),
            erased: !live_face && keys_kept == 0 && templates_opening == 0 && traces.is_empty(),
            live_face,
            keys_kept,
            templates_logged: templates.len(),
            templates_opening,
            key_files: self.keys.files().iter().map(|f| f.display().to_string()).collect(),
            traces,
        })
    }

    /// Opens every template the log still holds for `payer`; after a deletion none opens.
    pub async fn open_all(&self, payer: &PayerId) -> Result<Vec<Result<Embedding, VaultError>>, FaceStoreError> {
        let logged = self.store.face_ciphertexts(payer).await?;
        self.open_logged(payer, logged).await
    }

    /// Opens each of `payer`'s `logged` templates with their live key, if they have one.
    async fn open_logged(
        &self,
        payer: &PayerId,
        logged: Vec<(uuid::Uuid, Vec<u8>)>,
    ) -> Result<Vec<Result<Embedding, VaultError>>, FaceStoreError> {
        let live = match self.store.face_of(payer).await? {
            Some(face) => self.keys.get(face.key_id).await?,
            None => None,
        };
        let wrapped = live.map(|k| k.wrapped_key).unwrap_or_default();
        Ok(logged
            .into_iter()
            .map(|(key_id, ciphertext)| {
                self.vault.open(payer, &Sealed { key_id, wrapped_key: wrapped.clone(), ciphertext })
            })
            .collect())
    }
}
