//! Issue 15's benchmarks of the routing mesh: the service proxy's throughput and
//! latency beside a direct connection and HAProxy (`proxy.rs`, over the HTTP ends in
//! `http.rs`), and how fast a killed task leaves every agent's proxy
//! (`propagation.rs`).

mod http;
pub mod propagation;
pub mod proxy;
