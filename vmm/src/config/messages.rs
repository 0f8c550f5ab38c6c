//! Turns serde/TOML deserialization errors into one-line [`ConfigError`]s that name the key
//! and its position: `vm.toml:3:1: unknown key `vcpu` in [vm] (expected one of name, ...)`.

use super::error::ConfigError;
use super::source::{one_line, SourceMap};

/// The top-level tables a VM file must have.
const REQUIRED_SECTIONS: [&str; 2] = ["vm", "boot"];
/// The top-level arrays of tables, one table per device.
const ARRAYS_OF_TABLES: [&str; 3] = ["disk", "net", "vfio"];

/// Rewrites a deserialization error of the file in `source`.
pub(crate) fn from_de_error(source: &SourceMap, error: &toml_edit::de::Error) -> ConfigError {
    // An empty span at the start is serde's "somewhere in the document" (a missing section).
    let offset = error
        .span()
        .filter(|s| !(s.is_empty() && s.start == 0))
        .map(|s| s.start);
    let at = Some(source.location(offset));
    let path = offset.and_then(|o| source.path_at(o)).unwrap_or_default();
    let message = one_line(error.message());

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (key, expected) = split_expected(rest);
        let section = if path.leaf() == Some(key.as_str()) {
            path.parent().section()
        } else {
            path.section()
        };
        return ConfigError::UnknownKey {
            at,
            key,
            section,
            expected: expected.unwrap_or_else(|| "no keys".to_owned()),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = unquote(rest);
        if path.0.is_empty() && REQUIRED_SECTIONS.contains(&field.as_str()) {
            return ConfigError::Invalid {
                at,
                message: format!("required section [{field}] is missing"),
                key: field,
            };
        }
        let key = if path.0.is_empty() {
            field.clone()
        } else {
            format!("{path}.{field}")
        };
        return ConfigError::Invalid {
            at,
            message: format!("required key `{field}` is missing from {}", path.section()),
            key,
        };
    }
    let key = if path.0.is_empty() {
        "(file)".to_owned()
    } else {
        path.to_string()
    };
    if ARRAYS_OF_TABLES.contains(&key.as_str()) && message.starts_with("invalid type: map,") {
        return ConfigError::Invalid {
            at,
            message: format!(
                "write [[{key}]], not [{key}]: each device is its own [[{key}]] table"
            ),
            key,
        };
    }
    ConfigError::Invalid {
        at,
        key,
        message: rewrite_value_message(&message),
    }
}

/// Rewrites serde's value messages into plain words; leaves ours as they are.
fn rewrite_value_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let found = if found == "map" { "a table" } else { found };
            return format!("expected {}, found {found}", plain_expected(expected));
        }
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            let found = found.strip_prefix("integer ").unwrap_or(found);
            return format!(
                "{} is not valid here (expected {})",
                found.trim_matches('`'),
                plain_expected(expected)
            );
        }
    }
    if message == "wanted string or table" {
        return "expected a string (in quotes)".to_owned();
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (value, expected) = split_expected(rest);
        return match expected {
            Some(expected) => {
                format!("{value:?} is not a valid value (expected one of {expected})")
            }
            None => format!("{value:?} is not a valid value"),
        };
    }
    message.to_owned()
}

/// serde's "expected" phrases, for people.
fn plain_expected(expected: &str) -> String {
    match expected {
        "a boolean" => "true or false".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "a string" | "path string" => "a string (in quotes)".to_owned(),
        "a sequence" => "an array like [1, 2]".to_owned(),
        e if e.starts_with("struct ") => "a table".to_owned(),
        e if e.starts_with("enum ") => "a string (in quotes)".to_owned(),
        e => e.to_owned(),
    }
}

/// Splits "`name`, expected one of `a`, `b`" into ("name", Some("a, b")).
fn split_expected(text: &str) -> (String, Option<String>) {
    let (name, rest) = text.split_once(", ").unwrap_or((text, ""));
    let expected = rest
        .strip_prefix("expected one of ")
        .or_else(|| rest.strip_prefix("expected "))
        .map(|list| list.replace('`', "").replace(" or ", ", "));
    (unquote(name), expected)
}

/// "`name`" → "name".
fn unquote(text: &str) -> String {
    text.trim().trim_matches('`').to_owned()
}
