//! The channel's daily bill (WeChat Pay 对账单): read line by line, and written.
//!
//! [`BillReader`] streams a bill: it maps the header's columns by **name** (the ALL, SUCCESS,
//! REFUND and legacy 24-column layouts, or a [`ColumnMapping`] for another channel's CSV),
//! strips the byte-order mark and the backtick each field carries, reads yuan amounts and
//! 5-decimal fees into integers (fen, thousandths of a fen), hashes the bytes as they pass
//! (the import's identity), and checks the summary line against the rows. Every error names
//! the line (1-based) and, where there is one, the column (1-based, with its header name).
//! Memory is one line, whatever the file's size.
//!
//! [`BillWriter`] writes a bill the way the channel does (any of the four layouts), for the
//! demo, the tests and the benchmark.

use std::io::{BufRead, Read, Write};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use facepay_domain::limits::{BILL_COLUMNS_MAX, BILL_LINE_BYTES_MAX};
use facepay_domain::time::shanghai;
use sha2::{Digest, Sha256};

use super::EntryKind;

/// Fees are printed with 5 decimals of a yuan: one unit is a thousandth of a fen.
pub const MFEN_PER_FEN: i64 = 1_000;

/// A bill that cannot be read: nothing of it is imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    #[error("line {line}, byte {byte}: not UTF-8 (a bill must be UTF-8; re-save a GBK file as UTF-8)")]
    Encoding { line: u64, byte: usize },
    #[error("line {line}: longer than {max} bytes (not a bill, or no line breaks)")]
    LineTooLong { line: u64, max: usize },
    #[error("line {line}, column {column} ({name}): unknown column")]
    UnknownColumn { line: u64, column: usize, name: String },
    #[error("line {line}: the header has no column {name}")]
    MissingColumn { line: u64, name: String },
    #[error("line {line}: {found} fields where the header has {expected} (truncated line?)")]
    FieldCount { line: u64, expected: usize, found: usize },
    #[error("line {line}, column {column} ({name}): {message}: {value:?}")]
    BadValue { line: u64, column: usize, name: String, value: String, message: &'static str },
    #[error("line {line}: the file ends before its summary line (truncated?)")]
    Truncated { line: u64 },
    #[error("line {line}, column {column} ({name}): the summary says {stated}, the rows add up to {computed}")]
    SummaryMismatch { line: u64, column: usize, name: String, stated: String, computed: String },
    #[error("line {line}: {message}")]
    Layout { line: u64, message: &'static str },
    #[error(
        "line {line}: its transaction time {trade_at} falls on {trade_day}, not on the bill's day {day} \
         (nor within its midnights' timing window)"
    )]
    OffDay { line: u64, trade_at: String, trade_day: chrono::NaiveDate, day: chrono::NaiveDate },
    #[error("reading the bill: {0}")]
    Io(String),
}

/// Which layout the header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// ALL bill, 27 columns.
    All,
    /// SUCCESS bill, 20 columns (payments only).
    Success,
    /// REFUND bill, 29 columns (refunds only).
    Refund,
    /// The older 24-column ALL bill.
    Legacy,
    /// Another channel's CSV, read through a [`ColumnMapping`].
    Generic,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::All => "all",
            Layout::Success => "success",
            Layout::Refund => "refund",
            Layout::Legacy => "legacy",
            Layout::Generic => "generic",
        }
    }

    /// The detail columns of a WeChat layout, in the channel's order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Layout::All => &ALL_COLUMNS,
            Layout::Success => &SUCCESS_COLUMNS,
            Layout::Refund => &REFUND_COLUMNS,
            Layout::Legacy => &LEGACY_COLUMNS,
            Layout::Generic => &[],
        }
    }

    fn summary_columns(self) -> &'static [&'static str] {
        match self {
            Layout::Legacy => &LEGACY_SUMMARY,
            _ => &SUMMARY,
        }
    }
}

