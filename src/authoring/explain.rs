//! `warrant check --explain`: one request against a policy folder, evaluated by Warrant's engine,
//! with every policy's own outcome beside the decision: satisfied, not satisfied, or failed
//! (and why), and the facts Warrant resolved (owner, approval, scopes).

use std::process::ExitCode;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::authoring::load_facts;
use crate::cli::{CheckArgs, check_request, output, response_to_json};
use warrant_domain::Effect;
use warrant_domain::clock::{Clock as _, ManualClock, SystemClock, UnixMillis};
use warrant_engine::engine::explain::PolicyOutcome;
use warrant_engine::engine::{Engine, EngineParts, EngineSettings, Snapshot};
use warrant_policy::PolicySnapshot;
use warrant_proto::convert::{check_request_from_proto, check_response_to_proto};

/// Prints the explanation (JSON, or a table with `--output table`); exit status 0 on allow, 2 on
/// deny (as `warrant check`).
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let policies = Arc::new(PolicySnapshot::load(&args.policies)?);
    let facts = load_facts(&args.policies, &policies).map_err(|p| anyhow::anyhow!("{p}"))?;
    let now = match &args.now {
        Some(text) => UnixMillis::parse_rfc3339(text)
            .ok_or_else(|| anyhow::anyhow!("--now: not an RFC 3339 time: {text:?}"))?,
        None => SystemClock.now(),
    };
    let engine = Engine::new(
        Snapshot {
            policies,
            facts: Arc::new(facts),
        },
        Arc::new(ManualClock::new(now)),
        EngineSettings {
            cache: None,
            ..EngineSettings::default()
        },
        EngineParts::default(),
    );
    let request = check_request_from_proto(check_request(args)?)
        .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let explanation = engine
        .explain(&request)
        .map_err(|invalid| anyhow::anyhow!("{invalid}"))?;
    let allowed = explanation.decision.effect == Effect::Allow;
    let mut answer = response_to_json(&check_response_to_proto(explanation.decision));
    let policies: Vec<Value> = explanation
        .policies
        .iter()
        .map(|policy| {
            let (outcome, message) = match &policy.outcome {
                PolicyOutcome::Satisfied => ("satisfied", None),
                PolicyOutcome::NotSatisfied => ("not satisfied", None),
                PolicyOutcome::Failed(message) => ("failed", Some(message.clone())),
            };
            json!({"id": policy.policy_id, "template": policy.template_id, "effect": policy.effect, "outcome": outcome, "error": message})
        })
        .collect();
    answer["policies"] = Value::Array(policies);
    if explanation.policies.is_empty() {
        answer["note"] = json!("Warrant decided before any policy ran; see reasons");
    }
    match output::chosen_or(output::Output::Json) {
        output::Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        output::Output::Table => print!("{}", explanation_table(args, &answer)),
    }
    Ok(crate::cli::exit::decision(allowed))
}

/// The decision in a few lines, then the policies that matched or failed; the ones whose
/// condition did not hold are only counted.
fn explanation_table(args: &CheckArgs, answer: &Value) -> String {
    let mut text = crate::cli::decision_summary(args, answer);
    let policies = answer["policies"].as_array().cloned().unwrap_or_default();
    let (quiet, told): (Vec<Value>, Vec<Value>) = policies
        .into_iter()
        .partition(|policy| policy["outcome"] == "not satisfied");
    if !told.is_empty() {
        text.push('\n');
        text.push_str(&output::table(&Value::Array(told)));
    }
    if !quiet.is_empty() {
        text.push_str(&format!(
            "({} more whose condition did not hold)\n",
            quiet.len()
        ));
    }
    if let Some(note) = answer["note"].as_str() {
        text.push_str(&format!("{note}\n"));
    }
    text
}
