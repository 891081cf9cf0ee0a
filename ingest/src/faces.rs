//! The gallery at rest: enrolments and deletions go to the store sealed by the matcher's
//! [`Vault`]; a matcher process loads its shard of the gallery at start-up.
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
use facepay_ledger::store::{CaptureMemo, StoredFace};
use facepay_ledger::{Identity, LedgerStore, StoreError};
use facepay_matcher::vault::{Sealed, Vault, VaultError};
use facepay_matcher::Gallery;

/// Loading or storing a face failed. Never carries template values.
#[derive(Debug, thiserror::Error)]
pub enum FaceStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// The store and the vault of one matcher process.
#[derive(Clone)]
pub struct FaceStore {
    store: Arc<dyn LedgerStore>,
    vault: Arc<Vault>,
    shard: Shard,
}

impl std::fmt::Debug for FaceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceStore").field("shard", &self.shard).finish_non_exhaustive()
    }
}

impl FaceStore {
    pub fn new(store: Arc<dyn LedgerStore>, vault: Vault, shard: Shard) -> Self {
        Self { store, vault: Arc::new(vault), shard }
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Seals and stores `payer`'s template (a fresh data key; the previous one, if any, is
    /// replaced and so shredded). The embedding was validated and normalised on parsing.
    pub async fn enrol(
        &self,
        payer: &PayerId,
        embedding: &Embedding,
        phone_last4: Option<PhoneLast4>,
        at: DateTime<Utc>,
    ) -> Result<(), FaceStoreError> {
        let Sealed { key_id, wrapped_key, ciphertext } = self.vault.seal(payer, embedding);
        let face = StoredFace {
            payer_id: payer.clone(),
            phone_last4,
            shard_hash: shard_hash(payer),
            key_id,
            wrapped_key,
            ciphertext,
        };
        Ok(self.store.face_enrol(&face, at).await?)
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

    /// Destroys `payer`'s data key: every template of theirs in the log becomes unreadable.
    pub async fn delete(&self, payer: &PayerId) -> Result<bool, FaceStoreError> {
        Ok(self.store.face_delete(payer).await?)
    }

    /// This shard's gallery as [`Self::load`] reads it, and the gallery feed's position it is
    /// current to: read first, so a change that lands while the gallery loads is applied
    /// again when the feed is followed (applying a change twice is harmless).
    pub async fn load_following(&self) -> Result<(Gallery, i64), FaceStoreError> {
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
                Some(face) => Some(self.open(face)?),
                None => None,
            };
            faces.push((payer, face));
        }
        Ok(FeedRead::Changes { to, faces })
    }

    /// A stored face opened: its embedding and phone digits.
    fn open(&self, face: StoredFace) -> Result<(Embedding, Option<PhoneLast4>), FaceStoreError> {
        let sealed = Sealed { key_id: face.key_id, wrapped_key: face.wrapped_key, ciphertext: face.ciphertext };
        let embedding = self
            .vault
            .open(&face.payer_id, &sealed)
            .map_err(|source| FaceStoreError::Vault { payer: face.payer_id.to_string(), source })?;
        Ok((embedding, face.phone_last4))
    }

    /// This shard's gallery, opened and enrolled into a fresh [`Gallery`], with the open
    /// memberships of its payers as the ledger keeps them (its member cards), so that a
    /// restarted matcher still searches a merchant's members first.
    pub async fn load(&self) -> Result<Gallery, FaceStoreError> {
        let mut gallery = Gallery::new();
        self.restore_members(&mut gallery).await?;
        for face in self.store.face_gallery(self.shard.index, self.shard.count.max(1)).await? {
            let payer = face.payer_id.clone();
            let (embedding, phone_last4) = self.open(face)?;
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
        let mut open = Vec::new();
        for merchant in self.store.registry().await?.merchants.keys() {
            for card in self.store.members(merchant).await? {
                if card.closed_at.is_none() && self.shard.owns(&card.payer_id) {
                    open.push((merchant.clone(), card.payer_id));
                }
            }
        }
        Ok(open)
    }

    /// Opens every template the log still holds for `payer`; after a deletion none opens.
    pub async fn open_all(&self, payer: &PayerId) -> Result<Vec<Result<Embedding, VaultError>>, FaceStoreError> {
        let live = self.store.face_gallery(self.shard.index, self.shard.count.max(1)).await?;
        let wrapped = live.into_iter().find(|f| &f.payer_id == payer).map(|f| f.wrapped_key).unwrap_or_default();
        let logged = self.store.face_ciphertexts(payer).await?;
        Ok(logged
            .into_iter()
            .map(|(key_id, ciphertext)| {
                self.vault.open(payer, &Sealed { key_id, wrapped_key: wrapped.clone(), ciphertext })
            })
            .collect())
    }
}
