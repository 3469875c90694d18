//! The policy store: loads a directory's Cedar schema and `*.cedar` files, gives every policy its
//! `@id` as its Cedar policy id (so reasons name stable ids), validates the set against the
//! schema in strict mode and reports every problem with file, line and column. `reach` says
//! where on one side of a request the permits that can match the other side name anything (for
//! searches).
//!
//! May depend on: `warrant-domain`.
//! Invariant: a loaded policy set is strictly valid against its schema, and every action's context
//!   declares `now`.

use crate::context_shape::{
    ContextShape, DESCRIBED_BY_CALLER, Kind, declared_contexts, described_types,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint,
    ResourceConstraint, Schema, Template, ValidationMode, Validator,
};
use miette::Diagnostic;

pub mod context_shape;
mod index;
mod links;
mod reach;
pub use index::PolicyIndex;
use index::SideOfRequest;
use links::TemplateScope;
pub use links::{LINKS_FILE, Link, LinkOrigin, LinkSpec, Links};
pub use reach::{Reach, SearchedSide};
use sha2::{Digest, Sha256};

use warrant_domain::EntityRef;
use warrant_domain::clock::UnixMillis;

/// The schema file every policy directory has.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// A validated policy set and the schema it was validated against, with the template links in
/// force. Immutable once built; a link change makes a new snapshot that shares everything else.
#[derive(Clone)]
pub struct PolicySnapshot {
    files: Arc<PolicyFiles>,
    links: Links,
    /// `PolicyFiles::version`, and when the admin API made links, a digest of them.
    version: Arc<str>,
}

/// What the policy folder holds, validated.
struct PolicyFiles {
    schema: Schema,
    /// The static policies and the templates.
    policies: PolicySet,
    /// `sha256:` of the schema and every policy file (names and contents), `links.json` included.
    version: Arc<str>,
    /// `sha256:` of the schema alone: the facts are parsed against it.
    schema_version: Arc<str>,
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
    /// The static policies by scope: what a request evaluates.
    index: PolicyIndex,
    /// The templates by `@id`, with their scopes.
    templates: HashMap<String, TemplateScope>,
    /// Whether a link of a template with slots of these types fits the schema, as Cedar's
    /// validator found the first time such a link was checked.
    link_fits: Mutex<HashMap<LinkTypes, Result<(), String>>>,
}

/// A template and the types of a link's slot values.
type LinkTypes = (String, Option<String>, Option<String>);

/// Why a link cannot be made: the field at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkProblem {
    pub field: &'static str,
    pub message: String,
}

impl LinkProblem {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        LinkProblem {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for LinkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
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
        let static_policies = policies.policies().map(Policy::to_json);
        let templates = policies.templates().map(Template::to_json);
        for json in static_policies.chain(templates) {
            match json {
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
        &self.files.schema
    }

    /// The static policies and the templates (links are in `links`).
    pub fn policies(&self) -> &PolicySet {
        &self.files.policies
    }

    /// `sha256:` of the schema and every policy file; with links made through the admin API,
    /// followed by `+live-links:` and a digest of them.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// `sha256:` of the schema alone: facts parsed against one schema fit every folder with the
    /// same.
    pub fn schema_version(&self) -> &Arc<str> {
        &self.files.schema_version
    }

    /// `sha256:` of the schema and every policy file: what a reload changes.
    pub fn files_version(&self) -> &Arc<str> {
        &self.files.version
    }

    /// The template links in force.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The actions the schema declares, by id.
    pub fn actions(&self) -> &HashMap<String, EntityUid> {
        &self.files.actions
    }

    /// Every entity type the schema declares, by name.
    pub fn entity_types(&self) -> &HashMap<String, EntityTypeName> {
        &self.files.entity_types
    }

    /// How the policies read the clock.
    pub fn time_use(&self) -> &TimeUse {
        &self.files.time_use
    }

    /// Each action's declared context, by action id.
    pub fn contexts(&self) -> &HashMap<String, Arc<ContextShape>> {
        &self.files.contexts
    }

    /// Policies that are allowed but probably not meant.
    pub fn warnings(&self) -> &[Problem] {
        &self.files.warnings
    }

    /// Loads `dir/schema.cedarschema`, every `dir/*.cedar` in file-name order, and the links in
    /// `dir/links.json` if there is one.
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
        let links_path = dir.join(LINKS_FILE);
        let links_file = match links_path.is_file() {
            true => Some(SourceFile::read(links_path)?),
            false => None,
        };
        Self::from_sources(&schema_file, &sources, links_file.as_ref())
    }

