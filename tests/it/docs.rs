//! Every shell example in the README and the book (`docs/book/src`) runs here, against a real
//! server, so an example cannot drift from the product.
//!
//! An example is a ```` ```console ```` block: a line starting with `$ ` is a command (a line
//! ending in `\` or inside quotes goes on to the next), the lines after it are what it prints, stdout and stderr
//! together. In what it prints, `[..]` stands for any text within a line (an id, a time) and a
//! line `...` for any number of lines; a command followed by no lines may print anything. A
//! command must succeed, unless the next one is `echo $?`, which then shows its exit status.
//!
//! Each page runs in one shell, top to bottom (variables carry over), in a folder holding a copy
//! of `policies/` and, as `data/`, the data folder of a server started for that page on the
//! bundled policies (a page may start it otherwise with a line `<!-- doc-test: serve ARGS -->`,
//! e.g. `--policies policies/examples/authzen-gateway`). The `warrant` command is the one under
//! test, and the built-in addresses the examples use (127.0.0.1:50051 for Checks, :50052 for the
//! admin API, :8080 for AuthZEN, :8090 for the console, :9464 for metrics) reach that server
//! (through `WARRANT_SERVER`, `WARRANT_ADMIN`, and by rewriting them in the commands).
//! Examples that need what a test cannot start (a PostgreSQL fleet, Envoy, an identity
//! provider) are ```` ```sh ```` blocks, which are shown and not run; their features have tests
//! of their own.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Server;

/// One command of a page and what it should print.
struct Step {
    /// Where the command is, as `file:line`.
    at: String,
    command: String,
    expected: Vec<String>,
}

/// A page's examples and how to start its server.
struct Page {
    path: PathBuf,
    serve: Vec<String>,
    steps: Vec<Step>,
}

