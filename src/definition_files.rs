//! Definitions kept as files in the repository of the team that owns them (`definitions.dir`):
//! each `*.json` or `*.toml` holds one definition, named by its `name` or else by its file name.
//! Stored at start-up (a new version when one changed) and checked without a service by
//! `saga-orchestrator definitions check DIR`. The rules are `domain::catalog`'s.

use crate::domain::catalog::{check_document, CheckedDocument};
use crate::domain::{Defaults, OutboundPolicy};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One definition read from a file.
#[derive(Debug, Clone)]
pub struct FileDefinition {
    /// The file.
    pub file: PathBuf,
    /// The definition's name.
    pub name: String,
    /// Its document, checked.
    pub checked: CheckedDocument,
}

/// Reads and checks every `*.json` and `*.toml` file of `dir` (not its subdirectories), in
/// name order. Every problem of every file, as `FILE: POINTER: DETAIL`.
pub fn read_dir(
    dir: &Path,
    defaults: &Defaults,
    policy: &OutboundPolicy,
) -> Result<Vec<FileDefinition>, Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(extension(p), Some("json" | "toml")))
        .collect();
    files.sort();
    let mut out: Vec<FileDefinition> = Vec::new();
    let mut errs = Vec::new();
    for file in files {
        match read_file(&file, defaults, policy) {
            Ok(d) => match out.iter().find(|o| o.name == d.name) {
                Some(o) => errs.push(format!(
                    "{}: defines {:?} as {} does",
                    file.display(),
                    d.name,
                    o.file.display()
                )),
                None => out.push(d),
            },
            Err(e) => errs.extend(e),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn extension(p: &Path) -> Option<&str> {
    p.extension().and_then(|e| e.to_str())
}

/// Reads and checks one definition file.
pub fn read_file(
    file: &Path,
    defaults: &Defaults,
    policy: &OutboundPolicy,
) -> Result<FileDefinition, Vec<String>> {
    let at = |what: String| vec![format!("{}: {what}", file.display())];
    let text = std::fs::read_to_string(file).map_err(|e| at(e.to_string()))?;
    let body: Value = match extension(file) {
        Some("toml") => toml::from_str(&text).map_err(|e| at(e.to_string()))?,
        _ => serde_json::from_str(&text).map_err(|e| at(format!("not JSON: {e}")))?,
    };
    let name = match body.get("name").and_then(Value::as_str) {
        Some(n) => n.to_string(),
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string(),
    };
    let checked = check_document(&name, &body, defaults)
        .and_then(|c| policy.admit(&c.sample).map(|()| c))
        .map_err(|errs| {
            errs.into_iter()
                .map(|e| {
                    let p = if e.pointer.is_empty() {
                        "/"
                    } else {
                        &e.pointer
                    };
                    format!("{}: {p}: {}", file.display(), e.detail)
                })
                .collect::<Vec<_>>()
        })?;
    Ok(FileDefinition {
        file: file.to_path_buf(),
        name,
        checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutboundPolicy {
        OutboundPolicy::new(&[], &[]).unwrap()
    }

    #[test]
    fn json_and_toml_files_are_read_named_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("place_order.toml"),
            r#"
description = "an order"
[[steps]]
name = "order"
action = { url = "http://orders.local/create", body = { id = { "$payload" = "/id" } } }
"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("x.json"),
            r#"{"name": "refund", "steps": [{"name": "a", "action": {"url": "http://a.local/"}}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a definition").unwrap();
        let defs = read_dir(dir.path(), &Defaults::default(), &policy()).unwrap();
        let names: Vec<_> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["place_order", "refund"]);
        assert_eq!(
            defs[0].checked.document["steps"][0]["action"]["body"]["id"]["$payload"],
            "/id"
        );
    }

    #[test]
    fn every_bad_file_is_named_with_its_pointer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"steps": [{"name": "a", "action": {"url": "nope"}}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("b.toml"), "steps = [").unwrap();
        for f in ["c.json", "d.json"] {
            std::fs::write(
                dir.path().join(f),
                r#"{"name": "dup", "steps": [{"name": "a", "action": {"url": "http://a.local/"}}]}"#,
            )
            .unwrap();
        }
        let errs = read_dir(dir.path(), &Defaults::default(), &policy()).unwrap_err();
        assert!(
            errs[0].ends_with("a.json: /steps/0/action/url: must be an absolute http or https URL"),
            "{errs:?}"
        );
        assert!(errs[1].contains("b.toml: "), "{errs:?}");
        assert!(
            errs[2].contains("d.json: defines \"dup\" as") && errs[2].ends_with("c.json does"),
            "{errs:?}"
        );
    }

    #[test]
    fn the_outbound_policy_is_checked_as_at_a_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"steps": [{"name": "a", "action": {"url": "http://169.254.169.254/"}}]}"#,
        )
        .unwrap();
        let errs = read_dir(dir.path(), &Defaults::default(), &policy()).unwrap_err();
        assert!(
            errs[0].contains("/steps/0/action/url: blocked by policy"),
            "{errs:?}"
        );
    }
}