    fn from_sources(
        schema_file: &SourceFile,
        sources: &[SourceFile],
        links_file: Option<&SourceFile>,
    ) -> Result<Self, PolicyLoadError> {
        let schema = match Schema::from_cedarschema_str(&schema_file.text) {
            Ok((schema, _warnings)) => schema,
            Err(error) => return Err(PolicyLoadError::Invalid(schema_file.problems_from(&error))),
        };
        let Parsed {
            policies,
            origin,
            warnings,
        } = parse_policies(sources).map_err(PolicyLoadError::Invalid)?;
        let problems = validate(&schema, &policies, &origin, sources);
        if !problems.is_empty() {
            return Err(PolicyLoadError::Invalid(problems));
        }
        let version = version_of(schema_file, sources, links_file);
        let schema_version: Arc<str> =
            format!("sha256:{:x}", Sha256::digest(schema_file.text.as_bytes())).into();
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
        let described = described_types(&schema_file.text);
        check_contexts(schema_file, &contexts, &described)?;
        let templates = policies
            .templates()
            .map(|template| (template.id().to_string(), TemplateScope::of(template)))
            .collect();
        let mut snapshot = PolicySnapshot {
            version: Arc::clone(&version),
            files: Arc::new(PolicyFiles {
                schema_version,
                index: PolicyIndex::new(&policies),
                templates,
                link_fits: Mutex::new(HashMap::new()),
                warnings,
                contexts,
                described,
                time_use,
                schema,
                policies,
                version,
                actions,
                entity_types,
            }),
            links: Links::default(),
        };
        if let Some(links_file) = links_file {
            snapshot.links = snapshot.file_links(links_file)?;
        }
        Ok(snapshot)
    }

    /// The links in the folder's `links.json`, each checked (`check_link`).
    fn file_links(&self, file: &SourceFile) -> Result<Links, PolicyLoadError> {
        let specs: Vec<LinkSpec> = serde_json::from_str(&file.text).map_err(|error| {
            let mut problem = file.problem_at(0, format!("not a JSON array of links: {error}"));
            (problem.line, problem.column) = (error.line(), error.column());
            PolicyLoadError::Invalid(vec![problem])
        })?;
        let mut links = self.links.clone();
        let mut problems = Vec::new();
        for spec in specs {
            // Where the link stands is looked for only when it is refused.
            let quoted_id = serde_json::to_string(&spec.id).unwrap_or_default();
            match self.check_link_among(&links, spec, LinkOrigin::File) {
                Ok(link) => links.insert(link),
                Err(problem) => {
                    let offset = file.text.find(&quoted_id).unwrap_or(0);
                    problems.push(file.problem_at(offset, format!("link {problem}")));
                }
            }
        }
        if !problems.is_empty() {
            return Err(PolicyLoadError::Invalid(problems));
        }
        Ok(links.settled())
    }

    /// Checks a link against its template and the schema: the id is free (no policy, template or
    /// link has it), the template exists, there is a value for each of its slots and none for a
    /// slot it lacks, and each value's type is one the template's actions apply to.
    pub fn check_link(&self, spec: LinkSpec, origin: LinkOrigin) -> Result<Link, LinkProblem> {
        self.check_link_among(&self.links, spec, origin)
    }