fn pages() -> Vec<Page> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut folders = vec![root.join("docs/book/src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files.iter().map(|path| parse(root, path)).collect()
}

fn parse(root: &Path, path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.strip_prefix(root).unwrap().display().to_string();
    let mut page = Page {
        path: path.to_owned(),
        serve: Vec::new(),
        steps: Vec::new(),
    };
    let mut lines = text.lines().enumerate();
    let mut in_example = false;
    while let Some((number, line)) = lines.next() {
        if let Some(args) = line
            .strip_prefix("<!-- doc-test: serve ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        {
            page.serve = args.split_whitespace().map(str::to_owned).collect();
            continue;
        }
        if !in_example {
            in_example = line == "```console";
            continue;
        }
        if line.starts_with("```") {
            in_example = false;
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            let mut command = command.to_owned();
            while command.ends_with('\\') || quote_left_open(&command) {
                let (_, next) = lines.next().expect("a command ends the page with `\\`");
                command.push('\n');
                command.push_str(next);
            }
            page.steps.push(Step {
                at: format!("{name}:{}", number + 1),
                command,
                expected: Vec::new(),
            });
        } else {
            let step = page
                .steps
                .last_mut()
                .unwrap_or_else(|| panic!("{name}:{}: output before any `$ `", number + 1));
            step.expected.push(line.trim_end().to_owned());
        }
    }
    page
}

/// Whether a command's text ends inside quotes, so that it goes on to the next line (a JSON body
/// written over several lines, say).
fn quote_left_open(command: &str) -> bool {
    let mut open: Option<char> = None;
    let mut escaped = false;
    for c in command.chars() {
        match (open, c) {
            (_, _) if escaped => escaped = false,
            (Some('\''), '\'') => open = None,
            (Some('\''), _) => {}
            (_, '\\') => escaped = true,
            (Some('"'), '"') => open = None,
            (None, '\'' | '"') => open = Some(c),
            _ => {}
        }
    }
    open.is_some()
}

/// Whether one printed line fits one expected line, `[..]` standing for any text.
fn line_fits(expected: &str, printed: &str) -> bool {
    let pieces: Vec<&str> = expected.split("[..]").collect();
    let [first, middle @ .., last] = &pieces[..] else {
        return expected == printed;
    };
    let Some(mut rest) = printed.strip_prefix(first) else {
        return false;
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether the printed lines fit the expected ones, a line `...` standing for any lines.
fn fits(expected: &[String], printed: &[&str]) -> bool {
    match expected.split_first() {
        None => printed.is_empty(),
        Some((any, rest)) if any == "..." => {
            (0..=printed.len()).any(|skip| fits(rest, &printed[skip..]))
        }
        Some((line, rest)) => printed
            .split_first()
            .is_some_and(|(first, others)| line_fits(line, first) && fits(rest, others)),
    }
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_folder(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Runs a page's examples; the problems found, each naming its `file:line`.
fn run(page: &Page) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    copy_folder(&root.join("policies"), &work.path().join("policies"));
    // The page's paths are relative to its folder; the server's must be whole.
    let mut serve = vec!["serve".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
    if !page.serve.iter().any(|arg| arg == "--policies") {
        serve.push("--policies".into());
        serve.push("policies".into());
    }
    serve.extend(page.serve.iter().cloned());
    for index in 1..serve.len() {
        if serve[index - 1] == "--policies" {
            serve[index] = work.path().join(&serve[index]).display().to_string();
        }
    }
    let server = Server::start_with(&serve.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap_or_else(|stderr| panic!("{}: {stderr}", page.path.display()));
    std::os::unix::fs::symlink(server.data.path(), work.path().join("data")).unwrap();

    let host = |url: &str| {
        url.split("://")
            .last()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    let addresses = [
        ("127.0.0.1:50051", server.addr.clone()),
        ("127.0.0.1:50052", server.admin.clone()),
        ("localhost:8080", host(&server.authzen)),
        ("127.0.0.1:8080", host(&server.authzen)),
        ("127.0.0.1:8090", host(&server.console)),
        ("127.0.0.1:9464", host(&server.metrics)),
    ];
    let out = work.path().join(".doc-test");
    std::fs::create_dir(&out).unwrap();
    let mut script = String::from("cd \"$DOC_TEST_HOME\"\n");
    for (index, step) in page.steps.iter().enumerate() {
        let mut command = step.command.clone();
        for (written, real) in &addresses {
            command = command.replace(written, real);
        }
        script.push_str(&format!(
            "{{ {command}\n}} > .doc-test/out.{index} 2>&1 < /dev/null\n\
             status=$?; echo $status > .doc-test/status.{index}; (exit $status)\n"
        ));
    }
    let binaries = Path::new(env!("CARGO_BIN_EXE_warrant")).parent().unwrap();
    let path = format!(
        "{}:{}",
        binaries.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The script's own status is its last command's; each command is judged on its own below.
    Command::new("timeout")
        .args(["300", "bash", "--norc", "--noprofile", "-c", &script])
        .env("PATH", path)
        .env("DOC_TEST_HOME", work.path())
        .env("WARRANT_SERVER", server.url())
        .env("WARRANT_ADMIN", format!("http://{}", server.admin))
        .env_remove("WARRANT_DATA_DIR")
        .env_remove("WARRANT_OUTPUT")
        .env_remove("WARRANT_ADMIN_TOKEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let mut problems = Vec::new();
    for (index, step) in page.steps.iter().enumerate() {
        let printed = std::fs::read_to_string(out.join(format!("out.{index}")));
        let status = std::fs::read_to_string(out.join(format!("status.{index}")));
        let (Ok(printed), Ok(status)) = (printed, status) else {
            problems.push(format!("{}: `{}` did not run", step.at, step.command));
            break;
        };
        let status: i32 = status.trim().parse().unwrap();
        let shown = page
            .steps
            .get(index + 1)
            .is_some_and(|next| next.command.trim() == "echo $?");
        if status != 0 && !shown {
            problems.push(format!(
                "{}: `{}` exited {status}:\n{printed}",
                step.at, step.command
            ));
            continue;
        }
        let lines: Vec<&str> = printed.lines().map(str::trim_end).collect();
        if !step.expected.is_empty() && !fits(&step.expected, &lines) {
            problems.push(format!(
                "{}: `{}` printed:\n{printed}\nwhere the page shows:\n{}",
                step.at,
                step.command,
                step.expected.join("\n")
            ));
        }
    }
    problems
}

#[test]
fn every_shell_example_in_the_readme_and_the_book_runs_as_shown() {
    let pages = pages();
    let examples: usize = pages.iter().map(|page| page.steps.len()).sum();
    assert!(examples > 0, "no ```console examples found");
    let problems: Vec<String> = pages
        .iter()
        .filter(|page| !page.steps.is_empty())
        .flat_map(run)
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Every fenced block says what it holds (```` console ```` runs; ```` sh ````, ```` toml ````,
/// ```` text ```` and the rest are shown), so that no shell example slips by untested as a
/// block with no tag.
#[test]
fn every_fenced_block_says_what_it_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut untagged = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page.path).unwrap();
        let mut open = false;
        for (number, line) in text.lines().enumerate() {
            let fence = line.trim_start();
            if !fence.starts_with("```") {
                continue;
            }
            if !open && fence == "```" {
                let name = page.path.strip_prefix(root).unwrap().display().to_string();
                untagged.push(format!("{name}:{}", number + 1));
            }
            open = !open;
        }
    }
    assert!(untagged.is_empty(), "untagged blocks at {untagged:?}");
}

#[test]
fn expected_output_fits_with_its_wildcards() {
    let expected = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    assert!(fits(
        &expected(&["ALLOW  [..]", "..."]),
        &["ALLOW  x", "a", "b"]
    ));
    assert!(fits(&expected(&["a[..]c[..]e"]), &["abcde"]));
    assert!(!fits(&expected(&["a[..]c"]), &["abd"]));
    assert!(!fits(&expected(&["ALLOW"]), &["DENY"]));
    assert!(!fits(&expected(&["a"]), &["a", "b"]));
    assert!(fits(&expected(&["...", "b"]), &["a", "b"]));
    assert!(!line_fits("ab[..]ba", "aba"));
    assert!(quote_left_open("curl -d '{"));
    assert!(!quote_left_open("curl -d '{\"a\": 1}' \"it's\""));
    assert!(quote_left_open("echo \"a"));
}
