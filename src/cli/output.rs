//! How the shell prints what it was asked for: `--output table` for people (aligned columns for
//! a list, one field per line for a record), `--output json` for scripts. Every command that
//! lists or shows goes through here; each has its own default (JSON for the admin commands,
//! tables for the ledger's), and `--output` or `WARRANT_OUTPUT` picks one for all of them.

use std::sync::OnceLock;

use serde_json::Value;

/// What `--output` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns and `field  value` lines, for people.
    Table,
    /// JSON, for scripts.
    Json,
}

/// The choice made on the command line, once per process.
static CHOSEN: OnceLock<Output> = OnceLock::new();

/// Records the command line's `--output`, when it gave one.
pub fn choose(output: Option<Output>) {
    if let Some(output) = output {
        let _ = CHOSEN.set(output);
    }
}

/// Whether the command line asked for `output` (a command's own default aside).
pub fn asked(output: Output) -> bool {
    CHOSEN.get() == Some(&output)
}

/// The command line's choice, or the command's own `default`.
pub fn chosen_or(default: Output) -> Output {
    CHOSEN.get().copied().unwrap_or(default)
}

/// Prints `value` as the command line chose, or as `default` when it did not.
pub fn print(value: &Value, default: Output) -> anyhow::Result<()> {
    match chosen_or(default) {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Table => print!("{}", table(value)),
    }
    Ok(())
}

/// Prints a list as the command line chose, or as `default`; as a table, only `columns` (the
/// ones a person scans a list by; `--output json` has every field).
pub fn print_list(rows: Vec<Value>, columns: &[&str], default: Output) -> anyhow::Result<()> {
    let narrowed: Vec<Value> = match chosen_or(default) {
        Output::Json => return print(&Value::Array(rows), default),
        Output::Table => rows
            .into_iter()
            .map(|row| match row {
                Value::Object(mut fields) => {
                    fields.retain(|key, _| columns.contains(&key.as_str()));
                    Value::Object(fields)
                }
                other => other,
            })
            .collect(),
    };
    print!("{}", rows_table(&narrowed, columns));
    Ok(())
}

/// `value` for people: a list of records as aligned columns (one row each), a record as one
/// `field  value` line per field (nested fields joined with dots), anything else as it is.
pub fn table(value: &Value) -> String {
    match value {
        Value::Array(rows) => rows_table(rows, &[]),
        Value::Object(fields) => {
            // A list wrapped in one field ({"approvals": [...]}) is the list.
            if let [(_, Value::Array(rows))] = fields.iter().collect::<Vec<_>>()[..] {
                return rows_table(rows, &[]);
            }
            let mut lines = Vec::new();
            flatten("", value, &mut lines);
            let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
            lines
                .iter()
                .map(|(key, cell)| format!("{key:<width$}  {cell}\n"))
                .collect()
        }
        other => format!("{}\n", cell(other).unwrap_or_else(|| other.to_string())),
    }
}

/// The widest a column may be; longer cells end in `…`.
const MAX_CELL_CHARS: usize = 60;

/// Rows as aligned columns: those of `order` first, in that order, then `id`, then the rest by
/// name. A column empty in every row is left out.
fn rows_table(rows: &[Value], order: &[&str]) -> String {
    if rows.is_empty() {
        return "(none)\n".into();
    }
    if !rows.iter().all(Value::is_object) {
        return rows
            .iter()
            .map(|row| format!("{}\n", cell(row).unwrap_or_else(|| row.to_string())))
            .collect();
    }
    // The columns: every field whose every value fits in a cell, `id` first, then by name.
    let mut columns: Vec<&str> = Vec::new();
    for row in rows.iter().filter_map(Value::as_object) {
        for key in row.keys() {
            if !columns.contains(&key.as_str()) {
                columns.push(key);
            }
        }
    }
    columns.sort_by_key(|column| {
        let place = order.iter().position(|named| named == column);
        (place.unwrap_or(order.len()), *column != "id", *column)
    });
    columns.retain(|column| {
        let cells: Vec<Option<String>> = rows
            .iter()
            .map(|row| row.get(*column).map_or(Some(String::new()), cell))
            .collect();
        cells.iter().all(Option::is_some) && cells.iter().flatten().any(|c| !c.is_empty())
    });
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| {
                    let text = row.get(*column).and_then(cell).unwrap_or_default();
                    shorten(&text)
                })
                .collect()
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    std::iter::once(line(&header))
        .chain(cells.iter().map(|row| line(row)))
        .collect()
}

