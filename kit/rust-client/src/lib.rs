//! A client of saga-orchestrator's HTTP API (docs/api.md): start sagas in full or by a stored
//! definition, dry-run them, read, wait for and list them, retry or abort them, and manage
//! definitions.
//!
//! ```ignore
//! use saga_client::{Client, StartOptions, StartRequest};
//! let client = Client::builder("http://127.0.0.1:8080").token(token).build()?;
//! let req = StartRequest::definition("place_order")
//!     .id("order-1042")
//!     .payload(serde_json::json!({"sku": "A1", "qty": 2}))
//!     .into();
//! let started = client.start(&req, StartOptions { wait: Some(Duration::from_secs(10)) }).await?;
//! ```
//!
//! Error answers are [`Error::Problem`] (RFC 9457 documents, `pointer` per invalid field).
//! Only starts are retried, and only when that cannot start a saga twice: see
//! [`Client::start`]. Response types ignore unknown fields, so a newer service does not break
//! an older client; `tests/drift.rs` checks them against the service's `/openapi.json`.

// Every public item is documented; clippy -D warnings turns a gap into an error.
#![warn(missing_docs)]

mod client;
mod definitions;
mod error;
mod request;
mod sagas;
mod types;

pub use client::{
    Client, ClientBuilder, DEFAULT_START_RETRIES, DEFAULT_WAIT_POLL, MAX_RETRY_AFTER, MAX_WAIT,
};
pub use error::{Error, FieldError, Problem, Purged, Result, ABOUT_BLANK};
pub use request::{DefinitionStart, Endpoint, Retry, SagaStart, StartRequest, StepSpec};
pub use sagas::{GetOptions, ListOptions, Sagas, StartOptions, Started};
pub use types::{
    Action, Call, Definition, DefinitionList, DefinitionRef, DefinitionSummary, DryRun,
    EndpointCheck, Mode, OperatorAction, Page, PhasePlan, Plan, Retired, Saga, SagaStatus, Step,
    StepPlan, StepStatus, VersionInfo,
};
