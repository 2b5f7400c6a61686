//! The way back through the stream's history: which base and segments reach a point
//! ([`plan`], pure, with [`plan::Point`]), fetching and checking those segments ([`feed`], every
//! refusal unit-tested), the bucket as the commands read it ([`archive`]), the database at a
//! revision written offline ([`rebuild`]), what a Kubernetes value says about its object
//! ([`k8s`]), and which keys changed between two revisions ([`changes`]). The commands over it
//! are `restore --to-revision/--to-time` ([`crate::commands::pitr`]), `get`, `history` and
//! `diff`.

pub mod archive;
pub mod changes;
pub mod feed;
pub mod k8s;
pub mod plan;
pub mod rebuild;
