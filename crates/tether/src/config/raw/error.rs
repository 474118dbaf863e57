//! Stage one's errors (TOML syntax, an unknown key, a value of the wrong type) as a
//! [`ConfigError`] that names the key the way the file spells it.
//!
//! Two things need translating. serde's path runs through the private fields `toml::Spanned`
//! deserializes itself with (`weight.$__serde_spanned_private_value`), and its messages name
//! Rust types (`expected i64`, `expected struct RawListenerTimeouts`). And an integer too
//! large for TOML (past `i64`) fails in the parser, before serde has any path at all: its key
//! is found by reading the file again with a marker string in the number's place.

use serde_path_to_error::{Path, Segment};

use crate::config::{ConfigError, ConfigErrors, line_of};

/// Prefix of the fields `toml::Spanned` deserializes itself through.
const SPANNED_PRIVATE: &str = "$__serde_spanned_private_";

/// Stands in for an oversized integer while the file is read again to find its key; a NUL
/// appears in no sensible configuration value.
const MARKER: &str = "\u{0}tether-oversized-integer";

/// `e`, raised while deserializing `text`, as one error whose path starts at `root` (empty
/// for a whole file).
pub(in crate::config) fn structural(
    text: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
    root: &str,
) -> ConfigErrors {
    let path = key_path(root, e.path());
    let inner = e.into_inner();
    let start = inner.span().map(|s| s.start);
    let line = start.map(|at| line_of(text, at));
    let message = inner.message().trim();
    let oversized = start.and_then(|at| oversized_integer(text, at, message));
    let (path, message) = match oversized {
        Some((key, literal)) => (join(root, &key), out_of_toml_range(literal)),
        None => (path, humane(message)),
    };
    let path = if path.is_empty() { "(file)".to_owned() } else { path };
    ConfigErrors(vec![ConfigError { path, line, message }])
}

/// serde's path below `root`, without `Spanned`'s private fields: `listeners[0].name`.
fn key_path(root: &str, path: &Path) -> String {
    path.iter().fold(root.to_owned(), |at, segment| match segment {
        Segment::Seq { index } => format!("{at}[{index}]"),
        Segment::Map { key } if key.starts_with(SPANNED_PRIVATE) => at,
        Segment::Map { key } | Segment::Enum { variant: key } => join(&at, key),
        Segment::Unknown => join(&at, "?"),
    })
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

/// When the parser refused an integer literal starting at `start` as too large or too small
/// for TOML: the key holding it and the literal.
fn oversized_integer<'t>(text: &'t str, start: usize, message: &str) -> Option<(String, &'t str)> {
    // Rust's `ParseIntError` wording, which the TOML parser passes on.
    if !message.starts_with("number too large") && !message.starts_with("number too small") {
        return None;
    }
    let rest = text.get(start..)?;
    let len = rest
        .find(|ch: char| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '+' | '-')))
        .unwrap_or(rest.len());
    let literal = &rest[..len];
    let quoted = toml::Value::String(MARKER.to_owned()).to_string();
    let patched = format!("{}{quoted}{}", &text[..start], &rest[len..]);
    let table: toml::Table = toml::from_str(&patched).ok()?;
    let key = marker_path(&toml::Value::Table(table), String::new())?;
    Some((key, literal))
}

/// The key path of the [`MARKER`] string inside `value`, which sits at `at`.
fn marker_path(value: &toml::Value, at: String) -> Option<String> {
    match value {
        toml::Value::String(s) if s == MARKER => Some(at),
        toml::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| marker_path(v, format!("{at}[{i}]")))
        }
        toml::Value::Table(t) => t.iter().find_map(|(k, v)| marker_path(v, join(&at, k))),
        _ => None,
    }
}

fn out_of_toml_range(literal: &str) -> String {
    format!("{literal} is out of range: TOML integers go from {} to {}", i64::MIN, i64::MAX)
}

/// serde's "invalid type: string \"2\", expected i64" as "expected an integer, found string
/// \"2\"", in TOML's words; other messages unchanged.
fn humane(message: &str) -> String {
    let parts = message.strip_prefix("invalid type: ").and_then(|m| m.rsplit_once(", expected "));
    match parts {
        Some((found, expected)) => {
            format!("expected {}, found {}", toml_kind(expected), toml_kind(found))
        }
        None => message.to_owned(),
    }
}

/// A serde or Rust type name as the TOML kind of value it stands for.
fn toml_kind(serde: &str) -> &str {
    match serde {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
        "f32" | "f64" => "a number",
        "a sequence" | "sequence" => "an array",
        "a map" | "map" => "a table",
        s if s.starts_with("struct ") => "a table",
        s => s,
    }
}
