//! `warrant test`: runs the policy test files in a policy folder's `tests/` (`*.toml`). Each
//! `[[case]]` is a request (principal, action, resource, context, approval) at a fixed `now`,
//! optionally with extra or overriding entities, and the decision it must get (and, if given,
//! exactly which policies determine it). The engine is Warrant's own, with no cache and a
//! manual clock, so a passing test is what the server would answer.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;

use warrant_domain::clock::{ManualClock, UnixMillis};
use warrant_domain::ports::{Take, Taken, UseCountError, UseCounter};
use warrant_domain::{CheckRequest, ContextValue, Effect, EntityRef, ResourceDescription};
use warrant_engine::engine::{Engine, EngineParts, EngineSettings, Snapshot};
use warrant_facts::load_entities_file;
use warrant_policy::{PolicyLoadError, PolicySnapshot};
use warrant_store::facts::merged;

/// The folder of test files in a policy folder.
pub const TESTS_DIR: &str = "tests";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The default `now` for the file's cases (RFC 3339).
    now: Option<String>,
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    now: Option<String>,
    principal: String,
    action: String,
    resource: String,
    approval: Option<String>,
    #[serde(default)]
    context: toml::Table,
    /// What the request says of a resource of a `@described_by_caller` type.
    resource_attributes: Option<toml::Table>,
    /// The described resource's parents, as `Type::id`.
    #[serde(default)]
    resource_parents: Vec<String>,
    expect: Expected,
    /// The determining policy ids (or `warrant:*` reasons), in any order.
    reasons: Option<Vec<String>>,
    /// Extra entities, or replacements for the folder's, in Cedar's JSON form.
    #[serde(default)]
    entities: Vec<toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expected {
    Allow,
    Deny,
}

/// Uses and budgets of limited approvals, counted in memory: every case starts with none.
#[derive(Default)]
struct Uses(Mutex<HashMap<String, (u64, u64)>>);

impl UseCounter for Uses {
    fn take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError> {
        let mut uses = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (used, spent) = uses.entry(approval_id.to_owned()).or_default();
        let taken = take.against(*used, *spent);
        if let Taken::Granted { use_number, .. } = taken {
            *used = use_number.unwrap_or(*used);
            *spent += take.spend.map_or(0, |(amount, _)| amount);
        }
        Ok(taken)
    }

    fn would_take(&self, approval_id: &str, take: Take) -> Result<Taken, UseCountError> {
        let uses = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (used, spent) = uses.get(approval_id).copied().unwrap_or_default();
        Ok(take.against(used, spent))
    }

    fn give_back(
        &self,
        approval_id: &str,
        a_use: bool,
        amount: Option<u64>,
    ) -> Result<(), UseCountError> {
        let mut uses = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (used, spent) = uses.entry(approval_id.to_owned()).or_default();
        if a_use {
            *used = used.saturating_sub(1);
        }
        *spent = spent.saturating_sub(amount.unwrap_or(0));
        Ok(())
    }
}

/// The outcome of one case.
enum Outcome {
    Passed,
    Failed(String),
    /// The case itself is wrong (bad reference, bad time, entities that do not fit).
    Broken(String),
}

