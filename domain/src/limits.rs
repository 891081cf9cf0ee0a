//! Every limit of facepay, in one place.
//!
//! A limit bounds memory, time or the blast radius of bad input. Each one is named with its
//! unit last (`_fen`, `_ms`, `_max`), and says why it has the value it has. Configuration may
//! lower a limit; nothing may remove one.

// ---- Money and policy -------------------------------------------------------------------

/// Largest single amount any event may carry: 100 000 000.00 CNY. Far above any real face
/// payment, far below `i64::MAX` fen, so sums of a day's postings cannot overflow.
pub const MONEY_MAX_FEN: i64 = 10_000_000_000;

/// The channel's single face-payment limit (1000 CNY), unless a merchant has it raised.
pub const SINGLE_PAYMENT_LIMIT_DEFAULT_FEN: i64 = 100_000;

/// Per-payer daily amount cap across all merchants (1000 CNY per Asia/Shanghai day).
pub const DAILY_AMOUNT_CAP_DEFAULT_FEN: i64 = 100_000;

/// Per-payer daily count cap (100 face payments per Asia/Shanghai day).
pub const DAILY_COUNT_CAP_DEFAULT: u32 = 100;

// ---- A payment's life after the decision -----------------------------------------------

/// An order still unpaid this long after its creation is revoked (the channel's 45 s): a
/// later attempt on it gets ORDERCLOSED. Judged on the platform's accept time of each
/// command, which is stored with its events, so replay decides alike.
pub const ORDER_REVOKE_AFTER_MS: i64 = 45_000;

/// How old an order may be and still be reversed (the channel's 7 days).
pub const REVERSAL_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// A Pay Score hold never completed nor cancelled expires this long after its creation
/// (the channel's EXPIRED state after 30 days), releasing the held money.
pub const HOLD_EXPIRY_MS: i64 = 30 * 24 * 3600 * 1000;

/// How often the sweeper looks for orders and holds past their time (the ledger's clock).
/// Revocation at 45 s is stamped with its due time whatever the sweep's delay, so this
/// bounds only how stale a projection may look, not what the ledger decides.
pub const SWEEP_INTERVAL_MS: u64 = 1_000;

/// Most orders and holds one sweep revokes or expires, in one ledger transaction: a backlog
/// (a store that was off for a month) drains in bounded batches, one per interval.
pub const SWEEP_BATCH_MAX: u32 = 256;

/// The sweeper's clock runs this far behind the platform's clock. Partitions are consumed at
/// different speeds; an attempt accepted at second 44 of an order's 45 may still be in a
/// lagging partition when the sweep runs. Within this slack such an attempt is decided
/// before the sweep revokes the order.
pub const SWEEP_EVENT_TIME_LAG_MS: i64 = 15_000;

/// The lease that makes one process at a time the sweeper (the others stand by); its length
/// is several intervals, so a live holder renews it long before it lapses.
pub const SWEEP_LEASE_MS: u64 = 10_000;

/// Fee rates are integer parts per million of the amount (0.54 % = 5 400 ppm): exact, and
/// finer than any rate the channel quotes (hundredths of a percent).
pub const FEE_RATE_PPM_PER_UNIT: i64 = 1_000_000;

/// Highest fee rate a merchant may be given (10 %): far above the channel's 0.2–1 %, and
/// low enough that a fee never exceeds the amount it is taken from.
pub const FEE_RATE_MAX_PPM: i64 = 100_000;

/// Fee rate of a merchant whose contract rate was never set: none is taken.
pub const FEE_RATE_DEFAULT_PPM: i64 = 0;

// ---- Event contract ---------------------------------------------------------------------

/// Longest request id taken from a caller's `x-request-id` (and carried with its event):
/// enough for a UUID or a trace id, too short to smuggle a payload into the logs.
pub const REQUEST_ID_LEN_MAX: usize = 64;

/// How far a sender's `occurred_at` may lie from the moment facepay accepted the event,
/// either way. Further, the event is refused (`occurred_at_skew`): a device clock that far
/// off is broken or lying. Within it, the claim is kept and decides nothing: every time rule
/// runs on the accept time.
pub const DEVICE_CLOCK_SKEW_MAX_MS: i64 = 5 * 60 * 1000;

/// The one schema version of the envelope this build reads and writes.
pub const SCHEMA_VERSION: u16 = 1;