const ALL_COLUMNS: [&str; 27] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];
const SUCCESS_COLUMNS: [&str; 20] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "费率备注",
];
const REFUND_COLUMNS: [&str; 29] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单金额",
    "代金券金额",
    "退款申请时间",
    "退款成功时间",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
];
const LEGACY_COLUMNS: [&str; 24] = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "子商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "总金额",
    "代金券或立减优惠金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "代金券或立减优惠退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
];
const SUMMARY: [&str; 7] =
    ["总交易单数", "应结订单总金额", "退款总金额", "充值券退款总金额", "手续费总金额", "订单总金额", "申请退款总金额"];
const LEGACY_SUMMARY: [&str; 5] =
    ["总交易单数", "总交易额", "总退款金额", "总代金券或立减优惠退款金额", "手续费总金额"];

/// The summary's totals of detail columns that decide nothing but must still add up: each
/// summary name with the detail column it sums (2 places; a layout without the column sums
/// to zero).
const SUMMED_ONLY: [(&str, &str); 4] = [
    ("订单总金额", "订单金额"),
    ("申请退款总金额", "申请退款金额"),
    ("充值券退款总金额", "充值券退款金额"),
    ("总代金券或立减优惠退款金额", "代金券或立减优惠退款金额"),
];

/// What the importer needs from a detail line; every other column is carried by no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    TradeTime,
    /// The account the bill belongs to (the service provider's merchant number).
    Account,
    /// The sub-merchant: facepay's merchant id (`0`, or absent, for a direct merchant).
    SubMerchant,
    Device,
    ChannelTxnId,
    OutTradeNo,
    TradeStatus,
    SettleAmount,
    OutRefundNo,
    RefundAmount,
    Fee,
    Rate,
}

const FIELDS: [Field; 12] = [
    Field::TradeTime,
    Field::Account,
    Field::SubMerchant,
    Field::Device,
    Field::ChannelTxnId,
    Field::OutTradeNo,
    Field::TradeStatus,
    Field::SettleAmount,
    Field::OutRefundNo,
    Field::RefundAmount,
    Field::Fee,
    Field::Rate,
];

/// The WeChat header names of each field (the legacy layout's names second).
fn wechat_names(f: Field) -> &'static [&'static str] {
    match f {
        Field::TradeTime => &["交易时间"],
        Field::Account => &["商户号"],
        Field::SubMerchant => &["特约商户号", "子商户号"],
        Field::Device => &["设备号"],
        Field::ChannelTxnId => &["微信订单号"],
        Field::OutTradeNo => &["商户订单号"],
        Field::TradeStatus => &["交易状态"],
        Field::SettleAmount => &["应结订单金额", "总金额"],
        Field::OutRefundNo => &["商户退款单号"],
        Field::RefundAmount => &["退款金额"],
        Field::Fee => &["手续费"],
        Field::Rate => &["费率"],
    }
}

/// How to read another channel's CSV: the header name of each field. Columns it does not
/// name are ignored; `summary` says whether the file ends with a WeChat-style summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    pub names: Vec<(Field, String)>,
    pub summary: bool,
}

impl ColumnMapping {
    /// Parses `field=Header,field=Header,…` (fields: trade_time, account, sub_merchant,
    /// device, channel_txn_id, out_trade_no, trade_status, settle_amount, out_refund_no,
    /// refund_amount, fee, rate).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut names = Vec::new();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (field, header) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected field=Header"))?;
            let field = match field.trim() {
                "trade_time" => Field::TradeTime,
                "account" => Field::Account,
                "sub_merchant" => Field::SubMerchant,
                "device" => Field::Device,
                "channel_txn_id" => Field::ChannelTxnId,
                "out_trade_no" => Field::OutTradeNo,
                "trade_status" => Field::TradeStatus,
                "settle_amount" => Field::SettleAmount,
                "out_refund_no" => Field::OutRefundNo,
                "refund_amount" => Field::RefundAmount,
                "fee" => Field::Fee,
                "rate" => Field::Rate,
                other => return Err(format!("unknown field {other:?}")),
            };
            names.push((field, header.trim().to_string()));
        }
        Ok(Self { names, summary: false })
    }
}

