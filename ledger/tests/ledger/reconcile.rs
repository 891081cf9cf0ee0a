//! Reconciliation's pure parts: the bill reader and writer (every layout, every kind of bad
//! input), the classifier (every rule, given/when/then), and properties: a bill generated
//! from the ledger reconciles to zero breaks, and each planted mutation is reported as
//! exactly its class.

use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::OrderStatus;
use facepay_ledger::reconcile::bill::{
    parse_scaled, BillDigest, BillError, BillLine, BillReader, BillWriter, ColumnMapping, Layout,
};
use facepay_ledger::reconcile::classify::{
    near_midnight, reconcile, settle_timing, Class, Counterpart, Finding, LedgerEntry, Report, TxnRescue,
};
use facepay_ledger::reconcile::EntryKind;
use proptest::prelude::*;

/// The reference document's illustrative bill, byte for byte.
const SAMPLE: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注
`2026-03-02 09:15:07,`wx0000000000000001,`1900000001,`1900000101,`DEV-0042,`4200000000202603020000000001,`S01-20260302-000001,`o-payer-0001,`MICROPAY,`SUCCESS,`OTHERS,`CNY,`60.00,`0.00,`0,`0,`0.00,`0.00,`,`,`groceries,`,`0.32000,`0.54%,`60.00,`0.00,`
`2026-03-02 11:40:51,`wx0000000000000001,`1900000001,`1900000101,`DEV-0042,`4200000000202603020000000001,`S01-20260302-000001,`o-payer-0001,`MICROPAY,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50300000000202603020000000001,`R01-000001,`50.00,`0.00,`ORIGINAL,`SUCCESS,`groceries,`,`-0.27000,`0.54%,`0.00,`50.00,`
总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
`2,`60.00,`50.00,`0.00,`0.05000,`60.00,`50.00
";

fn read(bytes: &[u8]) -> Result<(Vec<BillLine>, BillDigest), BillError> {
    let mut r = BillReader::wechat(bytes)?;
    let mut lines = Vec::new();
    while let Some(l) = r.next_line()? {
        lines.push(l);
    }
    Ok((lines, r.finish()?))
}

fn err(bytes: &[u8]) -> BillError {
    read(bytes).expect_err("the bill must be refused")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
}

// ---- reading -----------------------------------------------------------------------------

#[test]
fn the_reference_bill_reads_into_yuan_fen_and_thousandths_of_a_fen() {
    let (lines, digest) = read(SAMPLE.as_bytes()).unwrap();
    assert_eq!(digest.layout, Layout::All);
    assert_eq!(digest.account.as_deref(), Some("1900000001"));
    assert_eq!((digest.totals.lines, digest.totals.settle_fen, digest.totals.refund_fen), (2, 6_000, 5_000));
    assert_eq!(digest.totals.fee_mfen, 5_000, "0.32000 - 0.27000 = 0.05000");
    let (pay, refund) = (&lines[0], &lines[1]);
    assert_eq!(
        (pay.line_no, pay.kind, pay.amount_fen, pay.fee_mfen, pay.rate_ppm),
        (2, EntryKind::Payment, 6_000, 32_000, Some(5_400))
    );
    assert_eq!(pay.merchant_id, "1900000101", "the sub-merchant is facepay's merchant");
    assert_eq!(pay.trade_at, at("2026-03-02T01:15:07Z"), "China time");
    assert_eq!(pay.number(), "S01-20260302-000001");
    assert_eq!(
        (refund.kind, refund.number(), refund.amount_fen, refund.fee_mfen),
        (EntryKind::Refund, "R01-000001", 5_000, -27_000)
    );
    assert_eq!(refund.out_trade_no, "S01-20260302-000001", "a refund row repeats its order");
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_read_past() {
    let with_bom = format!("\u{feff}{}", SAMPLE.replace('\n', "\r\n"));
    let (lines, _) = read(with_bom.as_bytes()).unwrap();
    assert_eq!(lines, read(SAMPLE.as_bytes()).unwrap().0);
}

fn sample_lines() -> Vec<BillLine> {
    let base = BillLine {
        line_no: 0,
        trade_at: at("2026-03-02T01:15:07Z"),
        merchant_id: "1900000101".into(),
        device_id: "DEV-0042".into(),
        channel_txn_id: "4200000000202603020000000001".into(),
        out_trade_no: "S01-000001".into(),
        kind: EntryKind::Payment,
        out_refund_no: String::new(),
        amount_fen: 6_000,
        fee_mfen: 32_000,
        rate_ppm: Some(5_400),
    };
    let refund = BillLine {
        kind: EntryKind::Refund,
        out_refund_no: "R01-1".into(),
        amount_fen: 5_000,
        fee_mfen: -27_000,
        ..base.clone()
    };
    let reversal = BillLine {
        kind: EntryKind::Reversal,
        out_trade_no: "S01-000002".into(),
        amount_fen: 1_234,
        fee_mfen: -7_000,
        ..base.clone()
    };
    vec![base, refund, reversal]
}

fn write(layout: Layout, lines: &[BillLine]) -> Vec<u8> {
    let mut w = BillWriter::new(Vec::new(), layout, "1900000001").unwrap();
    for l in lines {
        w.line(l).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn every_layout_round_trips_through_the_writer_and_is_mapped_by_header_name() {
    let all = sample_lines();
    let cases = [
        (Layout::All, all.clone()),
        (Layout::Legacy, all.clone()),
        (Layout::Success, vec![all[0].clone()]),
        (Layout::Refund, vec![all[1].clone(), all[2].clone()]),
    ];
    for (layout, mut lines) in cases {
        for (i, l) in lines.iter_mut().enumerate() {
            l.line_no = i as u64 + 2;
        }
        let bytes = write(layout, &lines);
        let (read_back, digest) = read(&bytes).unwrap_or_else(|e| panic!("{layout:?}: {e}"));
        assert_eq!(digest.layout, layout);
        assert_eq!(read_back, lines, "{layout:?}");
    }
}

#[test]
fn a_summary_that_does_not_add_up_is_refused_naming_its_line_and_column() {
    let bad = SAMPLE.replace("`2,`60.00,`50.00", "`2,`61.00,`50.00");
    match err(bad.as_bytes()) {
        BillError::SummaryMismatch { line, column, name, stated, computed } => {
            assert_eq!((line, column, name.as_str()), (5, 2, "应结订单总金额"));
            assert_eq!((stated.as_str(), computed.as_str()), ("61.00", "60.00"));
        }
        e => panic!("{e}"),
    }
    let bad = SAMPLE.replace("`2,`60.00", "`3,`60.00");
    assert!(matches!(err(bad.as_bytes()), BillError::SummaryMismatch { line: 5, column: 1, .. }));
    let bad = SAMPLE.replace("`0.05000,", "`0.05001,");
    assert!(matches!(err(bad.as_bytes()), BillError::SummaryMismatch { line: 5, column: 5, .. }));
}

/// Issue 22, fault 6: every total of the summary is checked, the ones that decide nothing too
/// (订单总金额, 申请退款总金额, 充值券退款总金额).
#[test]
fn every_total_of_the_summary_must_add_up() {
    let summary = "`2,`60.00,`50.00,`0.00,`0.05000,`60.00,`50.00";
    for (i, (stated, column, name)) in [
        ("`2,`60.00,`50.00,`0.00,`0.05000,`999999.99,`50.00", 6, "订单总金额"),
        ("`2,`60.00,`50.00,`0.00,`0.05000,`60.00,`12345.67", 7, "申请退款总金额"),
        ("`2,`60.00,`50.00,`77.00,`0.05000,`60.00,`50.00", 4, "充值券退款总金额"),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = SAMPLE.replace(summary, stated);
        match err(bad.as_bytes()) {
            BillError::SummaryMismatch { line: 5, column: c, name: n, .. } => {
                assert_eq!((c, n.as_str()), (column, name))
            }
            e => panic!("case {i}: {e}"),
        }
    }
    // A detail column a total sums is read as money: a bad value names it.
    let bad = SAMPLE.replacen("`60.00,`0.00,`\n", "`6O.00,`0.00,`\n", 1);
    assert!(matches!(err(bad.as_bytes()), BillError::BadValue { line: 2, column: 25, .. }), "{}", err(bad.as_bytes()));
    // The sums agree with the details: the sample itself reads.
    assert!(read(SAMPLE.as_bytes()).is_ok());
}

