//! The API's OpenAPI 3.1 description, generated from the handlers' annotations (utoipa) and
//! committed as `api/openapi.json` (a test keeps the file in step with the code).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

// ---- The bodies of successful answers, as the handlers write them (the fuzz run checks every
// answer against these: scripts/fuzz-api.sh, `response_schema_conformance`). Money is a
// decimal string of CNY with two places; times are RFC 3339.

/// `202` to an event: it is in the pipeline; ask for the order's result afterwards.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Accepted {
    #[schema(format = "uuid")]
    event_id: String,
    /// Always `accepted`.
    status: String,
}

/// An order's result.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Order {
    merchant_id: String,
    out_trade_no: String,
    #[schema(example = "60.00")]
    amount: String,
    status: OrderStatus,
    /// facepay's decline code, when declined.
    reason: Option<String>,
    /// The channel's code for `reason` (e.g. `NOTENOUGH`, `ORDERCLOSED`).
    channel_code: Option<String>,
    /// The payer as this merchant may see them: its openid or the UnionID they authorised.
    payer_id: Option<String>,
    member_quick_pay: bool,
    /// True when this answer repeats a stored outcome (an exact retry).
    replayed: bool,
    #[schema(value_type = String, format = DateTime)]
    created_at: String,
    #[schema(value_type = String, format = DateTime)]
    updated_at: String,
    /// The merchant's fee on the payment.
    fee: String,
    /// What went back to the payer (refunds and reversal).
    refunded: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
enum OrderStatus {
    PAID,
    DECLINED,
    REVERSED,
    REVOKED,
}

/// One payment attempt in a merchant's history.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct HistoryItem {
    #[schema(format = "uuid")]
    event_id: String,
    merchant_id: String,
    out_trade_no: String,
    amount: String,
    amount_fen: i64,
    status: OrderStatus,
    reason: Option<String>,
    payer_id: Option<String>,
    member_quick_pay: bool,
    store_id: String,
    device_id: String,
    #[schema(value_type = String, format = DateTime)]
    occurred_at: String,
    /// The Asia/Shanghai day.
    #[schema(value_type = String, format = Date)]
    day: String,
}

/// A page of history, newest first.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct HistoryPage {
    items: Vec<HistoryItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

/// A member card of the merchant.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Member {
    payer_id: String,
    card_code: String,
    /// `card_package` or `mini_program`.
    channel: String,
    #[schema(value_type = String, format = DateTime)]
    opened_at: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    closed_at: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct MembersPage {
    items: Vec<Member>,
    next_cursor: Option<String>,
}

/// One Asia/Shanghai day of a merchant's money.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SettlementDay {
    #[schema(value_type = String, format = Date)]
    day: String,
    gross: String,
    refunds: String,
    fees: String,
    /// gross − refunds − fees.
    net: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SettlementPage {
    items: Vec<SettlementDay>,
    next_cursor: Option<String>,
}

/// An API key as listed: never its secret.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Key {
    key_id: String,
    /// `merchant`, `finance`, `device` or `admin`.
    role: String,
    merchant_id: Option<String>,
    store_id: Option<String>,
    device_id: Option<String>,
    label: String,
    created_by: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: String,
    #[schema(value_type = String, format = DateTime)]
    expires_at: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<String>,
}

/// A key just created, with its token: shown this once, only its hash is kept.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct CreatedKey {
    key: Key,
    /// `fpk_<key id>_<secret>`.
    token: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct KeysPage {
    items: Vec<Key>,
    next_cursor: Option<String>,
}

/// One admin or finance action.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AuditEntry {
    seq: i64,
    #[schema(value_type = String, format = DateTime)]
    at: String,
    /// The acting key's id, or `cli`.
    principal: String,
    role: String,
    /// `key_created`, `key_revoked`, `merchant_limit_changed`, `account_frozen`, …
    action: String,
    subject: String,
    /// Anything else (never a secret).
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct AuditPage {
    items: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

/// Input refused with its reason (the raw bytes stay in the store).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Rejected {
    #[schema(value_type = String, format = DateTime)]
    received_at: String,
    /// `http`, `bus`, `kafka` or `ledger`.
    source: String,
    #[schema(format = "uuid")]
    event_id: Option<String>,
    kind: Option<String>,
    reason_code: String,
    field: Option<String>,
    message: String,
    raw_truncated: bool,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct RejectedPage {
    items: Vec<Rejected>,
    next_cursor: Option<String>,
}

/// A payer's wallet.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Balance {
    payer_id: String,
    /// The available balance (Pay Score holds are already taken out).
    balance: String,
    /// Held for the payer's open Pay Score orders.
    held: String,
    frozen: bool,
}