/// One detail line of a bill, as the importer keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillLine {
    pub line_no: u64,
    pub trade_at: DateTime<Utc>,
    /// facepay's merchant: the sub-merchant, or the account for a direct merchant.
    pub merchant_id: String,
    pub device_id: String,
    pub channel_txn_id: String,
    pub out_trade_no: String,
    pub kind: EntryKind,
    /// The refund number (refund rows), else empty.
    pub out_refund_no: String,
    /// The payment's settlement amount, or the refund's / reversal's amount: always > 0.
    pub amount_fen: i64,
    /// Signed, in thousandths of a fen: negative on refund rows (the fee goes back).
    pub fee_mfen: i64,
    pub rate_ppm: Option<i64>,
}

impl BillLine {
    /// The number the line is matched by: the refund number for a refund, else the order's.
    pub fn number(&self) -> &str {
        match self.kind {
            EntryKind::Refund => &self.out_refund_no,
            _ => &self.out_trade_no,
        }
    }

    /// The key the matcher sorts and joins on.
    pub fn key(&self) -> (&str, EntryKind, &str) {
        (&self.merchant_id, self.kind, self.number())
    }
}

/// Sums of the detail rows, as the summary line states them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BillTotals {
    pub lines: u64,
    pub settle_fen: i64,
    pub refund_fen: i64,
    pub fee_mfen: i64,
}

/// What a fully read bill was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillDigest {
    /// SHA-256 of the file's content, hex: the import's identity. The content is its lines
    /// without a byte-order mark, line endings or trailing whitespace, blank lines skipped:
    /// the same bill however it was saved.
    pub content_sha256: String,
    pub layout: Layout,
    /// The bill's account (商户号 of its rows), when it has rows.
    pub account: Option<String>,
    pub totals: BillTotals,
}

/// Where each field is in a line, with its header name.
#[derive(Debug, Clone, Default)]
struct Columns {
    at: [Option<(usize, String)>; FIELDS.len()],
}

impl Columns {
    fn get(&self, f: Field) -> Option<&(usize, String)> {
        self.at[f as usize].as_ref()
    }
}

/// A streaming reader of one bill. Call [`BillReader::next_line`] until it answers `None`,
/// then [`BillReader::finish`].
pub struct BillReader<R: BufRead> {
    src: LineSource<R>,
    layout: Layout,
    columns: Columns,
    width: usize,
    /// The header's column names, to name a column in an error.
    header: Vec<String>,
    expect_summary: bool,
    totals: BillTotals,
    /// For each of [`SUMMED_ONLY`]: its detail column, when the header has it, and its sum.
    summed: [(Option<usize>, i64); SUMMED_ONLY.len()],
    account: Option<String>,
    done: bool,
}

impl<R: BufRead> BillReader<R> {
    /// Reads the header of a WeChat bill (any of its layouts).
    pub fn wechat(input: R) -> Result<Self, BillError> {
        Self::open(input, None)
    }

    /// Reads the header of another channel's CSV through `mapping`.
    pub fn generic(input: R, mapping: &ColumnMapping) -> Result<Self, BillError> {
        Self::open(input, Some(mapping))
    }

    fn open(input: R, mapping: Option<&ColumnMapping>) -> Result<Self, BillError> {
        let mut r = Self {
            src: LineSource { input, hasher: Sha256::new(), line_no: 0, buf: Vec::with_capacity(512) },
            layout: Layout::Generic,
            columns: Columns::default(),
            width: 0,
            header: Vec::new(),
            expect_summary: mapping.is_none_or(|m| m.summary),
            totals: BillTotals::default(),
            summed: [(None, 0); SUMMED_ONLY.len()],
            account: None,
            done: false,
        };
        let header: Vec<String> = match r.src.next()? {
            Some(line) => split_fields(line).map(str::to_string).collect(),
            None => return Err(BillError::Layout { line: 1, message: "empty file: no header line" }),
        };
        if header.len() > BILL_COLUMNS_MAX {
            return Err(BillError::Layout { line: 1, message: "more columns than any bill has" });
        }
        r.width = header.len();
        match mapping {
            None => r.map_wechat(&header)?,
            Some(m) => r.map_generic(&header, m)?,
        }
        r.header = header;
        Ok(r)
    }

