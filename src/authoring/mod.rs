//! Tools for the people who write policies, all working on a policy folder without a server:
//! `warrant validate` (every problem, with file, line and column), `warrant fmt` (the Cedar
//! formatter), `warrant test` (policy test files, in `policy_tests`) and `warrant check
//! --explain` (every policy's outcome for one request, in `explain`), and `warrant schema
//! from-mcp` (Cedar declarations for an MCP server's tools, in `mcp_schema`).

pub mod explain;
pub mod mcp_schema;
pub mod policy_tests;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warrant_domain::EntityRef;
use warrant_facts::{ENTITIES_FILE, Facts, load_entities_file};
use warrant_policy::{PolicyLoadError, PolicySnapshot, Problem};
use warrant_store::facts::merged;

/// `warrant validate`: schema, policies and facts, strictly. Prints every problem and warning
/// as `file:line:column: message`, then a summary; exit status 1 on any error.
pub fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    let mut errors: Vec<Problem> = Vec::new();
    let mut warnings: Vec<Problem> = Vec::new();
    match PolicySnapshot::load(dir) {
        Ok(policies) => {
            warnings.extend(policies.warnings().iter().cloned());
            match load_facts(dir, &policies) {
                Ok(facts) => errors.extend(policies.links().iter().filter_map(|link| {
                    let problem = policies.unknown_link_entity(link, &|uid| facts.contains(uid))?;
                    Some(Problem {
                        file: dir.join(warrant_policy::LINKS_FILE),
                        line: 1,
                        column: 1,
                        message: format!("link {:?}: {problem}", link.id()),
                    })
                })),
                Err(problem) => errors.push(problem),
            }
        }
        Err(PolicyLoadError::Invalid(problems)) => errors.extend(problems),
        Err(error @ PolicyLoadError::Io { .. }) => errors.push(Problem {
            file: dir.to_path_buf(),
            line: 1,
            column: 1,
            message: error.to_string(),
        }),
    }
    for problem in &errors {
        println!("error: {problem}");
    }
    for problem in &warnings {
        println!("warning: {problem}");
    }
    println!(
        "{}: {} error(s), {} warning(s)",
        dir.display(),
        errors.len(),
        warnings.len()
    );
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The folder's facts, validated against the schema; a problem names the entity's line.
pub(crate) fn load_facts(dir: &Path, policies: &PolicySnapshot) -> Result<Facts, Problem> {
    let path = dir.join(ENTITIES_FILE);
    let at_start = |message: String| Problem {
        file: path.clone(),
        line: 1,
        column: 1,
        message,
    };
    let (base, _) = load_entities_file(dir).map_err(|error| at_start(format!("{error:#}")))?;
    merged(policies.schema(), &base, std::iter::empty()).map_err(|error| {
        let line = error.entity().and_then(|entity| {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| entity_line(&text, &entity))
        });
        Problem {
            file: path.clone(),
            line: line.unwrap_or(1),
            column: 1,
            message: error.to_string(),
        }
    })
}

/// The line where `entity`'s id first stands in the entities file, if it can be found.
fn entity_line(text: &str, entity: &EntityRef) -> Option<usize> {
    let id = serde_json::to_string(&entity.id).ok()?;
    let at = text.find(&id)?;
    Some(text[..at].matches('\n').count() + 1)
}

/// The `*.cedar` files of a folder, sorted.
fn policy_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "cedar"))
        .collect();
    files.sort();
    Ok(files)
}

/// `warrant fmt`: formats every `*.cedar` file of the folder in place with the Cedar
/// formatter; with `check`, changes nothing and exits 1 if any file is not formatted.
pub fn fmt(dir: &Path, check: bool) -> anyhow::Result<ExitCode> {
    let config = cedar_policy_formatter::Config::default();
    let mut unformatted = 0;
    for path in policy_files(dir)? {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let pretty = cedar_policy_formatter::policies_str_to_pretty(&text, &config)
            .map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
        if pretty == text {
            continue;
        }
        unformatted += 1;
        if check {
            println!("{}: not formatted", path.display());
        } else {
            std::fs::write(&path, pretty)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            println!("{}: formatted", path.display());
        }
    }
    Ok(if check && unformatted > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
