//! Integration tests: one binary (link time matters on 2 cores), real server on port 0, temp data
//! dirs, SQLite and PostgreSQL (see `support::both_dbs!`).

// Tests read the environment the suite sets up (PostgreSQL, llama.cpp, podman, CI, FERROSTACK_BLESS).
#![allow(clippy::disallowed_methods)]

mod attacks;
mod autoscale;
mod backends;
mod cli;
mod contracts;
mod distributed;
mod docs;
mod downloads;
mod drain;
mod drain_load;
mod e2e;
mod foundation;
mod gateway;
mod ha;
mod hosts;
mod leadership;
mod models;
mod multihost;
mod packing;
mod park;
mod pg_restart;
mod policy;
mod prefix_routing;
mod repository;
mod scale;
mod sdk_compat;
mod security;
mod static_stability;
mod support;
mod tidy;
mod upgrade;
mod workers;