    fn map_wechat(&mut self, header: &[String]) -> Result<(), BillError> {
        let known = |n: &str| {
            [Layout::All, Layout::Success, Layout::Refund, Layout::Legacy].iter().any(|l| l.columns().contains(&n))
        };
        if let Some((i, name)) = header.iter().enumerate().find(|(_, n)| !known(n)) {
            return Err(BillError::UnknownColumn { line: 1, column: i + 1, name: name.clone() });
        }
        let has = |n: &str| header.iter().any(|h| h == n);
        self.layout = if has("总金额") {
            Layout::Legacy
        } else if has("退款申请时间") {
            Layout::Refund
        } else if has("退款金额") {
            Layout::All
        } else {
            Layout::Success
        };
        for f in FIELDS {
            let found = header.iter().position(|h| wechat_names(f).contains(&h.as_str()));
            self.columns.at[f as usize] = found.map(|i| (i, header[i].clone()));
        }
        for (k, (_, column)) in SUMMED_ONLY.iter().enumerate() {
            self.summed[k].0 = header.iter().position(|h| h == column);
        }
        let mut required =
            vec![Field::TradeTime, Field::OutTradeNo, Field::TradeStatus, Field::SettleAmount, Field::Fee];
        required.push(Field::Account);
        if self.layout != Layout::Success {
            required.extend([Field::OutRefundNo, Field::RefundAmount]);
        }
        self.require(&required, |f| wechat_names(f)[0].to_string())
    }

    fn map_generic(&mut self, header: &[String], m: &ColumnMapping) -> Result<(), BillError> {
        for (f, name) in &m.names {
            let found = header.iter().position(|h| h == name);
            match found {
                Some(i) => self.columns.at[*f as usize] = Some((i, name.clone())),
                None => return Err(BillError::MissingColumn { line: 1, name: name.clone() }),
            }
        }
        let required = [Field::TradeTime, Field::OutTradeNo, Field::TradeStatus, Field::SettleAmount];
        self.require(&required, |f| format!("{f:?}"))?;
        if self.columns.get(Field::Account).is_none() && self.columns.get(Field::SubMerchant).is_none() {
            return Err(BillError::MissingColumn { line: 1, name: "account or sub_merchant".into() });
        }
        Ok(())
    }