/// Dimension of a face embedding (ArcFace-style models emit 512 floats).
pub const EMBEDDING_DIM: usize = 512;

// ---- Face matching ----------------------------------------------------------------------
//
// The cosines come from `facepay-bench matcher --calibrate` (docs/BENCHMARKS.md, "Issue 23:
// calibration"): a population of 100 000 payers with log-normal capture quality and a
// look-alike for each (face centre at cosine 0.45 to the twin's enrolled template). Each
// accept threshold is the highest score any look-alike or impostor reached, plus
// `MATCH_CALIBRATION_GUARD`, rounded up to the hundredth; the ask floor is the highest
// impostor best-of-gallery plus the guard. They suit that model; a device's real face model
// must be calibrated on its own data (FACEPAY_MATCH_* override each).

/// What the calibration adds to the highest look-alike or impostor score it saw: the maximum
/// of 100 000 draws sits about 4.3 standard deviations out, and the guard (about 1.7 more
/// of the look-alike score's spread) keeps the next million comparisons below the threshold.
pub const MATCH_CALIBRATION_GUARD: f32 = 0.05;

/// Cosine a capture needs, without phone digits, to pay as the merchant's member or as the
/// whole gallery's best candidate (clear of the runner-up by [`MATCH_MARGIN_MIN`]).
pub const MATCH_ACCEPT_COSINE_MIN: f32 = 0.53;

/// Cosine a capture taken with the payer's last 4 phone digits needs among the payers enrolled
/// with them. Not lower than [`MATCH_ACCEPT_COSINE_MIN`]: the look-alike who knows the twin's
/// digits is the case the digits cannot tell apart.
pub const MATCH_PHONE_ACCEPT_COSINE_MIN: f32 = 0.53;

/// Lead the best candidate needs over the runner-up of the whole gallery (or of the phone
/// bucket) to pay; a smaller lead asks for the phone digits.
pub const MATCH_MARGIN_MIN: f32 = 0.10;

/// A best candidate at or above this cosine that may not pay (under the accept threshold, or
/// not clear of the runner-up) asks for the phone digits instead of turning the payer away;
/// below it, the face is unknown (`no_match`).
pub const MATCH_ASK_COSINE_MIN: f32 = 0.31;

/// Lowest liveness score of a capture that is searched at all.
pub const MATCH_LIVENESS_MIN: f32 = 0.80;

/// From this many enrolled payers on, a capture without phone digits may pay only as the
/// merchant's member: the false-match chance grows as N·P₁, so everyone else is asked.
pub const MATCH_PHONE_REQUIRED_GALLERY_MIN: usize = 1_000_000;

/// Largest device event accepted, in bytes: a 512-float embedding in JSON is ~6 KiB, so
/// 64 KiB leaves room without letting one request pin megabytes.
pub const EVENT_BYTES_MAX: usize = 64 * 1024;

/// Longest `out_trade_no` / `out_refund_no` (the channel's rule).
pub const OUT_TRADE_NO_LEN_MAX: usize = 32;

/// Longest merchant, store, device, payer or card identifier.
pub const ID_LEN_MAX: usize = 64;

/// How much of a rejected event's raw body is kept, in bytes, once its embeddings and phone
/// digits are redacted (the rest is cut, and the cut is recorded): a bad event without its
/// 6 KiB embedding is well under this, and a flood of garbage cannot fill the disk.
pub const REJECTED_RAW_BYTES_MAX: usize = 4 * 1024;

/// Rejections kept per second for one authenticated sender (a device key, an admin key),
/// sustained, and the burst above it: a broken or hostile device cannot fill the
/// rejected-events table or push others' rejections out of finance's view. Past it, its bad
/// events are still refused and counted (`facepay_rejections_unkept_total`), not kept.
pub const REJECTIONS_KEPT_PER_KEY_PER_SEC: u32 = 1;
pub const REJECTIONS_KEPT_PER_KEY_BURST: u32 = 60;

/// Failed authentications (no or bad key, bad or stale signature) a source address may make
/// per second, sustained, and the burst above it; past it every request from that address is
/// answered 429 with `Retry-After` before any work is done.
/// A flood (10 000 requests at full speed) is then almost all 429s, while a device whose
/// clock drifted, or a schemathesis run's probes of every operation, stay under it.
pub const AUTH_FAILURES_PER_ADDR_PER_SEC: u32 = 20;
pub const AUTH_FAILURES_PER_ADDR_BURST: u32 = 200;

