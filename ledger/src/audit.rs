//! The audit chain: every event carries a SHA-256 hash over its content and the hash of the
//! previous event of its stream, so an edit of any stored event (by someone who got past the
//! append-only triggers) breaks the chain from that event on. `facepay verify` walks the log
//! and reports the first break.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::{NewEvent, StoredEvent};
use crate::timestamp::ts;

/// The `prev_hash` of a stream's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of `e`, chained to `prev`: over the previous hash, the ids, the stream, the type,
/// the event time and the event's canonical JSON (field order fixed by its type, so a
/// database that reorders JSON keys, as PostgreSQL's JSONB does, reads back the same hash).
pub fn chain_hash(prev: &str, e: &NewEvent) -> String {
    let payload = serde_json::to_string(&e.event).expect("an event always serialises");
    let mut h = Sha256::new();
    for part in [
        prev,
        &e.event_id.to_string(),
        &e.cause_event_id.to_string(),
        &e.event.stream(),
        e.event.kind(),
        &ts(&e.occurred_at),
        &payload,
    ] {
        h.update(part.as_bytes());
        h.update([0x1f]); // unit separator: no two field splits hash alike
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Links `events` to the chains they extend: `last` holds each stream's latest hash (absent:
/// a new stream) and moves on with every event. Returns (prev_hash, hash) per event.
pub fn link(events: &[NewEvent], last: &mut HashMap<String, String>) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let slot = last.entry(e.event.stream()).or_insert_with(|| GENESIS_HASH.to_string());
            let hash = chain_hash(slot, e);
            let prev = std::mem::replace(slot, hash.clone());
            (prev, hash)
        })
        .collect()
}

/// Where a chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub seq: i64,
    pub stream: String,
    pub event_id: uuid::Uuid,
    /// What is wrong: `hash_mismatch` (the event's content or hash was edited),
    /// `link_mismatch` (it does not follow its stream's previous event: one was removed,
    /// reordered or re-linked) or `unchained` (no hash after chained events).
    pub reason: &'static str,
}

/// Walks the log in order, page by page, remembering each stream's latest hash.
#[derive(Debug, Default)]
pub struct Verifier {
    last: HashMap<String, String>,
    pub events: u64,
    pub first_break: Option<ChainBreak>,
}

impl Verifier {
    /// Checks the next events of the log (in `seq` order). Stops checking at the first break.
    pub fn feed(&mut self, page: &[StoredEvent]) {
        for stored in page {
            if self.first_break.is_some() {
                return;
            }
            self.events += 1;
            let stream = stored.new.event.stream();
            let broken =
                |reason| ChainBreak { seq: stored.seq, stream: stream.clone(), event_id: stored.new.event_id, reason };
            let expected_prev = self.last.get(&stream).cloned();
            let (Some(prev), Some(hash)) = (&stored.prev_hash, &stored.hash) else {
                // Events written before the chain existed: allowed only before a stream's chain starts.
                if expected_prev.is_some() {
                    self.first_break = Some(broken("unchained"));
                }
                continue;
            };
            if *prev != expected_prev.unwrap_or_else(|| GENESIS_HASH.to_string()) {
                self.first_break = Some(broken("link_mismatch"));
            } else if *hash != chain_hash(prev, &stored.new) {
                self.first_break = Some(broken("hash_mismatch"));
            } else {
                self.last.insert(stream, hash.clone());
            }
        }
    }
}
