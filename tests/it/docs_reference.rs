//! The book's reference pages are generated from the product, and checked here against what it
//! says now: the command line (`docs/book/src/reference/cli.md`) from every command's `--help`,
//! the settings table in `configuration.md` from `warrant serve --help` (the flags, variables
//! and defaults of the one `Settings` definition), and the metrics
//! (`docs/book/src/reference/metrics.md`) from a running server's `/metrics`. When one differs,
//! the test says so; `WARRANT_BLESS_DOCS=1 cargo test --test it docs_reference` writes them
//! anew.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::{Server, http_get, pipeline_read};

fn book(page: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/book/src")
        .join(page)
}

fn help(path: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_warrant"))
        .args(path)
        .arg("--help")
        .env_remove("WARRANT_OUTPUT")
        .output()
        .unwrap();
    assert!(output.status.success(), "{path:?} --help");
    String::from_utf8(output.stdout).unwrap()
}

/// The subcommands a help text lists under `Commands:`, but `help`.
fn subcommands(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command's help, depth first: the CLI reference.
fn cli_page() -> String {
    let mut page = String::from(
        "# The command line\n\n\
         Every command of `warrant`, with its `--help` (generated from the program by \
         `tests/it/docs_reference.rs`). `warrant man DIR` writes the same as manual pages, and \
         `warrant completions SHELL` a completion script.\n",
    );
    let mut stack = vec![Vec::<String>::new()];
    while let Some(path) = stack.pop() {
        let text = help(&path);
        let title = std::iter::once("warrant")
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        page.push_str(&format!(
            "\n## {title}\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
        for sub in subcommands(&text).into_iter().rev() {
            let mut deeper = path.clone();
            deeper.push(sub);
            stack.push(deeper);
        }
    }
    page
}

/// The flags `warrant serve` takes that are not settings of the server.
const NOT_SETTINGS: [&str; 4] = ["config", "log-format", "output", "help"];

/// The settings table, from `warrant serve --help`: setting, flag and variable, and what it is
/// (with its default).
fn settings_table() -> String {
    let text = help(&["serve".to_owned()]);
    let mut rows = Vec::new();
    let mut current: Option<(String, Vec<String>, String)> = None;
    let mut finish = |entry: Option<(String, Vec<String>, String)>| {
        if let Some((flag, words, env)) = entry
            && !NOT_SETTINGS.contains(&flag.as_str())
        {
            let setting = flag.replace('-', "_");
            let said = words.join(" ").replace('|', "\\|");
            let env = match env.is_empty() {
                true => String::new(),
                false => format!(" / `{env}`"),
            };
            rows.push(format!("| `{setting}` | `--{flag}`{env} | {said} |"));
        }
    };
    for line in text.lines().skip_while(|line| *line != "Options:").skip(1) {
        let trimmed = line.trim();
        // An option's line is indented less than its description's.
        if trimmed.starts_with('-') && line.len() - line.trim_start().len() <= 6 {
            finish(current.take());
            let flag = trimmed
                .split_whitespace()
                .find_map(|word| word.strip_prefix("--"))
                .unwrap_or_default()
                .to_owned();
            current = Some((flag, Vec::new(), String::new()));
        } else if let Some((_, words, env)) = current.as_mut() {
            if let Some(name) = trimmed.strip_prefix("[env: ") {
                *env = name.trim_end_matches("=]").trim_end_matches(']').to_owned();
                *env = env.split('=').next().unwrap_or_default().to_owned();
            } else if trimmed == "Possible values:" {
                words.push("Values:".to_owned());
            } else if let Some((value, said)) =
                trimmed.strip_prefix("- ").and_then(|v| v.split_once(':'))
            {
                words.push(format!("`{value}`: {};", said.trim()));
            } else if !trimmed.is_empty() {
                words.push(trimmed.to_owned());
            }
        }
    }
    finish(current.take());
    format!(
        "| setting | flag / variable | what it is [and its default] |\n|---|---|---|\n{}\n",
        rows.join("\n")
    )
}

/// The metrics a single server serves, with their type, labels and help.
async fn metrics_page() -> String {
    let server = Server::start(&[]);
    // A decision and a refusal, so that the families with labels show them.
    let mut client = server.client().await;
    client
        .check(pipeline_read("Dataset::sales-2026"))
        .await
        .unwrap();
    // The access review's families appear once its first count, run in the background at
    // start, is done.
    let mut text = String::new();
    for _ in 0..200 {
        text = http_get(&server.metrics).await.1;
        if text.contains("# HELP warrant_review_last_run_timestamp_seconds") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut help: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut labels: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, said) = rest.split_once(' ').unwrap_or((rest, ""));
            help.entry(name.to_owned()).or_default().1 = said.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            help.entry(name.to_owned()).or_default().0 = kind.to_owned();
        } else if let Some((name, rest)) = line.split_once('{') {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|end| name.strip_suffix(end).filter(|f| help.contains_key(*f)))
                .unwrap_or(name);
            for pair in rest.split("\",") {
                if let Some((label, _)) = pair.split_once("=\"")
                    && label != "le"
                {
                    labels
                        .entry(family.to_owned())
                        .or_default()
                        .insert(label.to_owned());
                }
            }
        }
    }
    let rows: Vec<String> = help
        .iter()
        .map(|(name, (kind, said))| {
            let names: Vec<String> = labels
                .get(name)
                .into_iter()
                .flatten()
                .map(|l| format!("`{l}`"))
                .collect();
            format!(
                "| `{name}` | {kind} | {} | {} |",
                names.join(", "),
                said.replace('|', "\\|")
            )
        })
        .collect();
    format!(
        "# Metrics\n\n\
         What a single Warrant serves on `GET /metrics` (Prometheus' text format), generated \
         from a running server by `tests/it/docs_reference.rs`. A fleet's replicas also serve \
         the `warrant_replication_*` families and `warrant_facts_stale` ([a fleet on \
         PostgreSQL](../fleet.md)). [Operating it](../operating.md) says which to watch, and \
         `examples/grafana/` has a dashboard and alert rules over them.\n\n\
         | metric | type | labels | what it counts |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    )
}

/// Compares a generated page with the one in the book, or writes it when blessing.
fn check_page(path: &Path, generated: &str) -> Option<String> {
    let written = std::fs::read_to_string(path).unwrap_or_default();
    if written == generated {
        return None;
    }
    if std::env::var_os("WARRANT_BLESS_DOCS").is_some() {
        std::fs::write(path, generated).unwrap();
        return None;
    }
    Some(format!(
        "{} is not what the program says now; run `WARRANT_BLESS_DOCS=1 cargo test --test it \
         docs_reference` and read the difference",
        path.display()
    ))
}

const SETTINGS_START: &str = "<!-- generated from `warrant serve --help`: -->\n";
const SETTINGS_END: &str = "<!-- end of the generated table -->\n";

#[tokio::test]
async fn the_reference_pages_say_what_the_program_does_now() {
    let mut stale = Vec::new();
    stale.extend(check_page(&book("reference/cli.md"), &cli_page()));
    stale.extend(check_page(
        &book("reference/metrics.md"),
        &metrics_page().await,
    ));
    let configuration = book("configuration.md");
    let written = std::fs::read_to_string(&configuration).unwrap();
    let (before, rest) = written
        .split_once(SETTINGS_START)
        .expect("configuration.md marks where the settings table goes");
    let (_, after) = rest.split_once(SETTINGS_END).unwrap();
    let generated = format!(
        "{before}{SETTINGS_START}{}{SETTINGS_END}{after}",
        settings_table()
    );
    stale.extend(check_page(&configuration, &generated));
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn the_cli_reference_covers_every_command_down_to_the_last_level() {
    let page = std::fs::read_to_string(book("reference/cli.md")).unwrap();
    for command in [
        "## warrant log verify",
        "## warrant approval grant",
        "## warrant serve",
    ] {
        assert!(page.contains(command), "{command}");
    }
}
