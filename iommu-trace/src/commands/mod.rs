//! The subcommands' glue: each wires library stages together for one CLI command.

pub mod inspect;
pub mod probes;
pub mod record;
pub mod replay;
pub mod schema;
pub mod serve;
pub mod top;

/// A warning on standard error. Warnings quote files and what the kernel said: control
/// characters are escaped for the terminal.
pub(crate) fn warn(capture: &str, what: impl std::fmt::Display) {
    let text = format!("warning: {capture}: {what}");
    eprintln!("{}", crate::text::printable_lines(&text));
}
