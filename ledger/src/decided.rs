//! Which events a commit answered, told to the processes that hold devices' waiting requests
//! (`Prefer: wait` on `POST /v1/events`): the process that took a device's event in is not
//! always the one whose ledger stage decides it.
//!
//! On PostgreSQL a transport's commit (one that leaves outcomes in the outbox) raises
//! `NOTIFY` on [`DECIDED_CHANNEL`] in its own transaction, so the notification is sent if and
//! only if the answers are committed, at the moment they are. The payload names the answered
//! events only (32 hex digits each, comma-separated, at most
//! [`DECIDED_NOTIFY_BYTES_MAX`] bytes per notification); a listener that waits for one of them
//! reads its stored answer ([`crate::store::LedgerWriter::answered`]). Nothing is polled. A
//! notification lost to a dropped connection costs only the wait: the device is answered 202
//! and queries its order, as after any timeout.

use facepay_domain::limits::DECIDED_NOTIFY_BYTES_MAX;
use uuid::Uuid;

use crate::store_error::StoreError;

/// The PostgreSQL notification channel of answered events.
pub const DECIDED_CHANNEL: &str = "facepay_decided";

/// The payloads naming `event_ids`, each within [`DECIDED_NOTIFY_BYTES_MAX`] bytes.
pub fn payloads(event_ids: impl IntoIterator<Item = Uuid>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in event_ids {
        let id = id.simple().to_string();
        match out.last_mut() {
            Some(last) if last.len() + 1 + id.len() <= DECIDED_NOTIFY_BYTES_MAX => {
                last.push(',');
                last.push_str(&id);
            }
            _ => out.push(id),
        }
    }
    out
}

/// The event ids a payload names (anything that is not one is skipped).
pub fn parse(payload: &str) -> Vec<Uuid> {
    payload.split(',').filter_map(|id| Uuid::try_parse(id).ok()).collect()
}

/// Listens on [`DECIDED_CHANNEL`] on a connection of its own.
pub struct DecidedListener(sqlx::postgres::PgListener);

impl DecidedListener {
    pub(crate) async fn connect(pool: &sqlx::PgPool) -> Result<Self, StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(DECIDED_CHANNEL).await?;
        Ok(Self(listener))
    }

    /// The events the next notification names. After a lost connection this reconnects and
    /// listens again (what was notified meanwhile is not heard).
    pub async fn recv(&mut self) -> Result<Vec<Uuid>, StoreError> {
        Ok(parse(self.0.recv().await?.payload()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_commit_is_named_in_several_payloads_each_within_the_limit_and_read_back_whole() {
        let ids: Vec<Uuid> = (0..1_000).map(|_| Uuid::new_v4()).collect();
        let payloads = payloads(ids.clone());
        assert!(payloads.len() >= 1_000 * 33 / DECIDED_NOTIFY_BYTES_MAX);
        assert!(payloads.iter().all(|p| p.len() <= DECIDED_NOTIFY_BYTES_MAX));
        let back: Vec<Uuid> = payloads.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, ids);
    }

    #[test]
    fn no_answers_no_payload() {
        assert!(payloads([]).is_empty());
        assert!(parse("").is_empty());
    }
}
