//! Integration tests: the real application (or binary) on a random port, a real scripted HTTP
//! participant on loopback, and a fresh database per test on SQLite, MariaDB and PostgreSQL.

mod helpers;
mod participant;
#[path = "../../src/bin/saga_bench/proxy.rs"]
mod proxy;

mod advanced;
mod api_contract;
mod backpressure;
mod breakers;
mod check_participant;
mod cluster;
mod config;
mod console;
mod crash;
mod definitions;
mod dtm;
mod named_definitions;
mod observability;
mod operations;
mod otlp_export;
mod outage;
mod retention;
mod security;
mod surgery;
mod tls;
mod trace_context;
mod upgrade;