/// Most keys (device keys, source addresses) a rate limiter tracks at once.
pub const RATE_LIMITER_KEYS_MAX: usize = 100_000;

// ---- Pipeline ---------------------------------------------------------------------------

/// Capacity of each in-process channel between pipeline stages. Bounded so a slow ledger
/// pushes back on ingest instead of growing memory without end.
pub const STAGE_CHANNEL_CAPACITY: usize = 4_096;

/// Most commands the ledger decides and commits in one database transaction. Large enough
/// to amortise the commit's fsync, small enough to keep p99 commit latency in milliseconds.
pub const LEDGER_BATCH_MAX: usize = 512;

/// How long the ledger waits for a batch to fill once it has at least one command.
pub const LEDGER_BATCH_LINGER_MS: u64 = 2;

/// Most captures the matcher remembers while waiting for their payment request (a capture
/// is single-use, and its payment follows within seconds on the same device).
pub const MATCH_MEMORY_CAPTURES_MAX: usize = 100_000;

/// How long the matcher's gather waits for every shard's partial answer to a capture whose
/// payment has arrived. Past it the payment is declined as unresolved (retryable: the device
/// captures again), never paid on a partial view of the gallery. Shards answer within a batch
/// (milliseconds); this covers a shard's restart, not a shard that is down.
pub const MATCH_GATHER_WAIT_MS: u64 = 3_000;

/// Most captures the gather tracks while their shards' partials come in; past it the oldest
/// is given up (as after [`MATCH_GATHER_WAIT_MS`]).
pub const MATCH_GATHER_PENDING_MAX: usize = 50_000;

/// Most messages the gather holds back behind payments that wait for partials (a device's
/// later messages wait behind its payment, so they keep their order); past it the oldest
/// waiting capture is given up.
pub const MATCH_GATHER_HELD_MAX: usize = 10_000;

/// How far back a restarted matcher restores the captures it had identified (kept in the
/// store per batch, migration 0012), and how long the store keeps them: a payment follows
/// its capture within seconds, and an order still unpaid 45 s after creation is revoked.
pub const MATCH_CAPTURE_MEMO_WINDOW_MS: u64 = 10 * 60 * 1000;

/// How often a matcher with a face store reads the ledger's open member cards again, so its
/// member lists follow what the ledger decided (a card is opened by face, and split over
/// shards the capture is resolved by whichever process's gather holds it).
pub const MATCH_MEMBERS_REFRESH_MS: u64 = 5_000;

/// How long an HTTP ingest request may wait for room in the pipeline before answering 503.
pub const INGEST_ENQUEUE_TIMEOUT_MS: u64 = 2_000;

/// Most entities the ledger's write-through state cache holds before it is emptied.
pub const LEDGER_CACHE_ENTITIES_MAX: usize = 1_000_000;

// ---- Store and API ----------------------------------------------------------------------

/// Connections in the SQLite read pool (the ledger writes through one more of its own).
pub const SQLITE_READ_CONNECTIONS_MAX: u32 = 4;

/// SQLite page cache per connection, in KiB (64 MiB): enough for the hot pages of the
/// ledger's indexes, so inserts with random keys do not re-read pages from disk.
pub const SQLITE_CACHE_KIB: u32 = 64 * 1024;

/// How much of a SQLite database is memory-mapped for reads (256 MiB).
pub const SQLITE_MMAP_BYTES: u64 = 256 * 1024 * 1024;

/// How long a SQLite statement waits on a lock before failing.
pub const SQLITE_BUSY_TIMEOUT_MS: u64 = 5_000;

/// Connections in the PostgreSQL pool (the ledger's commits, its loads, the API's reads).
pub const PG_POOL_CONNECTIONS_MAX: u32 = 8;

/// The lookups one ledger batch runs at once to load its entities (one per kind of entity,
/// each on a connection of the pool): half the pool, so the relay and the API still find one.
pub const LEDGER_LOOKUPS_IN_FLIGHT_MAX: usize = 4;

/// How long a PostgreSQL operation waits for a pooled connection before failing.
pub const PG_ACQUIRE_TIMEOUT_MS: u64 = 5_000;

