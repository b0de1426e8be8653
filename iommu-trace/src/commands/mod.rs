//! The subcommands' glue: each wires library stages together for one CLI command.

pub mod inspect;
pub mod probes;
pub mod record;
pub mod replay;
pub mod serve;
pub mod top;

/// A warning on standard error. Warnings quote files and what the kernel said: control
/// characters are escaped for the terminal.
pub(crate) fn warn(file: &std::path::Path, what: impl std::fmt::Display) {
    let text = format!("warning: {}: {what}", file.display());
    eprintln!("{}", crate::text::printable_lines(&text));
}
