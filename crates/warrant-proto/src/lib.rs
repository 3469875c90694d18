//! The generated protobuf and gRPC code for `warrant.v1`, the descriptor set that server
//! reflection serves, conversions between JSON and protobuf's `Struct`, and (`convert`) between
//! the messages and Warrant's own types.
//!
//! May depend on: `warrant-domain`.
//! Invariant: the wire contract is `proto/` at the workspace's root; nothing here decides.

pub mod convert;

/// The code `build.rs` generates from `proto/warrant/v1/*.proto` (exported as `warrant_proto::*`); not
/// Warrant's to lint.
#[allow(clippy::all, missing_docs)]
mod generated {
    tonic::include_proto!("warrant.v1");
}

pub use generated::*;

/// The encoded `FileDescriptorSet` of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/warrant_descriptor.bin"));

/// The encoded `FileDescriptorSet` of Envoy's ext_authz service (from the protos `envoy-types`
/// ships), for gRPC server reflection.
pub const ENVOY_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin"));

/// Every method of `warrant.v1.Admin`, as counted in `warrant_admin_calls_total`.
pub const ADMIN_METHODS: [&str; 18] = [
    "GrantApproval",
    "ListApprovalRequests",
    "DecideApprovalRequest",
    "RevokeApproval",
    "GetApproval",
    "ListApprovals",
    "CreateIdentity",
    "UpdateIdentity",
    "RetireIdentity",
    "GetIdentity",
    "ListIdentities",
    "PutEntity",
    "GetEntity",
    "RetireEntity",
    "ImportFacts",
    "ExportFacts",
    "ReloadPolicies",
    "Status",
];

/// JSON as a protobuf `Value` (numbers become doubles, as protobuf has no other kind).
pub fn json_to_value(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        Value::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A protobuf `Struct` as a JSON object. A whole number within 2^53 becomes an integer (Cedar
/// has no other numbers); any other number stays a float, for the schema to refuse.
pub fn struct_to_json(fields: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    fields
        .fields
        .into_iter()
        .map(|(key, value)| (key, value_to_json(value)))
        .collect()
}

fn value_to_json(value: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    use serde_json::Value;
    match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n))
            if n.fract() == 0.0 && n.abs() <= warrant_domain::MAX_EXACT_INTEGER as f64 =>
        {
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a whole number within 2^53: exact as an i64"
            )]
            Value::from(n as i64)
        }
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => {
            Value::Array(list.values.into_iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(fields)) => Value::Object(struct_to_json(fields)),
    }
}
