//! The README's example: a ledger participant on axum and PostgreSQL whose deduction and refund
//! are idempotent, null-compensation safe and hanging-action safe through the barrier.
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run -p saga-participant --example axum_ledger`

use axum::{extract::State, routing::post, Router};
use saga_participant::{Barrier, Reply, SagaCall, StepError};
use serde_json::{json, Value};
use sqlx::PgPool;

#[derive(Clone)]
struct App {
    pool: PgPool,
    barrier: Barrier,
}

async fn deduct(State(app): State<App>, call: SagaCall) -> Reply {
    let amount = call
        .json::<Value>()
        .ok()
        .and_then(|b| b["amount"].as_i64())
        .unwrap_or(0);
    app.barrier
        .run(&app.pool, &call, move |tx| {
            Box::pin(async move {
                let left: i64 = sqlx::query_scalar(
                    "UPDATE account SET balance = balance - $1 WHERE id = 1 RETURNING balance",
                )
                .bind(amount)
                .fetch_one(&mut **tx)
                .await?;
                if left < 0 {
                    return Err(StepError::Reject("insufficient funds".into()));
                }
                Ok(json!({ "balance": left }))
            })
        })
        .await
}

async fn refund(State(app): State<App>, call: SagaCall) -> Reply {
    let amount = call
        .json::<Value>()
        .ok()
        .and_then(|b| b["amount"].as_i64())
        .unwrap_or(0);
    app.barrier
        .run(&app.pool, &call, move |tx| {
            Box::pin(async move {
                sqlx::query("UPDATE account SET balance = balance + $1 WHERE id = 1")
                    .bind(amount)
                    .execute(&mut **tx)
                    .await?;
                Ok(json!({ "refunded": amount }))
            })
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS account (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
        .execute(&pool)
        .await?;
    sqlx::query("INSERT INTO account VALUES (1, 1000) ON CONFLICT DO NOTHING")
        .execute(&pool)
        .await?;
    let barrier = Barrier::new();
    barrier.create_table_on(&pool).await?;
    let app = Router::new()
        .route("/deduct", post(deduct))
        .route("/refund", post(refund))
        .with_state(App { pool, barrier });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