/// Order lookups (`GET …/orders/{no}`, a device asking for a payment's result) waiting
/// while earlier ones are read are read together, in one query: at most this many per query.
pub const ORDER_LOOKUP_BATCH_MAX: usize = 256;

/// Order-lookup queries in flight at once (of the pool's connections; the rest stay free for
/// the ledger's commits and the other routes). One: while it runs, the lookups that arrive
/// pile up for the next query, ~19 per query at 48 clients, and a query costs PostgreSQL
/// about the same for 8 keys as for 19. Measured on 2 cores (docs/BENCHMARKS.md): 25–27k
/// lookups/s with one, 16–20k with two, less with three or four. A server with more cores
/// may want two.
pub const ORDER_LOOKUP_QUERIES_MAX: usize = 1;

/// Order lookups queued for the next query; a full queue makes callers wait their turn.
pub const ORDER_LOOKUP_QUEUE_MAX: usize = 4_096;

/// Default and largest page of a list endpoint.
pub const PAGE_LIMIT_DEFAULT: u32 = 50;
pub const PAGE_LIMIT_MAX: u32 = 500;

/// Every HTTP request is answered or abandoned within this time: the longest wait a device
/// may ask for ([`DEVICE_WAIT_MAX_S`]) and two seconds to take the event in and answer.
pub const HTTP_REQUEST_TIMEOUT_MS: u64 = DEVICE_WAIT_MAX_S * 1_000 + 2_000;

/// The longest `Prefer: wait=N` honoured on `POST /v1/events` (RFC 7240): a payer at the till
/// is not kept longer; past it the device is answered 202 and queries its order.
pub const DEVICE_WAIT_MAX_S: u64 = 10;

/// Requests waiting for their event's outcome at once, per process; past it a device is
/// answered 202 at once (its event is taken all the same). Each waiter is a map entry and a
/// oneshot channel, a few hundred bytes: this bounds the memory, not the throughput (at
/// 1 000 payments/s and 100 ms each, about 100 wait at a time).
pub const DEVICE_WAITERS_MAX: usize = 4_096;

/// How long the merchant's refund operation (the API's, the console's form) waits for the
/// ledger's decision before it answers `PENDING` (the same request again is the same refund).
pub const MERCHANT_REFUND_WAIT_MS: u64 = 5_000;

/// How long an admin's action in the console (freeze, unfreeze, a merchant's limit or fee
/// rate) waits for the ledger's decision before the page shows it as sent.
pub const CONSOLE_ACTION_WAIT_MS: u64 = 5_000;

/// The most refunds of one order the order's page lists (each refunds at least 0.01 CNY of at
/// most 1000 CNY: 100 000 at the very most).
pub const ORDER_REFUNDS_MAX: i64 = 1_000;

/// The most retried payments of one order its page lists.
pub const ORDER_RETRIES_MAX: i64 = 100;

/// How far back the fleet view counts a device's refused, rejected and declined events.
pub const FLEET_REFUSED_WINDOW_MS: i64 = 3_600_000;

/// Largest payload of one `NOTIFY` naming the events a ledger commit answered (PostgreSQL
/// refuses more than 8 000 bytes): 32 hex digits and a comma per event, about 240 per
/// notification; a larger batch sends several.
pub const DECIDED_NOTIFY_BYTES_MAX: usize = 7_900;

/// Largest events read per round trip while replaying the log.
pub const REPLAY_PAGE_EVENTS_MAX: u32 = 5_000;

// ---- Kafka transport --------------------------------------------------------------------

/// Partitions of the topics facepay creates: the most processes one stage can spread over.
pub const KAFKA_PARTITIONS_DEFAULT: i32 = 8;

/// Most partitions `FACEPAY_KAFKA_PARTITIONS` may name.
pub const KAFKA_PARTITIONS_MAX: i32 = 256;

/// Most leases taken or renewed, or stored offsets moved, in one statement: a stage's
/// membership and every partition of its topic.
pub const LEASES_AT_ONCE_MAX: usize = KAFKA_PARTITIONS_MAX as usize + 1;

/// How long a produce may wait for the broker's acknowledgement.
pub const KAFKA_SEND_TIMEOUT_MS: u64 = 10_000;

