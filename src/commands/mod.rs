//! The commands, one module each. Each is a library function that takes validated settings and
//! returns data (a summary, rows, a plan, a verdict); `main` prints it and picks the exit code.
//! Tests run every command in-process against the in-memory store.

pub mod backup;
pub mod check;
pub mod defrag;
pub mod doctor;
pub mod generations;
pub mod list;
pub mod pitr;
pub mod prune;
pub mod restore;
pub mod status;
pub mod stream;
pub mod verify;