// ---- Reconciliation (finance): money in fen (and milli-fen for the bill's 5-decimal fees)
// as stored, and as decimal strings of CNY beside it.

/// An imported bill.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Import {
    #[schema(format = "uuid")]
    import_id: String,
    /// The channel account (商户号) the bill is filed under.
    account: String,
    #[schema(value_type = String, format = Date)]
    day: String,
    /// 1 for the first file of the day; a corrected file supersedes with the next.
    version: i64,
    content_sha256: String,
    /// `all`, `success`, `refund`, `legacy` or `generic` (a column mapping).
    layout: String,
    file_name: String,
    line_count: i64,
    settle_fen: i64,
    refund_fen: i64,
    /// The bill's fee total in thousandths of a fen.
    fee_mfen: i64,
    #[schema(value_type = String, format = DateTime)]
    imported_at: String,
    #[schema(example = "60.00")]
    settle: String,
    refund: String,
    /// Five places, as the bill gives fees.
    #[schema(example = "0.32000")]
    fee: String,
}

/// An import's outcome: new, or the very file imported before (nothing written).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ImportOutcome {
    import: Import,
    already_imported: bool,
    /// The import this one supersedes (the same account and day, the previous version).
    #[schema(format = "uuid")]
    supersedes: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ImportsPage {
    items: Vec<Import>,
    next_cursor: Option<String>,
}

/// Count and sums of one class of findings.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ClassSums {
    count: i64,
    bill_fen: i64,
    ledger_fen: i64,
    bill: String,
    ledger: String,
}

/// A run's report: counts and sums by class (matched and timing differences included), in
/// total and per merchant.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct RunReport {
    bill_lines: i64,
    ledger_entries: i64,
    breaks: i64,
    /// Findings whose line was paired by the channel's transaction id.
    by_txn_id: i64,
    /// By class (`matched`, `timing_difference`, `missing_in_ledger`, …).
    totals: std::collections::BTreeMap<String, ClassSums>,
    /// By merchant, then by class.
    merchants: std::collections::BTreeMap<String, std::collections::BTreeMap<String, ClassSums>>,
}

