//! The console's words in its two languages. [`Text`] has one field per phrase, so a phrase
//! missing in either language does not compile. The language is the `fp_lang` cookie's (the
//! switch in every page's footer), else the first of Chinese or English in `Accept-Language`
//! by its weight, else Chinese.

use axum::http::HeaderMap;

use super::session::{cookie, LANG_COOKIE};

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// The `lang` attribute and the switch's value.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn parse(tag: &str) -> Option<Lang> {
        let tag = tag.trim().to_ascii_lowercase();
        match tag.split(['-', '_']).next() {
            Some("zh") => Some(Lang::Zh),
            Some("en") => Some(Lang::En),
            _ => None,
        }
    }

    /// The request's language: its cookie's, else its `Accept-Language`'s, else Chinese.
    pub fn of(headers: &HeaderMap) -> Lang {
        if let Some(lang) = cookie(headers, LANG_COOKIE).and_then(Lang::parse) {
            return lang;
        }
        let accept = headers.get(axum::http::header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let weighted = accept.split(',').filter_map(|item| {
            let mut parts = item.split(';');
            let lang = Lang::parse(parts.next()?)?;
            let q = parts.find_map(|p| p.trim().strip_prefix("q=")).map_or(Some(1.0), |q| q.parse::<f32>().ok())?;
            Some((lang, q))
        });
        // The first of the highest weight (a stable order: equal weights keep the header's).
        let best = weighted.fold(None::<(Lang, f32)>, |best, (l, q)| match best {
            Some((_, bq)) if bq >= q => best,
            _ => Some((l, q)),
        });
        best.map_or(Lang::Zh, |(l, _)| l)
    }

    /// The other language (the switch).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    pub fn text(self) -> &'static Text {
        match self {
            Lang::Zh => &ZH,
            Lang::En => &EN,
        }
    }
}

/// Every phrase of the console.
pub struct Text {
    pub console: &'static str,
    pub lang_name: &'static str,
    pub sign_in: &'static str,
    pub sign_in_hint: &'static str,
    pub sign_in_failed: &'static str,
    pub sign_out: &'static str,
    pub api_key: &'static str,
    pub signed_in_as: &'static str,
    pub overview: &'static str,
    pub today: &'static str,
    pub transactions: &'static str,
    pub members: &'static str,
    pub settlement: &'static str,
    pub merchants: &'static str,
    pub runs: &'static str,
    pub breaks: &'static str,
    pub rejected: &'static str,
    pub audit: &'static str,
    pub keys: &'static str,
    pub order: &'static str,
    pub order_lookup: &'static str,
    pub out_trade_no: &'static str,
    pub day: &'static str,
    pub time: &'static str,
    pub amount: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub payer: &'static str,
    pub store: &'static str,
    pub device: &'static str,
    pub quick_pay: &'static str,
    pub gross: &'static str,
    pub refunds: &'static str,
    pub fees: &'static str,
    pub net: &'static str,
    pub net_by_day: &'static str,
    pub payments: &'static str,
    pub paid_amount: &'static str,
    pub declines_by_reason: &'static str,
    pub quick_pay_share: &'static str,
    pub card: &'static str,
    pub channel: &'static str,
    pub opened: &'static str,
    pub closed: &'static str,
    pub created: &'static str,
    pub updated: &'static str,
    pub expires: &'static str,
    pub revoked: &'static str,
    pub role: &'static str,
    pub label: &'static str,
    pub key_id: &'static str,
    pub merchant: &'static str,
    pub action: &'static str,
    pub principal: &'static str,
    pub subject: &'static str,
    pub detail: &'static str,
    pub class: &'static str,
    pub bill_side: &'static str,
    pub ledger_side: &'static str,
    pub state: &'static str,
    pub open: &'static str,
    pub resolved: &'static str,
    pub unresolved_only: &'static str,
    pub resolve: &'static str,
    pub resolved_by: &'static str,
    pub upload_bill: &'static str,
    pub bill_file: &'static str,
    pub bill_day: &'static str,
    pub run_report: &'static str,
    pub lines: &'static str,
    pub matched: &'static str,
    pub source: &'static str,
    pub kind: &'static str,
    pub field: &'static str,
    pub message: &'static str,
    pub filter: &'static str,
    pub all: &'static str,
    pub next_page: &'static str,
    pub first_page: &'static str,
    pub none: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub fee: &'static str,
    pub refunded: &'static str,
    pub create_key: &'static str,
    pub token_once: &'static str,
    pub revoke: &'static str,
    pub export_csv: &'static str,
    pub not_found: &'static str,
    pub bad_request: &'static str,
    pub form_expired: &'static str,
    pub too_many: &'static str,
    pub unavailable: &'static str,
    pub internal: &'static str,
    pub back: &'static str,
    pub skip_to_content: &'static str,
    pub main_nav: &'static str,
    pub refund: &'static str,
    pub out_refund_no: &'static str,
    pub refund_hint: &'static str,
    pub devices: &'static str,
    pub last_event: &'static str,
    pub refused_last_hour: &'static str,
    pub never: &'static str,
    pub single_limit: &'static str,
    pub fee_rate: &'static str,
    pub set: &'static str,
    pub payers: &'static str,
    pub balance: &'static str,
    pub held: &'static str,
    pub frozen: &'static str,
    pub active: &'static str,
    pub freeze: &'static str,
    pub unfreeze: &'static str,
    pub attempts: &'static str,
}

