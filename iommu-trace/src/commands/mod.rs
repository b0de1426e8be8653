//! The subcommands' glue: each wires library stages together for one CLI command.

pub mod inspect;
pub mod probes;
pub mod record;
pub mod replay;
pub mod serve;
pub mod top;
