//! Seed objects: a multi-document YAML file of Kubernetes objects loaded at
//! start, plus the namespaces every cluster has.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Errors loading the seed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("reading seed {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing seed {path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("loading seed object: {0}")]
    Object(String),
}

/// The namespaces that always exist.
pub fn defaults() -> Vec<Value> {
    ["default", "kube-system", "kube-public", "kube-node-lease"]
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}))
        .collect()
}

/// Parses multi-document YAML into objects (empty documents skipped; `List`
/// kinds flattened).
pub fn parse(text: &str) -> Result<Vec<Value>, String> {
    // A seed is a trusted test fixture and may be large (benchmarks seed
    // tens of thousands of objects): lift the parser's document and node
    // budgets, which guard untrusted input, well above what a seed needs.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_events = 200_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_total_scalar_bytes = 2 << 30;
    budget.max_reader_input_bytes = Some(2 << 30);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in docs {
        match d {
            Value::Null => {}
            Value::Object(_) if d["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
                if let Some(items) = d["items"].as_array() {
                    out.extend(items.iter().cloned());
                }
            }
            Value::Object(_) => {
                if d["kind"].as_str().is_none() || d["apiVersion"].as_str().is_none() {
                    return Err("every document needs apiVersion and kind".into());
                }
                out.push(d)
            }
            other => return Err(format!("document is not an object: {other}")),
        }
    }
    Ok(out)
}

/// Reads and parses a seed file.
pub fn load_file(path: &Path) -> Result<Vec<Value>, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|msg| SeedError::Parse {
        path: path.to_path_buf(),
        msg,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn multi_document() {
        let objs = parse("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c}\n").unwrap();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1]["kind"], "ConfigMap");
        assert!(parse("- 1\n").is_err());
        assert!(parse("a: [").is_err());
    }

    #[test]
    fn demo_seed_parses() {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-demo.yaml");
        let objs = load_file(Path::new(p)).unwrap();
        assert!(objs.iter().any(|o| o["kind"] == "CustomResourceDefinition"));
    }
}