/// Issue 22, fault 8: a bill re-saved (a byte-order mark, CRLF line ends, trailing spaces,
/// a blank line at the end) is the same bill: the same content hash. A changed value is not.
#[test]
fn a_re_saved_bill_has_the_same_identity() {
    let digest = |text: &str| read(text.as_bytes()).unwrap().1.content_sha256;
    let resaved = format!("\u{feff}{}\r\n", SAMPLE.replace('\n', "  \r\n"));
    assert_eq!(digest(&resaved), digest(SAMPLE));
    let changed = SAMPLE.replace("`groceries,", "`grocery,");
    assert_ne!(digest(&changed), digest(SAMPLE));
}

/// Issue 22, fault 8: `1,000.00` names its column, not a field count.
#[test]
fn a_comma_inside_a_value_names_its_column() {
    let bad = SAMPLE.replacen("`60.00,`0.00,`0,", "`1,000.00,`0.00,`0,", 1);
    match err(bad.as_bytes()) {
        BillError::BadValue { line, column, name, value, .. } => {
            assert_eq!((line, column, name.as_str(), value.as_str()), (2, 13, "应结订单金额", "`1,000.00"));
        }
        e => panic!("{e}"),
    }
    let cut = SAMPLE.replacen("`60.00,`0.00,`0,", "`60.00,`0,", 1);
    assert!(matches!(err(cut.as_bytes()), BillError::FieldCount { line: 2, expected: 27, found: 26 }));
}

