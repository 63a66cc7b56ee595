//! The engine's unit tests: a cluster of engines with in-memory delivery (`support`) and
//! the scenarios run on it.

#[allow(clippy::unwrap_used)]
mod edge;
#[allow(clippy::unwrap_used)]
mod engine;
#[allow(clippy::unwrap_used)]
mod model;
#[allow(clippy::unwrap_used, unreachable_pub, dead_code)]
mod support;
#[allow(clippy::unwrap_used)]
mod topology;
