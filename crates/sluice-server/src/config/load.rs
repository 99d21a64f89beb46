//! Reading files and directories, and putting their domains and settings together.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_core::AlgorithmKind;

use super::build::{self, BuildContext, FileDoc, Settings};
use super::tree::Domain;
use super::{Config, ConfigError, StoreConfig};

/// Loads a file (envoy domain file or sluice config file) or a directory of them.
pub(super) fn load(path: &Path) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let metadata = fs::metadata(path).map_err(|err| io_error(&shown, "cannot read", &err))?;
    let files = if metadata.is_dir() {
        yaml_files(path, &shown)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::with_capacity(files.len());
    for file in &files {
        let name = file.display().to_string();
        let bytes = fs::read(file).map_err(|err| io_error(&name, "cannot read", &err))?;
        let text = String::from_utf8(bytes).map_err(|err| ConfigError {
            file: name.clone(),
            line: None,
            field: String::new(),
            message: format!("not valid UTF-8: {err}"),
        })?;
        docs.push(build::read_file(&text, &name)?);
    }
    assemble(docs, files)
}

/// The `*.yaml` and `*.yml` files directly in `dir`, by name, without hidden files.
fn yaml_files(dir: &Path, shown: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = fs::read_dir(dir).map_err(|err| io_error(shown, "cannot list", &err))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| io_error(shown, "cannot list", &err))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        if name.starts_with('.') || !(lower.ends_with(".yaml") || lower.ends_with(".yml")) {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, as a config directory swapped by symlink is common.
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(ConfigError {
            file: shown.to_owned(),
            line: None,
            field: String::new(),
            message: "no *.yaml or *.yml files in this directory".to_owned(),
        });
    }
    Ok(files)
}

fn io_error(file: &str, what: &str, err: &std::io::Error) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line: None,
        field: String::new(),
        message: format!("{what}: {err}"),
    }
}

/// One configuration from read files: at most one sets `store` and `default_algorithm`,
/// and every domain is defined once.
pub(super) fn assemble(docs: Vec<FileDoc>, sources: Vec<PathBuf>) -> Result<Config, ConfigError> {
    let mut settings: Option<(&str, &Settings)> = None;
    for doc in &docs {
        if let Some(these) = &doc.settings {
            if let Some((first_file, _)) = settings {
                return Err(ConfigError {
                    file: doc.file.clone(),
                    line: Some(these.line),
                    field: these.field.to_owned(),
                    message: format!(
                        "store and default_algorithm are already set in {first_file} (at most \
                         one file of a directory may set them)"
                    ),
                });
            }
            settings = Some((&doc.file, these));
        }
    }
    let default_algorithm = settings
        .and_then(|(_, s)| s.default_algorithm)
        .unwrap_or(AlgorithmKind::Gcra);
    let store = settings
        .and_then(|(_, s)| s.store.clone())
        .unwrap_or_default();
    let ctx = BuildContext {
        default_algorithm,
        redis: matches!(store, StoreConfig::Redis { .. }),
    };
    let mut domains: HashMap<String, Domain> = HashMap::new();
    for doc in &docs {
        for domain_doc in &doc.domains {
            if let Some(first) = domains.get(&domain_doc.name) {
                return Err(ConfigError {
                    file: doc.file.clone(),
                    line: Some(domain_doc.line),
                    field: domain_doc.field(),
                    message: format!(
                        "duplicate domain {:?} (already defined in {}:{})",
                        domain_doc.name, first.file, first.line
                    ),
                });
            }
            let domain = build::build_domain(ctx, &doc.file, domain_doc)?;
            domains.insert(domain_doc.name.clone(), domain);
        }
    }
    Ok(Config {
        default_algorithm,
        store,
        sources,
        domains: Arc::new(domains),
    })
}