    fn require(&self, fields: &[Field], name: impl Fn(Field) -> String) -> Result<(), BillError> {
        match fields.iter().find(|f| self.columns.get(**f).is_none()) {
            Some(f) => Err(BillError::MissingColumn { line: 1, name: name(*f) }),
            None => Ok(()),
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The next detail line; `None` once the details end (the summary was read and checked,
    /// or, for a generic CSV without a summary, the file ended).
    pub fn next_line(&mut self) -> Result<Option<BillLine>, BillError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let line_no = self.src.line_no + 1;
            let Some(text) = self.src.next()? else {
                if self.expect_summary {
                    return Err(BillError::Truncated { line: line_no });
                }
                self.done = true;
                return Ok(None);
            };
            if text.trim().is_empty() {
                continue;
            }
            let mut fields: Vec<&str> = Vec::with_capacity(self.width);
            fields.extend(split_fields(text));
            if self.expect_summary && fields.first() == Some(&SUMMARY[0]) {
                let names: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
                self.read_summary(&names)?;
                self.done = true;
                return Ok(None);
            }
            if fields.len() != self.width {
                return Err(field_count(self.layout, &self.header, text, line_no, fields.len()));
            }
            let parsed = parse_detail(&self.columns, &fields, line_no)?;
            // The summary's columns sum the raw columns.
            let settle = column_value(&self.columns, &fields, Field::SettleAmount, line_no, 2, true)?;
            let refund = column_value(&self.columns, &fields, Field::RefundAmount, line_no, 2, true)?;
            self.totals.lines += 1;
            self.totals.fee_mfen += parsed.fee_mfen;
            self.totals.settle_fen += settle.unwrap_or(0);
            self.totals.refund_fen += refund.unwrap_or(0);
            for ((column, sum), (_, name)) in self.summed.iter_mut().zip(SUMMED_ONLY) {
                if let Some(i) = *column {
                    *sum += scaled_at(&fields, i, name, line_no, 2, true)?;
                }
            }
            let account = self.columns.get(Field::Account).map_or("", |(i, _)| fields[*i]);
            if self.account.is_none() && !account.is_empty() {
                self.account = Some(account.to_string());
            }
            return Ok(Some(parsed));
        }
    }

    /// Reads the summary's value line and checks it against the rows.
    fn read_summary(&mut self, names: &[String]) -> Result<(), BillError> {
        let line_no = self.src.line_no + 1;
        let values: Vec<String> = match self.src.next()? {
            Some(t) => split_fields(t).map(str::to_string).collect(),
            None => return Err(BillError::Truncated { line: line_no }),
        };
        if values.len() != names.len() {
            return Err(BillError::FieldCount { line: line_no, expected: names.len(), found: values.len() });
        }
        let totals = self.totals;
        for (i, (name, value)) in names.iter().zip(&values).enumerate() {
            let summed = SUMMED_ONLY.iter().position(|(total, _)| total == name).map(|k| self.summed[k].1);
            let (places, computed) = match name.as_str() {
                _ if summed.is_some() => (2, summed.unwrap_or(0)),
                "总交易单数" => (0, totals.lines as i64),
                "应结订单总金额" | "总交易额" => (2, totals.settle_fen),
                "退款总金额" | "总退款金额" => (2, totals.refund_fen),
                "手续费总金额" => (5, totals.fee_mfen),
                n if self.layout.summary_columns().contains(&n) || self.layout == Layout::Generic => continue,
                _ => {
                    return Err(BillError::UnknownColumn { line: line_no - 1, column: i + 1, name: name.clone() });
                }
            };
            let bad = |message| BillError::BadValue {
                line: line_no,
                column: i + 1,
                name: name.clone(),
                value: value.clone(),
                message,
            };
            let stated = parse_scaled(value, places).map_err(bad)?;
            if stated != computed {
                return Err(BillError::SummaryMismatch {
                    line: line_no,
                    column: i + 1,
                    name: name.clone(),
                    stated: value.clone(),
                    computed: format_scaled(computed, places),
                });
            }
        }
        loop {
            let line = self.src.line_no + 1;
            match self.src.next()? {
                None => break,
                Some(rest) if rest.trim().is_empty() => {}
                Some(_) => return Err(BillError::Layout { line, message: "text after the summary line" }),
            }
        }
        Ok(())
    }

    /// Reads whatever is left (nothing, in a well-formed bill) and returns the digest.
    pub fn finish(mut self) -> Result<BillDigest, BillError> {
        while self.next_line()?.is_some() {}
        Ok(BillDigest {
            content_sha256: self.src.hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            layout: self.layout,
            account: self.account,
            totals: self.totals,
        })
    }
}

/// Why a detail line has `found` fields where the header has `header.len()`: in a WeChat
/// bill (every field after a backtick), a field without one is the rest of a value with a
/// comma in it (`1,000.00`), named by its column; otherwise a line cut short or run long.
fn field_count(layout: Layout, header: &[String], text: &str, line: u64, found: usize) -> BillError {
    let split = match layout {
        Layout::Generic => None,
        _ => text.split(',').skip(1).position(|f| !f.trim().starts_with('`')),
    };
    match split {
        Some(column) if column < header.len() => BillError::BadValue {
            line,
            column: column + 1,
            name: header[column].clone(),
            value: text.split(',').skip(column).take(2).collect::<Vec<_>>().join(","),
            message: "a comma inside a value (amounts are written 1000.00, with no separator)",
        },
        _ => BillError::FieldCount { line, expected: header.len(), found },
    }
}

/// The byte-order mark, UTF-8.
const BOM: &[u8] = "\u{feff}".as_bytes();

/// The file's lines, hashed as they pass.
struct LineSource<R: BufRead> {
    input: R,
    hasher: Sha256,
    line_no: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> LineSource<R> {
    /// The next line; `None` at the end of the file. Strips the line break, a carriage
    /// return, and (on line 1) the byte-order mark.
    fn next(&mut self) -> Result<Option<&str>, BillError> {
        self.buf.clear();
        let limit = (BILL_LINE_BYTES_MAX + 2) as u64;
        let n =
            (&mut self.input).take(limit).read_until(b'\n', &mut self.buf).map_err(|e| BillError::Io(e.to_string()))?;
        if n == 0 {
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.len() > BILL_LINE_BYTES_MAX && self.buf.last() != Some(&b'\n') {
            return Err(BillError::LineTooLong { line: self.line_no, max: BILL_LINE_BYTES_MAX });
        }
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        let line = self.line_no;
        // Line 1 may start with byte-order marks: not part of the bill.
        let mut bom = 0;
        while line == 1 && self.buf[bom..].starts_with(BOM) {
            bom += BOM.len();
        }
        self.hash_content(bom);
        let text = std::str::from_utf8(&self.buf[bom..])
            .map_err(|e| BillError::Encoding { line, byte: bom + e.valid_up_to() + 1 })?;
        Ok(Some(text))
    }

    /// Adds the current line, from byte `from`, to the content's hash as the bill says it,
    /// not as it was saved: without trailing whitespace, with one `\n` after it, and nothing
    /// for a blank line. A re-save (BOM, CRLF, a trailing blank line) is the same bill.
    fn hash_content(&mut self, from: usize) {
        let content = self.buf[from..].trim_ascii_end();
        if !content.is_empty() {
            self.hasher.update(content);
            self.hasher.update(b"\n");
        }
    }
}

/// Splits a line on commas and strips each field's backtick (and spaces around it).
fn split_fields(line: &str) -> impl Iterator<Item = &str> {
    line.split(',').map(|f| f.trim().strip_prefix('`').unwrap_or(f.trim()))
}

/// One detail line's fields into a [`BillLine`].
fn parse_detail(cols: &Columns, fields: &[&str], line_no: u64) -> Result<BillLine, BillError> {
    let text = |f: Field| cols.get(f).map_or("", |(i, _)| fields[*i]);
    let bad = |f: Field, message: &'static str| {
        let (i, name) = cols.get(f).cloned().unwrap_or((0, String::new()));
        BillError::BadValue { line: line_no, column: i + 1, name, value: fields[i].to_string(), message }
    };
    let trade_at =
        parse_china_time(text(Field::TradeTime)).ok_or_else(|| bad(Field::TradeTime, "not yyyy-MM-dd HH:mm:ss"))?;
    let kind = match text(Field::TradeStatus) {
        "SUCCESS" => EntryKind::Payment,
        "REFUND" => EntryKind::Refund,
        "REVOKED" => EntryKind::Reversal,
        _ => return Err(bad(Field::TradeStatus, "not SUCCESS, REFUND or REVOKED")),
    };
    let sub = text(Field::SubMerchant);
    let merchant_id = if sub.is_empty() || sub == "0" { text(Field::Account) } else { sub };
    if merchant_id.is_empty() {
        return Err(bad(Field::Account, "no merchant"));
    }
    let out_trade_no = text(Field::OutTradeNo);
    if out_trade_no.is_empty() || out_trade_no.len() > 64 {
        return Err(bad(Field::OutTradeNo, "an order number is required"));
    }
    let settle_fen = column_value(cols, fields, Field::SettleAmount, line_no, 2, true)?.unwrap_or(0);
    let refund_fen = column_value(cols, fields, Field::RefundAmount, line_no, 2, true)?.unwrap_or(0);
    let (amount_fen, amount_field) = match kind {
        EntryKind::Payment => (settle_fen, Field::SettleAmount),
        EntryKind::Reversal if refund_fen == 0 => (settle_fen, Field::SettleAmount),
        _ => (refund_fen, Field::RefundAmount),
    };
    if amount_fen <= 0 {
        return Err(bad(amount_field, "the amount of a SUCCESS, REFUND or REVOKED row must be above 0.00"));
    }
    let out_refund_no = text(Field::OutRefundNo);
    if kind == EntryKind::Refund && (out_refund_no.is_empty() || out_refund_no == "0") {
        return Err(bad(Field::OutRefundNo, "a refund row needs its refund number"));
    }
    let fee_mfen = column_value(cols, fields, Field::Fee, line_no, 5, false)?.unwrap_or(0);
    let rate = text(Field::Rate);
    let rate_ppm = match rate {
        "" => None,
        r => Some(
            r.strip_suffix('%')
                .and_then(|p| parse_scaled(p, 4).ok())
                .ok_or_else(|| bad(Field::Rate, "not a percentage like 0.54%"))?,
        ),
    };
    Ok(BillLine {
        line_no,
        trade_at,
        merchant_id: merchant_id.to_string(),
        device_id: text(Field::Device).to_string(),
        channel_txn_id: text(Field::ChannelTxnId).to_string(),
        out_trade_no: out_trade_no.to_string(),
        kind,
        out_refund_no: if kind == EntryKind::Refund { out_refund_no.to_string() } else { String::new() },
        amount_fen,
        fee_mfen,
        rate_ppm,
    })
}

/// The field's value scaled to `places` decimals; `None` when the layout lacks the column.
/// Amounts are refused when negative (`unsigned`); an empty field reads as 0.
fn column_value(
    cols: &Columns,
    fields: &[&str],
    f: Field,
    line_no: u64,
    places: u32,
    unsigned: bool,
) -> Result<Option<i64>, BillError> {
    let Some((i, name)) = cols.get(f) else { return Ok(None) };
    scaled_at(fields, *i, name, line_no, places, unsigned).map(Some)
}

/// Field `i` (named `name`) of a line as an integer of `places` decimals; empty is zero.
fn scaled_at(
    fields: &[&str],
    i: usize,
    name: &str,
    line_no: u64,
    places: u32,
    unsigned: bool,
) -> Result<i64, BillError> {
    let raw = fields[i];
    if raw.is_empty() {
        return Ok(0);
    }
    let bad = |message| BillError::BadValue {
        line: line_no,
        column: i + 1,
        name: name.to_string(),
        value: raw.to_string(),
        message,
    };
    let v = parse_scaled(raw, places).map_err(bad)?;
    if unsigned && v < 0 {
        return Err(bad("must not be negative"));
    }
    Ok(v)
}

/// A decimal string (`-12.30`) as an integer of `places` decimals, exactly: no float.
pub fn parse_scaled(s: &str, places: u32) -> Result<i64, &'static str> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) || (digits.contains('.') && frac.is_empty()) {
        return Err("not a decimal number");
    }
    if frac.len() > places as usize {
        return Err("too many decimal places");
    }
    if int.len() > 13 {
        return Err("out of range");
    }
    let mut v: i64 = int.parse().map_err(|_| "not a decimal number")?;
    for i in 0..places as usize {
        v = v * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Ok(if neg { -v } else { v })
}

/// An integer of `places` decimals as a decimal string (`-0.27000`).
pub fn format_scaled(v: i64, places: u32) -> String {
    if places == 0 {
        return v.to_string();
    }
    let unit = 10_i64.pow(places);
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:0width$}", a / unit as u64, a % unit as u64, width = places as usize)
}

