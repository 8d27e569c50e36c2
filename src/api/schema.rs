//! The shapes of requests and query strings as the OpenAPI description states them. Handlers
//! read the JSON themselves so that `domain::validation` can answer every mistake with its
//! pointer; these types carry the same limits for the description, and schemathesis (`.ci/run`)
//! checks that the two agree.

use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// saga or tcc.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeDoc {
    /// Steps with action and compensation.
    Saga,
    /// Steps with try, confirm and cancel.
    Tcc,
}

/// HTTP method of an endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum MethodDoc {
    /// GET.
    Get,
    /// POST (the default).
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

/// A participant endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointDoc {
    /// Absolute http(s) URL, allowed by the outbound policy.
    #[schema(max_length = 2048)]
    pub url: String,
    /// Method (POST by default).
    pub method: Option<MethodDoc>,
    /// Extra headers (at most 32, values at most 8 KiB); Authorization, Cookie and the like are
    /// shown as *** wherever the service shows the request.
    pub headers: Option<std::collections::HashMap<String, String>>,
    /// Body of the call (default: the saga payload); nested at most 32 deep.
    pub body: Option<Value>,
    /// Compensation or cancel only: wait this long before calling.
    #[schema(minimum = 0, maximum = 315360000000u64)]
    pub delay_ms: Option<u64>,
    /// Name for metrics and logs (default host:port).
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,64}$")]
    pub service: Option<String>,
}

/// Retry policy of a step; missing fields come from `[participant]`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDoc {
    /// Calls per phase, the first included.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_attempts: Option<u32>,
    /// Wait before the second call.
    #[schema(minimum = 0, maximum = 315360000000u64)]
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait between calls.
    #[schema(minimum = 0, maximum = 315360000000u64)]
    pub max_backoff_ms: Option<u64>,
    /// Growth of the wait.
    #[schema(minimum = 1, maximum = 100)]
    pub multiplier: Option<f64>,
}

/// One step.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    /// Unique in the saga.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    /// Saga mode: the forward call (required).
    pub action: Option<EndpointDoc>,
    /// Saga mode: its undo.
    pub compensation: Option<EndpointDoc>,
    /// TCC: reserve (required).
    #[serde(rename = "try")]
    pub try_: Option<EndpointDoc>,
    /// TCC: make final (required).
    pub confirm: Option<EndpointDoc>,
    /// TCC: release (required).
    pub cancel: Option<EndpointDoc>,
    /// Steps that must succeed first; absent = the previous step, [] = none.
    pub depends_on: Option<Vec<String>>,
    /// Timeout of one call.
    #[schema(minimum = 1, maximum = 315360000000u64)]
    pub timeout_ms: Option<u64>,
    /// Retry policy.
    pub retry: Option<RetryDoc>,
}

/// `POST /v1/sagas` body (docs/api.md).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Saga id; a UUID v7 when absent. Starting the same id again with the same request is
    /// idempotent.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub id: Option<String>,
    /// Kind of saga (a metric label).
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub name: String,
    /// saga (default) or tcc.
    pub mode: Option<ModeDoc>,
    /// Default body of every call; nested at most 32 deep.
    pub payload: Option<Value>,
    /// Deadline of the forward phase from creation.
    #[schema(minimum = 1, maximum = 315360000000u64)]
    pub timeout_ms: Option<u64>,
    /// 1 to 64 steps.
    #[schema(min_items = 1, max_items = 64)]
    pub steps: Vec<StepDoc>,
}

/// A saga id (its pattern stated by hand: utoipa derives none for a newtype).
pub struct SagaIdDoc;

impl utoipa::PartialSchema for SagaIdDoc {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Za-z0-9._:-]{1,128}$"))
            .description(Some("Saga id."))
            .into()
    }
}

impl ToSchema for SagaIdDoc {}

/// `POST /v1/bulk/retry` and `/v1/bulk/abort` body (docs/api.md).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// The sagas to act on: 1 to 100 distinct ids, answered in this order.
    #[schema(min_items = 1, max_items = 100, value_type = Vec<SagaIdDoc>)]
    pub ids: Vec<String>,
}

/// `?wait_ms=` of a start.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Hold the answer until the saga is terminal or this many ms pass.
    #[param(minimum = 0, maximum = 60000)]
    pub wait_ms: Option<u64>,
}

/// Query of `GET /v1/sagas/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Hold the answer until the saga is terminal or this many ms pass.
    #[param(minimum = 0, maximum = 60000)]
    pub wait_ms: Option<u64>,
    /// attempts: every call and operator action; request: the request as accepted, secrets
    /// masked.
    #[param(pattern = "^((attempts|request)(,(attempts|request))*)?$")]
    pub include: Option<String>,
}

/// Query of `GET /v1/sagas`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Comma-separated statuses.
    #[param(
        pattern = "^((running|compensating|confirming|succeeded|compensated|stuck)(,(running|compensating|confirming|succeeded|compensated|stuck))*)?$"
    )]
    pub status: Option<String>,
    /// Saga kind.
    #[param(pattern = "^([A-Za-z0-9_.-]{1,64})?$")]
    pub name: Option<String>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^([0-9]{1,15}_[A-Za-z0-9._:-]{1,128})?$")]
    pub cursor: Option<String>,
}

/// Query of `GET /v1/counts`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountsParams {
    /// Count only sagas of this kind.
    #[param(pattern = "^([A-Za-z0-9_.-]{1,64})?$")]
    pub name: Option<String>,
}

/// The saga id in a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdParam {
    /// Saga id.
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub id: String,
}
