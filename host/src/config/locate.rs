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

    /// The path of the deepest key whose value holds `offset` (where the TOML reader found a
    /// value of the wrong type, say), e.g. `["flows", "main", "limits", "timeout_ms"]`; array
    /// elements by their index.
    pub fn key_at(&self, offset: usize) -> Option<Vec<String>> {
        fn in_value(value: &toml::Spanned<DeValue<'_>>, offset: usize) -> Option<Vec<String>> {
            match value.get_ref() {
                DeValue::Table(table) => in_table(table, offset),
                // At the array's own start (an array of tables' first header is also its first
                // table's), the place is the array as a whole: named by its key.
                DeValue::Array(_) if value.span().start == offset => None,
                DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
                    let mut path = in_value(item, offset)
                        .or_else(|| item.span().contains(&offset).then(Vec::new))?;
                    path.insert(0, index.to_string());
                    Some(path)
                }),
                _ => None,
            }
        }
        fn in_table(table: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
            // A table's span need not cover its keys (`[a.b]` and the keys under it), so
            // every table is searched, not only one whose span holds `offset`.
            table.iter().find_map(|(key, value)| {
                let mut path = in_value(value, offset)
                    .or_else(|| value.span().contains(&offset).then(Vec::new))?;
                path.insert(0, key.get_ref().to_string());
                Some(path)
            })
        }
        in_table(self.root.as_ref()?.get_ref(), offset)
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

    #[test]
    fn finds_the_key_whose_value_holds_a_place() {
        let text = "[store]\npath = \"x\"\n\n[flows.main]\nenvironment = \"e\"\nlimits = { memory_mib = 3, timeout_ms = \"slow\" }\nallowed_hosts = [\"a\", 7]\n\n[flows.other]\nvars.deep = { n = true }\n\n[[list]]\nx = 1\n[[list]]\nx = \"two\"\n";
        let map = SourceMap::new(text);
        let at = |needle: &str| {
            let offset = text.find(needle).unwrap();
            map.key_at(offset).map(|path| path.join("."))
        };
        assert_eq!(at("\"x\""), Some("store.path".into()));
        assert_eq!(at("\"e\""), Some("flows.main.environment".into()));
        assert_eq!(at("3,"), Some("flows.main.limits.memory_mib".into()));
        assert_eq!(at("\"slow\""), Some("flows.main.limits.timeout_ms".into()));
        assert_eq!(at("7]"), Some("flows.main.allowed_hosts.1".into()));
        assert_eq!(at("true"), Some("flows.other.vars.deep.n".into()));
        assert_eq!(at("\"two\""), Some("list.1.x".into()));
        // A whole inline table (a map where a number belongs, say).
        assert_eq!(at("{ n"), Some("flows.other.vars.deep".into()));
        // Between values: no key.
        assert_eq!(at("\n\n[flows.other]"), None);
        // An array as a whole, inline or of tables (where a map belongs, say): its key, not
        // its first element's.
        assert_eq!(at("[\"a\", 7]"), Some("flows.main.allowed_hosts".into()));
        assert_eq!(at("[[list]]"), Some("list".into()));
    }

    #[test]
    fn a_wrong_type_for_an_array_of_tables_is_named_by_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[environments.e]\n[flows.main]\nenvironment = \"e\"\nplugin = \"p.wasm\"\n[[flows.main.fields]]\nname = \"a\"\n";
        let errors = crate::config::Config::parse(text, &dir.path().join("t.toml"), &|_| None)
            .expect_err("fields is a table of fields, not a list")
            .to_string();
        assert!(
            errors.contains("5:1: flows.main.fields: invalid type: sequence"),
            "{errors}"
        );
    }
}
