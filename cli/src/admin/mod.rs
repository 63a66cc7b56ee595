//! The admin HTTP API a node serves on its `admin` address: the routes (status, Prometheus
//! metrics, session reads and writes).

mod routes;

pub(crate) use routes::{AdminState, router};
