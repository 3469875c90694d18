//! The policy authors' commands, run as a user runs them: `warrant validate`, `warrant test`,
//! `warrant fmt` and `warrant check --explain`, on the bundled folder and on broken copies.

use std::path::Path;
use std::process::Command;

/// Runs `warrant ARGS`: (exit code, stdout + stderr).
fn warrant(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// A copy of the bundled policy folder, tests included.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = crate::common::bundled_policies();
    for sub in ["", "tests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    dir
}

fn path(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn the_bundled_policies_validate_and_pass_their_tests() {
    let bundled = crate::common::bundled_policies();
    let (code, out) = warrant(&["validate", path(&bundled)]);
    assert_eq!(code, 0, "{out}");
    // The guardrails (forbids) are broad on purpose, and the one broad permit says why.
    assert!(out.contains(": 0 error(s), 0 warning(s)"), "{out}");
    let (code, out) = warrant(&["test", path(&bundled)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.trim_end().ends_with("40 passed, 0 failed"), "{out}");
    let (code, out) = warrant(&["fmt", "--check", path(&bundled)]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_permit_that_constrains_neither_side_is_a_warning_until_it_says_why() {
    let dir = copy();
    let file = dir.path().join("console.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    let unexplained = text.replace("@broad(", "@note(");
    std::fs::write(&file, &unexplained).unwrap();
    let (code, out) = warrant(&["validate", path(dir.path())]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("console.cedar:43:1: permit \"console-owner-of-identity\" constrains neither"),
        "{out}"
    );
    assert!(out.contains(": 0 error(s), 1 warning(s)"), "{out}");
    std::fs::write(&file, text).unwrap();
    let (_, out) = warrant(&["validate", path(dir.path())]);
    assert!(out.contains(": 0 error(s), 0 warning(s)"), "{out}");
}

#[test]
fn a_failing_case_is_one_line_with_expected_and_actual() {
    let dir = copy();
    let file = dir.path().join("tests/datasets.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("expect = \"deny\"", "expect = \"allow\"", 1),
    )
    .unwrap();
    let (code, out) = warrant(&["test", path(dir.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL tests/datasets.toml: \"a dataset outside the key's scope\": expected allow, got deny (reasons: dataset-outside-identity-scopes)"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("39 passed, 1 failed"), "{out}");

    // Right decision, wrong policy: also a failure.
    std::fs::write(
        &file,
        text.replacen(
            "reasons = [\"dataset-outside-identity-scopes\"]",
            "reasons = [\"identity-not-active\"]",
            1,
        ),
    )
    .unwrap();
    let (code, out) = warrant(&["test", path(dir.path())]);
    assert_eq!(code, 1);
    assert!(out.contains("deny as expected, but because of [dataset-outside-identity-scopes], not [identity-not-active]"), "{out}");
}

#[test]
fn broken_test_files_name_the_file_and_the_case_and_are_never_skipped() {
    let dir = copy();
    let tests = dir.path().join("tests");
    std::fs::write(
        tests.join("broken.toml"),
        r#"
[[case]]
name = "typo in a field"
principal = "ApiKey::pipeline-etl"
action = "read"
resource = "Dataset::sales-2026"
expect = "allow"
now = "2026-06-01T00:00:00Z"
reason = ["x"]
"#,
    )
    .unwrap();
    std::fs::write(
        tests.join("cases.toml"),
        r#"
now = "2026-06-01T00:00:00Z"
[[case]]
name = "a bad reference"
principal = "pipeline-etl"
action = "read"
resource = "Dataset::sales-2026"
expect = "allow"

[[case]]
name = "a bad time"
now = "yesterday"
principal = "ApiKey::pipeline-etl"
action = "read"
resource = "Dataset::sales-2026"
expect = "allow"

[[case]]
name = "an entity that does not fit the schema"
principal = "ApiKey::pipeline-etl"
action = "read"
resource = "Dataset::sales-2026"
expect = "allow"
entities = [{ uid = { type = "ApiKey", id = "pipeline-etl" }, attrs = { colour = "red" }, parents = [] }]
"#,
    )
    .unwrap();
    let (code, out) = warrant(&["test", path(dir.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ERROR tests/broken.toml: ") && out.contains("unknown field `reason`"),
        "{out}"
    );
    assert!(
        out.contains("ERROR tests/cases.toml: \"a bad reference\": principal: expected Type::id"),
        "{out}"
    );
    assert!(
        out.contains(
            "ERROR tests/cases.toml: \"a bad time\": now: \"yesterday\" is not an RFC 3339 time"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "ERROR tests/cases.toml: \"an entity that does not fit the schema\": entities: "
        ),
        "{out}"
    );
    assert!(out.trim_end().ends_with("40 passed, 4 failed"), "{out}");
}

#[test]
fn validate_reports_every_problem_with_its_place() {
    let dir = copy();
    std::fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"reads-anything\")\npermit (principal, action, resource)\nwhen { principal.nickname == \"x\" };\n\npermit (principal, action, resource);\n",
    )
    .unwrap();
    let (code, out) = warrant(&["validate", path(dir.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("extra.cedar:5:1: policy has no @id"), "{out}");
    std::fs::write(
        dir.path().join("extra.cedar"),
        "@id(\"reads-anything\")\npermit (principal, action, resource)\nwhen { principal.nickname == \"x\" };\n",
    )
    .unwrap();
    let (_, out) = warrant(&["validate", path(dir.path())]);
    assert!(
        out.contains("error: ") && out.contains("extra.cedar:3:"),
        "{out}"
    );
    assert!(out.contains("nickname"), "{out}");
    std::fs::remove_file(dir.path().join("extra.cedar")).unwrap();

    // Facts that do not fit the schema: the entity's line in entities.json.
    let entities = dir.path().join("entities.json");
    let text = std::fs::read_to_string(&entities).unwrap();
    std::fs::write(
        &entities,
        text.replacen("\"status\": \"suspended\"", "\"status\": 3", 1),
    )
    .unwrap();
    let (code, out) = warrant(&["validate", path(dir.path())]);
    assert_eq!(code, 1, "{out}");
    let line = text[..text.find("\"old-deployer\"").unwrap()]
        .matches('\n')
        .count()
        + 1;
    assert!(
        out.contains(&format!("entities.json:{line}:1: ")),
        "line {line}: {out}"
    );
    let _ = code;
}

#[test]
fn fmt_formats_in_place_and_check_says_what_is_not_formatted() {
    let dir = copy();
    let file = dir.path().join("datasets.cedar");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("  ", " ")).unwrap();
    let (code, out) = warrant(&["fmt", "--check", path(dir.path())]);
    assert_eq!(code, 1);
    assert!(out.contains("datasets.cedar: not formatted"), "{out}");
    let (code, _) = warrant(&["fmt", path(dir.path())]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert_eq!(warrant(&["fmt", "--check", path(dir.path())]).0, 0);
}

#[test]
fn explain_shows_every_policy_and_the_resolved_facts() {
    let bundled = crate::common::bundled_policies();
    let (code, out) = warrant(&[
        "check",
        "--explain",
        "--policies",
        path(&bundled),
        "--now",
        "2026-06-01T12:00:00Z",
        "--principal",
        "ServiceAccount::deploy-bot",
        "--action",
        "update",
        "--resource",
        "Config::payments-api",
        "--approval",
        "CHG-0990",
    ]);
    assert_eq!(code, 2, "{out}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["decision"], "DECISION_DENY");
    assert_eq!(answer["reasons"], serde_json::json!(["approval-expired"]));
    let outcome = |id: &str| {
        answer["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))["outcome"]
            .clone()
    };
    // The permit holds on its own; the forbid on the expired approval overrides it.
    assert_eq!(
        outcome("deploy-agent-updates-config-under-approval"),
        "satisfied"
    );
    assert_eq!(outcome("approval-expired"), "satisfied");
    assert_eq!(outcome("approval-revoked"), "not satisfied");
    assert_eq!(answer["policies"].as_array().unwrap().len(), 24);
    let provenance = &answer["provenance"];
    assert_eq!(provenance["owner"]["name"], "Alice Martin");
    assert_eq!(provenance["approval"]["ticket"], "CHG-0990");

    // A template link that decides is listed with its template.
    let (code, out) = warrant(&[
        "check",
        "--explain",
        "--policies",
        path(&bundled),
        "--now",
        "2026-06-01T12:00:00Z",
        "--principal",
        "ApiKey::pipeline-etl",
        "--action",
        "read",
        "--resource",
        "Dataset::sales-2026",
    ]);
    assert_eq!(code, 0, "{out}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer["reasons"],
        serde_json::json!(["pipeline-etl-reads-sales"])
    );
    let link = answer["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "pipeline-etl-reads-sales")
        .unwrap();
    assert_eq!(link["template"], "dataset-read-grant");
    assert_eq!(link["outcome"], "satisfied");
    assert_eq!(provenance["approval"]["valid_at_decision"], false);
    assert_eq!(
        provenance["resource_scopes"][0]["id"],
        "prod-payments-config"
    );

    // Decided before any policy ran: said so, with no policy outcomes.
    let (code, out) = warrant(&[
        "check",
        "--explain",
        "--policies",
        path(&bundled),
        "--principal",
        "ServiceAccount::ghost",
        "--action",
        "update",
        "--resource",
        "Config::payments-api",
    ]);
    assert_eq!(code, 2);
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer["reasons"],
        serde_json::json!(["warrant:unknown-principal"])
    );
    assert_eq!(answer["policies"], serde_json::json!([]));
}

#[test]
fn validate_reports_an_action_whose_context_lacks_now() {
    let dir = copy();
    let schema = dir.path().join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap();
    std::fs::write(
        &schema,
        format!(
            "{text}\naction \"audit\" appliesTo {{ principal: [Agent], resource: [Tool], context: {{ reason: String }} }};\n"
        ),
    )
    .unwrap();
    let (code, out) = warrant(&["validate", path(dir.path())]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("action \"audit\": its context must declare `now: datetime`"),
        "{out}"
    );
    assert!(out.contains("schema.cedarschema:"), "{out}");
}

#[test]
fn the_mcp_examples_tool_actions_are_what_schema_from_mcp_writes_for_its_tools() {
    let example = crate::common::bundled_policies().join("examples/mcp-agent");
    let tools = example.join("tools.json");
    let (code, generated) = warrant(&["schema", "from-mcp", path(&tools)]);
    assert_eq!(code, 0, "{generated}");
    let schema = std::fs::read_to_string(example.join("schema.cedarschema")).unwrap();
    let marker = "// ---- generated: warrant schema from-mcp tools.json ----\n";
    let (_, below) = schema
        .split_once(marker)
        .expect("the example marks its generated part");
    assert_eq!(
        below, generated,
        "the example's schema is not what `warrant schema from-mcp tools.json` writes now"
    );
    let (code, out) = warrant(&["test", path(&example)]);
    assert_eq!(code, 0, "{out}");

    // A tool list that is not one is refused, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("tools.json");
    std::fs::write(
        &broken,
        r#"{"result": {"tools": [{"description": "no name"}]}}"#,
    )
    .unwrap();
    let (code, out) = warrant(&["schema", "from-mcp", path(&broken)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tools[0].name: a non-empty string is required"),
        "{out}"
    );
}
