//! The demo shop of `serve --demo`: orders, stock and balance endpoints with compensations, and a
//! TCC balance reservation, in an in-memory SQLite database. Every call goes through the
//! participant kit's barrier (kit/rust), so duplicates, null compensations and late actions are
//! handled as docs/barrier.md says; `check-participant` passes against it. Balance refuses with
//! 409 when the payload's `amount` exceeds the user's balance (every user starts with 5000), or
//! when the payload has `"refuse": true`.

use actix_web::{web, HttpResponse};
use saga_participant::{Barrier, Phase, Reply, SagaCall, StepError, StepFuture};
use serde_json::{json, Value};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Every user's balance at the start.
pub const START_BALANCE: i64 = 5000;
/// Every SKU's stock at the start.
pub const START_STOCK: i64 = 100;

/// The shop's database and barrier, shared by every worker.
pub struct DemoShop {
    pool: SqlitePool,
    barrier: Barrier,
    /// Injected faults: `service/op` answers this status without running (`POST /demo/faults`).
    faults: Mutex<BTreeMap<String, u16>>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)",
    "CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)",
    "CREATE TABLE balances (user TEXT PRIMARY KEY, amount INTEGER NOT NULL, held INTEGER NOT NULL DEFAULT 0)",
    // What each call took, so that its undo gives back exactly that.
    "CREATE TABLE taken (call TEXT PRIMARY KEY, what TEXT NOT NULL, owner TEXT NOT NULL, n INTEGER NOT NULL)",
];

impl DemoShop {
    /// An empty shop in a private in-memory database.
    pub async fn open() -> Result<DemoShop, String> {
        // One connection, kept for ever: an in-memory database lives as long as it, and SQLite
        // has one writer anyway.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect("sqlite::memory:")
            .await
            .map_err(|e| format!("demo shop database: {e}"))?;
        for s in SCHEMA {
            sqlx::query(*s)
                .execute(&pool)
                .await
                .map_err(|e| format!("demo shop schema: {e}"))?;
        }
        let barrier = Barrier::new();
        barrier
            .create_table_on(&pool)
            .await
            .map_err(|e| format!("demo shop barrier: {e}"))?;
        Ok(DemoShop {
            pool,
            barrier,
            faults: Mutex::default(),
        })
    }
}

/// Registers the `/demo` routes over one shop shared by every worker.
pub fn routes(cfg: &mut web::ServiceConfig, shop: web::Data<DemoShop>) {
    cfg.app_data(shop).service(
        web::scope("/demo")
            .route("/state", web::get().to(state))
            .route("/faults", web::post().to(set_faults))
            .route("/{service}/{op}", web::post().to(operate)),
    );
}

/// `POST /demo/faults` `{"stock/refund": 503}`: from now on that endpoint answers 503 without
/// running, until the next call replaces the set (`{}` clears it). A broken participant to try
/// retries, stuck sagas and the console's retry on.
async fn set_faults(body: web::Json<Value>, shop: web::Data<DemoShop>) -> HttpResponse {
    let Some(map) = body.as_object() else {
        return HttpResponse::BadRequest()
            .json(json!({"error": "expected an object of \"service/op\": status"}));
    };
    let mut faults = BTreeMap::new();
    for (k, v) in map {
        let known = k
            .split_once('/')
            .is_some_and(|(service, op)| business(service, op).is_some());
        let status = v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| (400..=599).contains(n));
        match (known, status) {
            (true, Some(status)) => faults.insert(k.clone(), status),
            (false, _) => {
                return HttpResponse::BadRequest()
                    .json(json!({"error": format!("no demo endpoint /demo/{k}")}))
            }
            (_, None) => {
                return HttpResponse::BadRequest()
                    .json(json!({"error": format!("{k}: the status must be 400 to 599")}))
            }
        };
    }
    *shop.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults.clone();
    HttpResponse::Ok().json(json!({ "faults": faults }))
}