fn parse_china_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()?;
    shanghai().from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc))
}

/// The channel's transaction id of facepay's order (facepay is its own channel): 28 digits
/// derived from the merchant and order number, stable across runs.
pub fn channel_txn_id(merchant_id: &str, out_trade_no: &str) -> String {
    let h = Sha256::digest(format!("{merchant_id}\u{1f}{out_trade_no}").as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % 10_u64.pow(18);
    format!("4200000000{n:018}")
}

/// Writes a bill in one of the WeChat layouts, with its summary.
pub struct BillWriter<W: Write> {
    out: W,
    layout: Layout,
    /// The service provider's account number (商户号).
    account: String,
    totals: BillTotals,
}

impl<W: Write> BillWriter<W> {
    /// Writes the header line (with a byte-order mark, as the channel does).
    pub fn new(mut out: W, layout: Layout, account: &str) -> std::io::Result<Self> {
        assert_ne!(layout, Layout::Generic, "the writer writes the channel's layouts");
        writeln!(out, "\u{feff}{}", layout.columns().join(","))?;
        Ok(Self { out, layout, account: account.to_string(), totals: BillTotals::default() })
    }

    /// Writes one detail line.
    pub fn line(&mut self, l: &BillLine) -> std::io::Result<()> {
        let refund = l.kind != EntryKind::Payment;
        let (settle, refund_fen) = if refund { (0, l.amount_fen) } else { (l.amount_fen, 0) };
        self.totals.lines += 1;
        self.totals.settle_fen += settle;
        self.totals.refund_fen += refund_fen;
        self.totals.fee_mfen += l.fee_mfen;
        let at = l.trade_at.with_timezone(&shanghai()).format("%Y-%m-%d %H:%M:%S").to_string();
        let status = match l.kind {
            EntryKind::Payment => "SUCCESS",
            EntryKind::Refund => "REFUND",
            EntryKind::Reversal => "REVOKED",
        };
        let rate = l
            .rate_ppm
            .map_or(String::new(), |r| format!("{}%", format_scaled(r, 4).trim_end_matches('0').trim_end_matches('.')));
        let refund_no = if l.kind == EntryKind::Refund { l.out_refund_no.as_str() } else { "0" };
        let refund_id = if l.kind == EntryKind::Refund {
            format!("5030{}", l.channel_txn_id.get(4..).unwrap_or(""))
        } else {
            "0".into()
        };
        let value = |col: &str| -> String {
            match col {
                "交易时间" => at.clone(),
                "公众账号ID" => "wx0000000000000001".into(),
                "商户号" => self.account.clone(),
                "特约商户号" | "子商户号" => l.merchant_id.clone(),
                "设备号" => l.device_id.clone(),
                "微信订单号" => l.channel_txn_id.clone(),
                "商户订单号" => l.out_trade_no.clone(),
                "用户标识" => "o-payer".into(),
                "交易类型" => "MICROPAY".into(),
                "交易状态" => status.into(),
                "付款银行" => "OTHERS".into(),
                "货币种类" => "CNY".into(),
                "应结订单金额" | "总金额" | "订单金额" => format_scaled(settle, 2),
                "微信退款单号" => refund_id.clone(),
                "商户退款单号" => refund_no.into(),
                "退款金额" | "申请退款金额" => format_scaled(refund_fen, 2),
                "退款类型" if refund => "ORIGINAL".into(),
                "退款状态" if refund => "SUCCESS".into(),
                "退款申请时间" | "退款成功时间" if refund => at.clone(),
                "商品名称" => "face payment".into(),
                "手续费" => format_scaled(l.fee_mfen, 5),
                "费率" => rate.clone(),
                c if c.contains("金额") => "0.00".into(),
                _ => String::new(),
            }
        };
        let fields: Vec<String> = self.layout.columns().iter().map(|c| format!("`{}", value(c))).collect();
        writeln!(self.out, "{}", fields.join(","))
    }

    /// Writes the summary header and line; returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        let t = self.totals;
        let cols = self.layout.summary_columns();
        writeln!(self.out, "{}", cols.join(","))?;
        let values: Vec<String> = cols
            .iter()
            .map(|c| match *c {
                "总交易单数" => t.lines.to_string(),
                "应结订单总金额" | "总交易额" | "订单总金额" => format_scaled(t.settle_fen, 2),
                "退款总金额" | "总退款金额" | "申请退款总金额" => format_scaled(t.refund_fen, 2),
                "手续费总金额" => format_scaled(t.fee_mfen, 5),
                _ => "0.00".into(),
            })
            .map(|v| format!("`{v}"))
            .collect();
        writeln!(self.out, "{}", values.join(","))?;
        Ok(self.out)
    }
}