#[test]
fn a_truncated_file_is_refused() {
    let lines: Vec<&str> = SAMPLE.lines().collect();
    let no_summary = lines[..3].join("\n");
    assert_eq!(err(no_summary.as_bytes()), BillError::Truncated { line: 4 });
    let cut_mid_line = &SAMPLE[..SAMPLE.find("groceries").unwrap()];
    assert!(matches!(err(cut_mid_line.as_bytes()), BillError::FieldCount { line: 2, expected: 27, .. }));
    let no_values = lines[..4].join("\n");
    assert_eq!(err(no_values.as_bytes()), BillError::Truncated { line: 5 });
    assert!(matches!(err(b""), BillError::Layout { line: 1, .. }));
}

#[test]
fn a_file_in_another_encoding_is_refused_naming_the_line() {
    let mut bytes = SAMPLE.as_bytes().to_vec();
    let second_line = SAMPLE.find('\n').unwrap() + 1;
    bytes[second_line + 5] = 0xb9; // a GBK lead byte in the middle of the date
    assert!(matches!(err(&bytes), BillError::Encoding { line: 2, byte: 6 }));
}

#[test]
fn unknown_and_missing_columns_are_refused_by_name() {
    let unknown = SAMPLE.replacen("费率备注", "费率备注,优惠标签", 1);
    assert_eq!(err(unknown.as_bytes()), BillError::UnknownColumn { line: 1, column: 28, name: "优惠标签".into() });
    let header = "交易时间,商户号,特约商户号,交易状态,应结订单金额,手续费\n";
    assert!(matches!(err(header.as_bytes()), BillError::MissingColumn { line: 1, ref name } if name == "商户订单号"));
}

#[test]
fn bad_values_are_refused_naming_line_column_and_header() {
    let cases = [
        ("`60.00,`0.00,`0,", "`6O.00,`0.00,`0,", 13, "应结订单金额"),
        ("`60.00,`0.00,`0,", "`60.001,`0.00,`0,", 13, "应结订单金额"),
        ("`0.32000,`0.54%", "`0.320001,`0.54%", 23, "手续费"),
        ("`0.32000,`0.54%", "`0.32000,`0.54", 24, "费率"),
        ("`MICROPAY,`SUCCESS", "`MICROPAY,`CLOSED", 10, "交易状态"),
        ("`2026-03-02 09:15:07", "`2026-03-02T09:15:07", 1, "交易时间"),
    ];
    for (from, to, col, header) in cases {
        let bad = SAMPLE.replacen(from, to, 1);
        match err(bad.as_bytes()) {
            BillError::BadValue { line, column, name, .. } => {
                assert_eq!((line, column, name.as_str()), (2, col, header), "{to}");
            }
            e => panic!("{to}: {e}"),
        }
    }
}

