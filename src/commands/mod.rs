//! The commands, one module each, all of one shape: `run(store or what it needs, options,
//! &Context) -> Result<outcome>`. The binary builds the store once from the command's settings,
//! renders the outcome ([`crate::output`]) and picks the exit code from its [`Verdict`]; an
//! `Err` is a failure to do the work at all. Library logic lives below them ([`crate::backup`],
//! [`crate::restore`], [`crate::stream`], [`crate::pitr`], ...): a command turns options into
//! calls and a result. Tests run them in-process against the in-memory store.

use chrono::{DateTime, Utc};

use crate::shutdown::Shutdown;

pub mod backup;
pub mod check;
pub mod defrag;
pub mod diff;
pub mod doctor;
pub mod get;
pub mod history;
pub mod keygen;
pub mod list;
pub mod pitr;
pub mod prune;
pub mod restore;
pub mod status;
pub mod stream;
pub mod verify;

/// What every command runs in: the time it reckons from (only `main` reads the clock) and the
/// shutdown every wait selects on.
#[derive(Clone)]
pub struct Context {
    pub now: DateTime<Utc>,
    pub shutdown: Shutdown,
}

/// Whether a command that did its work found what it was asked to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Exit 1, after the outcome is printed, with this message.
    Fail(String),
}

/// A command's result: printed as it is, then judged. Most outcomes always pass.
pub trait Outcome {
    fn verdict(&self) -> Verdict {
        Verdict::Pass
    }
}
