//! The merchant's refund operation: a device's refund rules, asked with the merchant's key.

use serde_json::{json, Value};

use crate::support::app::{spawn_app, TestApp, MERCHANT, OTHER_MERCHANT};

async fn refund(app: &TestApp, order: &str, no: &str, amount: &str, key: &str) -> (u16, Value) {
    let url = format!("{}/v1/merchants/{MERCHANT}/orders/{order}/refunds", app.base);
    let r = app.http.post(url).bearer_auth(key).json(&json!({"out_refund_no": no, "amount": amount}));
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_merchant_refunds_a_paid_order_once_per_refund_number() {
    // Given a paid order of 30.00 from a wallet of 100.00.
    let app = spawn_app().await;
    app.payer("u-back", 4, "100.00").await;
    app.pay(4, "100000000000000401", "RF-ORDER", "30.00").await;
    app.until(&format!("/v1/merchants/{MERCHANT}/orders/RF-ORDER"), |o| o["status"] == "PAID").await;
    let balance = "/v1/payers/u-back/balance";
    let merchant = app.keys.merchant.clone();

    // When the merchant refunds 10.00: decided at once, the payer has it back.
    let (status, body) = refund(&app, "RF-ORDER", "RF-1", "10.00", &merchant).await;
    assert_eq!(
        (status, body["status"].as_str(), body["amount"].as_str()),
        (200, Some("SUCCESS"), Some("10.00")),
        "{body}"
    );
    assert_eq!(app.get(balance).await.1["balance"], "80.00");
    // The same request again is the same refund: nothing more moves.
    let (status, again) = refund(&app, "RF-ORDER", "RF-1", "10.00", &merchant).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("SUCCESS")), "{again}");
    assert_ne!(again["event_id"], body["event_id"], "a new event, the same refund");
    assert_eq!(app.get(balance).await.1["balance"], "80.00");
    // The number for another amount is a conflict; more than is left, a refusal.
    let (status, body) = refund(&app, "RF-ORDER", "RF-1", "5.00", &merchant).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("REFUND_NO_USED")), "{body}");
    let (status, body) = refund(&app, "RF-ORDER", "RF-2", "20.01", &merchant).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("REFUND_EXCEEDS_PAID")), "{body}");
    // Bad fields are named; nothing moved.
    let (status, body) = refund(&app, "RF-ORDER", "RF 3", "1.00", &merchant).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("out_refund_no")), "{body}");
    let (status, body) = refund(&app, "RF-ORDER", "RF-3", "1.001", &merchant).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("amount")), "{body}");
    assert_eq!(app.get(balance).await.1["balance"], "80.00");

    // Who may: the merchant's store key for its store's order; nobody else.
    let (status, body) = refund(&app, "RF-ORDER", "RF-4", "1.00", &app.keys.store).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("SUCCESS")), "{body}");
    for (key, want) in [(&app.keys.other_merchant, 404), (&app.keys.finance, 403), (&app.keys.admin, 403)] {
        let (status, body) = refund(&app, "RF-ORDER", "RF-5", "1.00", key).await;
        assert_eq!(status, want, "{body}");
    }
    let (status, _) = refund(&app, "NO-SUCH-ORDER", "RF-6", "1.00", &merchant).await;
    assert_eq!(status, 404);
    let url = format!("{}/v1/merchants/{OTHER_MERCHANT}/orders/RF-ORDER/refunds", app.base);
    let r = app.http.post(url).bearer_auth(&merchant).json(&json!({"out_refund_no": "RF-7", "amount": "1.00"}));
    assert_eq!(r.send().await.unwrap().status().as_u16(), 404, "another tenant's order is one that does not exist");

    // Then the order shows what went back, and each refund asked is audited with its key.
    let order = app.get(&format!("/v1/merchants/{MERCHANT}/orders/RF-ORDER")).await.1;
    assert_eq!(order["refunded"], "11.00", "{order}");
    let list = format!("/v1/merchants/{MERCHANT}/orders/RF-ORDER/refunds");
    let refunds = app.get_as(&list, Some(&app.keys.device)).await.1;
    let listed: Vec<(&str, &str)> = refunds["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["out_refund_no"].as_str().unwrap(), r["amount"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("RF-1", "10.00"), ("RF-4", "1.00")], "each refund once, oldest first");
    assert_eq!(app.get_as(&list, Some(&app.keys.other_merchant)).await.0, 404);
    assert_eq!(app.get(balance).await.1["balance"], "81.00");
    let (_, audit) = app.get_as("/v1/audit", Some(&app.keys.finance)).await;
    let asked: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "refund_requested")
        .map(|e| (e["role"].as_str().unwrap(), e["detail"]["out_refund_no"].as_str().unwrap()))
        .collect();
    assert_eq!(asked.len(), 5, "every refund that reached the ledger: {audit}");
    assert!(asked.iter().all(|(role, _)| *role == "merchant"), "{asked:?}");
}
