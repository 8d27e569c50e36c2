//! A small demo shop (`serve --demo`): orders, stock and balance endpoints with compensations,
//! idempotent on `Idempotency-Key`, state in memory. Balance refuses with 409 when the payload's
//! `amount` exceeds the user's balance (every user starts with 5000), or when the payload has
//! `"refuse": true`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Mutex;

/// Every user's balance at the start.
pub const START_BALANCE: i64 = 5000;
/// Every SKU's stock at the start.
pub const START_STOCK: i64 = 100;

#[derive(Default)]
struct Shop {
    orders: HashMap<String, String>,
    stock: HashMap<String, i64>,
    balances: HashMap<String, i64>,
    /// What each saga deducted, so that a refund undoes exactly that (or nothing).
    stock_taken: HashMap<String, (String, i64)>,
    money_taken: HashMap<String, (String, i64)>,
    /// Answers already given, by Idempotency-Key.
    answers: HashMap<String, (u16, Value)>,
}

/// The shop's state, shared by its handlers.
pub struct DemoShop(Mutex<Shop>);

impl Default for DemoShop {
    fn default() -> Self {
        DemoShop(Mutex::new(Shop::default()))
    }
}

/// Registers the `/demo` routes over one shop shared by every worker.
pub fn routes(cfg: &mut web::ServiceConfig, shop: web::Data<DemoShop>) {
    cfg.app_data(shop).service(
        web::scope("/demo")
            .route("/state", web::get().to(state))
            .route("/{service}/{op}", web::post().to(operate)),
    );
}

fn field(body: &Value, key: &str) -> Option<String> {
    body.get(key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

async fn state(shop: web::Data<DemoShop>) -> HttpResponse {
    let s = shop.0.lock().unwrap_or_else(|e| e.into_inner());
    HttpResponse::Ok().json(json!({"orders": s.orders, "stock": s.stock, "balances": s.balances}))
}

async fn operate(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    shop: web::Data<DemoShop>,
) -> HttpResponse {
    let (service, op) = path.into_inner();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let saga = header("x-saga-id");
    let key = header("idempotency-key");
    let mut s = shop.0.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((code, v)) = s.answers.get(&key).filter(|_| !key.is_empty()) {
        return reply(*code, v.clone());
    }
    let order = field(&body, "order_id").unwrap_or_else(|| saga.clone());
    let user = field(&body, "user_id").unwrap_or_else(|| "0".into());
    let sku = field(&body, "sku").unwrap_or_else(|| "A1".into());
    let qty = body.get("qty").and_then(Value::as_i64).unwrap_or(1);
    let amount = body.get("amount").and_then(Value::as_i64).unwrap_or(0);
    let (code, answer) = match (service.as_str(), op.as_str()) {
        ("orders", "create") => {
            s.orders.insert(order.clone(), "created".into());
            (200, json!({"order_id": order, "status": "created"}))
        }
        ("orders", "cancel") => match s.orders.get_mut(&order) {
            Some(st) => {
                *st = "cancelled".into();
                (200, json!({"order_id": order, "status": "cancelled"}))
            }
            None => (
                200,
                json!({"order_id": order, "status": "nothing to cancel"}),
            ),
        },
        ("stock", "deduct") => {
            let left = *s.stock.entry(sku.clone()).or_insert(START_STOCK);
            if qty > left {
                (409, json!({"error": "out of stock"}))
            } else {
                s.stock.insert(sku.clone(), left - qty);
                s.stock_taken.insert(saga.clone(), (sku, qty));
                (200, json!({"stock_left": left - qty}))
            }
        }
        ("stock", "refund") => match s.stock_taken.remove(&saga) {
            Some((sku, qty)) => {
                *s.stock.entry(sku).or_insert(START_STOCK) += qty;
                (200, json!({"refunded": qty}))
            }
            None => (200, json!({"refunded": 0})),
        },
        ("balance", "deduct") => {
            let have = *s.balances.entry(user.clone()).or_insert(START_BALANCE);
            if amount > have || body.get("refuse") == Some(&Value::Bool(true)) {
                (409, json!({"error": "insufficient funds"}))
            } else {
                s.balances.insert(user.clone(), have - amount);
                s.money_taken.insert(saga.clone(), (user, amount));
                (200, json!({"balance": have - amount}))
            }
        }
        ("balance", "refund") => match s.money_taken.remove(&saga) {
            Some((user, amount)) => {
                *s.balances.entry(user).or_insert(START_BALANCE) += amount;
                (200, json!({"refunded": amount}))
            }
            None => (200, json!({"refunded": 0})),
        },
        _ => (
            404,
            json!({"error": format!("no demo endpoint /demo/{service}/{op}")}),
        ),
    };
    if !key.is_empty() && code != 404 {
        s.answers.insert(key, (code, answer.clone()));
    }
    reply(code, answer)
}

fn reply(code: u16, v: Value) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(code).unwrap_or(actix_web::http::StatusCode::OK),
    )
    .json(v)
}