/// One reconciliation run of a bill's day.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Run {
    #[schema(format = "uuid")]
    run_id: String,
    #[schema(format = "uuid")]
    import_id: String,
    #[schema(value_type = String, format = Date)]
    day: String,
    #[schema(value_type = String, format = DateTime)]
    started_at: String,
    #[schema(value_type = String, format = DateTime)]
    finished_at: String,
    bill_lines: i64,
    breaks: i64,
    report: RunReport,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct RunsPage {
    items: Vec<Run>,
    next_cursor: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum BreakClass {
    Matched,
    TimingDifference,
    MissingInLedger,
    MissingInBill,
    AmountMismatch,
    FeeMismatch,
    StatusMismatch,
    DuplicateLine,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum EntryKind {
    Payment,
    Refund,
    Reversal,
}

/// A difference between the bill and the ledger, as recorded in the ledger.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Break {
    #[schema(format = "uuid")]
    break_id: String,
    #[schema(format = "uuid")]
    run_id: String,
    #[schema(value_type = String, format = Date)]
    day: String,
    merchant_id: String,
    class: BreakClass,
    kind: EntryKind,
    /// The order or refund number, as the bill names it.
    number: String,
    /// The ledger's own number of the order or refund, when the break has a ledger side
    /// (another than `number` when the line was paired by the channel's transaction id).
    ledger_number: Option<String>,
    /// The bill's line, when the break has one.
    line_no: Option<i64>,
    bill_amount_fen: Option<i64>,
    ledger_amount_fen: Option<i64>,
    detail: String,
    /// The ledger event that records the break.
    #[schema(format = "uuid")]
    event_id: String,
    #[schema(value_type = String, format = DateTime)]
    recorded_at: String,
    resolved: bool,
    bill_amount: Option<String>,
    ledger_amount: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct BreaksPage {
    items: Vec<Break>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum ResolutionAction {
    Accepted,
    ConfirmedPaid,
    RefundIssued,
    LedgerCorrected,
    BillDisputed,
}

/// How a break was settled, by whom (the person named, through the finance key) and why.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Resolution {
    #[schema(format = "uuid")]
    break_id: String,
    action: ResolutionAction,
    resolved_by: String,
    reason: String,
    #[schema(value_type = String, format = DateTime)]
    resolved_at: String,
    #[schema(format = "uuid")]
    event_id: String,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ResolutionsPage {
    items: Vec<Resolution>,
    next_cursor: Option<String>,
}

/// `201` to a bill upload: the import, the run of its day and the run's breaks.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ReconcileResult {
    import: ImportOutcome,
    run: Run,
    breaks: Vec<Break>,
}

/// A new API key (admin).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct NewKeyRequest {
    role: KeyRole,
    /// Merchant and device keys: the merchant (registered).
    #[schema(pattern = r"^[0-9A-Za-z_-]{1,64}$")]
    merchant_id: Option<String>,
    /// A store key of a merchant, or a device key: one of the merchant's stores.
    #[schema(pattern = r"^[0-9A-Za-z_-]{1,64}$")]
    store_id: Option<String>,
    /// Device keys: the device (registered, bound to that merchant and store).
    #[schema(pattern = r"^[0-9A-Za-z_-]{1,64}$")]
    device_id: Option<String>,
    #[schema(max_length = 200)]
    label: Option<String>,
    /// Days until it expires (default 365).
    #[schema(minimum = 1, maximum = 1095)]
    expires_in_days: Option<i64>,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum KeyRole {
    Merchant,
    Finance,
    Device,
    Admin,
}

/// How finance settles a break.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ResolveRequest {
    action: ResolutionAction,
    /// The person who decided (kept with the finance key that sent it).
    #[schema(min_length = 1, max_length = 120)]
    resolved_by: String,
    #[schema(min_length = 1, max_length = 128)]
    reason: String,
}

/// One inbound event (`docs/events.md` has every type and its payload). Sent with an admin
/// key: platform and merchant events; device events are signed by their device
/// (`facepay-signature`) and sent with no key.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct EventRequest {
    #[schema(format = "uuid")]
    event_id: String,
    #[schema(rename = "type")]
    kind: EventKind,
    #[schema(minimum = 1, maximum = 1)]
    schema_version: i64,
    /// The sender's claim of when it happened: within 5 minutes of when facepay accepts it
    /// (`occurred_at_skew` otherwise). Every rule runs on the accept time.
    #[schema(value_type = String, format = DateTime)]
    occurred_at: String,
    #[schema(pattern = r"^[0-9A-Za-z_-]{1,64}$")]
    merchant_id: Option<String>,
    #[schema(pattern = r"^[0-9A-Za-z_-]{1,64}$")]
    store_id: Option<String>,
    #[schema(pattern = r"^[0-9A-Za-z_-]{1,64}$")]
    device_id: Option<String>,
    /// The type's fields.
    #[schema(value_type = Object)]
    payload: serde_json::Value,
}

#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum EventKind {
    FaceCaptured,
    PaymentRequested,
    PaymentQuery,
    ReverseRequested,
    RefundRequested,
    MemberCardOpened,
    MemberCardClosed,
    PayScoreAuthorised,
    PayScoreOrderCreated,
    PayScoreOrderCompleted,
    PayScoreOrderCancelled,
    FaceEnrolled,
    FaceDeleted,
    AccountFunded,
    AccountFrozen,
    AccountUnfrozen,
    MerchantLimitChanged,
    MerchantFeeRateChanged,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "facepay", description = "Face-payment fleets: ingest, orders, history, members, settlement, keys, audit, \
        reconciliation of the channel's daily bill (finance keys). \
        Money is a decimal string (CNY), timestamps RFC 3339. Every failure answers ErrorBody: a bad parameter or body 400 \
        naming the field, no or a bad key 401 (always the same body; too many failures from one address: 429), a key \
        whose role may not call the operation 403 (before anything else is read), anything the caller may not see 404, \
        a body too large 413, of another type 415, the key's budget spent 429, a moment's unavailability 503."),
    paths(ingest, order, transactions, members, settlement, balance, rejected, create_key, list_keys, revoke_key, audit,
        recon_upload, recon_bills, recon_runs, recon_breaks, recon_resolve, recon_resolutions, health),
    components(schemas(ErrorBody, Accepted, Order, HistoryPage, MembersPage, SettlementPage, Balance, CreatedKey,
        KeysPage, AuditPage, RejectedPage, ReconcileResult, ImportsPage, RunsPage, BreaksPage, Resolution,
        ResolutionsPage, NewKeyRequest, ResolveRequest, EventRequest)),
    modifiers(&Bearer, &EveryAuthenticatedOperation),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("fpk_<key id>_<secret>").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// What every operation may answer, added to each that does not list it: 414 (a request
/// target over `URI_LEN_MAX`) and 429 (the address's budget of failed authentication spent);
/// and every operation but `/health`: 401 (no or a bad key), 403 (a role the operation does
/// not serve), 429 (the key's budget too), 503 (the store or the pipeline unavailable for a
/// moment: `Retry-After`).
struct EveryAuthenticatedOperation;