    /// `check_link`, with `links` as the links in force.
    fn check_link_among(
        &self,
        links: &Links,
        spec: LinkSpec,
        origin: LinkOrigin,
    ) -> Result<Link, LinkProblem> {
        if spec.id.is_empty() {
            return Err(LinkProblem::new("id", "is empty"));
        }
        if spec.id.len() > MAX_LINK_ID_BYTES || spec.id.chars().any(char::is_control) {
            return Err(LinkProblem::new(
                "id",
                format!("must be at most {MAX_LINK_ID_BYTES} bytes without control characters"),
            ));
        }
        if spec.id.starts_with("warrant:") {
            return Err(LinkProblem::new(
                "id",
                "ids starting with warrant: are Warrant's own reasons",
            ));
        }
        let id = PolicyId::new(&spec.id);
        if self.files.policies.policy(&id).is_some() || self.files.policies.template(&id).is_some()
        {
            return Err(LinkProblem::new(
                "id",
                format!("{:?} is the @id of a policy or template", spec.id),
            ));
        }
        if links.get(&spec.id).is_some() {
            return Err(LinkProblem::new(
                "id",
                format!("a link {:?} exists already", spec.id),
            ));
        }
        let Some(scope) = self.files.templates.get(&spec.template) else {
            let message = match self.files.policies.policy(&PolicyId::new(&spec.template)) {
                Some(_) => format!("{:?} is a static policy, not a template", spec.template),
                None => format!("no template has @id({:?})", spec.template),
            };
            return Err(LinkProblem::new("template", message));
        };
        let principal = self.slot_value(
            "principal",
            scope.has_principal_slot(),
            spec.principal.as_ref(),
        )?;
        let resource = self.slot_value(
            "resource",
            scope.has_resource_slot(),
            spec.resource.as_ref(),
        )?;
        let link = Link {
            id: Arc::from(spec.id),
            template: Arc::clone(&scope.name),
            principal,
            resource,
            origin,
        };
        self.link_fits(scope, &link)?;
        Ok(link)
    }

    fn slot_value(
        &self,
        field: &'static str,
        slot: bool,
        value: Option<&EntityRef>,
    ) -> Result<Option<EntityUid>, LinkProblem> {
        match (slot, value) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(LinkProblem::new(
                field,
                format!("the template has no ?{field} slot"),
            )),
            (true, None) => Err(LinkProblem::new(
                field,
                format!("the template has a ?{field} slot: a value is required"),
            )),
            (true, Some(value)) => {
                let Some(type_name) = self.files.entity_types.get(&value.type_name) else {
                    return Err(LinkProblem::new(
                        field,
                        format!("the schema declares no entity type {:?}", value.type_name),
                    ));
                };
                if value.id.is_empty() {
                    return Err(LinkProblem::new(field, "the entity id is empty"));
                }
                Ok(Some(EntityUid::from_type_name_and_id(
                    type_name.clone(),
                    EntityId::new(&value.id),
                )))
            }
        }
    }

