//! The policy store: loads a directory's Cedar schema and `*.cedar` files, gives every policy its
//! `@id` as its Cedar policy id (so reasons name stable ids), validates the set against the
//! schema in strict mode and reports every problem with file, line and column.

use crate::decide::context_shape::{
    ContextShape, DESCRIBED_BY_CALLER, Kind, declared_contexts, described_types,
};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    EntityTypeName, EntityUid, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint,
    Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

mod index;
pub use index::PolicyIndex;
use sha2::{Digest, Sha256};

use crate::clock::UnixMillis;

/// The schema file every policy directory has.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// A validated policy set and the schema it was validated against. Immutable once built.
pub struct PolicySnapshot {
    schema: Schema,
    policies: PolicySet,
    /// `sha256:` of the schema and every policy file (names and contents).
    version: Arc<str>,
    /// The actions the schema declares, by id (e.g. "export"), parsed once here.
    actions: HashMap<String, EntityUid>,
    /// Every entity type the schema declares, by name (e.g. "ServiceAccount"), parsed once here.
    entity_types: HashMap<String, EntityTypeName>,
    /// How the policies read the clock, for knowing how long a decision stays true.
    time_use: TimeUse,
    /// For each action id, the attributes its context declares: what APIs that pass free-form
    /// caller attributes (AuthZEN) may put there.
    contexts: HashMap<String, Arc<ContextShape>>,
    /// The entity types marked `@described_by_caller`, with their attributes: a resource of one
    /// of these that the facts do not hold is decided on what the request says of it.
    described: HashMap<String, Arc<ContextShape>>,
    /// What is allowed but probably not meant: policies whose scope constrains neither principal
    /// nor resource (evaluated for every request, and impossible to index).
    warnings: Vec<Problem>,
    /// The policies by scope: what a request evaluates.
    index: PolicyIndex,
}

/// What the policies do with time. Comparing `context.now` with a fixed datetime can change a
/// decision only when the clock crosses that datetime; arithmetic on it (`offset`, `toTime`, ...)
/// can change a decision at any moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeUse {
    /// Every `datetime("...")` literal in the policies, sorted.
    pub datetime_literals: Vec<UnixMillis>,
    /// Every entity a policy names in a condition: its attributes can be read.
    pub entity_literals: Vec<EntityUid>,
    /// A policy does arithmetic on datetimes, so no decision can be assumed to last.
    pub arithmetic: bool,
}

impl TimeUse {
    const ARITHMETIC: [&str; 4] = ["offset", "durationSince", "toDate", "toTime"];

    fn collect(&mut self, value: &serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Array(items) => items.iter().for_each(|item| self.collect(item)),
            Value::Object(fields) => {
                for (key, inner) in fields {
                    if Self::ARITHMETIC.contains(&key.as_str()) {
                        self.arithmetic = true;
                    }
                    let literal = inner
                        .get(0)
                        .and_then(|arg| arg.get("Value"))
                        .and_then(Value::as_str);
                    match (key.as_str(), literal) {
                        ("datetime", Some(text)) => match UnixMillis::parse_cedar_datetime(text) {
                            Some(at) => self.datetime_literals.push(at),
                            // Not a datetime Warrant can read: assume nothing about time.
                            None => self.arithmetic = true,
                        },
                        ("__entity", _) => {
                            if let Ok(uid) = EntityUid::from_json(inner.clone()) {
                                self.entity_literals.push(uid);
                            }
                        }
                        _ => self.collect(inner),
                    }
                }
            }
            _ => {}
        }
    }

    fn of(policies: &PolicySet) -> Self {
        let mut time_use = TimeUse::default();
        for policy in policies.policies() {
            match policy.to_json() {
                // Conditions only: scope constraints compare entities but read no attributes.
                Ok(json) => time_use.collect(&json["conditions"]),
                Err(_) => time_use.arithmetic = true,
            }
        }
        time_use.datetime_literals.sort_unstable();
        time_use.datetime_literals.dedup();
        time_use.entity_literals.sort_by_key(ToString::to_string);
        time_use.entity_literals.dedup();
        time_use
    }
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in the policies:\n{}", .0.len(), ProblemList(.0))]
    Invalid(Vec<Problem>),
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