impl Modify for EveryAuthenticatedOperation {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let common = [
            ("401", answer("no key, or a key or signature that does not authenticate (always this body)")),
            ("403", answer("the key's role may not call this operation")),
            ("429", answer("too many requests: retry after `Retry-After` seconds")),
            ("503", answer("unavailable for a moment (the store or the pipeline): retry after `Retry-After` seconds")),
        ];
        let anyone = [
            ("414", answer("a request target over 8 KiB")),
            ("429", answer("too many failed authentications from this address: retry after `Retry-After` seconds")),
        ];
        for (path, item) in api.paths.paths.iter_mut() {
            let public = path == "/health";
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for op in ops.into_iter().flatten() {
                let answers = common.iter().filter(|_| !public).chain(anyone.iter());
                for (status, response) in answers {
                    op.responses.responses.entry(status.to_string()).or_insert_with(|| response.clone().into());
                }
            }
        }
    }
}

/// The spec as pretty JSON (what `api/openapi.json` holds).
pub fn spec_json() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the spec serialises")
}

// ---- The operations. Identifier patterns are the domain's (`domain/src/ids.rs`); a value
// outside them is a 400 naming the parameter. 401, 403, 429 and 503 are added to every
// operation by `EveryAuthenticatedOperation`.

#[utoipa::path(post, path = "/v1/events", security((), ("bearer" = [])),
    params(("facepay-signature" = Option<String>, Header, description = "device events: k=<key id>,t=<unix s>,v1=<hex HMAC>")),
    request_body(content = EventRequest, content_type = "application/json"),
    responses((status = 202, body = Accepted, description = "accepted"),
        (status = 400, body = ErrorBody, description = "a bad field, named (kept with its reason)"),
        (status = 403, body = ErrorBody, description = "an event its sender may not send (a device event with a key, \
            another device's event: `wrong_origin`)"),
        (status = 409, body = ErrorBody, description = "an event id received before (`replayed`)"),
        (status = 413, body = ErrorBody, description = "larger than 64 KiB")))]
#[allow(dead_code)]
fn ingest() {}

#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/orders/{out_trade_no}",
    params(("merchant_id" = String, Path, pattern = r"^[0-9A-Za-z_-]{1,64}$"),
        ("out_trade_no" = String, Path, pattern = r"^[0-9A-Za-z_|*-]{1,32}$")),
    responses((status = 200, body = Order, description = "the order's result"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such order, or one the key may not see")))]
#[allow(dead_code)]
fn order() {}

#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/transactions",
    params(("merchant_id" = String, Path, pattern = r"^[0-9A-Za-z_-]{1,64}$"),
        ("date" = Option<String>, Query, format = Date, description = "an Asia/Shanghai day"),
        ("status" = Option<OrderStatus>, Query),
        ("cursor" = Option<String>, Query, pattern = r"^[1-9][0-9]{0,17}\.[0-9a-f]{32}$",
            description = "the `next_cursor` of the previous page (signed for the merchant: any other is a 400)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = HistoryPage, description = "a page of history, newest first"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "a merchant the key may not see")))]
#[allow(dead_code)]
fn transactions() {}

#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/members",
    params(("merchant_id" = String, Path, pattern = r"^[0-9A-Za-z_-]{1,64}$")),
    responses((status = 200, body = MembersPage, description = "member cards"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "a merchant the key may not see")))]
#[allow(dead_code)]
fn members() {}

#[utoipa::path(get, path = "/v1/merchants/{merchant_id}/settlement",
    params(("merchant_id" = String, Path, pattern = r"^[0-9A-Za-z_-]{1,64}$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = SettlementPage, description = "money per day, newest first"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "a merchant the key may not see")))]
#[allow(dead_code)]
fn settlement() {}

#[utoipa::path(get, path = "/v1/payers/{payer_id}/balance",
    params(("payer_id" = String, Path, pattern = r"^[0-9A-Za-z_-]{1,64}$")),
    responses((status = 200, body = Balance, description = "balance, held, frozen"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such payer")))]
#[allow(dead_code)]
fn balance() {}

#[utoipa::path(get, path = "/v1/rejected-events", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = RejectedPage, description = "refused input with its reasons"), (status = 400, body = ErrorBody)))]
#[allow(dead_code)]
fn rejected() {}

#[utoipa::path(post, path = "/v1/keys", request_body(content = NewKeyRequest, content_type = "application/json"),
    responses((status = 201, body = CreatedKey, description = "the key and its token, shown once"),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "a scope the registry does not hold (an unknown merchant, store or \
            device) or a role it does not fit")))]
#[allow(dead_code)]
fn create_key() {}

#[utoipa::path(get, path = "/v1/keys",
    responses((status = 200, body = KeysPage, description = "every key, never a secret")))]
#[allow(dead_code)]
fn list_keys() {}

#[utoipa::path(delete, path = "/v1/keys/{key_id}", params(("key_id" = String, Path, pattern = r"^[0-9a-f]{24}$")),
    responses((status = 204, description = "revoked"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no live key has this id")))]
#[allow(dead_code)]
fn revoke_key() {}

#[utoipa::path(get, path = "/v1/audit",
    params(("cursor" = Option<String>, Query, pattern = r"^[1-9][0-9]{0,17}$", description = "the `next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = AuditPage, description = "admin and finance actions, newest first"), (status = 400, body = ErrorBody)))]
#[allow(dead_code)]
fn audit() {}

#[utoipa::path(get, path = "/health", security(()), responses((status = 200, description = "alive")))]
#[allow(dead_code)]
fn health() {}

#[utoipa::path(post, path = "/v1/reconciliation/bills",
    params(("date" = String, Query, format = Date, description = "the bill's Asia/Shanghai day"),
        ("mapping" = Option<String>, Query, description = "a generic CSV's columns: field=Header,…"),
        ("file_name" = Option<String>, Query)),
    request_body(content = String, content_type = "text/csv", description = "the channel's daily bill"),
    responses((status = 201, body = ReconcileResult, description = "imported (or recognised by its hash) and reconciled: the run's report"),
        (status = 400, body = ErrorBody, description = "a bad bill, naming line and column"),
        (status = 413, body = ErrorBody, description = "larger than 64 MiB")))]
#[allow(dead_code)]
fn recon_upload() {}

#[utoipa::path(get, path = "/v1/reconciliation/bills", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = ImportsPage, description = "imported bills, newest first"), (status = 400, body = ErrorBody)))]
#[allow(dead_code)]
fn recon_bills() {}

#[utoipa::path(get, path = "/v1/reconciliation/runs", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = RunsPage, description = "runs with their reports (counts and sums by class, per merchant)"),
        (status = 400, body = ErrorBody)))]
