//! The one integration test binary (it links once): golden files and corruption corpus,
//! in-process pipeline tests against an in-memory store, tests of the real binary, and the
//! container tests against a real etcd (mTLS) and a real S3 server.

mod cli;
mod common;
mod containers;
mod mutate;
mod pipeline;
mod verify;