/// A file's text, for turning byte offsets into lines and columns.
struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    fn read(path: PathBuf) -> Result<Self, PolicyLoadError> {
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyLoadError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(SourceFile { path, text })
    }

    fn problem_at(&self, offset: usize, message: impl Into<String>) -> Problem {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Problem {
            file: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Every problem a Cedar diagnostic reports, placed at its first label (or the file start).
    fn problems_from(&self, diagnostic: &dyn Diagnostic) -> Vec<Problem> {
        let mut message = diagnostic.to_string();
        if let Some(help) = diagnostic.help() {
            message.push_str(&format!(" ({help})"));
        }
        let offset = diagnostic
            .labels()
            .and_then(|mut labels| labels.next())
            .map_or(0, |label| label.offset());
        let mut problems = vec![self.problem_at(offset, message)];
        if let Some(related) = diagnostic.related() {
            for inner in related {
                problems.extend(self.problems_from(inner));
            }
        }
        problems
    }
}

impl PolicySnapshot {
    // The snapshot's parts, read-only: one that exists was loaded and validated whole.

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The policies.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// `sha256:` of the schema and every policy file.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// The actions the schema declares, by id.
    pub fn actions(&self) -> &HashMap<String, EntityUid> {
        &self.actions
    }

    /// Every entity type the schema declares, by name.
    pub fn entity_types(&self) -> &HashMap<String, EntityTypeName> {
        &self.entity_types
    }

    /// How the policies read the clock.
    pub fn time_use(&self) -> &TimeUse {
        &self.time_use
    }

    /// Each action's declared context, by action id.
    pub fn contexts(&self) -> &HashMap<String, Arc<ContextShape>> {
        &self.contexts
    }

    /// Policies that are allowed but probably not meant.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// Loads `dir/schema.cedarschema` and every `dir/*.cedar`, in file-name order.
    pub fn load(dir: &Path) -> Result<Self, PolicyLoadError> {
        let schema_file = SourceFile::read(dir.join(SCHEMA_FILE))?;
        let mut policy_files = Vec::new();
        let listing = std::fs::read_dir(dir).map_err(|source| PolicyLoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in listing {
            let path = entry
                .map_err(|source| PolicyLoadError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?
                .path();
            if path.extension().is_some_and(|ext| ext == "cedar") && path.is_file() {
                policy_files.push(path);
            }
        }
        policy_files.sort();
        let sources = policy_files
            .iter()
            .map(|path| SourceFile::read(path.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_sources(&schema_file, &sources)
    }

    fn from_sources(
        schema_file: &SourceFile,
        sources: &[SourceFile],
    ) -> Result<Self, PolicyLoadError> {
        let schema = match Schema::from_cedarschema_str(&schema_file.text) {
            Ok((schema, _warnings)) => schema,
            Err(error) => return Err(PolicyLoadError::Invalid(schema_file.problems_from(&error))),
        };

        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut policies = PolicySet::new();
        // Which file and offset each policy came from, for validation messages.
        let mut origin: HashMap<PolicyId, (usize, usize)> = HashMap::new();
        for (file_index, source) in sources.iter().enumerate() {
            let parsed = match PolicySet::from_str(&source.text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    problems.extend(source.problems_from(&errors));
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(source.problem_at(0, "policy templates are not supported"));
            }
            let mut search_from = 0;
            for policy in parsed.policies() {
                let offset = locate(&source.text, &policy.to_string(), &mut search_from);
                let Some(id) = policy.annotation("id") else {
                    problems.push(source.problem_at(
                        offset,
                        "policy has no @id(\"...\") annotation; every policy needs one, it is the reason decisions report",
                    ));
                    continue;
                };
                let id = PolicyId::new(id);
                if let Some((other_file, other_offset)) = origin.get(&id) {
                    let first = sources[*other_file].problem_at(*other_offset, "");
                    problems.push(source.problem_at(
                        offset,
                        format!(
                            "duplicate @id(\"{id}\"): already used at {}:{}:{}",
                            first.file.display(),
                            first.line,
                            first.column
                        ),
                    ));
                    continue;
                }
                origin.insert(id.clone(), (file_index, offset));
                if matches!(policy.principal_constraint(), PrincipalConstraint::Any)
                    && matches!(policy.resource_constraint(), ResourceConstraint::Any)
                {
                    warnings.push(source.problem_at(
                        offset,
                        format!(
                            "policy \"{id}\" constrains neither principal nor resource in its \
                             scope: it is evaluated for every request for its action (the \
                             policy index can place it by action only)"
                        ),
                    ));
                }
                if let Err(error) = policies.add(policy.new_id(id)) {
                    problems.push(source.problem_at(offset, error.to_string()));
                }
            }
        }
        if !problems.is_empty() {
            return Err(PolicyLoadError::Invalid(problems));
        }

        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        for error in validation.validation_errors() {
            let (file_index, policy_offset) = origin[error.policy_id()];
            let source = &sources[file_index];
            // Validation labels are offsets into the text the policy was parsed from: its file.
            let offset = error
                .labels()
                .and_then(|mut labels| labels.next())
                .map_or(policy_offset, |label| label.offset());
            problems.push(
                source.problem_at(offset, format!("policy \"{}\": {error}", error.policy_id())),
            );
        }
        if !problems.is_empty() {
            return Err(PolicyLoadError::Invalid(problems));
        }

        let mut hasher = Sha256::new();
        for source in std::iter::once(schema_file).chain(sources) {
            let name = source
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            hasher.update(name.unwrap_or_default().as_bytes());
            hasher.update([0]);
            hasher.update((source.text.len() as u64).to_le_bytes());
            hasher.update(source.text.as_bytes());
        }
        let version: Arc<str> = format!("sha256:{:x}", hasher.finalize()).into();
        let actions = schema
            .actions()
            .map(|uid| (uid.id().unescaped().to_owned(), uid.clone()))
            .collect();
        let entity_types = schema
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        let time_use = TimeUse::of(&policies);
        let contexts = declared_contexts(&schema_file.text);
        let mut missing_now: Vec<&String> = contexts
            .iter()
            .filter(|(_, shape)| {
                shape
                    .attributes
                    .get("now")
                    .is_none_or(|now| now.kind != Kind::Datetime)
            })
            .map(|(action, _)| action)
            .collect();
        missing_now.sort();
        if !missing_now.is_empty() {
            return Err(PolicyLoadError::Invalid(
                missing_now
                    .into_iter()
                    .map(|action| {
                        schema_file.problem_at(
                            schema_file.text.find(action.as_str()).unwrap_or(0),
                            format!(
                                "action \"{action}\": its context must declare `now: datetime` \
                                 (Warrant sets it on every request, so without it every request \
                                 to this action is refused)"
                            ),
                        )
                    })
                    .collect(),
            ));
        }
        let described = described_types(&schema_file.text);
        if described.contains_key(crate::facts::APPROVAL_TYPE) {
            return Err(PolicyLoadError::Invalid(vec![schema_file.problem_at(
                schema_file.text.find(DESCRIBED_BY_CALLER).unwrap_or(0),
                format!(
                    "`{}` cannot be @{DESCRIBED_BY_CALLER}: approvals are Warrant's own facts, \
                     never a caller's",
                    crate::facts::APPROVAL_TYPE
                ),
            )]));
        }
        Ok(PolicySnapshot {
            index: PolicyIndex::new(&policies),
            warnings,
            contexts,
            described,
            time_use,
            schema,
            policies,
            version,
            actions,
            entity_types,
        })
    }

    /// The policies to evaluate for a request (`PolicyIndex::applicable`): those whose scope can
    /// match it, with ancestors read from `entities`.
    pub fn applicable(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &cedar_policy::Entities,
    ) -> std::borrow::Cow<'_, PolicySet> {
        self.index
            .applicable(&self.policies, principal, action, resource, entities)
    }

    /// The policy index.
    pub fn index(&self) -> &PolicyIndex {
        &self.index
    }

    /// The entity types a caller may describe (`@described_by_caller`), with their attributes.
    pub fn described_types(&self) -> &HashMap<String, Arc<ContextShape>> {
        &self.described
    }

    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }
}

/// Where a policy's text starts in its file. Cedar keeps a parsed policy's source text, so the
/// text is found verbatim; the search moves forward so that identical policies map in order.
fn locate(file_text: &str, policy_text: &str, search_from: &mut usize) -> usize {
    match file_text[*search_from..].find(policy_text.trim()) {
        Some(found) => {
            let offset = *search_from + found;
            *search_from = offset + 1;
            offset
        }
        None => *search_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"
entity User = { level: Long };
entity Doc;
action "read" appliesTo { principal: [User], resource: [Doc], context: { now: datetime } };
"#;

    fn load(files: &[(&str, &str)]) -> Result<PolicySnapshot, PolicyLoadError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SCHEMA_FILE), SCHEMA).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        PolicySnapshot::load(dir.path())
    }

    fn problems(result: Result<PolicySnapshot, PolicyLoadError>) -> Vec<Problem> {
        match result {
            Err(PolicyLoadError::Invalid(problems)) => problems,
            Err(other) => panic!("expected problems, got {other}"),
            Ok(_) => panic!("expected problems, the set loaded"),
        }
    }

    #[test]
    fn policy_ids_are_their_id_annotations() {
        let snapshot = load(&[(
            "a.cedar",
            "@id(\"readers\")\npermit(principal, action == Action::\"read\", resource);",
        )])
        .unwrap();
        let ids: Vec<_> = snapshot
            .policies
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        assert_eq!(ids, ["readers"]);
        assert!(snapshot.actions.contains_key("read"));
        assert!(snapshot.version.starts_with("sha256:"));
    }

    #[test]
    fn a_type_error_is_reported_with_file_line_and_column() {
        let found = problems(load(&[(
            "b.cedar",
            "@id(\"ok\")\npermit(principal, action, resource);\n\n@id(\"bad\")\npermit(principal, action, resource)\n  when { principal.level == \"high\" };\n",
        )]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].file.ends_with("b.cedar"));
        assert_eq!(found[0].line, 6);
        assert!(found[0].column > 1);
        assert!(found[0].message.contains("\"bad\""), "{}", found[0].message);
    }

    #[test]
    fn missing_and_duplicate_ids_are_refused() {
        let found = problems(load(&[
            (
                "a.cedar",
                "@id(\"same\")\npermit(principal, action, resource);",
            ),
            (
                "b.cedar",
                "\n@id(\"same\")\npermit(principal, action, resource);\nforbid(principal, action, resource);",
            ),
        ]));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].message.contains("duplicate @id(\"same\")"));
        assert_eq!((found[0].line, found[0].column), (2, 1));
        assert!(found[1].message.contains("no @id"));
        assert_eq!(found[1].line, 4);
    }

    #[test]
    fn a_syntax_error_names_its_place() {
        let found = problems(load(&[(
            "c.cedar",
            "@id(\"x\")\npermit(principal, action, resource)\n  when { principal.level > };",
        )]));
        assert_eq!(found[0].line, 3, "{found:?}");
    }

    #[test]
    fn time_literals_entity_literals_and_arithmetic_are_found() {
        let plain = load(&[(
            "t.cedar",
            "@id(\"t\")\npermit(principal == User::\"u\", action, resource)\n  when { principal.level < 3 };",
        )])
        .unwrap();
        assert_eq!(plain.time_use, TimeUse::default());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SCHEMA_FILE),
            "entity User = { until: datetime };\naction \"read\" appliesTo { principal: [User], resource: [User], context: { now: datetime } };",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t.cedar"),
            "@id(\"a\")\npermit(principal, action, resource) when { context.now < datetime(\"2027-01-01\") && context.now < User::\"boss\".until };",
        )
        .unwrap();
        let literal = PolicySnapshot::load(dir.path()).unwrap();
        assert_eq!(
            literal.time_use.datetime_literals,
            [UnixMillis::parse_cedar_datetime("2027-01-01").unwrap()]
        );
        assert_eq!(
            literal.time_use.entity_literals[0].to_string(),
            "User::\"boss\""
        );
        assert!(!literal.time_use.arithmetic);

        std::fs::write(
            dir.path().join("t.cedar"),
            "@id(\"a\")\npermit(principal, action, resource) when { context.now.toTime() < duration(\"17h\") };",
        )
        .unwrap();
        assert!(
            PolicySnapshot::load(dir.path())
                .unwrap()
                .time_use
                .arithmetic
        );
    }

    #[test]
    fn a_missing_schema_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = PolicySnapshot::load(dir.path()).err().unwrap();
        assert!(error.to_string().contains(SCHEMA_FILE), "{error}");
    }

    #[test]
    fn context_shapes_follow_common_types_and_namespaces() {
        let shapes = declared_contexts(
            r#"type Shared = { ticket: String };
namespace Ops {
  type Ctx = { now: datetime, reason?: String };
  entity Bot;
  action "deploy" appliesTo { principal: [Bot], resource: [Bot], context: Ctx };
  action "page" appliesTo { principal: [Bot], resource: [Bot], context: Shared };
  action "ping" appliesTo { principal: [Bot], resource: [Bot], context: { seq: Long } };
  action "noop" appliesTo { principal: [Bot], resource: [Bot] };
}"#,
        );
        let names = |action: &str| {
            shapes[action]
                .attributes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(names("deploy"), ["now", "reason"]);
        assert_eq!(names("page"), ["ticket"]);
        assert_eq!(names("ping"), ["seq"]);
        assert!(names("noop").is_empty());
    }
}