    /// Whether Cedar's validator accepts a link of this template with these slot types (only
    /// the types matter to it, so the answer is kept per template and types).
    fn link_fits(&self, scope: &TemplateScope, link: &Link) -> Result<(), LinkProblem> {
        let type_of = |uid: &Option<EntityUid>| uid.as_ref().map(|u| u.type_name().to_string());
        let key = (
            link.template().to_owned(),
            type_of(&link.principal),
            type_of(&link.resource),
        );
        let mut memo = self
            .files
            .link_fits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let verdict = memo.entry(key).or_insert_with(|| {
            let mut set = PolicySet::new();
            set.add_template(scope.template.clone())
                .map_err(|error| error.to_string())?;
            // Named for what it stands for: the answer holds for every link of these types.
            let stands_for = PolicyId::new(format!("a link of {}", link.template));
            set.link(scope.id(), stands_for, link.slot_values())
                .map_err(|error| error.to_string())?;
            let validation =
                Validator::new(self.files.schema.clone()).validate(&set, ValidationMode::Strict);
            // A link whose slot types its template's actions never apply to can never match:
            // Cedar warns of it; Warrant refuses it.
            let impossible = validation
                .validation_warnings()
                .filter(|warning| warning.policy_id() != scope.template.id())
                .map(ToString::to_string);
            let errors: Vec<String> = validation
                .validation_errors()
                .map(ToString::to_string)
                .chain(impossible)
                .collect();
            match errors.is_empty() {
                true => Ok(()),
                false => Err(errors.join("; ")),
            }
        });
        verdict.clone().map_err(|message| {
            // Blame a slot whose type no action takes there, else the combination.
            let schema = &self.files.schema;
            let taken =
                |uid: &Option<EntityUid>,
                 mut types: Box<dyn Iterator<Item = &EntityTypeName> + '_>| {
                    uid.as_ref()
                        .is_none_or(|uid| types.any(|t| t == uid.type_name()))
                };
            let field = match (&link.principal, &link.resource) {
                (Some(_), None) => "principal",
                (None, Some(_)) => "resource",
                (principal, _) if !taken(principal, Box::new(schema.principals())) => "principal",
                (_, resource) if !taken(resource, Box::new(schema.resources())) => "resource",
                _ => "template",
            };
            LinkProblem::new(field, format!("does not fit the schema: {message}"))
        })
    }

    /// This snapshot with one more link (checked by `check_link` against this snapshot).
    pub fn with_link(&self, link: Link) -> PolicySnapshot {
        self.with_links(self.links.with(link))
    }

    /// This snapshot without the link `id`, and that link; `None` if there is none.
    pub fn without_link(&self, id: &str) -> Option<(PolicySnapshot, Arc<Link>)> {
        let (links, link) = self.links.without(id)?;
        Some((self.with_links(links), link))
    }

    /// This snapshot with the live links `specs` added (as a new lineage of links: for a folder
    /// just loaded, which no decision has read yet), and those that do not fit it with why.
    pub fn with_live_links(
        &self,
        specs: impl IntoIterator<Item = LinkSpec>,
    ) -> (PolicySnapshot, Vec<(String, LinkProblem)>) {
        let mut links = self.links.clone();
        let mut refused = Vec::new();
        for spec in specs {
            let id = spec.id.clone();
            match self.check_link_among(&links, spec, LinkOrigin::Live) {
                Ok(link) => links.insert(link),
                Err(problem) => refused.push((id, problem)),
            }
        }
        (self.with_links(links.settled()), refused)
    }

    fn with_links(&self, links: Links) -> PolicySnapshot {
        let version = match links.live() {
            (0, _) => Arc::clone(&self.files.version),
            (count, digest) => {
                format!("{}+live-links:{count}:{digest:032x}", self.files.version).into()
            }
        };
        PolicySnapshot {
            files: Arc::clone(&self.files),
            links,
            version,
        }
    }

    /// The policies to evaluate for a request: the static policies the index selects
    /// (`PolicyIndex::applicable`) and the links whose scope can match it, with ancestors read
    /// from `entities`. `Err` if the set cannot be assembled (then nothing may be decided).
    pub fn applicable(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &cedar_policy::Entities,
    ) -> Result<Cow<'_, PolicySet>, String> {
        let request = [
            SideOfRequest::new(principal, entities),
            SideOfRequest::new(action, entities),
            SideOfRequest::new(resource, entities),
        ];
        let selected = self.files.index.select_for(&request);
        let mut linked: Vec<(&TemplateScope, &Arc<Link>)> = self
            .links
            .candidates(&request)
            .filter_map(|link| {
                let scope = self.files.templates.get(link.template())?;
                scope.admits(link, &request).then_some((scope, link))
            })
            .collect();
        if linked.is_empty() {
            return Ok(self.files.index.assemble(&self.files.policies, selected));
        }
        // A link anchored at an ancestor the principal and the resource share is listed twice.
        linked.sort_unstable_by(|a, b| a.1.id.cmp(&b.1.id));
        linked.dedup_by(|a, b| a.1.id == b.1.id);
        let mut set = PolicySet::new();
        let cannot = |error: cedar_policy::PolicySetError| error.to_string();
        for policy in self.files.index.policies_at(&selected) {
            set.add(policy.clone()).map_err(cannot)?;
        }
        for (scope, link) in linked {
            let template_id = scope.id();
            if set.template(&template_id).is_none() {
                set.add_template(scope.template.clone()).map_err(cannot)?;
            }
            set.link(template_id, PolicyId::new(link.id()), link.slot_values())
                .map_err(cannot)?;
        }
        Ok(Cow::Owned(set))
    }

    /// The first entity in a slot of `link` that `entities` does not hold and whose type callers
    /// do not describe: a link may name only entities Warrant knows.
    pub fn unknown_link_entity(
        &self,
        link: &Link,
        known: &dyn Fn(&EntityUid) -> bool,
    ) -> Option<LinkProblem> {
        let slots = [("principal", &link.principal), ("resource", &link.resource)];
        slots.into_iter().find_map(|(field, uid)| {
            let uid = uid.as_ref()?;
            let described = self
                .files
                .described
                .contains_key(&uid.type_name().to_string());
            (!described && !known(uid))
                .then(|| LinkProblem::new(field, format!("no {uid} is known")))
        })
    }

    /// The policy index.
    pub fn index(&self) -> &PolicyIndex {
        &self.files.index
    }

    /// The entity types a caller may describe (`@described_by_caller`), with their attributes.
    pub fn described_types(&self) -> &HashMap<String, Arc<ContextShape>> {
        &self.files.described
    }

    /// The static policies (templates and links not counted).
    pub fn policy_count(&self) -> usize {
        self.files.policies.policies().count()
    }

    pub fn template_count(&self) -> usize {
        self.files.templates.len()
    }
}

