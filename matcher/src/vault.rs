//! Templates at rest: every payer's template is sealed with ChaCha20-Poly1305 under a data
//! key of its own, and that data key is sealed (wrapped) under the master key from
//! configuration. Deleting a face destroys the payer's wrapped key (crypto-shredding): the
//! ciphertexts that an append-only log keeps are then noise to everyone, the operator
//! included, while the rest of the log stays intact.
//!
//! Both seals bind the payer and the key id as associated data, so a ciphertext cannot be
//! moved to another payer or paired with another key. Nothing here prints key or template
//! bytes: [`MasterKey`] and [`Sealed`] have redacting `Debug`, errors name only the step.

use std::fmt;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use facepay_domain::limits::EMBEDDING_DIM;
use facepay_domain::{Embedding, PayerId};
use uuid::Uuid;
use zeroize::Zeroizing;

/// Bytes of a ChaCha20-Poly1305 nonce.
const NONCE_BYTES: usize = 12;

/// Sealing or opening failed. Names the step only, never key or template bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The master key in the configuration is not 64 hex digits.
    #[error("the face master key must be 64 hex digits (32 bytes)")]
    BadMasterKey,
    /// A wrapped key or template did not authenticate: wrong master key, tampered or
    /// shredded data.
    #[error("sealed {0} does not open: wrong key, tampered or shredded")]
    Unauthentic(&'static str),
    /// A template opened but is not a valid embedding (dimension, finite, non-zero).
    #[error("opened template is not a valid embedding")]
    BadTemplate,
}

/// The key-encryption key, from configuration. Zeroed on drop; never printed.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// From 64 hex digits (the `FACEPAY_FACE_MASTER_KEY` setting).
    pub fn from_hex(hex: &str) -> Result<Self, VaultError> {
        let hex = hex.trim().as_bytes();
        if hex.len() != 64 {
            return Err(VaultError::BadMasterKey);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).ok_or(VaultError::BadMasterKey);
            key[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Self(key))
    }

    /// A fresh random key (for tests and for writing a new key file), with its hex form.
    pub fn generate() -> (Self, Zeroizing<String>) {
        let key = ChaCha20Poly1305::generate_key(&mut OsRng);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        (Self(Zeroizing::new(key.into())), Zeroizing::new(hex))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0[..]))
    }
}

/// A sealed template and its wrapped data key, as the store keeps them. The wrapped key is
/// what deletion destroys; the rest may stay in an append-only log.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Names this data key; bound into both seals.
    pub key_id: Uuid,
    /// Nonce ‖ ChaCha20-Poly1305(master key, data key).
    pub wrapped_key: Vec<u8>,
    /// Nonce ‖ ChaCha20-Poly1305(data key, template as 512 little-endian f32).
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    /// Key id and sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("wrapped_key_bytes", &self.wrapped_key.len())
            .field("ciphertext_bytes", &self.ciphertext.len())
            .finish()
    }
}

/// Seals and opens templates under one master key.
#[derive(Debug)]
pub struct Vault {
    master: MasterKey,
}

impl Vault {
    pub fn new(master: MasterKey) -> Self {
        Self { master }
    }

    /// Seals `payer`'s template under a fresh data key, wrapped by the master key.
    pub fn seal(&self, payer: &PayerId, embedding: &Embedding) -> Sealed {
        let key_id = Uuid::new_v4();
        let aad = associated(payer, key_id);
        let data_key: Zeroizing<[u8; 32]> = Zeroizing::new(ChaCha20Poly1305::generate_key(&mut OsRng).into());
        let wrapped_key = seal_with(&self.master.cipher(), &data_key[..], &aad);
        let plain = Zeroizing::new(embedding.as_slice().iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        let ciphertext = seal_with(&ChaCha20Poly1305::new(Key::from_slice(&data_key[..])), &plain, &aad);
        Sealed { key_id, wrapped_key, ciphertext }
    }

    /// Opens `payer`'s sealed template: unwraps the data key, decrypts, validates.
    pub fn open(&self, payer: &PayerId, sealed: &Sealed) -> Result<Embedding, VaultError> {
        let aad = associated(payer, sealed.key_id);
        let data_key = Zeroizing::new(open_with(&self.master.cipher(), &sealed.wrapped_key, &aad, "data key")?);
        if data_key.len() != 32 {
            return Err(VaultError::Unauthentic("data key"));
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&data_key));
        let plain = Zeroizing::new(open_with(&cipher, &sealed.ciphertext, &aad, "template")?);
        if plain.len() != EMBEDDING_DIM * 4 {
            return Err(VaultError::BadTemplate);
        }
        let values: Vec<f32> = plain.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Embedding::try_from(values).map_err(|_| VaultError::BadTemplate)
    }
}