pub static EN: Text = Text {
    console: "facepay console",
    lang_name: "English",
    sign_in: "Sign in",
    sign_in_hint: "Paste an API key (fpk_…). It is exchanged for a session here and never kept in the browser.",
    sign_in_failed: "Sign-in failed: the key is unknown, revoked, expired or mistyped.",
    sign_out: "Sign out",
    api_key: "API key",
    signed_in_as: "Signed in as",
    overview: "Overview",
    today: "Today",
    transactions: "Transactions",
    members: "Members",
    settlement: "Settlement",
    merchants: "Merchants",
    runs: "Reconciliation runs",
    breaks: "Breaks",
    rejected: "Rejected events",
    audit: "Audit log",
    keys: "API keys",
    order: "Order",
    order_lookup: "Look up an order",
    out_trade_no: "Order number",
    day: "Day",
    time: "Time",
    amount: "Amount",
    status: "Status",
    reason: "Reason",
    payer: "Payer",
    store: "Store",
    device: "Device",
    quick_pay: "Member quick pay",
    gross: "Gross",
    refunds: "Refunds",
    fees: "Fees",
    net: "Net",
    net_by_day: "Net per day",
    payments: "Payments",
    paid_amount: "Paid",
    declines_by_reason: "Declines by reason",
    quick_pay_share: "Member quick-pay share",
    card: "Card",
    channel: "Channel",
    opened: "Opened",
    closed: "Closed",
    created: "Created",
    updated: "Updated",
    expires: "Expires",
    revoked: "Revoked",
    role: "Role",
    label: "Label",
    key_id: "Key",
    merchant: "Merchant",
    action: "Action",
    principal: "By",
    subject: "Subject",
    detail: "Detail",
    class: "Class",
    bill_side: "Bill line",
    ledger_side: "Ledger entry",
    state: "State",
    open: "Open",
    resolved: "Resolved",
    unresolved_only: "Open only",
    resolve: "Resolve",
    resolved_by: "Resolved by",
    upload_bill: "Upload a bill",
    bill_file: "Bill file (CSV)",
    bill_day: "Bill day",
    run_report: "Report",
    lines: "Lines",
    matched: "Matched",
    source: "Source",
    kind: "Kind",
    field: "Field",
    message: "Message",
    filter: "Filter",
    all: "All",
    next_page: "Next page",
    first_page: "First page",
    none: "Nothing here yet.",
    yes: "yes",
    no: "no",
    fee: "Fee",
    refunded: "Refunded",
    create_key: "Create a key",
    token_once: "The key's token, shown this once: copy it now.",
    revoke: "Revoke",
    export_csv: "Export CSV",
    not_found: "Not found.",
    bad_request: "The request was not understood",
    form_expired: "This form has expired or did not come from this console. Reload the page and try again.",
    too_many: "Too many requests. Wait a moment and try again.",
    unavailable: "facepay is busy for a moment. Try again shortly.",
    internal: "Something went wrong on our side. It has been logged.",
    back: "Back",
    skip_to_content: "Skip to content",
    main_nav: "Main",
    refund: "Refund",
    out_refund_no: "Refund number",
    refund_hint: "The same refund number sent again is the same refund: it is never paid twice.",
    devices: "Devices",
    last_event: "Last event",
    refused_last_hour: "Refused, last hour",
    never: "never",
    single_limit: "Single payment limit",
    fee_rate: "Fee rate",
    set: "Set",
    payers: "Payers",
    balance: "Balance",
    held: "Held",
    frozen: "Frozen",
    active: "Active",
    freeze: "Freeze",
    unfreeze: "Unfreeze",
    attempts: "Attempts",
};