/// The policies and templates of a folder's files, each under its `@id`, with where each came
/// from (file and offset) and the warnings found on the way.
struct Parsed {
    policies: PolicySet,
    origin: HashMap<PolicyId, (usize, usize)>,
    warnings: Vec<Problem>,
}

/// Parses every file: each policy and template needs a unique `@id`.
fn parse_policies(sources: &[SourceFile]) -> Result<Parsed, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut policies = PolicySet::new();
    // Which file and offset each policy and template came from, for validation messages.
    let mut origin: HashMap<PolicyId, (usize, usize)> = HashMap::new();
    for (file_index, source) in sources.iter().enumerate() {
        let parsed = match PolicySet::from_str(&source.text) {
            Ok(parsed) => parsed,
            Err(errors) => {
                problems.extend(source.problems_from(&errors));
                continue;
            }
        };
        let mut search_from = 0;
        // Static policies and templates, in the order they are written.
        let mut written: Vec<(usize, Result<&Policy, &Template>)> = Vec::new();
        for policy in parsed.policies() {
            let offset = locate(&source.text, &policy.to_string(), &mut search_from);
            written.push((offset, Ok(policy)));
        }
        search_from = 0;
        for template in parsed.templates() {
            let offset = locate(&source.text, &template.to_string(), &mut search_from);
            written.push((offset, Err(template)));
        }
        written.sort_by_key(|(offset, _)| *offset);
        for (offset, item) in written {
            let annotation = match item {
                Ok(policy) => policy.annotation("id"),
                Err(template) => template.annotation("id"),
            };
            let Some(id) = annotation else {
                problems.push(source.problem_at(
                    offset,
                    "policy has no @id(\"...\") annotation; every policy and template needs one, it is the reason decisions report",
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
            let added = match item {
                Ok(policy) => {
                    if let Some(warning) = broad_permit(policy, &id) {
                        warnings.push(source.problem_at(offset, warning));
                    }
                    policies.add(policy.new_id(id))
                }
                Err(template) => policies.add_template(template.new_id(id)),
            };
            if let Err(error) = added {
                problems.push(source.problem_at(offset, error.to_string()));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Parsed {
        policies,
        origin,
        warnings,
    })
}

/// Strict validation against the schema: each problem placed in the file the policy came from.
fn validate(
    schema: &Schema,
    policies: &PolicySet,
    origin: &HashMap<PolicyId, (usize, usize)>,
    sources: &[SourceFile],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let validation = Validator::new(schema.clone()).validate(policies, ValidationMode::Strict);
    for error in validation.validation_errors() {
        let (file_index, policy_offset) = origin[error.policy_id()];
        let source = &sources[file_index];
        // Validation labels are offsets into the text the policy was parsed from: its file.
        let offset = error
            .labels()
            .and_then(|mut labels| labels.next())
            .map_or(policy_offset, |label| label.offset());
        problems
            .push(source.problem_at(offset, format!("policy \"{}\": {error}", error.policy_id())));
    }
    problems
}

/// `sha256:` over every file the set is made of, names and contents.
fn version_of(
    schema_file: &SourceFile,
    sources: &[SourceFile],
    links_file: Option<&SourceFile>,
) -> Arc<str> {
    let mut hasher = Sha256::new();
    for source in std::iter::once(schema_file)
        .chain(sources)
        .chain(links_file)
    {
        let name = source
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        hasher.update(name.unwrap_or_default().as_bytes());
        hasher.update([0]);
        hasher.update((source.text.len() as u64).to_le_bytes());
        hasher.update(source.text.as_bytes());
    }
    format!("sha256:{:x}", hasher.finalize()).into()
}

/// Every action's context declares `now: datetime`, and approvals cannot be described by callers.
fn check_contexts(
    schema_file: &SourceFile,
    contexts: &HashMap<String, Arc<ContextShape>>,
    described: &HashMap<String, Arc<ContextShape>>,
) -> Result<(), PolicyLoadError> {
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
    if described.contains_key(warrant_domain::APPROVAL_TYPE) {
        return Err(PolicyLoadError::Invalid(vec![schema_file.problem_at(
            schema_file.text.find(DESCRIBED_BY_CALLER).unwrap_or(0),
            format!(
                "`{}` cannot be @{DESCRIBED_BY_CALLER}: approvals are Warrant's own facts, \
                 never a caller's",
                warrant_domain::APPROVAL_TYPE
            ),
        )]));
    }
    Ok(())
}

/// The longest link id.
pub const MAX_LINK_ID_BYTES: usize = 256;

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

/// The warning a permit deserves when its scope constrains neither principal nor resource: it
/// can allow any principal on any resource for its actions (its condition alone decides), and
/// is evaluated for every such request. A `forbid` that broad is a guardrail, broad on purpose;
/// a permit says so with `@broad("why")`.
fn broad_permit(policy: &Policy, id: &PolicyId) -> Option<String> {
    let broad = policy.effect() == cedar_policy::Effect::Permit
        && matches!(policy.principal_constraint(), PrincipalConstraint::Any)
        && matches!(policy.resource_constraint(), ResourceConstraint::Any)
        && policy.annotation("broad").is_none();
    broad.then(|| {
        format!(
            "permit \"{id}\" constrains neither principal nor resource in its scope: its \
             condition alone stands between any principal and any resource for its actions, \
             and it is evaluated for every such request; narrow its scope, or say why it is \
             broad with @broad(\"...\")"
        )
    })
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
            .policies()
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        assert_eq!(ids, ["readers"]);
        assert!(snapshot.actions().contains_key("read"));
        assert!(snapshot.version().starts_with("sha256:"));
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
        assert_eq!(*plain.time_use(), TimeUse::default());

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
            literal.time_use().datetime_literals,
            [UnixMillis::parse_cedar_datetime("2027-01-01").unwrap()]
        );
        assert_eq!(
            literal.time_use().entity_literals[0].to_string(),
            "User::\"boss\""
        );
        assert!(!literal.time_use().arithmetic);

        std::fs::write(
            dir.path().join("t.cedar"),
            "@id(\"a\")\npermit(principal, action, resource) when { context.now.toTime() < duration(\"17h\") };",
        )
        .unwrap();
        assert!(
            PolicySnapshot::load(dir.path())
                .unwrap()
                .time_use()
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