#[test]
fn text_after_the_summary_and_overlong_lines_are_refused() {
    let trailing = format!("{SAMPLE}`2026-03-02 09:15:07\n");
    assert!(matches!(err(trailing.as_bytes()), BillError::Layout { line: 6, .. }));
    let long = format!("{}\n", "x".repeat(10_000));
    assert!(matches!(err(long.as_bytes()), BillError::LineTooLong { line: 1, .. }));
}

#[test]
fn the_content_hash_names_the_bill() {
    let a = read(SAMPLE.as_bytes()).unwrap().1.content_sha256;
    assert!(a.len() == 64 && a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
    assert_eq!(a, read(SAMPLE.as_bytes()).unwrap().1.content_sha256);
}

#[test]
fn another_channels_csv_is_read_through_a_column_mapping() {
    let mapping = ColumnMapping::parse(
        "trade_time=time,sub_merchant=shop,out_trade_no=order,trade_status=status,settle_amount=amount,\
         refund_amount=refund,out_refund_no=refund_no,fee=fee",
    )
    .unwrap();
    let csv = "time,shop,order,status,amount,refund,refund_no,fee,note\n\
               2026-03-02 10:00:00,M1,O-1,SUCCESS,12.30,0,,0.07000,hello\n\
               2026-03-02 10:05:00,M1,O-1,REFUND,0,2.00,RF-1,-0.01000,\n";
    let mut r = BillReader::generic(csv.as_bytes(), &mapping).unwrap();
    let a = r.next_line().unwrap().unwrap();
    let b = r.next_line().unwrap().unwrap();
    assert!(r.next_line().unwrap().is_none());
    assert_eq!(r.finish().unwrap().layout, Layout::Generic);
    assert_eq!((a.merchant_id.as_str(), a.amount_fen, a.fee_mfen), ("M1", 1_230, 7_000));
    assert_eq!((b.kind, b.number(), b.amount_fen), (EntryKind::Refund, "RF-1", 200));
    let missing = ColumnMapping::parse("trade_time=when").unwrap();
    assert!(matches!(BillReader::generic(csv.as_bytes(), &missing).err(), Some(BillError::MissingColumn { .. })));
    assert!(ColumnMapping::parse("colour=red").is_err());
}

#[test]
fn decimals_are_read_exactly() {
    assert_eq!(parse_scaled("0.32000", 5), Ok(32_000));
    assert_eq!(parse_scaled("-0.27", 5), Ok(-27_000));
    assert_eq!(parse_scaled("60", 2), Ok(6_000));
    assert!(parse_scaled("1e3", 2).is_err());
    assert!(parse_scaled("1.", 2).is_err());
    assert!(parse_scaled("", 2).is_err());
    assert!(parse_scaled("99999999999999.00", 2).is_err());
}

// ---- classifying -------------------------------------------------------------------------

fn entry(merchant: &str, kind: EntryKind, number: &str, amount_fen: i64, fee_fen: i64, when: &str) -> LedgerEntry {
    LedgerEntry {
        merchant_id: merchant.into(),
        kind,
        number: number.into(),
        out_trade_no: if kind == EntryKind::Refund { format!("O-{number}") } else { number.into() },
        amount_fen,
        fee_fen,
        status: OrderStatus::Paid,
        occurred_at: at(when),
    }
}

fn paid(number: &str, amount_fen: i64) -> LedgerEntry {
    entry("M1", EntryKind::Payment, number, amount_fen, amount_fen * 54 / 10_000, "2026-03-02T04:00:00Z")
}

/// Sorts both sides (as the database does) and collects the findings.
fn run(mut lines: Vec<BillLine>, mut entries: Vec<LedgerEntry>) -> Vec<Finding> {
    lines.sort_by(|a, b| a.key().cmp(&b.key()).then(a.line_no.cmp(&b.line_no)));
    entries.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut out = Vec::new();
    reconcile::<()>(day(), lines.into_iter().map(Ok), entries.into_iter().map(Ok), |f| {
        out.push(f);
        Ok(())
    })
    .unwrap();
    out
}

fn classes(findings: &[Finding]) -> Vec<Class> {
    findings.iter().map(|f| f.class).collect()
}

#[test]
fn a_line_and_its_entry_agreeing_are_matched() {
    let e = paid("O-1", 6_000);
    let f = run(vec![e.to_bill_line(2, None)], vec![e]);
    assert_eq!(classes(&f), [Class::Matched]);
}

#[test]
fn a_line_with_no_entry_is_missing_in_the_ledger_and_an_entry_with_no_line_missing_in_the_bill() {
    let (a, b) = (paid("O-1", 6_000), paid("O-2", 700));
    let f = run(vec![a.to_bill_line(2, None)], vec![b.clone()]);
    assert_eq!(classes(&f), [Class::MissingInLedger, Class::MissingInBill]);
    assert!(f.iter().all(|f| !f.near_midnight), "noon is far from midnight");
}

#[test]
fn amounts_then_fees_are_compared() {
    let e = paid("O-1", 6_000);
    let mut typo = e.to_bill_line(2, None);
    typo.amount_fen = 6_100;
    assert_eq!(classes(&run(vec![typo], vec![e.clone()])), [Class::AmountMismatch]);
    let mut fee = e.to_bill_line(2, None);
    fee.fee_mfen += 1;
    assert_eq!(classes(&run(vec![fee], vec![e])), [Class::FeeMismatch]);
}

#[test]
fn refunds_match_with_the_fee_returned_as_a_negative_fee() {
    let r = entry("M1", EntryKind::Refund, "RF-1", 5_000, -27, "2026-03-02T04:00:00Z");
    let line = r.to_bill_line(2, None);
    assert_eq!((line.kind, line.fee_mfen), (EntryKind::Refund, -27_000));
    assert_eq!(classes(&run(vec![line], vec![r])), [Class::Matched]);
}

#[test]
fn a_bill_success_for_an_order_the_ledger_has_unpaid_is_a_status_mismatch() {
    for status in [OrderStatus::Declined, OrderStatus::Revoked, OrderStatus::Reversed] {
        let e = LedgerEntry { status, fee_fen: 0, ..paid("O-1", 6_000) };
        let line = paid("O-1", 6_000).to_bill_line(2, None);
        assert_eq!(classes(&run(vec![line], vec![e])), [Class::StatusMismatch], "{status:?}");
    }
}

#[test]
fn an_unpaid_order_absent_from_the_bill_is_no_finding() {
    let e = LedgerEntry { status: OrderStatus::Declined, ..paid("O-1", 6_000) };
    assert!(run(vec![], vec![e]).is_empty());
}

#[test]
fn a_second_line_with_the_same_key_is_a_duplicate() {
    let e = paid("O-1", 6_000);
    let f = run(vec![e.to_bill_line(2, None), e.to_bill_line(3, None)], vec![e]);
    assert_eq!(classes(&f), [Class::Matched, Class::DuplicateLine]);
    assert_eq!(f[1].bill.as_ref().unwrap().line_no, 3);
}

/// The held findings of a merge, after the second look by channel transaction id.
fn rescued(lines: Vec<BillLine>, entries: Vec<LedgerEntry>) -> Vec<Finding> {
    let mut held: Vec<Finding> = run(lines, entries.clone()).into_iter().filter(|f| f.class.is_break()).collect();
    let Some(mut rescue) = TxnRescue::new(&mut held) else { return held };
    for e in &entries {
        rescue.offer(&mut held, e);
    }
    rescue.finish(held)
}

#[test]
fn a_line_whose_order_number_was_mangled_is_paired_by_its_channel_transaction_id() {
    // Given O-1 printed as O-1X (same channel id, same money) and O-2 as O-2X with 1.00 more,
    let (a, b) = (paid("O-1", 6_000), paid("O-2", 700));
    let mut la = a.to_bill_line(2, None);
    la.out_trade_no = "O-1X".into();
    let mut lb = b.to_bill_line(3, None);
    (lb.out_trade_no, lb.amount_fen) = ("O-2X".into(), 800);
    // when the merge's leftovers are looked at again,
    let f = rescued(vec![la, lb], vec![a, b]);
    // then both lines are paired, the entries are no longer missing, and it says how.
    assert_eq!(classes(&f), [Class::Matched, Class::AmountMismatch]);
    assert!(f.iter().all(|f| f.by_txn_id && f.ledger.is_some()));
    assert!(f[1].detail().contains("\"O-2X\" is the ledger's \"O-2\""), "{}", f[1].detail());
}

#[test]
fn a_transaction_id_seen_twice_or_on_an_unpaid_order_is_a_duplicate_or_a_status_mismatch() {
    let (a, unpaid) = (paid("O-1", 6_000), LedgerEntry { status: OrderStatus::Declined, ..paid("O-2", 700) });
    let mut again = a.to_bill_line(3, None);
    again.out_trade_no = "O-1-AGAIN".into(); // O-1 matched by its own line already
    let mut late = unpaid.to_bill_line(4, None);
    late.out_trade_no = "O-2X".into();
    let mut late2 = late.clone();
    (late2.line_no, late2.out_trade_no) = (5, "O-2Y".into());
    let f = rescued(vec![a.to_bill_line(2, None), again, late, late2], vec![a, unpaid]);
    let by_line: Vec<(u64, Class)> = f.iter().map(|f| (f.bill.as_ref().unwrap().line_no, f.class)).collect();
    assert_eq!(by_line, [(3, Class::DuplicateLine), (4, Class::StatusMismatch), (5, Class::DuplicateLine)]);
    // A line with an id the ledger has no order for stays missing.
    let mut lost = paid("O-9", 100).to_bill_line(2, None);
    lost.channel_txn_id = "4200000000999999999999999999".into();
    assert_eq!(classes(&rescued(vec![lost], vec![])), [Class::MissingInLedger]);
}

#[test]
fn near_midnight_findings_become_timing_differences_when_found_in_the_next_day() {
    // 23:59:58 China time on 03-02: the channel booked it on 03-03.
    let e = entry("M1", EntryKind::Payment, "O-9", 800, 4, "2026-03-02T15:59:58Z");
    let f = run(vec![], vec![e]);
    assert_eq!(classes(&f), [Class::MissingInBill]);
    assert!(f[0].near_midnight);
    let next = NaiveDate::from_ymd_opt(2026, 3, 3).unwrap();
    let mut settled = f[0].clone();
    settle_timing(&mut settled, day(), Some(Counterpart { day: next, amount_fen: 800 }));
    assert_eq!(settled.class, Class::TimingDifference);
    let mut other_amount = f[0].clone();
    settle_timing(&mut other_amount, day(), Some(Counterpart { day: next, amount_fen: 801 }));
    assert_eq!(other_amount.class, Class::MissingInBill, "another amount is not the same payment");
    let mut not_found = f[0].clone();
    settle_timing(&mut not_found, day(), None);
    assert_eq!(not_found.class, Class::MissingInBill);
    let far = NaiveDate::from_ymd_opt(2026, 3, 5).unwrap();
    let mut far_away = f[0].clone();
    settle_timing(&mut far_away, day(), Some(Counterpart { day: far, amount_fen: 800 }));
    assert_eq!(far_away.class, Class::MissingInBill, "only the neighbouring days");
}

#[test]
fn the_timing_window_spans_both_midnights_of_the_day() {
    assert!(near_midnight(at("2026-03-01T16:00:10Z"), day()), "just after the day began");
    assert!(near_midnight(at("2026-03-02T15:59:59Z"), day()), "just before it ends");
    assert!(!near_midnight(at("2026-03-02T04:00:00Z"), day()));
}

#[test]
fn the_report_counts_and_sums_by_class_per_merchant_and_in_total() {
    let (a, b) = (paid("O-1", 6_000), entry("M2", EntryKind::Payment, "O-2", 700, 4, "2026-03-02T04:00:00Z"));
    let mut typo = b.to_bill_line(3, None);
    typo.amount_fen = 7_000;
    let mut report = Report::default();
    for f in run(vec![a.to_bill_line(2, None), typo], vec![a, b]) {
        report.add(&f);
    }
    assert_eq!((report.bill_lines, report.ledger_entries, report.breaks), (2, 2, 1));
    assert_eq!(report.totals[&Class::AmountMismatch].bill_fen, 7_000);
    assert_eq!(report.totals[&Class::AmountMismatch].ledger_fen, 700);
    assert_eq!(report.merchants["M1"][&Class::Matched].count, 1);
    assert_eq!(report.merchants["M2"][&Class::AmountMismatch].count, 1);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["totals"]["amount_mismatch"]["count"], 1);
}

