//! The crate's layers, lowest first. A module may use the modules of the layers below its
//! own and never one of its own layer or above: the import graph has no cycle, and the order
//! can be read off this list (and off `docs/architecture.md`, which explains each layer).
//! The test below reads the source and fails when a `crate::` path breaks the order.

/// Top-level modules of `crates/tether/src`, by layer, lowest first.
pub(crate) const LAYERS: &[&[&str]] = &[
    // The wall clock, the systemd notification socket, the event loop's turn, the thread's
    // reused header maps: no dependencies.
    &["clock", "systemd", "turn", "header_maps"],
    // Certificates and keys to rustls configurations.
    &["tls"],
    // The configuration file: parsed, validated, typed.
    &["config"],
    // What a snapshot is built from: metric handles, rate limiters, stick tables, the
    // pooled clients that reach servers.
    &["metrics", "rate", "stick", "upstream"],
    // One immutable view of a configuration generation.
    &["snapshot"],
    // Health checks and passive outlier detection over a snapshot's backends; DNS service
    // discovery, which finds servers and drains those that leave.
    &["discovery", "health"],
    // The request path.
    &["proxy"],
    // Listeners and client connections.
    &["server"],
    // Typed commands that change a running Tether.
    &["control"],
    // The admin API and dashboard.
    &["admin"],
    // Start, reload, signals and shutdown: the controller.
    &["runtime"],
    // `tether demo`; `tether servers` and `tether drain` (clients of the admin API).
    &["ctl", "demo"],
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::LAYERS;

    /// Modules outside the order: the crate root, this list, and test-only helpers.
    const UNLAYERED: &[&str] = &["lib", "main", "layers", "test_support"];

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|layer| layer.contains(&module))
    }

    /// Every `.rs` file of top-level module `module` (its file and its folder).
    fn files_of(src: &Path, module: &str) -> Vec<PathBuf> {
        let mut files = vec![src.join(format!("{module}.rs"))];
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        files.retain(|f| f.exists());
        files
    }

    /// The top-level modules `text` names through `crate::` paths (`use crate::{a, b::c}`
    /// too), comments aside: a doc link to a module above is no dependency.
    fn crate_refs(text: &str) -> BTreeSet<String> {
        let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
        let text = code.join("\n");
        let mut found = BTreeSet::new();
        for (at, _) in text.match_indices("crate::") {
            if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // `tether_crate::` or the like
            }
            let rest = &text[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    found.insert(name);
                }
            } else {
                found.insert(
                    rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect(),
                );
            }
        }
        found.retain(|n| !n.is_empty() && n.chars().next().is_some_and(char::is_lowercase));
        found
    }

    /// `(module, used module)` pairs that break the order.
    fn violations(src: &Path) -> Vec<String> {
        let mut wrong = Vec::new();
        for (layer, modules) in LAYERS.iter().enumerate() {
            for module in *modules {
                for file in files_of(src, module) {
                    let text = std::fs::read_to_string(&file).unwrap_or_default();
                    for used in crate_refs(&text) {
                        if used == *module || UNLAYERED.contains(&used.as_str()) {
                            continue;
                        }
                        match layer_of(&used) {
                            Some(l) if l < layer => {}
                            Some(l) => wrong.push(format!(
                                "{} uses crate::{used} (layer {l}), at or above its own layer {layer} ({module})",
                                file.display()
                            )),
                            None => wrong.push(format!("{}: crate::{used} is in no layer", file.display())),
                        }
                    }
                }
            }
        }
        wrong
    }

    #[test]
    fn no_module_uses_one_of_its_own_layer_or_above() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let wrong = violations(&src);
        assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    }

    #[test]
    fn every_top_level_module_is_in_a_layer() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&src).into_iter().flatten().flatten() {
            let path = entry.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            let is_module = path.is_dir() || path.extension().is_some_and(|e| e == "rs");
            if is_module && layer_of(stem).is_none() && !UNLAYERED.contains(&stem) {
                missing.push(stem.to_owned());
            }
        }
        assert!(missing.is_empty(), "modules in no layer of LAYERS: {missing:?}");
    }

    #[test]
    fn the_reference_scanner_reads_grouped_and_nested_paths() {
        let text = "use crate::config::X;\nuse crate::{metrics, snapshot::View};\n\
                    let a = crate::clock::unix_now();\nuse tether_core::x;\n/// [`crate::admin`]";
        let found: Vec<String> = crate_refs(text).into_iter().collect();
        assert_eq!(found, ["clock", "config", "metrics", "snapshot"]);
        // An upward edge is caught.
        let dir = std::env::temp_dir().join(format!("tether-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("clock.rs"), "use crate::proxy::ConnCtx;").unwrap();
        let wrong = violations(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].contains("crate::proxy"), "{wrong:?}");
    }
}