/// A value as one cell: a scalar as written, an entity reference as `Type::id`, a list of such
/// joined with commas; `None` for anything with more inside.
fn cell(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(text) => Some(text.clone()),
        Value::Bool(_) | Value::Number(_) => Some(value.to_string()),
        Value::Object(_) => entity(value),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(_) => None,
                other => cell(other),
            })
            .collect::<Option<Vec<_>>>()
            .map(|cells| cells.join(",")),
    }
}

/// `{"type": T, "id": I}` (and nothing else) as `T::I`.
pub(crate) fn entity(value: &Value) -> Option<String> {
    let fields = value.as_object()?;
    let (Some(Value::String(type_name)), Some(Value::String(id)), 2) =
        (fields.get("type"), fields.get("id"), fields.len())
    else {
        return None;
    };
    Some(format!("{type_name}::{id}"))
}

fn flatten(prefix: &str, value: &Value, lines: &mut Vec<(String, String)>) {
    let key = |name: &str| match prefix {
        "" => name.to_owned(),
        _ => format!("{prefix}.{name}"),
    };
    match value {
        Value::Object(fields) if entity(value).is_none() => {
            for (name, inner) in fields {
                flatten(&key(name), inner, lines);
            }
        }
        Value::Array(items) if cell(value).is_none() => {
            for (index, inner) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{index}]"), inner, lines);
            }
        }
        other => lines.push((prefix.to_owned(), cell(other).unwrap_or_default())),
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_CELL_CHARS - 1) {
        Some((end, _)) if text.chars().count() > MAX_CELL_CHARS => format!("{}…", &text[..end]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_is_aligned_columns_of_the_fields_that_fit_in_a_cell() {
        let listed = json!([
            {"id": "apr-1", "subject": {"type": "ServiceAccount", "id": "deploy-bot"},
             "actions": ["update", "read"], "window": {"from": 1}},
            {"id": "apr-22", "subject": {"type": "Agent", "id": "a"}, "actions": [], "uses": 3,
             "note": ""},
        ]);
        assert_eq!(
            table(&listed),
            "ID      ACTIONS      SUBJECT                     USES\n\
             apr-1   update,read  ServiceAccount::deploy-bot\n\
             apr-22               Agent::a                    3\n"
        );
        assert_eq!(table(&json!({"approvals": []})), "(none)\n");
        assert_eq!(
            rows_table(listed.as_array().unwrap(), &["subject", "uses"]),
            "SUBJECT                     USES  ID      ACTIONS\n\
             ServiceAccount::deploy-bot        apr-1   update,read\n\
             Agent::a                    3     apr-22\n"
        );
    }

    #[test]
    fn a_record_is_one_line_per_field_nested_fields_joined_with_dots() {
        // In the order of their names, whether or not serde_json keeps insertion order.
        let shown = json!({"checks": [{"ok": true}], "id": "apr-1",
                           "owner": {"entity": {"type": "Human", "id": "alice"}, "name": "Alice"},
                           "scopes": [{"type": "Scope", "id": "prod"}]});
        assert_eq!(
            table(&shown),
            "checks[0].ok  true\n\
             id            apr-1\n\
             owner.entity  Human::alice\n\
             owner.name    Alice\n\
             scopes        Scope::prod\n"
        );
    }

    #[test]
    fn a_long_cell_ends_in_an_ellipsis() {
        let long = "x".repeat(100);
        let shortened = shorten(&long);
        assert_eq!(shortened.chars().count(), MAX_CELL_CHARS);
        assert!(shortened.ends_with('…'));
        assert_eq!(shorten("short"), "short");
    }
}
