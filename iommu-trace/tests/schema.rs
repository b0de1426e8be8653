//! The JSON Schemas under `schemas/` are the ones the types derive (`iommu-trace schema`),
//! and what the binary prints for every golden capture validates against them: each line of
//! `inspect --format jsonl`, and `replay --json` (with and without `--what-if`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use iommu_trace::commands::schema::Document;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The committed schema of `doc`, compiled.
fn validator(doc: Document) -> jsonschema::Validator {
    let path = repo().join("schemas").join(doc.file_name());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
}

fn golden_captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/golden"))
        .expect("tests/golden")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "itc"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the golden captures are missing");
    files
}

/// Standard output of the binary; exit statuses 0, 1 and 3 are reports, 2 an error.
fn stdout_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_iommu-trace"))
        .args(args)
        .output()
        .expect("running iommu-trace");
    assert!(
        matches!(out.status.code(), Some(0 | 1 | 3)),
        "iommu-trace {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The first errors of `instance` against `validator`, for a failure message.
fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .take(3)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schemas_are_the_ones_the_types_derive() {
    for doc in Document::ALL {
        let path = repo().join("schemas").join(doc.file_name());
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == doc.render(),
            "{} is not what the types derive: run `cargo run -p iommu-trace -- schema {} > \
             schemas/{}` and review the change (a removed or retyped field breaks consumers)",
            path.display(),
            format!("{doc:?}").to_lowercase(),
            doc.file_name()
        );
    }
}

#[test]
fn every_jsonl_line_of_the_golden_captures_validates() {
    let validator = validator(Document::Events);
    let mut kinds = BTreeSet::new();
    let mut lines = 0;
    for capture in golden_captures() {
        let jsonl = stdout_of(&["inspect", "--format", "jsonl", capture.to_str().unwrap()]);
        for (n, line) in jsonl.lines().enumerate() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{} line {}: not JSON: {e}", capture.display(), n + 1));
            let bad = errors(&validator, &event);
            assert!(
                bad.is_empty(),
                "{} line {}: {line}\n{}",
                capture.display(),
                n + 1,
                bad.join("\n")
            );
            kinds.insert(event["event"].as_str().unwrap_or_default().to_string());
            lines += 1;
        }
    }
    // The golden set exercises most of the stream: the schema is checked against real
    // output of these kinds, not only derived.
    for kind in [
        "domain_alloc",
        "hwpt_alloc",
        "domain_free",
        "map",
        "unmap",
        "pt_alloc",
        "pt_free",
        "object_alloc",
        "object_destroy",
        "ioas_map",
        "ioas_unmap",
        "pin",
    ] {
        assert!(kinds.contains(kind), "no golden capture has a {kind} event");
    }
    assert!(lines > 1000, "only {lines} events validated");
}

#[test]
fn replay_json_of_every_golden_capture_validates() {
    let validator = validator(Document::Replay);
    for capture in golden_captures() {
        let path = capture.to_str().unwrap();
        for extra in [&[][..], &["--what-if"][..]] {
            let mut args = vec!["replay", "--json", path];
            args.extend_from_slice(extra);
            let report: Value = serde_json::from_str(&stdout_of(&args))
                .unwrap_or_else(|e| panic!("replay --json {path}: not JSON: {e}"));
            let bad = errors(&validator, &report);
            assert!(
                bad.is_empty(),
                "replay --json {path} {extra:?}:\n{}",
                bad.join("\n")
            );
        }
    }
}

/// The schemas constrain: output the tool never prints is refused.
#[test]
fn the_schemas_refuse_what_the_tool_never_prints() {
    let events = validator(Document::Events);
    let capture = repo().join("tests/golden/6.12-vtd-exercise.itc");
    let jsonl = stdout_of(&["inspect", "--format", "jsonl", capture.to_str().unwrap()]);
    let map: Value = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "map")
        .expect("a map event");
    assert!(events.is_valid(&map));
    let mut broken = Vec::new();
    let mut no_time = map.clone();
    no_time.as_object_mut().unwrap().remove("ts_ns");
    broken.push(("without ts_ns", no_time));
    let mut unknown = map.clone();
    unknown["event"] = "remap".into();
    broken.push(("an unknown event kind", unknown));
    let mut pointer_as_number = map.clone();
    pointer_as_number["domain"] = 18446612682133569536u64.into();
    broken.push(("a kernel pointer as a number", pointer_as_number));
    let mut negative = map.clone();
    negative["pid"] = (-1).into();
    broken.push(("a negative pid", negative));
    for (what, event) in broken {
        assert!(
            !events.is_valid(&event),
            "the event schema accepts {what}: {event}"
        );
    }

    let replay = validator(Document::Replay);
    let report: Value =
        serde_json::from_str(&stdout_of(&["replay", "--json", capture.to_str().unwrap()])).unwrap();
    assert!(replay.is_valid(&report));
    let mut bad_verdict = report.clone();
    bad_verdict["domains"][0]["verdict"] = "probably_fine".into();
    assert!(
        !replay.is_valid(&bad_verdict),
        "the replay schema accepts any verdict"
    );
    let mut no_domains = report;
    no_domains.as_object_mut().unwrap().remove("domains");
    assert!(
        !replay.is_valid(&no_domains),
        "the replay schema accepts a report without domains"
    );
}
