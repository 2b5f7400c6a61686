//! Continuous backup: `etcd-backup stream` follows etcd's watch so that no change is lost
//! between backups.
//!
//! A **generation** is one unbroken chain of revisions: a base snapshot (an ordinary backup,
//! through [`crate::pipeline`]) at revision R0, then **segments** holding every revision from
//! R0+1 on, each whole, as etcd sent its events. Anything that would leave a revision out or
//! in twice ends the generation with its reason ([`chain::Break`]) and the next one starts
//! from a fresh base.
//!
//! - [`segment`]: a segment's format, written and read back (every byte read is hostile);
//! - [`kv`]: etcd's `KeyValue` as protobuf bytes;
//! - [`chain`]: which revision may follow which, and how watch responses become revisions;
//! - [`seal`]: a segment through zstd and age onto scratch disk;
//! - [`follow`]: the watch into sealed segments, and their upload beside it;
//! - [`lock`]: one writer per prefix;
//! - [`names`]: the names of a stream's objects, and what they say about continuity;
//! - [`retention`]: what prune keeps of a stream's history;
//! - [`serve`]: `/metrics` and `/healthz` while it runs.
//!
//! The command around them (bases, resuming, ending a generation) is
//! [`crate::commands::stream`].

pub mod chain;
pub mod follow;
pub mod kv;
pub mod lock;
pub mod names;
pub mod retention;
pub mod seal;
pub mod segment;
pub mod serve;
