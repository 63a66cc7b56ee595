//! The engine's unit tests: a cluster of engines with in-memory delivery (`support`) and
//! the scenarios run on it, one file per concern of the engine (`model` runs random
//! operation sequences against a model of each session).

#[allow(clippy::unwrap_used, unreachable_pub, dead_code)]
mod support;

#[allow(clippy::unwrap_used)]
mod backup;
#[allow(clippy::unwrap_used)]
mod claims;
#[allow(clippy::unwrap_used)]
mod failover;
#[allow(clippy::unwrap_used)]
mod flow;
#[allow(clippy::unwrap_used)]
mod leave;
#[allow(clippy::unwrap_used)]
mod membership;
#[allow(clippy::unwrap_used)]
mod model;
#[allow(clippy::unwrap_used)]
mod quarantine;
#[allow(clippy::unwrap_used)]
mod topology;
#[allow(clippy::unwrap_used)]
mod writes;
