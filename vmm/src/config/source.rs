//! The VM file's text and TOML tree, kept to turn byte offsets into `file:line:col` and key
//! paths (`disk[1].path`) into positions, and back.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item, Value};

use super::error::{ConfigError, Location};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A key in a table.
    Key(String),
    /// An element of an array or array of tables.
    Index(usize),
}

/// A key path such as `vm.cpu_affinity[2]` or `disk[1].path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub(crate) Vec<Seg>);

impl KeyPath {
    /// Parses `disk[1].path`; anything that is not `[n]` is a key.
    pub(crate) fn parse(text: &str) -> Self {
        let mut segs = Vec::new();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
            if !name.is_empty() {
                segs.push(Seg::Key(name.to_owned()));
            }
            while let Some((index, tail)) = rest.split_once(']') {
                if let Ok(i) = index.parse() {
                    segs.push(Seg::Index(i));
                }
                rest = tail.strip_prefix('[').unwrap_or(tail);
            }
        }
        Self(segs)
    }

    /// The last key in the path, if it ends with one.
    pub(crate) fn leaf(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The path without its last step.
    pub(crate) fn parent(&self) -> KeyPath {
        let mut segs = self.0.clone();
        segs.pop();
        Self(segs)
    }

    /// How the table at this path is written in TOML: `[vm]`, `[[disk]]`, `the top level`.
    pub(crate) fn section(&self) -> String {
        match self.0.as_slice() {
            [] => "the top level".to_owned(),
            [prefix @ .., Seg::Index(_)] => format!("[[{}]]", KeyPath(prefix.to_vec())),
            _ => format!("[{self}]"),
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A node of the TOML tree.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a toml_edit::Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Self::Item(i) => i.span(),
            Self::Table(t) => t.span(),
            Self::Value(v) => v.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Self::Item(i) => i.as_table_like(),
            Self::Table(t) => Some(t),
            Self::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
        }
    }

    /// The elements of an array or array of tables.
    fn elements(self) -> Vec<Node<'a>> {
        match self {
            Self::Item(Item::ArrayOfTables(a)) => a.iter().map(Node::Table).collect(),
            Self::Item(Item::Value(Value::Array(a))) | Self::Value(Value::Array(a)) => {
                a.iter().map(Node::Value).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The child at `seg`, with the span that best marks it (its key, or its header).
    fn child(self, seg: &Seg) -> Option<(Node<'a>, Option<Range<usize>>)> {
        match seg {
            Seg::Key(k) => {
                let (key, item) = self.table_like()?.get_key_value(k)?;
                // A `[table]` is marked by its header; anything else by its key.
                let span = match item {
                    Item::Table(t) => t.span().or_else(|| key.span()),
                    _ => key.span().or_else(|| item.span()),
                };
                Some((Node::Item(item), span))
            }
            Seg::Index(i) => {
                let node = self.elements().get(*i).copied()?;
                Some((node, node.span()))
            }
        }
    }
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset) || (s.is_empty() && s.start == offset))
}

/// Finds the deepest key or element whose span holds `offset`, pushing its path.
fn find(node: Node<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
    if let Some(table) = node.table_like() {
        for (key, item) in table.iter() {
            path.push(Seg::Key(key.to_owned()));
            let key_span = table.key(key).and_then(|k| k.span());
            if contains(key_span, offset) || find(Node::Item(item), offset, path) {
                return true;
            }
            path.pop();
        }
    }
    for (i, element) in node.elements().into_iter().enumerate() {
        path.push(Seg::Index(i));
        if find(element, offset, path) {
            return true;
        }
        path.pop();
    }
    contains(node.span(), offset)
}

/// The VM file: its name, text and parsed TOML tree.
pub(crate) struct SourceMap {
    file: PathBuf,
    text: String,
    doc: ImDocument<String>,
}

impl SourceMap {
    /// Parses `text` as TOML; a syntax error is one line with its position.
    pub(crate) fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        match ImDocument::parse(text.to_owned()) {
            Ok(doc) => Ok(Self {
                file: file.to_owned(),
                text: text.to_owned(),
                doc,
            }),
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                Err(ConfigError::Syntax {
                    at: location(file, text, Some(offset)),
                    message: one_line(e.message()),
                })
            }
        }
    }

    /// The text of the file.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The location of a byte offset (or of the whole file, for `None`).
    pub(crate) fn location(&self, offset: Option<usize>) -> Location {
        location(&self.file, &self.text, offset)
    }

    /// The key path of whatever is at `offset`: a key, a value, an array element, a header.
    pub(crate) fn path_at(&self, offset: usize) -> Option<KeyPath> {
        let mut path = Vec::new();
        find(Node::Table(self.doc.as_table()), offset, &mut path).then_some(KeyPath(path))
    }

    /// The position of `path`, or of the nearest enclosing table that exists.
    pub(crate) fn offset_of(&self, path: &KeyPath) -> Option<usize> {
        let mut node = Node::Table(self.doc.as_table());
        let mut best = None;
        for seg in &path.0 {
            let Some((child, span)) = node.child(seg) else {
                break;
            };
            best = span.or(best);
            node = child;
        }
        best.map(|s| s.start)
    }

    /// Adds the position of the key to an error that names one and has none yet.
    pub(crate) fn locate(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid {
                at: None,
                key,
                message,
            } => {
                let offset = self.offset_of(&KeyPath::parse(&key));
                ConfigError::Invalid {
                    at: Some(self.location(offset)),
                    key,
                    message,
                }
            }
            other => other,
        }
    }
}

/// `file:line:col` for a byte offset into `text`; columns count characters.
fn location(file: &Path, text: &str, offset: Option<usize>) -> Location {
    let line_col = offset.map(|offset| {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    });
    Location {
        file: file.to_owned(),
        line_col,
    }
}

/// A parser message on one line: lines joined with "; ", each starting lower-case.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut chars = l.chars();
            match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
