//! `warrant log ...`: verifies, shows, searches, exports and archives the provenance ledger in
//! a data folder (or in each replica's of a fleet), and prints its signed head and public key.

use super::*;

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Warrant's data folder (the ledger is in its `ledger/`). For a fleet, give each
    /// replica's: `verify` checks every chain, `show` and `search` merge them by time.
    #[arg(
        long = "data-dir",
        global = true,
        default_value = "data",
        env = "WARRANT_DATA_DIR"
    )]
    pub data_dirs: Vec<std::path::PathBuf>,
    /// The ledger's public key (hex), or a file holding it, kept apart from the data folder:
    /// once for every folder, or once per --data-dir, in their order. Without it (or
    /// --signing-key), it is derived from the signing key in each ledger folder, which whoever
    /// can write that folder can replace: `verify` then says so and exits 3.
    #[arg(long = "public-key", global = true)]
    pub public_keys: Vec<String>,
    /// The server's signing key file, when it is configured outside the data folder
    /// (`ledger_signing_key`): a pinned key, like --public-key.
    #[arg(long, global = true, env = "WARRANT_LEDGER_SIGNING_KEY")]
    pub signing_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: LogCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Check the whole ledger: hash chain, sequence, checkpoint signatures, truncation,
    /// unsigned records; exit 4 on damage, 3 if the key was not pinned.
    Verify {
        /// A head kept from earlier (`warrant log head`, the server's log, DecisionLog/GetHead):
        /// the ledger must contain record SEQ with chain hash HASH, or it was rolled back.
        #[arg(long, value_name = "SEQ:HASH")]
        expect_head: Option<String>,
        /// Accept records after the last checkpoint (an async-mode ledger after a crash may
        /// hold some; a durable one never does).
        #[arg(long)]
        allow_unsigned_tail: bool,
        /// Verify joined with these archives (`warrant log archive --to`), oldest first, as one
        /// chain.
        #[arg(long = "archive", value_name = "DIR")]
        archives: Vec<std::path::PathBuf>,
    },
    /// Move sealed segments whose every record is older than a time to an archive folder. The
    /// archive verifies on its own (`--data-dir DIR`) and joined (`verify --archive DIR`); the
    /// ledger starts and verifies from the signed checkpoint at the cut.
    Archive {
        /// RFC 3339: segments whose last record is before it.
        #[arg(long)]
        before: String,
        /// The archive folder (its `ledger/` is created).
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// The ledger's signed head (`SEQ:HASH`, then the checkpoint): keep it somewhere else to
    /// detect a rollback later with `verify --expect-head`.
    Head,
    /// Every entry after a cursor as JSON lines ({"hash","record","seq"} for a decision,
    /// {"approval_request","hash","seq"} for an approval request's step), for a SIEM or log
    /// shipper; the last `seq` shipped is the cursor to resume from.
    Export {
        /// The last sequence number already shipped (0 for everything).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep following the ledger as it grows (until interrupted).
        #[arg(long)]
        follow: bool,
        /// How often to look for new records when following, in milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
    },
    /// Everything recorded about one decision or approval request, with its story: the
    /// denial that prompted a request, the request, who decided it, and each use of the
    /// approval it became.
    Show {
        /// A decision id, a search's id, or an approval request's id [default: the newest
        /// decision]
        id: Option<String>,
    },
    /// The newest decisions matching every filter given (at most --limit), printed oldest
    /// first. Read through the decision log's search index (segment-N.terms files beside the
    /// segments, built the first time a search needs them).
    Search(SearchFlags),
    /// Print the ledger's public key (hex), for verifying elsewhere.
    PublicKey,
    /// Follow decisions as a running Warrant records them, one line each (or JSON), until
    /// interrupted. Needs the admin token (WARRANT_ADMIN_TOKEN or the data folder's).
    Tail {
        /// The admin API of the running server.
        #[arg(long, default_value = "http://127.0.0.1:50052", env = "WARRANT_ADMIN")]
        admin: String,
        #[command(flatten)]
        tls: ClientTls,
        /// Type::id
        #[arg(long)]
        principal: Option<String>,
        /// allow or deny
        #[arg(long)]
        decision: Option<String>,
        /// An action id.
        #[arg(long)]
        action: Option<String>,
    },
}