#[allow(dead_code)]
fn recon_runs() {}

#[utoipa::path(get, path = "/v1/reconciliation/breaks",
    params(("run_id" = Option<String>, Query, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), ("date" = Option<String>, Query, format = Date),
        ("class" = Option<BreakClass>, Query), ("merchant_id" = Option<String>, Query, pattern = r"^[0-9A-Za-z_-]{1,64}$"),
        ("unresolved" = Option<bool>, Query), ("cursor" = Option<String>, Query, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = BreaksPage, description = "a page of breaks"), (status = 400, body = ErrorBody)))]
#[allow(dead_code)]
fn recon_breaks() {}

#[utoipa::path(post, path = "/v1/reconciliation/breaks/{break_id}/resolution", params(("break_id" = String, Path, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    request_body(content = ResolveRequest, content_type = "application/json", description = "confirmed_paid (a \
        status_mismatch of a payment only) has the ledger settle the order first"),
    responses((status = 201, body = Resolution, description = "the resolution, appended to the ledger and the audit log"),
        (status = 400, body = ErrorBody, description = "a bad field, a break already resolved, or an action its class does \
            not take"),
        (status = 404, body = ErrorBody, description = "no such break"), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "confirmed_paid refused by the ledger: ORDER_PAID, \
        ORDER_REVERSED, AMOUNT_MISMATCH or ORDER_NOT_FOUND; the break stays open")))]
#[allow(dead_code)]
fn recon_resolve() {}

#[utoipa::path(get, path = "/v1/reconciliation/resolutions", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 500)),
    responses((status = 200, body = ResolutionsPage, description = "resolutions, newest first"), (status = 400, body = ErrorBody)))]
#[allow(dead_code)]
fn recon_resolutions() {}

#[cfg(test)]
mod tests {
    use super::spec_json;

    /// The committed `api/openapi.json` is what the code generates (regenerate with
    /// `FACEPAY_WRITE_OPENAPI=1 cargo test -p facepay-api --lib openapi`).
    #[test]
    fn the_committed_spec_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = spec_json() + "\n";
        if std::env::var("FACEPAY_WRITE_OPENAPI").is_ok() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let spec: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1");
        assert_eq!(committed, generated, "api/openapi.json is stale: run with FACEPAY_WRITE_OPENAPI=1");
    }
}
