//! Black-box tests of the acker through its public API: a model check of
//! random rebalances, acks and commits, and a timing of the hot path.

#![allow(missing_docs, clippy::unwrap_used)]

mod model;
mod speed;