/// The key to check the ledger of the `index`th data folder with, and whether it was pinned
/// (given apart from the ledger folder) rather than read from the folder it is meant to check.
fn ledger_key(args: &LogArgs, index: usize) -> anyhow::Result<(ed25519_dalek::VerifyingKey, bool)> {
    let data_dir = &args.data_dirs[index];
    let ledger_dir = data_dir.join("ledger");
    let given = match args.public_keys.len() {
        0 => None,
        1 => Some(&args.public_keys[0]),
        n if n == args.data_dirs.len() => Some(&args.public_keys[index]),
        n => bail!(
            "--public-key: {n} given for {} data folders (give one, or one per folder)",
            args.data_dirs.len()
        ),
    };
    if let Some(given) = given {
        // The key itself, or a file that holds it (as `warrant log public-key` printed it). A
        // file inside the folder under test is no more pinned than the key found there.
        let (text, pinned) = match hex::decode(given.trim()) {
            Ok(_) => (given.clone(), true),
            Err(_) => {
                let path = std::path::Path::new(given);
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("--public-key: {given:?} is neither a hex key nor a file to read")
                })?;
                let inside = std::fs::canonicalize(path)
                    .ok()
                    .zip(std::fs::canonicalize(data_dir).ok())
                    .is_some_and(|(file, folder)| file.starts_with(folder));
                (text, !inside)
            }
        };
        let bytes: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("--public-key: not a hex Ed25519 public key")?;
        return Ok((ed25519_dalek::VerifyingKey::from_bytes(&bytes)?, pinned));
    }
    let (path, pinned) = match &args.signing_key {
        Some(path) => (path.clone(), !path.starts_with(&ledger_dir)),
        None => (ledger_dir.join("ledger-signing.key"), false),
    };
    if !path.exists() {
        bail!("no signing key at {}; give --public-key", path.display());
    }
    Ok((
        warrant_ledger::load_or_create_signing_key(&path)?.verifying_key(),
        pinned,
    ))
}

/// Every entry of every data folder's ledger, each checked with its key, merged by time (a
/// stable merge: one ledger's entries keep their order).
fn fleet_records(args: &LogArgs) -> anyhow::Result<Vec<warrant_ledger::Recorded>> {
    let mut all = Vec::new();
    for (index, data_dir) in args.data_dirs.iter().enumerate() {
        let (key, _) = ledger_key(args, index)?;
        let entries = warrant_ledger::records(&data_dir.join("ledger"), &key)
            .with_context(|| format!("the ledger in {}", data_dir.display()))?;
        all.extend(entries);
    }
    if args.data_dirs.len() > 1 {
        all.sort_by_key(|entry| {
            warrant_domain::clock::UnixMillis::parse_rfc3339(entry.time()).map(|t| t.0)
        });
    }
    Ok(all)
}

