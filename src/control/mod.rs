//! The control plane: the loops the leading server runs to turn what operators asked for into
//! what runs (deployments → instances → placements), and to watch it (worker liveness, draining,
//! parking, autoscaling), with the pure decisions they apply. It reads and writes the store and
//! feeds the gateway; it never serves HTTP. From `server` it uses only the token helpers
//! (`server::auth`) and the embedded backend catalog (`server::bootstrap::catalog`), which the
//! tidy test checks.

pub(crate) mod analysis;
pub(crate) mod autoscale;
pub mod autoscaler;
pub(crate) mod controller;
pub(crate) mod deployment;
pub(crate) mod drain;
pub(crate) mod evaluate;
pub mod leader;
pub(crate) mod monitor;
pub(crate) mod park;
pub(crate) mod replicas;
pub(crate) mod route_snapshot;
pub(crate) mod schedule;
pub mod scheduler;
