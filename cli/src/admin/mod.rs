//! The admin HTTP API a node serves on its `admin` address: the routes (status, Prometheus
//! metrics, session reads and writes, the domain file's reload), the guard every request passes (no browsers, JSON
//! bodies, the bearer token), the server's bounds (connection cap, timeouts), the
//! file-descriptor budget, and the token's file.

pub(crate) mod fds;
mod guard;
mod managers;
pub(crate) mod reload;
mod routes;
mod server;
pub(crate) mod token;

pub(crate) use guard::Guard;
pub(crate) use routes::{AdminState, Exposition, router};
pub(crate) use server::{Limits, serve};
