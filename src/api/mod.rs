//! Wire formats. Each submodule turns one protocol's bytes into an engine `CheckRequest` and an
//! engine `Decision` back into that protocol's answer. No policy logic lives here.

pub mod admin;
pub mod auth;
pub mod authzen;
pub mod console;
pub mod decider;
pub mod decision_log;
pub mod edge;
pub mod envoy;
pub mod grpc;
pub mod import_spool;
pub mod mcp;
pub mod page_token;
pub mod review;
pub mod routes;
pub mod search;

use std::collections::BTreeMap;

use serde_json::Value;

use warrant_domain::{ContextValue, InvalidRequest};

/// A caller's JSON value in Cedar's terms: integers (64-bit, exactly), strings, booleans,
/// arrays, objects; `null` (at any depth) is left out.
pub fn json_context_value(value: &Value, at: &str) -> Result<Option<ContextValue>, InvalidRequest> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => ContextValue::Bool(*b),
        Value::String(s) => ContextValue::String(s.clone()),
        Value::Number(n) => ContextValue::Long(n.as_i64().ok_or_else(|| {
            InvalidRequest::new(at, format!("{n} is not an integer Cedar can hold"))
        })?),
        Value::Array(items) => {
            let mut set = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                set.extend(json_context_value(item, &format!("{at}[{i}]"))?);
            }
            ContextValue::Set(set)
        }
        Value::Object(fields) => {
            let mut record = BTreeMap::new();
            for (k, v) in fields {
                if let Some(value) = json_context_value(v, &format!("{at}.{k}"))? {
                    record.insert(k.clone(), value);
                }
            }
            ContextValue::Record(record)
        }
    }))
}
