//! `iommu-trace schema`: the JSON Schemas of what the tool prints for programs, derived
//! from the very types that serialize it (schemars), so they cannot drift from the output.
//! The repository keeps a copy of each under `schemas/` (the package installs them); a test
//! checks the copies against these and validates the golden captures' output with them.

use schemars::generate::SchemaSettings;

use crate::events::Event;
use crate::replay::Report;

/// The documents `schema` can print, as `schemas/<file>` holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Document {
    /// One line of `inspect --format jsonl` (an event).
    Events,
    /// The report `replay --json` prints.
    Replay,
}

impl Document {
    pub const ALL: [Document; 2] = [Document::Events, Document::Replay];

    /// Its file under `schemas/` (and /usr/share/iommu-trace/schemas/).
    pub fn file_name(self) -> &'static str {
        match self {
            Document::Events => "event.schema.json",
            Document::Replay => "replay.schema.json",
        }
    }

    /// The schema (JSON Schema 2020-12), pretty-printed with a final newline.
    pub fn render(self) -> String {
        // What the output holds, not what a reader would accept: fields that are skipped
        // when empty are optional, every other one required.
        let generator = SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator();
        let schema = match self {
            Document::Events => generator.into_root_schema_for::<Event>(),
            Document::Replay => generator.into_root_schema_for::<Report>(),
        };
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
        text.push('\n');
        text
    }
}
