//! Point-in-time recovery from the stream's generations: which base and segments reach a
//! revision ([`plan`]), the database at that revision written offline ([`rebuild`]), what a
//! Kubernetes value says about its object ([`k8s`]), and which keys changed between two
//! revisions ([`changes`]). The bucket is read by `commands::pitr`.

pub mod changes;
pub mod k8s;
pub mod plan;
pub mod rebuild;