/// librdkafka's own deadline for a produced message (`message.timeout.ms`), far past every
/// send timeout of ours: an idempotent producer whose in-flight message times out inside
/// librdkafka bumps its epoch on its own (KIP-360), which a broker must support (tansu 0.6's
/// sqlite storage does not: it panics, and its storage stays dead). Our deadlines are the
/// callers' (`tokio::time::timeout`); a stage whose send misses one drops its producer (in
/// flight purged) and starts again with a new one.
pub const KAFKA_MESSAGE_TIMEOUT_MS: u64 = 300_000;

/// Consumer errors in a row after which a Kafka stage gives up (the process exits; its
/// partitions move to the others, and nothing is lost: offsets live in the database).
pub const KAFKA_RECV_ERRORS_MAX: u32 = 50;

/// Pause after a consumer error before the stage polls again.
pub const KAFKA_RECV_ERROR_PAUSE_MS: u64 = 100;

/// Most outbox messages the relay publishes per round trip to the database.
pub const OUTBOX_BATCH_MAX: u32 = 512;

/// Batches the outbox relay may have published and not yet marked: the one whose mark is
/// being written while the next is sent (the mark is off the hot path). A relay that takes
/// over reads this many batches back from the end of each outcome topic to mark what its
/// predecessor published.
pub const OUTBOX_UNMARKED_BATCHES_MAX: u32 = 2;

/// How long the outbox relay's lease lasts (one relay publishes at a time). A crashed relay's
/// successor takes over when it lapses, so it is short. At least
/// [`OUTBOX_SEND_TIMEOUT_MS`] plus [`OUTBOX_LEASE_MARGIN_MS`] plus a renewal's worth: the
/// holder renews whenever less than a send and the margin are left, so every send it starts
/// ends (acknowledged or timed out) before the lease can lapse.
pub const OUTBOX_LEASE_MS: u64 = 1_800;

/// Slack on top of the relay's send timeout that its lease must still have when it sends.
pub const OUTBOX_LEASE_MARGIN_MS: u64 = 500;

/// How long the relay's producer may wait for the broker's acknowledgement of an outcome,
/// retries included (shorter than [`KAFKA_SEND_TIMEOUT_MS`]: the relay's lease must outlast
/// it). A send that times out fails the relay's run; the relay starts again, keeps its lease,
/// and marks what did land before it publishes anything.
pub const OUTBOX_SEND_TIMEOUT_MS: u64 = 800;

/// Longest a dead relay's outcomes wait for its successor: the lease running out, a standby's
/// poll (a tenth of the lease), and the successor reading the outbox topics' tails. The
/// scale-out tests hold the relay to it.
pub const OUTBOX_TAKEOVER_MS_MAX: u64 = 3_000;

/// How long a relay that just took the lease may spend reading the tail of the outbox topics
/// for what its predecessor published but had not marked.
pub const OUTBOX_RECOVERY_TIMEOUT_MS: u64 = 30_000;

/// How often each consumer reports its statistics (the ingest lag per partition on
/// `/metrics`): fresh enough for an alert, rare enough to cost nothing.
pub const KAFKA_STATS_INTERVAL_MS: u64 = 5_000;

/// Longest a consumer's fetch waits at the broker for data to arrive (librdkafka's default is
/// 500 ms; a payer is waiting at the till, and an event crosses two topics before its outcome
/// lands on a third). A broker with data for the fetch answers at once (`fetch.min.bytes`
/// 1). The default of `FACEPAY_KAFKA_FETCH_WAIT_MS`; on tansu 0.6 here, 2 ms instead made
/// no difference outside the noise (docs/BENCHMARKS.md, session 10).
pub const KAFKA_FETCH_WAIT_MAX_MS: u64 = 10;

/// How far back (in records) a stage reads a partition it is assigned from before where it
/// resumes, and reads it again when the broker skipped records: more than one producer batch
/// of one partition (a broker may answer a read from the middle of a record batch with the
/// next batch, or with nothing).
pub const KAFKA_GAP_REWIND_MAX: i64 = 4_096;

/// Most records in one record batch of facepay's own producers (librdkafka's
/// `batch.num.messages`; its default is 10 000): a read from [`KAFKA_GAP_REWIND_MAX`] records
/// back always starts in an earlier batch than the record it is for.
pub const KAFKA_PRODUCER_BATCH_MAX: usize = 2_048;
const _: () = assert!(KAFKA_PRODUCER_BATCH_MAX as i64 * 2 <= KAFKA_GAP_REWIND_MAX);