/// Associated data of both seals: the payer and the key id.
fn associated(payer: &PayerId, key_id: Uuid) -> Vec<u8> {
    let mut aad = key_id.as_bytes().to_vec();
    aad.extend_from_slice(payer.as_str().as_bytes());
    aad
}

/// Nonce ‖ ciphertext of `plain` under `cipher`, a random nonce each time.
fn seal_with(cipher: &ChaCha20Poly1305, plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ct = cipher.encrypt(&nonce, Payload { msg: plain, aad }).expect("ChaCha20-Poly1305 seals any input this size");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn open_with(cipher: &ChaCha20Poly1305, sealed: &[u8], aad: &[u8], what: &'static str) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < NONCE_BYTES {
        return Err(VaultError::Unauthentic(what));
    }
    let (nonce, ct) = sealed.split_at(NONCE_BYTES);
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad }).map_err(|_| VaultError::Unauthentic(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SyntheticFaces;

    fn payer(s: &str) -> PayerId {
        PayerId::parse(s).unwrap()
    }

    #[test]
    fn given_a_sealed_template_then_only_its_payer_and_master_key_open_it() {
        let (key, hex) = MasterKey::generate();
        let vault = Vault::new(key);
        let face = SyntheticFaces::new(1, 1).enrolment(0);
        let sealed = vault.seal(&payer("alice"), &face);
        assert_eq!(vault.open(&payer("alice"), &sealed), Ok(face.clone()));
        assert_eq!(vault.open(&payer("bob"), &sealed), Err(VaultError::Unauthentic("data key")));
        let other = Vault::new(MasterKey::generate().0);
        assert_eq!(other.open(&payer("alice"), &sealed), Err(VaultError::Unauthentic("data key")));
        let same = Vault::new(MasterKey::from_hex(&hex).unwrap());
        assert_eq!(same.open(&payer("alice"), &sealed), Ok(face.clone()));
        let mut tampered = sealed.clone();
        let last = tampered.ciphertext.len() - 1;
        tampered.ciphertext[last] ^= 1;
        assert_eq!(vault.open(&payer("alice"), &tampered), Err(VaultError::Unauthentic("template")));
        // Another seal of the same template: new key, new nonces, nothing repeats.
        let again = vault.seal(&payer("alice"), &face);
        assert_ne!(again.ciphertext, sealed.ciphertext);
        assert_ne!(again.key_id, sealed.key_id);
    }

    #[test]
    fn given_a_shredded_key_then_the_template_never_opens() {
        let vault = Vault::new(MasterKey::generate().0);
        let sealed = vault.seal(&payer("alice"), &SyntheticFaces::new(1, 1).enrolment(0));
        let shredded = Sealed { wrapped_key: Vec::new(), ..sealed };
        assert_eq!(vault.open(&payer("alice"), &shredded), Err(VaultError::Unauthentic("data key")));
    }

    #[test]
    fn given_keys_and_seals_when_printed_then_no_bytes_show() {
        let (key, hex) = MasterKey::generate();
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
        let vault = Vault::new(key);
        assert!(!format!("{vault:?}").contains(&hex[..8]));
        let sealed = vault.seal(&payer("alice"), &SyntheticFaces::new(1, 1).enrolment(0));
        let shown = format!("{sealed:?}");
        assert!(shown.contains("ciphertext_bytes: 2076"), "{shown}");
        assert!(!shown.contains('['), "no byte arrays: {shown}");
        assert_eq!(MasterKey::from_hex("00").unwrap_err(), VaultError::BadMasterKey);
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
