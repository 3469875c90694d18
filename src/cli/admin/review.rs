//! `warrant review`: an access review of a running Warrant, written as a self-contained HTML
//! report (`report.html`), `findings.json` and `findings.csv` (every finding, with the command
//! that fixes it); and `warrant review attest`, an owner's attestation of an identity or an
//! approval.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use super::{AdminConnection, call_failed, length_millis, print};
use crate::api::console::review::{SHOWN_PER_KIND, report_html};
use crate::cli::parse_entity;
use warrant_proto as proto;
use warrant_review::{Finding, Kind, Summary};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReviewArgs {
    #[command(flatten)]
    pub connection: AdminConnection,
    #[command(subcommand)]
    pub command: Option<ReviewCommand>,
    /// The window findings about use look back over: 90d, 12h, ...
    #[arg(long, default_value = "90d")]
    pub since: String,
    /// Write report.html, findings.json and findings.csv into this folder (created if need
    /// be); without it, every finding is printed as a JSON line, then the summary.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReviewCommand {
    /// An owner confirms that an identity (Type::id) or an approval (its id) is still needed,
    /// or revokes it (the identity is suspended, the approval revoked). Decided by the
    /// policies (attest_identity / attest_approval) and recorded in the ledger.
    Attest {
        /// The identity (Type::id) or approval id attested.
        subject: String,
        /// The Human attesting, e.g. Human::carol.
        #[arg(long = "as")]
        human: String,
        /// Still needed.
        #[arg(long, conflicts_with = "revoke", required_unless_present = "revoke")]
        confirm: bool,
        /// Not needed: suspend the identity, revoke the approval.
        #[arg(long)]
        revoke: bool,
        #[arg(long)]
        note: Option<String>,
    },
}

pub async fn review(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.connection.connect().await?;
    if let Some(ReviewCommand::Attest {
        subject,
        human,
        confirm: _,
        revoke,
        note,
    }) = args.command
    {
        let (identity, approval_id) = match subject.contains("::") {
            true => (Some(parse_entity(&subject, "subject")?), String::new()),
            false => (None, subject),
        };
        let answer = client
            .attest(proto::AttestRequest {
                human: Some(parse_entity(&human, "as")?),
                identity,
                approval_id,
                verdict: if revoke { "revoke" } else { "confirm" }.into(),
                note: note.unwrap_or_default(),
            })
            .await
            .map_err(call_failed)?
            .into_inner();
        let allowed = answer.decision == "ALLOW";
        print(json!({
            "decision": answer.decision,
            "decision_id": answer.decision_id,
            "reasons": answer.reasons,
            "outcome": answer.outcome,
        }))?;
        return Ok(crate::cli::exit::decision(allowed));
    }
    let window_ms = length_millis(&args.since, "since")?;
    let mut stream = client
        .review(proto::ReviewRequest {
            since_seconds: u64::try_from(window_ms / 1000).unwrap_or(0).max(1),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let mut files = args.out.as_deref().map(Files::create).transpose()?;
    let mut pending = Vec::new();
    let mut summary = None;
    while let Some(chunk) = stream.message().await.map_err(call_failed)? {
        pending.extend_from_slice(&chunk.data);
        let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let lines: Vec<u8> = pending.drain(..=end).collect();
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Some(files) = &mut files else {
                // Printed like every shell command's output (a closed pipe ends it quietly).
                println!("{}", String::from_utf8_lossy(line));
                // Printed as it came: only the summary is read.
                if line.starts_with(b"{\"summary\"")
                    && let Ok(Line::Summary(read)) = serde_json::from_slice::<Line>(line)
                {
                    summary = Some(read);
                }
                continue;
            };
            match serde_json::from_slice::<Line>(line) {
                Ok(Line::Finding(finding)) => files.finding(finding)?,
                Ok(Line::Summary(read)) => summary = Some(read),
                Err(error) => anyhow::bail!("the server sent a line that is no finding: {error}"),
            }
        }
    }
    let summary = summary.context("the server's review ended without its summary")?;
    if let Some(files) = files {
        let (report, count) = files.finish(&summary)?;
        print(json!({
            "report": report,
            "findings": count,
            "counts": summary.counts,
        }))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    Finding(Finding),
    Summary(Summary),
}

/// The report's three files as they are written.
struct Files {
    dir: PathBuf,
    json: std::io::BufWriter<std::fs::File>,
    csv: std::io::BufWriter<std::fs::File>,
    count: u64,
    shown: BTreeMap<Kind, Vec<Finding>>,
}

impl Files {
    fn create(dir: &Path) -> anyhow::Result<Files> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
            let path = dir.join(name);
            Ok(std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            ))
        };
        let mut json = open("findings.json")?;
        json.write_all(b"[")?;
        let mut csv = open("findings.csv")?;
        csv.write_all(b"kind,subject,identity,owner,detail,fix\n")?;
        Ok(Files {
            dir: dir.to_path_buf(),
            json,
            csv,
            count: 0,
            shown: BTreeMap::new(),
        })
    }

    fn finding(&mut self, finding: Finding) -> anyhow::Result<()> {
        if self.count > 0 {
            self.json.write_all(b",")?;
        }
        self.json.write_all(b"\n")?;
        serde_json::to_writer(&mut self.json, &finding)?;
        let fields = [
            finding.kind.as_str(),
            &finding.subject,
            finding.identity.as_deref().unwrap_or(""),
            finding.owner.as_deref().unwrap_or(""),
            &finding.detail,
            &finding.fix,
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        writeln!(self.csv, "{}", row.join(","))?;
        self.count += 1;
        let shown = self.shown.entry(finding.kind).or_default();
        if shown.len() < SHOWN_PER_KIND {
            shown.push(finding);
        }
        Ok(())
    }

    /// Closes the lists and writes the HTML report; its path and the findings' count.
    fn finish(mut self, summary: &Summary) -> anyhow::Result<(String, u64)> {
        self.json.write_all(b"\n]\n")?;
        self.json.flush()?;
        self.csv.flush()?;
        let report = self.dir.join("report.html");
        std::fs::write(&report, report_html(summary, &self.shown))
            .with_context(|| format!("cannot write {}", report.display()))?;
        Ok((report.display().to_string(), self.count))
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break; a field a
/// spreadsheet would read as a formula is prefixed with a quote mark.
fn csv_field(text: &str) -> String {
    let text = match text.starts_with(['=', '+', '-', '@']) {
        true => format!("'{text}"),
        false => text.to_owned(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}