/// When reading a topic to its end, how long nothing more must arrive after the reported
/// end before the read is complete (a broker may report its end short of a batch's last
/// records).
pub const KAFKA_READ_QUIET_MS: u64 = 500;

/// Most sends `facepay simulate` has in flight before it waits for their acknowledgements.
pub const SIMULATE_ACKS_MAX: usize = 10_000;

/// Most device events the matcher stage routes in one batch, sent before their
/// acknowledgements are awaited.
pub const MATCH_BATCH_MAX: usize = 512;

/// Most batches the matcher stage has sent and not heard acknowledged: the one it sends and
/// the one before, whose acknowledgements it awaits only once the next is sent.
pub const MATCH_BATCHES_UNACKED_MAX: usize = 2;

/// How long the outbox relay sleeps when it finds nothing to publish, unless a ledger stage of
/// its own process wakes it sooner with a commit (another process's commits wait for this).
pub const OUTBOX_IDLE_MS: u64 = 20;

/// First pause before a production stage that failed on its database or broker starts again;
/// doubled after each failure in a row, up to [`STAGE_RESTART_BACKOFF_MAX_MS`].
pub const STAGE_RESTART_BACKOFF_MIN_MS: u64 = 100;

/// Longest pause between restarts of a failing stage (a database or broker that is down
/// is retried this often, without a crash loop).
pub const STAGE_RESTART_BACKOFF_MAX_MS: u64 = 5_000;

/// Tries of one batch by the embedded ledger stage while its store fails (nothing is decided
/// then), with the restart backoff between them; after the last the pipeline stops.
pub const LEDGER_BATCH_TRIES_MAX: u32 = 12;

/// Tries of one ledger batch whose commit met another writer's append to one of its streams
/// (two ledger processes chaining the same merchant's declines): decided again each time from
/// the store. Past it the conflict goes back to the caller as transient, never as a refusal.
pub const LEDGER_CONFLICT_TRIES_MAX: u32 = 16;

/// Longest random pause before a ledger batch is decided again after a write conflict.
pub const LEDGER_CONFLICT_PAUSE_MS_MAX: u64 = 20;

/// How long the gallery feed keeps a change (migration 0019): a matcher further behind than
/// this (stopped for a day) reloads the whole gallery instead of following it.
pub const GALLERY_FEED_KEEP_MS: u64 = 24 * 60 * 60 * 1_000;

/// Tries of the face key file's erasure checkpoint (`wal_checkpoint(TRUNCATE)`) while other
/// processes read the file; past them the deletion is retried by its caller.
pub const FACE_KEYS_ERASE_TRIES_MAX: u32 = 20;

/// Pause between two tries of the face key file's erasure checkpoint.
pub const FACE_KEYS_ERASE_PAUSE_MS: u64 = 50;

/// Most gallery changes a matcher applies per read of the feed.
pub const GALLERY_FEED_BATCH_MAX: u32 = 1_024;

/// How often a production stage renews its hold on its partitions and looks for partitions
/// that moved (`ingest::kafka::ownership`): a process that starts takes its share within about
/// two ticks.
pub const OWNERSHIP_TICK_MS: u64 = 1_000;

/// How long a stage's hold on a partition (and its membership) lasts unless renewed: a
/// killed process's partitions move to the survivors when it lapses.
pub const PARTITION_LEASE_MS: u64 = 6_000;

/// Longest a killed process's partitions go unserved: its lease lapsing, then a survivor's
/// next tick. The scale-out tests hold the stages to it.
pub const FAILOVER_MS_MAX: u64 = PARTITION_LEASE_MS + 2 * OWNERSHIP_TICK_MS + 2_000;

/// A stage that ran this long before failing starts again after the shortest pause.
pub const STAGE_HEALTHY_MS: u64 = 30_000;

/// How often a production process re-reads the fleet registry (devices registered by other
/// processes or by `facepay register`).
pub const REGISTRY_REFRESH_MS: u64 = 5_000;

// ---- Reconciliation (issue 6) -----------------------------------------------------------

/// Longest line of a channel bill, in bytes: a 29-column detail line is ~400 bytes; a longer
/// one is garbage (or a file without line breaks), refused before it can pin memory.
pub const BILL_LINE_BYTES_MAX: usize = 8 * 1024;