#[test]
#[should_panic(expected = "sorted")]
fn unsorted_input_is_a_bug_not_a_result() {
    let (a, b) = (paid("O-2", 1), paid("O-1", 1));
    let lines = vec![a.to_bill_line(2, None), b.to_bill_line(3, None)];
    let _ = reconcile::<()>(day(), lines.into_iter().map(Ok), std::iter::empty(), |_| Ok(()));
}

// ---- properties --------------------------------------------------------------------------

/// A day of ledger entries with unique keys, mid-day (far from both midnights).
fn ledger_day() -> impl Strategy<Value = Vec<LedgerEntry>> {
    prop::collection::vec((0..3_usize, 0..3_usize, 1..100_000_i64, 0..6_000_i64, any::<bool>()), 1..60).prop_map(
        |raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (m, k, amount_fen, second, unpaid))| {
                    let kind = [EntryKind::Payment, EntryKind::Refund, EntryKind::Reversal][k];
                    let fee_fen = (amount_fen * 54 + 5_000) / 10_000;
                    let when = at("2026-03-02T02:00:00Z") + chrono::Duration::seconds(second);
                    LedgerEntry {
                        merchant_id: format!("M{m}"),
                        kind,
                        number: format!("N-{i:04}"),
                        out_trade_no: if kind == EntryKind::Refund { format!("O-{i:04}") } else { format!("N-{i:04}") },
                        amount_fen,
                        fee_fen: if kind == EntryKind::Payment { fee_fen } else { -fee_fen },
                        status: if unpaid && kind == EntryKind::Payment {
                            OrderStatus::Declined
                        } else {
                            OrderStatus::Paid
                        },
                        occurred_at: when,
                    }
                })
                .collect()
        },
    )
}

