//! saga-orchestrator: durable sagas and TCC across microservices.
//!
//! Layout: [`domain`] is the pure state machine; `store` is the saga log; `actors` run sagas;
//! `api` speaks HTTP; `startup` wires them into an [`startup::Application`].

pub mod actors;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod check_participant;
pub mod config;
pub mod console;
pub mod definition_files;
pub mod demo;
pub mod domain;
pub mod metrics;
pub mod outbound;
pub mod participant;
pub mod reachability;
pub mod retention;
pub mod services;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod upgrade;