/// Most columns a bill's header may name (the widest WeChat layout has 29).
pub const BILL_COLUMNS_MAX: usize = 64;

/// Largest bill upload the API accepts (a 1 000 000-line bill is ~350 MiB; the CLI streams
/// files of any size).
pub const BILL_UPLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bill lines written per multi-row insert while a bill is imported.
pub const RECON_IMPORT_CHUNK_ROWS: usize = 1_000;

/// An entry this close to midnight (either side, China time) that is missing from its own
/// day is looked for in the neighbouring day: the channel may book a payment made at
/// 23:59:59.9 on the next day. Found there, it is a timing difference, not a break.
pub const RECON_TIMING_WINDOW_S: i64 = 300;

/// Most breaks one run records: more means the wrong bill or the wrong day, and the run stops
/// rather than write millions of breaks (this also bounds a run's memory).
pub const RECON_BREAKS_MAX: usize = 100_000;

/// Longest text of who resolved a break and why (and of why an import was refused).
pub const RECON_NOTE_LEN_MAX: usize = 512;

/// Breaks of superseded bill versions closed per page when a newer version is reconciled.
pub const RECON_CLOSE_PAGE_ROWS: u32 = 500;

// ---- API authentication (issue 7) ------------------------------------------------------

/// How far a device's signing time may be from the moment facepay accepted the event (the
/// platform's clock), either way: ±5 minutes.
pub const SIGNATURE_WINDOW_SECS: i64 = 300;

/// Random bytes in an API key's secret part (256 bits: a keyed hash suffices, no password
/// hash needed).
pub const API_KEY_SECRET_BYTES: usize = 32;

/// Lifetime of a key created without `--expires-days`.
pub const API_KEY_TTL_DAYS_DEFAULT: i64 = 365;

/// Longest lifetime a key may be given.
pub const API_KEY_TTL_DAYS_MAX: i64 = 3 * 365;

/// Shortest accepted server pepper (`FACEPAY_KEY_PEPPER`), in bytes.
pub const KEY_PEPPER_BYTES_MIN: usize = 32;

/// Event ids remembered per process to refuse replays (older entries fall out of the
/// signature window anyway).
pub const REPLAY_CACHE_MAX: usize = 1_000_000;

/// How long an authenticated key is served from memory before the store is asked again
/// (a revocation takes effect within this).
pub const KEY_CACHE_TTL_MS: u64 = 5_000;

/// Most keys held in the authentication cache and in the rate limiter.
pub const KEY_CACHE_MAX: usize = 100_000;

/// Requests per second each key may make, sustained.
pub const RATE_LIMIT_PER_SEC: u32 = 2_000;

/// Requests a key may burst above its sustained rate.
pub const RATE_LIMIT_BURST: u32 = 4_000;

/// Longest label of an API key, in characters.
pub const KEY_LABEL_LEN_MAX: usize = 200;

/// Longest request target (path and query) the API reads, in bytes; longer is a 414.
pub const URI_LEN_MAX: usize = 8 * 1024;

/// Most entries served by one page of the audit log.
pub const AUDIT_PAGE_MAX: u32 = 500;

/// Console sessions the database keeps (each an API key's id under the session id's hash,
/// never the key's secret); a sign-in past it ends the session idle longest.
pub const CONSOLE_SESSIONS_MAX: i64 = 10_000;

/// Console sessions one API key may hold at once (its browsers); past it a sign-in with the
/// key ends that key's session idle longest, never another key's.
pub const CONSOLE_SESSIONS_PER_KEY_MAX: i64 = 20;

/// A console session ends after this long without a request (a payments console's usual
/// idle timeout).
pub const CONSOLE_SESSION_IDLE_MS: u64 = 15 * 60 * 1_000;

/// A console session ends this long after sign-in, however busy.
pub const CONSOLE_SESSION_TTL_MS: u64 = 12 * 60 * 60 * 1_000;

/// How often at most a console session's last-seen time is written: the idle timeout is
/// kept to within this.
pub const CONSOLE_SESSION_TOUCH_MS: i64 = 30 * 1_000;

/// The largest form the console reads (a bill upload excepted: [`BILL_UPLOAD_BYTES_MAX`]).
pub const CONSOLE_FORM_BYTES_MAX: usize = 16 * 1024;
