//! One example of every event and outcome, as `docs/events.md` shows them. A test keeps the
//! document and these examples in step.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::*;
use crate::ids::*;
use crate::limits::EMBEDDING_DIM;
use crate::money::Money;
use crate::outcome::{DeclineReason, OrderStatus, Outcome, OutcomeBody, PaymentResult};
use crate::{Embedding, Score};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("example time")
}

fn device() -> DeviceRef {
    DeviceRef {
        merchant_id: MerchantId::parse("1900000101").expect("id"),
        store_id: StoreId::parse("S01").expect("id"),
        device_id: DeviceId::parse("DEV-0042").expect("id"),
    }
}

fn embedding() -> Embedding {
    Embedding::try_from(vec![1.0; EMBEDDING_DIM]).expect("valid")
}

fn m(s: &str) -> Money {
    s.parse().expect("example amount")
}

/// Every inbound event type, once, in contract order.
pub fn events() -> Vec<Envelope> {
    let payer = || PayerId::parse("o-union-0001").expect("id");
    let face = || FaceCode::parse("134567890123456789").expect("code");
    let trade = || OutTradeNo::parse("S01-20260302-000001").expect("no");
    let order_no = || OutOrderNo::parse("PS-20260302-0007").expect("no");
    let d = || Origin::Device(device());
    let bodies: Vec<(Origin, EventBody)> = vec![
        (
            d(),
            EventBody::FaceCaptured(FaceCaptured {
                face_code: face(),
                embedding: embedding(),
                liveness: Score::try_from(0.98).expect("score"),
                phone_last4: Some(PhoneLast4::parse("0042").expect("digits")),
            }),
        ),
        (
            d(),
            EventBody::PaymentRequested(PaymentRequested {
                out_trade_no: trade(),
                amount: m("60.00"),
                face_code: face(),
            }),
        ),
        (d(), EventBody::PaymentQuery(PaymentQuery { out_trade_no: trade() })),
        (d(), EventBody::ReverseRequested(ReverseRequested { out_trade_no: trade() })),
        (
            d(),
            EventBody::RefundRequested(RefundRequested {
                out_trade_no: trade(),
                out_refund_no: OutRefundNo::parse("R01-000001").expect("no"),
                amount: m("50.00"),
            }),
        ),
        (
            d(),
            EventBody::MemberCardOpened(MemberCardOpened {
                face_code: face(),
                card_code: CardCode::parse("C00000042").expect("card"),
                channel: CardChannel::CardPackage,
            }),
        ),
        (
            d(),
            EventBody::MemberCardClosed(MemberCardClosed {
                face_code: face(),
                card_code: CardCode::parse("C00000042").expect("card"),
            }),
        ),
        (d(), EventBody::PayScoreAuthorised(PayScoreAuthorised { face_code: face() })),
        (
            d(),
            EventBody::PayScoreOrderCreated(PayScoreOrderCreated {
                out_order_no: order_no(),
                face_code: face(),
                hold_amount: m("200.00"),
            }),
        ),
        (
            d(),
            EventBody::PayScoreOrderCompleted(PayScoreOrderCompleted {
                out_order_no: order_no(),
                total_amount: m("23.50"),
            }),
        ),
        (d(), EventBody::PayScoreOrderCancelled(PayScoreOrderCancelled { out_order_no: order_no() })),
        (
            Origin::Platform,
            EventBody::FaceEnrolled(FaceEnrolled { payer_id: payer(), embedding: embedding(), phone_last4: None }),
        ),
        (Origin::Platform, EventBody::FaceDeleted(FaceDeleted { payer_id: payer() })),
        (Origin::Platform, EventBody::AccountFunded(AccountFunded { payer_id: payer(), amount: m("500.00") })),
        (Origin::Platform, EventBody::AccountFrozen(AccountFrozen { payer_id: payer() })),
        (Origin::Platform, EventBody::AccountUnfrozen(AccountUnfrozen { payer_id: payer() })),
        (
            Origin::Merchant(device().merchant_id),
            EventBody::MerchantLimitChanged(MerchantLimitChanged { single_limit: m("5000.00") }),
        ),
        (
            Origin::Merchant(device().merchant_id),
            EventBody::MerchantFeeRateChanged(MerchantFeeRateChanged { fee_rate_ppm: 5_400 }),
        ),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, (origin, body))| {
            Envelope::new(
                Uuid::from_u128(0x0b0e_5a52_2a56_4c51_9d0e_8f7a_7c2f_0c00 + i as u128),
                at("2026-03-02T01:15:07Z"),
                origin,
                body,
            )
        })
        .collect()
}

/// One outcome of each kind.
pub fn outcomes() -> Vec<(&'static str, Outcome)> {
    let result = |status, reason: Option<DeclineReason>, replayed| PaymentResult {
        merchant_id: device().merchant_id,
        out_trade_no: OutTradeNo::parse("S01-20260302-000001").expect("no"),
        amount: m("60.00"),
        status,
        reason,
        channel_code: reason.map(|r| r.channel_code().to_string()),
        payer_id: Some(PayerId::parse("o-union-0001").expect("id")),
        member_quick_pay: reason.is_none(),
        replayed,
    };
    let out = |body| Outcome {
        in_reply_to: Uuid::from_u128(0x0b0e_5a52_2a56_4c51_9d0e_8f7a_7c2f_0c01),
        decided_at: at("2026-03-02T01:15:07.120Z"),
        device: Some(device()),
        body,
    };
    vec![
        (
            "a payment succeeded (member quick pay)",
            out(OutcomeBody::PaymentResult(result(OrderStatus::Paid, None, false))),
        ),
        (
            "a payment declined",
            out(OutcomeBody::PaymentResult(result(
                OrderStatus::Declined,
                Some(DeclineReason::InsufficientBalance),
                false,
            ))),
        ),
        (
            "an exact retry, answered from the stored outcome",
            out(OutcomeBody::PaymentResult(result(OrderStatus::Paid, None, true))),
        ),
        ("the answer to a payment query", out(OutcomeBody::QueryResult(Some(result(OrderStatus::Paid, None, false))))),
        ("a non-payment event applied", out(OutcomeBody::Applied { kind: "member_card_opened".into() })),
        (
            "a well-formed event refused",
            out(OutcomeBody::Refused {
                kind: "refund_requested".into(),
                code: "REFUND_EXCEEDS_PAID".into(),
                message: "refused: REFUND_EXCEEDS_PAID (channel code INVALID_REQUEST)".into(),
            }),
        ),
    ]
}
