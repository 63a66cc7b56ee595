//! The conformance suite against [`transport_tcp::TcpTransport`].

mod conformance;
mod tcp_harness;

use tcp_harness::Tcp;

conformance_tests!(Tcp);
