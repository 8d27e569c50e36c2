//! The README's example, compiled with the crate's other targets so that it stays true:
//! store a definition, start it by name, wait for the saga, and read the errors.
//!
//! `SAGA_URL=http://127.0.0.1:8080 SAGA_TOKEN=… cargo run -p saga-client --example place_order`

use saga_client::{Client, Error, SagaStatus, StartOptions, StartRequest};
use serde_json::json;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let base = std::env::var("SAGA_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let mut builder = Client::builder(base);
    if let Ok(token) = std::env::var("SAGA_TOKEN") {
        builder = builder.token(token);
    }
    let client = builder.build()?;

    // Once, by whoever owns the saga: a new version only when the document changed.
    let (def, created) = client
        .put_definition(
            "place_order",
            &json!({
                "description": "an order: reserve the stock",
                "steps": [{
                    "name": "reserve",
                    "action": {"url": "http://127.0.0.1:9002/stock/reserve",
                               "body": {"sku": {"$payload": "/sku"}, "qty": {"$payload": "/qty"}}},
                    "compensation": {"url": "http://127.0.0.1:9002/stock/release"}
                }]
            }),
        )
        .await?;
    println!("definition {} v{} (new: {created})", def.name, def.version);

    // Each order: its own id makes the start safe to resend.
    let req: StartRequest = StartRequest::definition("place_order")
        .id("order-1042")
        .payload(json!({"sku": "A1", "qty": 2}))
        .into();
    let wait = Some(Duration::from_secs(10));
    match client.start(&req, StartOptions { wait }).await {
        Ok(started) => match started.saga.status {
            SagaStatus::Succeeded => println!("order placed"),
            SagaStatus::Compensated => println!("undone: {:?}", started.saga.error),
            SagaStatus::Stuck => println!("needs a person: {:?}", started.saga.error),
            other => println!("still {other} after 10 s"),
        },
        Err(Error::Problem(p)) if p.status == 400 => {
            for e in &p.errors {
                println!("{}: {}", e.pointer.as_deref().unwrap_or("?"), e.detail);
            }
        }
        Err(e) if e.is_conflict() => println!("order-1042 was started with another request: {e}"),
        Err(e) => return Err(e),
    }
    Ok(())
}