/// The bill the channel prints for a ledger day: one line per money-moving entry.
fn bill_of(entries: &[LedgerEntry]) -> Vec<BillLine> {
    entries
        .iter()
        .filter(|e| e.status == OrderStatus::Paid)
        .enumerate()
        .map(|(i, e)| e.to_bill_line(i as u64 + 2, None))
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Mutation {
    DropLine,
    ForeignLine,
    Amount,
    Fee,
    Duplicate,
    UnpaidInLedger,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_bill_generated_from_the_ledger_reconciles_to_zero_breaks(entries in ledger_day()) {
        let lines = bill_of(&entries);
        let f = run(lines.clone(), entries);
        prop_assert!(f.iter().all(|f| f.class == Class::Matched), "{:?}", classes(&f));
        prop_assert_eq!(f.len(), lines.len());
    }

    #[test]
    fn each_planted_mutation_is_reported_as_exactly_its_class(
        entries in ledger_day(),
        pick in any::<prop::sample::Index>(),
        m in prop::sample::select(vec![
            Mutation::DropLine, Mutation::ForeignLine, Mutation::Amount,
            Mutation::Fee, Mutation::Duplicate, Mutation::UnpaidInLedger,
        ]),
    ) {
        let mut entries = entries;
        let mut lines = bill_of(&entries);
        prop_assume!(!lines.is_empty());
        let i = pick.index(lines.len());
        let expected = match m {
            Mutation::DropLine => { lines.remove(i); Class::MissingInBill }
            Mutation::ForeignLine => {
                let mut l = lines[i].clone();
                l.out_trade_no = "FOREIGN".into();
                l.out_refund_no = if l.kind == EntryKind::Refund { "FOREIGN".into() } else { String::new() };
                l.line_no = 10_000;
                lines.push(l);
                Class::MissingInLedger
            }
            Mutation::Amount => { lines[i].amount_fen += 1; Class::AmountMismatch }
            Mutation::Fee => { lines[i].fee_mfen += 10; Class::FeeMismatch }
            Mutation::Duplicate => {
                let mut l = lines[i].clone();
                l.line_no = 10_000;
                lines.push(l);
                Class::DuplicateLine
            }
            Mutation::UnpaidInLedger => {
                let key = lines[i].key();
                let key = (key.0.to_string(), key.1, key.2.to_string());
                let e = entries.iter_mut().find(|e| e.key() == (key.0.as_str(), key.1, key.2.as_str())).unwrap();
                prop_assume!(e.kind == EntryKind::Payment);
                e.status = OrderStatus::Declined;
                Class::StatusMismatch
            }
        };
        let f = run(lines, entries);
        let breaks: Vec<Class> = f.iter().map(|f| f.class).filter(|c| c.is_break()).collect();
        prop_assert_eq!(breaks, vec![expected]);
    }
}
