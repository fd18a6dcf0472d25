//! lifeboat: backup and restore of stateful Kubernetes workloads into replicated object storage,
//! and restore into a secondary region when the primary is lost.
//!
//! Parts, each a module (see `DESIGN.md`): [`cli`] → [`repo`] → [`storage`], with [`config`]
//! beside them and [`sim`], the simulated cluster used by tests and the demo.
#![deny(missing_docs)]

pub mod backup;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod filter;
pub mod mover;
pub mod repo;
pub mod restore;
pub mod schedule;
pub mod sim;
pub mod storage;
pub mod transform;
pub mod units;
