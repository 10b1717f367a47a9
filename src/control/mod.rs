//! The control plane: the loops the leading server runs to turn what operators asked for into
//! what runs (deployments → instances → placements), and to watch it (worker liveness, draining,
//! parking, autoscaling), with the pure decisions they apply. It reads and writes the store and
//! feeds the gateway; it never serves HTTP. From `server` it uses only the token helpers
//! (`server::auth`) and the embedded backend catalog (`server::bootstrap::catalog`), which the
//! tidy test checks.

pub mod analysis;
pub mod autoscale;
pub mod autoscaler;
pub mod controller;
pub mod deployment;
pub mod drain;
pub mod evaluate;
pub mod leader;
pub mod monitor;
pub mod park;
pub mod replicas;
pub mod route_snapshot;
pub mod schedule;
pub mod scheduler;
