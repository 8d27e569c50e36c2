//! The OpenAPI 3 description of the API, kept beside the handlers it describes.

use serde_json::{json, Value};

/// The OpenAPI document served at `/openapi.json`.
pub fn document() -> Value {
    let problem = json!({"description": "Problem document (RFC 9457)", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
    let saga = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Saga"}}}});
    let denied = |r: &mut Value| {
        // Every /v1 operation: a token may be missing or lack the scope, the log may be down.
        for code in ["401", "403", "503"] {
            r[code] = problem.clone();
        }
    };
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}});
    let wait_param = json!({"name": "wait_ms", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 60000},
        "description": "hold the answer until the saga is terminal or this many ms pass"});
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "saga-orchestrator", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Durable sagas and TCC across microservices. See docs/api.md."},
        // Tokens are optional: a service without [auth] tokens is open (loopback only).
        "security": [{}, {"bearer": []}],
        "paths": {
            "/v1/sagas": {
                "post": {
                    "summary": "Start a saga (idempotent on id)",
                    "parameters": [wait_param],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StartRequest"}}}},
                    "responses": {"201": saga("Created; recorded before this answer"), "200": saga("Existing saga with an identical request"),
                                  "400": problem, "409": problem, "413": problem, "415": problem}
                },
                "get": {
                    "summary": "List sagas, newest first",
                    "parameters": [
                        {"name": "status", "in": "query", "description": "comma-separated statuses", "schema": {"type": "string",
                            "pattern": "^((running|compensating|confirming|succeeded|compensated|stuck)(,(running|compensating|confirming|succeeded|compensated|stuck))*)?$"}},
                        {"name": "name", "in": "query", "schema": {"type": "string", "pattern": "^([A-Za-z0-9_.-]{1,64})?$"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                        {"name": "cursor", "in": "query", "description": "next_cursor of the previous page",
                            "schema": {"type": "string", "pattern": "^([0-9]{1,15}_[A-Za-z0-9._:-]{1,128})?$"}}
                    ],
                    "responses": {"200": {"description": "A page", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["items", "next_cursor"],
                        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Saga"}},
                                       "next_cursor": {"type": "string", "nullable": true}}}}}},
                                  "400": problem}
                }
            },
            "/v1/sagas/{id}": {"get": {"summary": "Read a saga", "parameters": [id_param, wait_param,
                {"name": "include", "in": "query", "description": "attempts: every call; request: the request as accepted, secrets masked",
                 "schema": {"type": "string", "pattern": "^((attempts|request)(,(attempts|request))*)?$"}}],
                "responses": {"200": saga("The saga"), "400": problem, "404": problem}}},
            "/v1/sagas/{id}/retry": {"post": {"summary": "Resume a stuck saga", "parameters": [id_param],
                "responses": {"202": saga("Resumed"), "404": problem, "409": problem}}},
            "/v1/sagas/{id}/abort": {"post": {"summary": "Stop a running saga and compensate", "parameters": [id_param],
                "responses": {"202": saga("Compensating"), "404": problem, "409": problem}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "serving"}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {"200": {"description": "ready"}, "503": problem}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (needs a token when auth.metrics_scope is set)", "responses": {"200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}, "401": problem, "403": problem}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}}
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
            "description": "A token of [[auth.tokens]]: read for GET, write to start, admin to retry or abort"}},
          "schemas": {
            "Endpoint": {"type": "object", "required": ["url"], "additionalProperties": false, "properties": {
                "url": {"type": "string", "format": "uri", "maxLength": 2048}, "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
                "headers": {"type": "object", "maxProperties": 32, "additionalProperties": {"type": "string", "maxLength": 8192}}, "body": {},
                "delay_ms": {"type": "integer", "minimum": 0}, "service": {"type": "string"}}},
            "Retry": {"type": "object", "additionalProperties": false, "properties": {
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 1000}, "initial_backoff_ms": {"type": "integer", "minimum": 0},
                "max_backoff_ms": {"type": "integer", "minimum": 0}, "multiplier": {"type": "number", "minimum": 1, "maximum": 100}}},
            "Step": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                "action": {"$ref": "#/components/schemas/Endpoint"}, "compensation": {"$ref": "#/components/schemas/Endpoint"},
                "try": {"$ref": "#/components/schemas/Endpoint"}, "confirm": {"$ref": "#/components/schemas/Endpoint"}, "cancel": {"$ref": "#/components/schemas/Endpoint"},
                "depends_on": {"type": "array", "items": {"type": "string"}}, "timeout_ms": {"type": "integer", "minimum": 1},
                "retry": {"$ref": "#/components/schemas/Retry"}}},
            "StartRequest": {"type": "object", "required": ["name", "steps"], "additionalProperties": false, "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}, "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                "mode": {"type": "string", "enum": ["saga", "tcc"], "default": "saga"}, "payload": {},
                "timeout_ms": {"type": "integer", "minimum": 1},
                "steps": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"$ref": "#/components/schemas/Step"}}}},
            "StepState": {"type": "object", "properties": {
                "name": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "running", "retry_scheduled", "succeeded", "failed", "compensation_scheduled",
                    "compensating", "compensated", "skipped", "tried", "confirming", "confirmed", "cancelling", "cancelled"]},
                "attempts": {"type": "integer"}, "compensation_attempts": {"type": "integer"},
                "last_error": {"type": "string", "nullable": true}, "next_attempt_at": {"type": "string", "format": "date-time", "nullable": true},
                "updated_at": {"type": "string", "format": "date-time"},
                "history": {"type": "array", "items": {"type": "object", "properties": {
                    "phase": {"type": "string"}, "attempt": {"type": "integer"}, "started_at": {"type": "string", "format": "date-time"},
                    "finished_at": {"type": "string", "format": "date-time", "nullable": true}, "http_status": {"type": "integer", "nullable": true},
                    "outcome": {"type": "string", "nullable": true, "enum": ["success", "failure", "unknown", null]}, "error": {"type": "string", "nullable": true}}}}}},
            "Saga": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "mode": {"type": "string", "enum": ["saga", "tcc"]},
                "status": {"type": "string", "enum": ["running", "compensating", "confirming", "succeeded", "compensated", "stuck"]},
                "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"},
                "deadline_at": {"type": "string", "format": "date-time", "nullable": true}, "error": {"type": "string", "nullable": true},
                "steps": {"type": "array", "items": {"$ref": "#/components/schemas/StepState"}},
                "operator_actions": {"type": "array", "items": {"type": "object", "properties": {
                    "action": {"type": "string"}, "by": {"type": "string"}, "at": {"type": "string", "format": "date-time"}}}},
                "request": {"type": "object", "description": "with include=request: as accepted, secret header values shown as ***"}}},
            "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "pointer": {"type": "string"}, "parameter": {"type": "string"}, "detail": {"type": "string"}}}}}}
        }}
    });
    for op in [
        "/v1/sagas:post",
        "/v1/sagas:get",
        "/v1/sagas/{id}:get",
        "/v1/sagas/{id}/retry:post",
        "/v1/sagas/{id}/abort:post",
    ] {
        let (path, method) = op.split_once(':').unwrap_or_default();
        denied(&mut doc["paths"][path][method]["responses"]);
    }
    doc
}