pub fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    let several = args.data_dirs.len() > 1;
    match &args.command {
        LogCommand::Verify { .. } | LogCommand::Show { .. } | LogCommand::Search { .. } => {}
        _ if several => bail!("only verify, show and search take several --data-dir"),
        _ => {}
    }
    if let LogCommand::Verify {
        expect_head,
        allow_unsigned_tail,
        archives,
    } = &args.command
        && several
    {
        if expect_head.is_some() || !archives.is_empty() {
            bail!("--expect-head and --archive are for one data folder at a time");
        }
        let mut worst = ExitCode::SUCCESS;
        for (index, data_dir) in args.data_dirs.iter().enumerate() {
            print!("{}: ", data_dir.display());
            let code = verify_one(&args, index, None, *allow_unsigned_tail, &[])?;
            // A damaged folder outweighs an unpinned one.
            if code != ExitCode::SUCCESS && worst != ExitCode::from(super::exit::DAMAGED) {
                worst = code;
            }
        }
        return Ok(worst);
    }
    let (key, _) = ledger_key(&args, 0)?;
    let dir = args.data_dirs[0].join("ledger");
    match &args.command {
        LogCommand::Tail { .. } => bail!("`log tail` talks to a running server; see `tail`"),
        LogCommand::PublicKey => {
            println!("{}", hex::encode(key.as_bytes()));
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Export {
            after,
            follow,
            poll_ms,
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let poll = follow.then(|| std::time::Duration::from_millis(*poll_ms));
            // Stops when the reader goes away (a broken pipe ends the write) or on a signal.
            warrant_ledger::export(&dir, *after, poll, &mut out, || false)?;
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Head => match warrant_ledger::read_head(&dir, &key)? {
            None => bail!("{} has no head file", dir.display()),
            Some(Err(problem)) => bail!("the head file does not verify: {problem}"),
            Some(Ok(signed)) => {
                let c = &signed.checkpoint;
                println!("{}:{}", c.seq, c.head);
                println!(
                    "signed {} by key {} (signature {})",
                    c.time, c.key_id, signed.signature
                );
                Ok(ExitCode::SUCCESS)
            }
        },
        LogCommand::Archive { before, to } => {
            let before = warrant_domain::clock::UnixMillis::parse_rfc3339(before)
                .context("--before: not an RFC 3339 time")?;
            let cut = warrant_ledger::Cut {
                before: Some(before),
                max_bytes: None,
            };
            let working = super::progress::waiting("archiving sealed segments");
            let archived = warrant_ledger::archive(&dir, &key, cut, to);
            working.finish_and_clear();
            match archived? {
                Some(moved) => {
                    println!(
                        "archived {} segments (records {} to {}) to {}; the ledger now starts after {}:{}",
                        moved.segments,
                        moved.first,
                        moved.last,
                        to.display(),
                        moved.anchor.checkpoint.seq,
                        moved.anchor.checkpoint.head
                    );
                }
                None => println!(
                    "nothing to archive: no sealed segment is wholly before {}",
                    before.to_rfc3339()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        LogCommand::Verify {
            expect_head,
            allow_unsigned_tail,
            archives,
        } => verify_one(
            &args,
            0,
            expect_head.as_deref(),
            *allow_unsigned_tail,
            archives,
        ),
        LogCommand::Show { id } => show(&args, id.as_deref()),
        LogCommand::Search(flags) => search(&args, &flags.filter()?, flags.limit),
    }
}

/// `warrant log show`: one decision, search or approval request (the newest decision when no
/// id is given), and its story.
fn show(args: &LogArgs, id: Option<&str>) -> anyhow::Result<ExitCode> {
    let entries = fleet_records(args)?;
    let id = match id {
        Some(id) => id,
        None => entries
            .iter()
            .rev()
            .find_map(|entry| match entry {
                warrant_ledger::Recorded::Decision(record) => Some(record.decision_id.as_str()),
                _ => None,
            })
            .context("the ledger holds no decision yet")?,
    };
    let Some((asked, story)) = story(&entries, id) else {
        bail!("no decision, search or approval request {id} in the ledger");
    };
    if super::output::asked(super::output::Output::Json) {
        let story: Vec<Value> = story.iter().map(|&i| entry_json(&entries[i])).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "entry": entry_json(&entries[asked]),
                "story": story,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    match &entries[asked] {
        warrant_ledger::Recorded::Decision(record) => print!("{}", record_text(record)),
        warrant_ledger::Recorded::ApprovalRequest(step) => {
            print!("{}", request_step_text(step))
        }
        warrant_ledger::Recorded::Search(search) => print!("{}", search_text(search)),
    }
    if story.len() > 1 {
        for (n, &i) in story.iter().enumerate() {
            let label = if n == 0 { "story" } else { "" };
            let mark = if i == asked { "  <- this" } else { "" };
            println!("{label:<10} {}{mark}", story_line(&entries[i]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `warrant log search`'s flags.
#[derive(Debug, clap::Args)]
pub struct SearchFlags {
    /// Type::id
    #[arg(long)]
    principal: Option<String>,
    /// The action, e.g. read
    #[arg(long)]
    action: Option<String>,
    /// Type::id
    #[arg(long)]
    resource: Option<String>,
    /// One of the decision's reasons: a policy id or a warrant:* reason
    #[arg(long)]
    reason: Option<String>,
    /// An approval id or ticket.
    #[arg(long)]
    approval: Option<String>,
    /// allow or deny
    #[arg(long)]
    decision: Option<String>,
    /// Decisions at or after it: an RFC 3339 time, or a length back from now (30m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Decisions before it: an RFC 3339 time, or a length back from now (30m, 2h, 7d).
    #[arg(long)]
    until: Option<String>,
    /// The most decisions printed (the newest that match).
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl SearchFlags {
    fn filter(&self) -> anyhow::Result<warrant_ledger::Filter> {
        use warrant_domain::clock::{Clock as _, SystemClock, UnixMillis};
        let bound = |text: &Option<String>, flag: &str| {
            text.as_deref()
                .map(|t| match UnixMillis::parse_rfc3339(t) {
                    Some(at) => Ok(at),
                    None => super::admin::length_millis(t, flag)
                        .map(|back| UnixMillis(SystemClock.now().0.saturating_sub(back)))
                        .with_context(|| {
                            format!("--{flag}: neither an RFC 3339 time nor a length (2h, 7d)")
                        }),
                })
                .transpose()
        };
        let entity = |text: &Option<String>, flag: &str| {
            text.as_deref()
                .map(|p| parse_entity(p, flag))
                .transpose()
                .map(|found| found.map(|p| EntityRef::new(p.r#type, p.id)))
        };
        Ok(warrant_ledger::Filter {
            principal: entity(&self.principal, "principal")?,
            action: self.action.clone(),
            resource: entity(&self.resource, "resource")?,
            reason: self.reason.clone(),
            approval: self.approval.clone(),
            decision: self.decision.clone(),
            since: bound(&self.since, "since")?,
            until: bound(&self.until, "until")?,
            shadow_disagreed: false,
        })
    }
}

/// `warrant log search`: the newest `limit` decisions that match `filter`, across the data
/// folders given (merged by time), printed oldest first.
fn search(
    args: &LogArgs,
    filter: &warrant_ledger::Filter,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    for data_dir in &args.data_dirs {
        let newest = warrant_ledger::search_ledger(
            &data_dir.join("ledger"),
            filter,
            warrant_ledger::Order::NewestFirst { before: None },
            limit,
        )
        .with_context(|| format!("the ledger in {}", data_dir.display()))?;
        found.extend(newest.into_iter().map(|stored| stored.record));
    }
    let time = |record: &warrant_ledger::Record| {
        warrant_domain::clock::UnixMillis::parse_rfc3339(&record.time).map(|t| t.0)
    };
    found.sort_by_key(|record| std::cmp::Reverse(time(record)));
    found.truncate(limit);
    found.reverse();
    let matching: Vec<&warrant_ledger::Record> = found.iter().collect();
    if super::output::asked(super::output::Output::Json) {
        println!("{}", serde_json::to_string_pretty(&matching)?);
    } else {
        for r in &matching {
            println!(
                "{}  {}  {:<5}  {}::{} {} {}::{}  {}",
                r.time,
                r.decision_id,
                r.decision,
                r.principal.type_name,
                r.principal.id,
                r.action,
                r.resource.type_name,
                r.resource.id,
                r.reasons.join(",")
            );
        }
        match matching.len() {
            1 => println!("1 decision"),
            n => println!("{n} decisions"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The bytes of the ledger's segments in `dir`, for a person waiting on its verification.
fn ledger_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".jsonl"))
        .filter_map(|entry| entry.metadata().ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Verifies the ledger of the `index`th data folder and prints what came of it: success,
/// [`DAMAGED`](super::exit::DAMAGED), or [`UNPINNED`](super::exit::UNPINNED) when the key was
/// not pinned.
fn verify_one(
    args: &LogArgs,
    index: usize,
    expect_head: Option<&str>,
    allow_unsigned_tail: bool,
    archives: &[std::path::PathBuf],
) -> anyhow::Result<ExitCode> {
    let (key, pinned) = ledger_key(args, index)?;
    let dir = args.data_dirs[index].join("ledger");
    let expect = expect_head
        .map(|text| {
            let (seq, hash) = text
                .split_once(':')
                .context("--expect-head: SEQ:HASH, as `warrant log head` prints it")?;
            let seq: u64 = seq.parse().context("--expect-head: SEQ is not a number")?;
            anyhow::Ok((seq, hash.to_owned()))
        })
        .transpose()?;
    let checks = warrant_ledger::VerifyOptions {
        archives: archives.iter().map(|a| a.join("ledger")).collect(),
        expect_head: expect,
        allow_unsigned_tail,
    };
    let size = ledger_bytes(&dir);
    let working = super::progress::waiting(&format!(
        "verifying {} of ledger in {}",
        indicatif::BinaryBytes(size),
        dir.display()
    ));
    let verified = warrant_ledger::verify(&dir, &key, &checks);
    working.finish_and_clear();
    match verified? {
        Ok(verified) => {
            let replica = warrant_ledger::read_head(&dir, &key)
                .ok()
                .flatten()
                .and_then(Result::ok)
                .and_then(|head| head.checkpoint.replica)
                .map(|replica| format!(", replica {replica}"))
                .unwrap_or_default();
            // The head's sequence number: past the archived records, not the count checked.
            let head_seq = (verified.first + verified.records).saturating_sub(1);
            println!(
                "ok: {} records, {} checkpoints, {} records after the last checkpoint, head {}:{}{replica}",
                verified.records,
                verified.checkpoints,
                verified.unsealed,
                head_seq,
                hex::encode(verified.head)
            );
        }
        Err(damage) => {
            println!("FAILED: {damage}");
            return Ok(ExitCode::from(super::exit::DAMAGED));
        }
    }
    if !pinned {
        println!(
            "UNPINNED: the signatures were checked with the key found in the ledger folder; \
             whoever can write that folder can replace the key and re-sign a forged \
             ledger. Pass --public-key (from `warrant log public-key`, kept elsewhere) or \
             --signing-key outside the folder."
        );
        return Ok(ExitCode::from(super::exit::UNPINNED));
    }
    Ok(ExitCode::SUCCESS)
}

/// The entries linked to the decision or approval request `id` (the index of that entry, and
/// every linked one in ledger order, itself included). Links run through approval requests
/// only: a request and the denial it names, the approval it became, and every decision that
/// presented that approval. (An approval granted by hand links nothing: each of its decisions'
/// records already names it.)
fn story(entries: &[warrant_ledger::Recorded], id: &str) -> Option<(usize, Vec<usize>)> {
    use std::collections::HashSet;
    use warrant_ledger::Recorded;
    let asked = entries.iter().position(|entry| match entry {
        Recorded::Decision(record) => record.decision_id == id,
        Recorded::ApprovalRequest(step) => step.id == id,
        Recorded::Search(search) => search.search_id == id,
    })?;
    let mut decisions: HashSet<&str> = HashSet::new();
    let mut requests: HashSet<&str> = HashSet::new();
    // Approvals that requests became, and approvals presented by decisions in the story.
    let mut granted: HashSet<&str> = HashSet::new();
    let mut presented: HashSet<&str> = HashSet::new();
    match &entries[asked] {
        Recorded::Decision(record) => {
            decisions.insert(&record.decision_id);
        }
        Recorded::ApprovalRequest(step) => {
            requests.insert(&step.id);
        }
        // A search links to nothing: its story is itself.
        Recorded::Search(_) => return Some((asked, vec![asked])),
    }
    loop {
        let before = decisions.len() + requests.len() + granted.len() + presented.len();
        for entry in entries {
            match entry {
                Recorded::ApprovalRequest(step) => {
                    let linked = requests.contains(step.id.as_str())
                        || step
                            .decision_id
                            .as_deref()
                            .is_some_and(|d| decisions.contains(d))
                        || step
                            .approval_id
                            .as_deref()
                            .is_some_and(|a| presented.contains(a));
                    if linked {
                        requests.insert(&step.id);
                        decisions.extend(step.decision_id.as_deref());
                        granted.extend(step.approval_id.as_deref());
                    }
                }
                Recorded::Search(_) => {}
                Recorded::Decision(record) => {
                    let approval = record.approval.as_ref().map(|a| a.id.as_str());
                    if decisions.contains(record.decision_id.as_str())
                        || approval.is_some_and(|a| granted.contains(a))
                    {
                        decisions.insert(&record.decision_id);
                        presented.extend(approval);
                    }
                }
            }
        }
        if decisions.len() + requests.len() + granted.len() + presented.len() == before {
            break;
        }
    }
    let story = (0..entries.len())
        .filter(|&i| match &entries[i] {
            Recorded::Decision(record) => decisions.contains(record.decision_id.as_str()),
            Recorded::ApprovalRequest(step) => requests.contains(step.id.as_str()),
            Recorded::Search(_) => false,
        })
        .collect();
    Some((asked, story))
}

/// An entry as `log export` writes it, without its place in the chain.
fn entry_json(entry: &warrant_ledger::Recorded) -> Value {
    match entry {
        warrant_ledger::Recorded::Decision(record) => json!({ "record": record }),
        warrant_ledger::Recorded::ApprovalRequest(step) => json!({ "approval_request": step }),
        warrant_ledger::Recorded::Search(search) => json!({ "search": search }),
    }
}

/// One line of a story.
fn story_line(entry: &warrant_ledger::Recorded) -> String {
    match entry {
        warrant_ledger::Recorded::Decision(r) => {
            let use_number = r
                .approval
                .as_ref()
                .and_then(|a| a.use_number.map(|n| format!(" (use {n} of {})", a.id)))
                .unwrap_or_default();
            format!(
                "{}  {:<8} {}  {} {} {}{}  {}",
                r.time,
                r.decision,
                r.decision_id,
                entity_text(&r.principal),
                r.action,
                entity_text(&r.resource),
                use_number,
                r.reasons.join(",")
            )
        }
        warrant_ledger::Recorded::ApprovalRequest(step) => {
            let what = match step.event.as_str() {
                "filed" => format!(
                    "{} asks for {} on {} for {} s",
                    entity_text(&step.identity),
                    step.action,
                    entity_text(&step.resource),
                    step.duration_seconds
                ),
                "approved" => format!(
                    "by {} ({}): approval {} until {}{}",
                    step.decided_by.as_ref().map_or("?".into(), entity_text),
                    approver_proof(step),
                    step.approval_id.as_deref().unwrap_or("?"),
                    step.approval_expires_at.as_deref().unwrap_or("?"),
                    step.approval_max_uses
                        .map_or(String::new(), |n| format!(", {n} use(s)"))
                ),
                _ => format!(
                    "by {} ({}): {}",
                    step.decided_by.as_ref().map_or("?".into(), entity_text),
                    approver_proof(step),
                    step.reason.as_deref().unwrap_or("")
                ),
            };
            format!("{}  {:<8} {}  {}", step.time, step.event, step.id, what)
        }
        warrant_ledger::Recorded::Search(search) => format!(
            "{}  {:<8} {}  {} result(s)",
            search.time, "search", search.search_id, search.results
        ),
    }
}

/// A search's entry as a person reads it.
fn search_text(search: &warrant_ledger::SearchRecord) -> String {
    let mut out = format!(
        "search     {} at {}
",
        search.search_id, search.time
    );
    let mut line = |label: &str, text: String| {
        out.push_str(&format!(
            "{label:<10} {text}
"
        ));
    };
    let entity = |entity: &Option<EntityRef>| entity.as_ref().map_or_else(String::new, entity_text);
    let of_type = search.searched_type.clone().unwrap_or_default();
    let action = search.action.clone().unwrap_or_default();
    let asked = match search.searched.as_str() {
        "subject" => format!("which {of_type} may {action} {}", entity(&search.resource)),
        "resource" => format!("which {of_type} {} may {action}", entity(&search.principal)),
        _ => format!(
            "what {} may do to {}",
            entity(&search.principal),
            entity(&search.resource)
        ),
    };
    let approvable = if search.include_approvable {
        ", approvable included"
    } else {
        ""
    };
    line(
        "asked",
        format!("{asked} (over {}{approvable})", search.transport),
    );
    if let Some(approval) = &search.approval_presented {
        line("approval", approval.clone());
    }
    line(
        "answered",
        format!(
            "{} result(s) from {} candidate(s){}{}",
            search.results,
            search.examined,
            if search.paged { ", a later page" } else { "" },
            if search.more { ", more offered" } else { "" }
        ),
    );
    let caller = match (&search.caller_identity, &search.caller) {
        (Some(identity), _) => identity.clone(),
        (None, Some(address)) => address.clone(),
        (None, None) => "unknown".to_owned(),
    };
    line("caller", caller);
    line(
        "under",
        format!(
            "policies {}, facts {}",
            search.policy_version, search.facts_version
        ),
    );
    out
}

/// How Warrant knows who decided a request: the credential they presented, or the admin
/// caller's word.
fn approver_proof(step: &warrant_ledger::ApprovalRequestRecord) -> String {
    match &step.decided_by_credential {
        Some(credential) => format!("proven by credential {credential}"),
        None => "named by the admin caller".to_owned(),
    }
}

fn entity_text(entity: &EntityRef) -> String {
    format!("{}::{}", entity.type_name, entity.id)
}

/// An approval request's step as a person reads it.
fn request_step_text(step: &warrant_ledger::ApprovalRequestRecord) -> String {
    let mut out = format!(
        "request    {} {} at {}\n",
        step.id,
        step.event.to_uppercase(),
        step.time
    );
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("{label:<10} {text}\n"));
    };
    line(
        "asks",
        format!(
            "{} {} {} in {} for {} s",
            entity_text(&step.identity),
            step.action,
            entity_text(&step.resource),
            entity_text(&step.scope),
            step.duration_seconds
        ),
    );
    line("because", format!("{:?}", step.justification));
    if let Some(ticket) = &step.ticket {
        line("ticket", ticket.clone());
    }
    if let Some(human) = &step.on_behalf_of {
        line("for", entity_text(human));
    }
    if let Some(decision) = &step.decision_id {
        line("after", format!("decision {decision}"));
    }
    if let Some(human) = &step.decided_by {
        line(
            "decided",
            format!("by {} ({})", entity_text(human), approver_proof(step)),
        );
    }
    if let Some(approval) = &step.approval_id {
        line(
            "approval",
            format!(
                "{approval} until {}{}",
                step.approval_expires_at.as_deref().unwrap_or("?"),
                step.approval_max_uses
                    .map_or(String::new(), |n| format!(", {n} use(s)"))
            ),
        );
    }
    if let Some(reason) = &step.reason {
        line("reason", reason.clone());
    }
    line("expires", step.expires_at.clone());
    line(
        "caller",
        step.caller.clone().unwrap_or_else(|| "unknown".into()),
    );
    out
}

/// One record as a person reads it: who acted, who answers for it, what allowed it, why.
fn record_text(r: &warrant_ledger::Record) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "decision   {} {} at {}",
        r.decision, r.decision_id, r.time
    ));
    line(format!(
        "action     {}::{} {} {}::{}",
        r.principal.type_name, r.principal.id, r.action, r.resource.type_name, r.resource.id
    ));
    match &r.owner {
        Some(o) => line(format!(
            "owner      {} <{}> ({}::{})",
            o.name.as_deref().unwrap_or("?"),
            o.email.as_deref().unwrap_or("?"),
            o.entity.type_name,
            o.entity.id
        )),
        None => line("owner      none".to_owned()),
    }
    line(format!(
        "status     {}",
        r.principal_status.as_deref().unwrap_or("unknown")
    ));
    match (&r.approval, &r.approval_presented) {
        (Some(a), _) => {
            line(format!(
                "approval   {} ticket {} approved by {}::{} for {}::{}",
                a.id,
                a.ticket,
                a.approver.type_name,
                a.approver.id,
                a.subject.type_name,
                a.subject.id
            ));
            line(format!(
                "           valid {} to {}, {}{}",
                a.not_before,
                a.expires_at,
                if a.valid_at_decision {
                    "valid at decision"
                } else {
                    "NOT valid at decision"
                },
                if a.replay_suspected {
                    ", SUSPECTED REPLAY"
                } else {
                    ""
                }
            ));
            line(format!(
                "           covers {} in {}::{}{}",
                a.actions.join(", "),
                a.scope.type_name,
                a.scope.id,
                a.playbook
                    .as_ref()
                    .map_or(String::new(), |p| format!(", playbook {p}"))
            ));
        }
        (None, Some(id)) => line(format!("approval   {id} presented, not found")),
        (None, None) => line("approval   none presented".to_owned()),
    }
    let scopes: Vec<_> = r
        .resource_scopes
        .iter()
        .map(|s| format!("{}::{}", s.type_name, s.id))
        .collect();
    line(format!(
        "scope      {}",
        if scopes.is_empty() {
            "none".to_owned()
        } else {
            scopes.join(" < ")
        }
    ));
    line(format!("because    {}", r.reasons.join(", ")));
    for e in &r.errors {
        line(format!("error      {}: {}", e.policy_id, e.message));
    }
    line(format!("policies   {}", r.policy_version));
    line(format!("facts      {}", r.facts_version));
    if r.answered_from_cache {
        line(format!("cached     reused evaluation {}", r.evaluation_id));
    }
    line(format!(
        "caller     {}{}",
        r.caller.as_deref().unwrap_or("unknown"),
        r.request_id
            .as_ref()
            .map_or(String::new(), |id| format!(", request {id}"))
    ));
    line(format!("context    {}", r.context));
    out
}
