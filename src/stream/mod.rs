//! Continuous backup: `etcd-backup stream` follows etcd's watch so that no change is lost
//! between backups.
//!
//! A **generation** is one unbroken chain of revisions: a base snapshot (an ordinary backup,
//! [`crate::backup::take`]) at revision R0, then **segments** holding every revision from
//! R0+1 on, each whole, as etcd sent its events. Anything that would leave a revision out or
//! in twice ends the generation with its reason ([`chain::Break`]) and the next one starts
//! from a fresh base.
//!
//! - [`segment`]: a segment's format, written and read back (every byte read is hostile);
//! - [`kv`]: etcd's `KeyValue` as protobuf bytes;
//! - [`chain`]: which revision may follow which, and how watch responses become revisions;
//! - [`seal`]: a segment through zstd and age onto scratch disk;
//! - [`follow`]: the watch into sealed segments, and their upload beside it;
//! - [`prelude`]: the watch a new generation opens before its base, spooled while it is taken;
//! - [`run`]: a stream's life: the lock, generations started, resumed and ended, later bases;
//! - [`lock`]: one writer per prefix (acquire, hold, release);
//! - [`names`]: the names of a stream's objects, and what they say about continuity;
//! - [`objects`]: those objects in the bucket, through the store's calls by path;
//! - [`records`]: the start, base, trimmed and end records, and [`records::StreamView`], the
//!   one read of the prefix that everything else looks at;
//! - [`report`]: a row per generation and the `check --max-lag` verdict (pure);
//! - [`retention`]: what prune keeps of a stream's history (pure);
//! - [`serve`]: `/metrics` and `/healthz` while it runs.
//!
//! The command is [`crate::commands::stream`], a call of [`run::run`].

pub mod chain;
pub mod follow;
pub mod kv;
pub mod lock;
pub mod names;
pub mod objects;
pub mod prelude;
pub mod records;
pub mod report;
pub mod retention;
pub mod run;
pub mod seal;
pub mod segment;
pub mod serve;