/// Runs every test file; prints one line per failure and a summary. Exit status 1 if any case
/// failed or could not run, or if there is nothing to run.
pub fn run(dir: &Path) -> anyhow::Result<ExitCode> {
    let policies = match PolicySnapshot::load(dir) {
        Ok(policies) => Arc::new(policies),
        Err(PolicyLoadError::Invalid(problems)) => {
            for problem in problems {
                println!("error: {problem}");
            }
            println!("the policies do not load; no test ran");
            return Ok(ExitCode::FAILURE);
        }
        Err(error) => return Err(error.into()),
    };
    let (base, _) = load_entities_file(dir)?;
    let base_facts = Arc::new(
        merged(policies.schema(), &base, std::iter::empty())
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("entities.json").display()))?,
    );
    let tests_dir = dir.join(TESTS_DIR);
    let mut files: Vec<_> = std::fs::read_dir(&tests_dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", tests_dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in files {
        let shown = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let file: TestFile = match toml::from_str(&text) {
            Ok(file) => file,
            Err(error) => {
                println!("ERROR {shown}: {}", error.to_string().trim_end());
                failed += 1;
                continue;
            }
        };
        if file.case.is_empty() {
            println!("ERROR {shown}: no [[case]] in the file");
            failed += 1;
        }
        for case in &file.case {
            let outcome = run_case(case, file.now.as_deref(), &policies, &base, &base_facts);
            match outcome {
                Outcome::Passed => passed += 1,
                Outcome::Failed(why) => {
                    println!("FAIL {shown}: {:?}: {why}", case.name);
                    failed += 1;
                }
                Outcome::Broken(why) => {
                    println!("ERROR {shown}: {:?}: {why}", case.name);
                    failed += 1;
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_case(
    case: &Case,
    default_now: Option<&str>,
    policies: &Arc<PolicySnapshot>,
    base: &warrant_facts::FileEntities,
    base_facts: &Arc<warrant_facts::Facts>,
) -> Outcome {
    let request = match request_of(case) {
        Ok(request) => request,
        Err(why) => return Outcome::Broken(why),
    };
    let Some(now_text) = case.now.as_deref().or(default_now) else {
        return Outcome::Broken("now: required (in the case or at the top of the file)".into());
    };
    let Some(now) = UnixMillis::parse_rfc3339(now_text) else {
        return Outcome::Broken(format!("now: {now_text:?} is not an RFC 3339 time"));
    };
    let facts = if case.entities.is_empty() {
        Arc::clone(base_facts)
    } else {
        let mut changes = Vec::new();
        for (i, entity) in case.entities.iter().enumerate() {
            let json = match serde_json::to_value(entity) {
                Ok(json) => json,
                Err(e) => return Outcome::Broken(format!("entities[{i}]: {e}")),
            };
            let uid = match cedar_policy::EntityUid::from_json(json["uid"].clone()) {
                Ok(uid) => uid,
                Err(e) => return Outcome::Broken(format!("entities[{i}].uid: {e}")),
            };
            changes.push((uid.to_string(), json));
        }
        match merged(
            policies.schema(),
            base,
            changes.iter().map(|(k, v)| (k.as_str(), Some(v))),
        ) {
            Ok(facts) => Arc::new(facts),
            Err(e) => return Outcome::Broken(format!("entities: {e}")),
        }
    };
    let snapshot = Snapshot {
        policies: Arc::clone(policies),
        facts,
    };
    let engine = Engine::new(
        snapshot,
        Arc::new(ManualClock::new(now)),
        EngineSettings {
            cache: None,
            ..EngineSettings::default()
        },
        EngineParts {
            uses: Some(Arc::new(Uses::default())),
            ..EngineParts::default()
        },
    );
    let decision = match engine.check(&request) {
        Ok(decision) => decision,
        Err(invalid) => return Outcome::Broken(format!("the request is malformed: {invalid}")),
    };
    let got = match decision.effect {
        Effect::Allow => Expected::Allow,
        Effect::Deny => Expected::Deny,
    };
    let mut reasons = decision.reasons.clone();
    reasons.sort();
    if got != case.expect {
        return Outcome::Failed(format!(
            "expected {}, got {} (reasons: {})",
            name(case.expect),
            name(got),
            reasons.join(", ")
        ));
    }
    if let Some(expected) = &case.reasons {
        let mut expected = expected.clone();
        expected.sort();
        if expected != reasons {
            return Outcome::Failed(format!(
                "{} as expected, but because of [{}], not [{}]",
                name(got),
                reasons.join(", "),
                expected.join(", ")
            ));
        }
    }
    Outcome::Passed
}

fn name(expected: Expected) -> &'static str {
    match expected {
        Expected::Allow => "allow",
        Expected::Deny => "deny",
    }
}

fn entity(text: &str, field: &str) -> Result<EntityRef, String> {
    EntityRef::parse(text).ok_or_else(|| format!("{field}: expected Type::id, got {text:?}"))
}

fn request_of(case: &Case) -> Result<CheckRequest, String> {
    let context = case
        .context
        .iter()
        .map(|(key, value)| {
            Ok((
                key.clone(),
                context_value(value, &format!("context.{key}"))?,
            ))
        })
        .collect::<Result<BTreeMap<_, _>, String>>()?;
    let resource_description =
        if case.resource_attributes.is_none() && case.resource_parents.is_empty() {
            None
        } else {
            let attributes = case
                .resource_attributes
                .iter()
                .flatten()
                .map(|(key, value)| {
                    Ok((
                        key.clone(),
                        context_value(value, &format!("resource_attributes.{key}"))?,
                    ))
                })
                .collect::<Result<BTreeMap<_, _>, String>>()?;
            let parents = case
                .resource_parents
                .iter()
                .enumerate()
                .map(|(i, parent)| entity(parent, &format!("resource_parents[{i}]")))
                .collect::<Result<_, _>>()?;
            Some(ResourceDescription {
                attributes,
                parents,
            })
        };
    Ok(CheckRequest {
        principal: entity(&case.principal, "principal")?,
        action: case.action.clone(),
        resource: entity(&case.resource, "resource")?,
        context,
        approval_id: case.approval.clone(),
        request_id: None,
        resource_description,
        caller_identity: None,
        credential: None,
    })
}

fn context_value(value: &toml::Value, at: &str) -> Result<ContextValue, String> {
    Ok(match value {
        toml::Value::String(s) => ContextValue::String(s.clone()),
        toml::Value::Integer(n) => ContextValue::Long(*n),
        toml::Value::Boolean(b) => ContextValue::Bool(*b),
        toml::Value::Array(items) => ContextValue::Set(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| context_value(item, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(fields) => ContextValue::Record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), context_value(v, &format!("{at}.{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
        toml::Value::Float(f) => return Err(format!("{at}: {f} is not an integer")),
        toml::Value::Datetime(_) => {
            return Err(format!(
                "{at}: a TOML datetime has no Cedar value (Warrant sets `now` itself)"
            ));
        }
    })
}