async fn state(shop: web::Data<DemoShop>) -> HttpResponse {
    let faults = shop
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let read = async {
        let mut out =
            json!({"orders": {}, "stock": {}, "balances": {}, "held": {}, "faults": faults});
        for r in sqlx::query("SELECT id, status FROM orders")
            .fetch_all(&shop.pool)
            .await?
        {
            out["orders"][r.get::<String, _>(0)] = json!(r.get::<String, _>(1));
        }
        for r in sqlx::query("SELECT sku, qty FROM stock")
            .fetch_all(&shop.pool)
            .await?
        {
            out["stock"][r.get::<String, _>(0)] = json!(r.get::<i64, _>(1));
        }
        for r in sqlx::query("SELECT user, amount, held FROM balances")
            .fetch_all(&shop.pool)
            .await?
        {
            out["balances"][r.get::<String, _>(0)] = json!(r.get::<i64, _>(1));
            out["held"][r.get::<String, _>(0)] = json!(r.get::<i64, _>(2));
        }
        Ok::<_, sqlx::Error>(out)
    };
    match read.await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

/// What a call asks for, read from its body.
#[derive(Clone)]
struct Order {
    order: String,
    user: String,
    sku: String,
    qty: i64,
    amount: i64,
    refuse: bool,
    /// A TCC reservation: the money is held until confirm or cancel.
    hold: bool,
    /// `{saga}/{step}`: the action and its undo share it.
    key: String,
}

fn field(body: &Value, key: &str) -> Option<String> {
    body.get(key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

async fn operate(
    path: web::Path<(String, String)>,
    call: SagaCall,
    shop: web::Data<DemoShop>,
) -> Reply {
    let (service, op) = path.into_inner();
    let body: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
    let o = Order {
        order: field(&body, "order_id").unwrap_or_else(|| call.saga_id.clone()),
        user: field(&body, "user_id").unwrap_or_else(|| "0".into()),
        sku: field(&body, "sku").unwrap_or_else(|| "A1".into()),
        qty: body.get("qty").and_then(Value::as_i64).unwrap_or(1),
        amount: body.get("amount").and_then(Value::as_i64).unwrap_or(0),
        refuse: body.get("refuse") == Some(&Value::Bool(true)),
        hold: op == "reserve",
        key: format!("{}/{}", call.saga_id, call.step),
    };
    let Some(step) = business(&service, &op) else {
        return Reply::new(
            404,
            json!({"error": format!("no demo endpoint /demo/{service}/{op}")}),
        );
    };
    if !expected_phase(&op, call.phase) {
        return Reply::bad_request(format!(
            "/demo/{service}/{op} is not a {} endpoint",
            call.phase.as_str()
        ));
    }
    let fault = shop
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&format!("{service}/{op}"))
        .copied();
    if let Some(status) = fault {
        return Reply::new(
            status,
            json!({"error": format!("fault injected by POST /demo/faults: /demo/{service}/{op} answers {status}")}),
        );
    }
    shop.barrier
        .run(&shop.pool, &call, move |tx| step(tx, o))
        .await
}

type Step = for<'t> fn(&'t mut Transaction<'static, Sqlite>, Order) -> StepFuture<'t>;

/// The business code of each endpoint; the barrier decides whether it runs.
fn business(service: &str, op: &str) -> Option<Step> {
    Some(match (service, op) {
        ("orders", "create") => |tx, o| {
            Box::pin(async move {
                sqlx::query("INSERT INTO orders VALUES (?, 'created') ON CONFLICT(id) DO UPDATE SET status = 'created'")
                    .bind(&o.order)
                    .execute(&mut **tx)
                    .await?;
                Ok(json!({"order_id": o.order, "status": "created"}))
            })
        },
        ("orders", "cancel") => |tx, o| {
            Box::pin(async move {
                sqlx::query("UPDATE orders SET status = 'cancelled' WHERE id = ?")
                    .bind(&o.order)
                    .execute(&mut **tx)
                    .await?;
                Ok(json!({"order_id": o.order, "status": "cancelled"}))
            })
        },
        ("stock", "deduct") => |tx, o| {
            Box::pin(async move {
                sqlx::query("INSERT INTO stock VALUES (?, ?) ON CONFLICT(sku) DO NOTHING")
                    .bind(&o.sku)
                    .bind(START_STOCK)
                    .execute(&mut **tx)
                    .await?;
                let left: i64 = sqlx::query_scalar("SELECT qty FROM stock WHERE sku = ?")
                    .bind(&o.sku)
                    .fetch_one(&mut **tx)
                    .await?;
                if o.qty > left {
                    return Err(StepError::Reject("out of stock".into()));
                }
                sqlx::query("UPDATE stock SET qty = qty - ? WHERE sku = ?")
                    .bind(o.qty)
                    .bind(&o.sku)
                    .execute(&mut **tx)
                    .await?;
                took(tx, &o.key, "stock", &o.sku, o.qty).await?;
                Ok(json!({"stock_left": left - o.qty}))
            })
        },
        ("stock", "refund") => |tx, o| {
            Box::pin(async move {
                let n =
                    give_back(tx, &o.key, "UPDATE stock SET qty = qty + ? WHERE sku = ?").await?;
                Ok(json!({"refunded": n}))
            })
        },
        ("balance", "deduct") | ("balance", "reserve") => |tx, o| {
            Box::pin(async move {
                let have = balance(tx, &o.user).await?;
                if o.amount > have || o.refuse {
                    return Err(StepError::Reject("insufficient funds".into()));
                }
                let hold = if o.hold { o.amount } else { 0 };
                sqlx::query(
                    "UPDATE balances SET amount = amount - ?, held = held + ? WHERE user = ?",
                )
                .bind(o.amount)
                .bind(hold)
                .bind(&o.user)
                .execute(&mut **tx)
                .await?;
                took(tx, &o.key, "balance", &o.user, o.amount).await?;
                Ok(json!({"balance": have - o.amount}))
            })
        },
        ("balance", "refund") => |tx, o| {
            Box::pin(async move {
                let n = give_back(
                    tx,
                    &o.key,
                    "UPDATE balances SET amount = amount + ?1 WHERE user = ?2",
                )
                .await?;
                Ok(json!({"refunded": n}))
            })
        },
        ("balance", "release") => |tx, o| {
            Box::pin(async move {
                let n = give_back(
                    tx,
                    &o.key,
                    "UPDATE balances SET amount = amount + ?1, held = held - ?1 WHERE user = ?2",
                )
                .await?;
                Ok(json!({"released": n}))
            })
        },
        ("balance", "commit") => |tx, o| {
            Box::pin(async move {
                // The money is spent: the reservation's record goes, and so does the hold.
                let n = give_back(
                    tx,
                    &o.key,
                    "UPDATE balances SET held = held - ?1 WHERE user = ?2",
                )
                .await?;
                Ok(json!({"committed": n}))
            })
        },
        _ => return None,
    })
}

/// Which phases an endpoint serves: the undo endpoints only undo.
fn expected_phase(op: &str, phase: Phase) -> bool {
    match op {
        "create" | "deduct" => phase == Phase::Action,
        "cancel" | "refund" => phase == Phase::Compensation,
        "reserve" => phase == Phase::Try,
        "commit" => phase == Phase::Confirm,
        "release" => phase == Phase::Cancel,
        _ => false,
    }
}

async fn balance(tx: &mut Transaction<'static, Sqlite>, user: &str) -> Result<i64, StepError> {
    sqlx::query("INSERT INTO balances (user, amount) VALUES (?, ?) ON CONFLICT(user) DO NOTHING")
        .bind(user)
        .bind(START_BALANCE)
        .execute(&mut **tx)
        .await?;
    Ok(
        sqlx::query_scalar("SELECT amount FROM balances WHERE user = ?")
            .bind(user)
            .fetch_one(&mut **tx)
            .await?,
    )
}

async fn took(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
    what: &str,
    owner: &str,
    n: i64,
) -> Result<(), StepError> {
    sqlx::query("INSERT INTO taken VALUES (?, ?, ?, ?)")
        .bind(key)
        .bind(what)
        .bind(owner)
        .bind(n)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Gives back what the call `key` took (`sql` binds the amount, then the owner); answers it.
async fn give_back(
    tx: &mut Transaction<'static, Sqlite>,
    key: &str,
    sql: &'static str,
) -> Result<i64, StepError> {
    let row = sqlx::query("DELETE FROM taken WHERE call = ? RETURNING owner, n")
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(0) };
    let (owner, n): (String, i64) = (row.get(0), row.get(1));
    sqlx::query(sql)
        .bind(n)
        .bind(&owner)
        .execute(&mut **tx)
        .await?;
    Ok(n)
}
