// A panic is how a test or benchmark fails: unwrapping is its error handling.
#![allow(clippy::unwrap_used)]
mod backup;
mod cli;
mod demo;
mod encryption;
mod prune;
mod real;
mod restore;
mod schedule;
mod seed;
mod sim;
mod storage;
mod support;
mod volumes;
