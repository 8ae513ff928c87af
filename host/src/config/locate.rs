//! Finding where a key sits in the TOML text, so that errors can name a line and column.

use std::fmt;

use toml::de::{DeTable, DeValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The parsed document with spans, kept only while validating.
pub struct SourceMap<'a> {
    text: &'a str,
    root: Option<toml::Spanned<DeTable<'a>>>,
}

impl<'a> SourceMap<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            root: DeTable::parse(text).ok(),
        }
    }

    /// The location of the key at `path` (e.g. `["flows", "main", "limits", "memory_mib"]`),
    /// or of the deepest ancestor that exists.
    pub fn locate(&self, path: &[&str]) -> Option<Location> {
        let root = self.root.as_ref()?;
        let mut table = root.get_ref();
        let mut found = None;
        for (depth, segment) in path.iter().enumerate() {
            let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *segment)
            else {
                break;
            };
            found = Some(key.span().start);
            match value.get_ref() {
                DeValue::Table(inner) if depth + 1 < path.len() => table = inner,
                _ => break,
            }
        }
        found.map(|offset| self.location_of(offset))
    }

    pub fn location_of(&self, offset: usize) -> Location {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        Location { line, column }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys_by_line_and_column() {
        let text = "[store]\npath = \"x\"\n\n[flows.main]\nenvironment = \"e\"\n  limits = { memory_mib = 3 }\n";
        let map = SourceMap::new(text);
        assert_eq!(
            map.locate(&["store", "path"]),
            Some(Location { line: 2, column: 1 })
        );
        assert_eq!(
            map.locate(&["flows", "main", "environment"]),
            Some(Location { line: 5, column: 1 })
        );
        assert_eq!(
            map.locate(&["flows", "main", "limits", "memory_mib"]),
            Some(Location {
                line: 6,
                column: 14
            })
        );
        // A missing leaf falls back to its nearest ancestor.
        assert_eq!(
            map.locate(&["flows", "main", "plugin"]),
            Some(Location { line: 4, column: 8 })
        );
    }
}