pub static ZH: Text = Text {
    console: "facepay 控制台",
    lang_name: "中文",
    sign_in: "登录",
    sign_in_hint: "粘贴 API 密钥（fpk_…）。它在此换成会话，不会保存在浏览器中。",
    sign_in_failed: "登录失败：密钥不存在、已吊销、已过期或输入有误。",
    sign_out: "退出",
    api_key: "API 密钥",
    signed_in_as: "当前身份",
    overview: "概览",
    today: "今日",
    transactions: "交易",
    members: "会员",
    settlement: "结算",
    merchants: "商户",
    runs: "对账批次",
    breaks: "差错",
    rejected: "被拒事件",
    audit: "审计日志",
    keys: "API 密钥",
    order: "订单",
    order_lookup: "查询订单",
    out_trade_no: "商户订单号",
    day: "日期",
    time: "时间",
    amount: "金额",
    status: "状态",
    reason: "原因",
    payer: "付款人",
    store: "门店",
    device: "设备",
    quick_pay: "会员快捷支付",
    gross: "交易额",
    refunds: "退款",
    fees: "手续费",
    net: "净额",
    net_by_day: "每日净额",
    payments: "支付笔数",
    paid_amount: "已支付金额",
    declines_by_reason: "拒绝原因分布",
    quick_pay_share: "会员快捷支付占比",
    card: "会员卡",
    channel: "渠道",
    opened: "开卡时间",
    closed: "注销时间",
    created: "创建时间",
    updated: "更新时间",
    expires: "到期时间",
    revoked: "吊销时间",
    role: "角色",
    label: "备注",
    key_id: "密钥",
    merchant: "商户",
    action: "操作",
    principal: "操作者",
    subject: "对象",
    detail: "详情",
    class: "类别",
    bill_side: "账单行",
    ledger_side: "账本记录",
    state: "状态",
    open: "待处理",
    resolved: "已处理",
    unresolved_only: "仅待处理",
    resolve: "处理",
    resolved_by: "处理人",
    upload_bill: "上传账单",
    bill_file: "账单文件（CSV）",
    bill_day: "账单日期",
    run_report: "报告",
    lines: "行数",
    matched: "已匹配",
    source: "来源",
    kind: "类型",
    field: "字段",
    message: "说明",
    filter: "筛选",
    all: "全部",
    next_page: "下一页",
    first_page: "第一页",
    none: "暂无数据。",
    yes: "是",
    no: "否",
    fee: "手续费",
    refunded: "已退款",
    create_key: "创建密钥",
    token_once: "密钥令牌仅显示这一次，请立即复制。",
    revoke: "吊销",
    export_csv: "导出 CSV",
    not_found: "未找到。",
    bad_request: "请求无法识别",
    form_expired: "表单已过期或并非来自本控制台。请刷新页面后重试。",
    too_many: "请求过于频繁，请稍后再试。",
    unavailable: "facepay 暂时繁忙，请稍后再试。",
    internal: "服务端出错，已记录。",
    back: "返回",
    skip_to_content: "跳到正文",
    main_nav: "主导航",
    refund: "退款",
    out_refund_no: "退款单号",
    refund_hint: "同一退款单号再次提交仍是同一笔退款，不会重复退款。",
    devices: "设备",
    last_event: "最近事件",
    refused_last_hour: "近一小时拒绝",
    never: "从未",
    single_limit: "单笔限额",
    fee_rate: "费率",
    set: "设置",
    payers: "付款人",
    balance: "余额",
    held: "冻结中（支付分）",
    frozen: "已冻结",
    active: "正常",
    freeze: "冻结",
    unfreeze: "解冻",
    attempts: "支付尝试",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Lang {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::ACCEPT_LANGUAGE, v.parse().unwrap());
        Lang::of(&h)
    }

    #[test]
    fn the_language_follows_accept_language_by_weight_then_the_cookie() {
        assert_eq!(accept("en-US,en;q=0.9,zh-CN;q=0.8"), Lang::En);
        assert_eq!(accept("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(accept("fr;q=1, en;q=0.5, zh;q=0.7"), Lang::Zh);
        assert_eq!(accept("de"), Lang::Zh, "neither: Chinese");
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::ACCEPT_LANGUAGE, "zh-CN".parse().unwrap());
        h.insert(axum::http::header::COOKIE, "fp_lang=en".parse().unwrap());
        assert_eq!(Lang::of(&h), Lang::En, "the switch wins");
    }
}
