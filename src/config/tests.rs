//! Checks that hold across concerns: the declarations in each module's `VARS` are what the code
//! reads, what the module docs list and what `.env.example` shows.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use super::*;

/// A source holding exactly these variables.
pub(super) fn source(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn declared() -> impl Iterator<Item = &'static Var> {
    ALL_VARS.iter().flat_map(|vars| vars.iter())
}

fn declared_names() -> BTreeSet<&'static str> {
    declared().map(|v| v.name).collect()
}

/// A source that remembers every variable asked for.
struct Recording {
    vars: HashMap<String, String>,
    asked: RefCell<BTreeSet<String>>,
}

impl Source for Recording {
    fn get(&self, name: &str) -> Option<String> {
        self.asked.borrow_mut().insert(name.to_owned());
        self.vars.get(name).cloned()
    }
}

/// Every configuration some process reads: `serve`, `worker`, and logs, which `main` reads first.
fn read_everything(source: &dyn Source) {
    if let Err(e) = ServeConfig::from_source(source) {
        panic!("serve: {e}");
    }
    if let Err(e) = WorkerConfig::from_source(source) {
        panic!("worker: {e}");
    }
    if let Err(e) = LogConfig::from_source(source) {
        panic!("logs: {e}");
    }
}

/// One `NAME=value` line of `.env.example`, with the comment lines directly above it.
#[derive(Debug)]
struct Example {
    line: usize,
    name: String,
    value: String,
    /// `# NAME=value`: shown for its form, left unset.
    commented_out: bool,
    comment: String,
}

const ENV_EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"));

/// The convention the file follows: `# --- section` headers, then for each variable one or more
/// comment lines and a `NAME=value` (or `# NAME=value`) line right below them.
fn env_example() -> Vec<Example> {
    let mut entries = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    for (i, line) in ENV_EXAMPLE.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.starts_with("# ---") {
            comment.clear();
            continue;
        }
        let (assignment, commented_out) = match line.strip_prefix("# ") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let assigned = assignment
            .split_once('=')
            .filter(|(name, _)| is_variable_name(name));
        match assigned {
            Some((name, value)) => {
                entries.push(Example {
                    line: line_no,
                    name: name.to_owned(),
                    value: value.to_owned(),
                    commented_out,
                    comment: comment.join(" "),
                });
                comment.clear();
            }
            None if commented_out || line == "#" => {
                comment.push(line.trim_start_matches('#').trim())
            }
            None => panic!(".env.example:{line_no} is neither a comment nor NAME=value: {line:?}"),
        }
    }
    entries
}

fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `comment` says `Default: <default>`; `None` when it gives no default at all.
fn says_default(comment: &str, default: &str) -> Option<bool> {
    const MARK: &str = "Default: ";
    let mut said = None;
    for (at, _) in comment.match_indices(MARK) {
        let rest = &comment[at + MARK.len()..];
        let matches = rest.strip_prefix(default).is_some_and(|after| {
            // The default must end there: `Default: 10` does not say `1`.
            after.is_empty()
                || after.starts_with(' ')
                || [".", ",", ";", ")"].iter().any(|p| {
                    after
                        .strip_prefix(p)
                        .is_some_and(|a| a.is_empty() || a.starts_with(' '))
                })
        });
        said = Some(said.unwrap_or(true) && matches);
    }
    said
}

/// What is wrong with one variable's entry in `.env.example`, if anything.
fn example_problem(var: &Var, entry: &Example) -> Option<String> {
    let name = var.name;
    if entry.comment.is_empty() {
        return Some(format!("{name} needs a comment line right above it"));
    }
    let Some(default) = var.default.describe() else {
        if entry.commented_out || entry.value.trim().is_empty() {
            return Some(format!(
                "{name} is required: show it set to a working value"
            ));
        }
        if !entry.comment.contains("Required") {
            return Some(format!(
                "{name} is required: its comment should say Required"
            ));
        }
        if entry.comment.contains("Default:") {
            return Some(format!(
                "{name} is required but its comment names a default"
            ));
        }
        return None;
    };
    match says_default(&entry.comment, default) {
        Some(true) => None,
        Some(false) => Some(format!(
            "{name}'s comment names another default than the code's: say `Default: {default}`"
        )),
        None if var.default == Fallback::Value(default) && entry.value == default => None,
        None => Some(format!(
            "{name} is shown as {:?}, not its default: say `Default: {default}` in its comment",
            entry.value
        )),
    }
}

#[test]
fn env_example_names_exactly_the_declared_variables_with_their_defaults() {
    let entries = env_example();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in &entries {
        if !seen.insert(entry.name.as_str()) {
            problems.push(format!(
                ".env.example:{} repeats {}",
                entry.line, entry.name
            ));
        }
        match declared().find(|v| v.name == entry.name) {
            None => problems.push(format!(
                ".env.example:{} shows {}, which no config module declares",
                entry.line, entry.name
            )),
            Some(var) => problems.extend(
                example_problem(var, entry).map(|p| format!(".env.example:{}: {p}", entry.line)),
            ),
        }
    }
    for name in declared_names() {
        if !seen.contains(name) {
            problems.push(format!(".env.example lacks {name}"));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn env_example_presents_the_variables_concern_by_concern_in_declared_order() {
    let shown: Vec<String> = env_example().into_iter().map(|e| e.name).collect();
    let declared: Vec<&str> = declared().map(|v| v.name).collect();
    assert_eq!(
        shown, declared,
        "order .env.example as ALL_VARS and each VARS are"
    );
}

#[test]
fn the_example_is_a_working_configuration_and_the_code_reads_exactly_the_declared_variables() {
    let vars = env_example()
        .into_iter()
        .filter(|e| !e.commented_out)
        .map(|e| (e.name, e.value))
        .collect();
    let recording = Recording {
        vars,
        asked: RefCell::default(),
    };
    read_everything(&recording);
    let asked = recording.asked.into_inner();
    let asked: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
    let declared = declared_names();
    // Removed variables are looked at only to refuse a start that still sets them.
    let removed = |name: &&&str| super::auth::REMOVED.iter().any(|(r, _)| r == *name);
    let undeclared: Vec<_> = asked
        .difference(&declared)
        .filter(|n| !removed(n))
        .collect();
    let unread: Vec<_> = declared.difference(&asked).collect();
    assert!(
        undeclared.is_empty(),
        "read but not declared: {undeclared:?}"
    );
    assert!(unread.is_empty(), "declared but never read: {unread:?}");
}

#[test]
fn the_declared_defaults_make_a_working_configuration() {
    let required: HashMap<String, String> = env_example()
        .into_iter()
        .filter(|e| declared().any(|v| v.name == e.name && v.default == Fallback::Required))
        .map(|e| (e.name, e.value))
        .collect();
    // Every read of a default-valued variable below parses its declared text.
    read_everything(&required);
    let serve = ServeConfig::from_source(&required).expect("valid");
    assert_eq!(serve.http.request_timeout, Duration::from_millis(15_000));
    assert_eq!(
        serve.database.replica_pool_max,
        serve.database.primary_pool_max
    );
}

/// The worker invalidates cache entries: it must reach the server the instances read them
/// from, which `CACHE_REDIS_URL` may make another than the sessions'.
#[test]
fn the_worker_reads_the_caches_redis() {
    let mut vars: HashMap<String, String> = env_example()
        .into_iter()
        .filter(|e| declared().any(|v| v.name == e.name && v.default == Fallback::Required))
        .map(|e| (e.name, e.value))
        .collect();
    vars.insert("CACHE_REDIS_URL".into(), "redis://cache:6379/".into());
    let worker = WorkerConfig::from_source(&vars).expect("valid");
    assert_eq!(worker.cache.redis.url.expose(), "redis://cache:6379/");
    assert_ne!(worker.redis.url.expose(), worker.cache.redis.url.expose());
}

#[test]
fn no_variable_is_declared_twice() {
    let mut seen = BTreeSet::new();
    let twice: Vec<_> = declared().filter(|v| !seen.insert(v.name)).collect();
    assert!(twice.is_empty(), "{twice:?}");
}

/// Each concern's source, whose module doc must list its `VARS`.
const MODULES: &[(&str, &str, &[Var])] = &[
    ("auth.rs", include_str!("auth.rs"), auth::VARS),
    ("cache.rs", include_str!("cache.rs"), cache::VARS),
    ("capacity.rs", include_str!("capacity.rs"), capacity::VARS),
    ("database.rs", include_str!("database.rs"), database::VARS),
    ("email.rs", include_str!("email.rs"), email::VARS),
    ("files.rs", include_str!("files.rs"), files::VARS),
    ("http.rs", include_str!("http.rs"), http::VARS),
    ("instance.rs", include_str!("instance.rs"), instance::VARS),
    ("internal.rs", include_str!("internal.rs"), internal::VARS),
    ("jobs.rs", include_str!("jobs.rs"), jobs::VARS),
    ("logs.rs", include_str!("logs.rs"), logs::VARS),
    (
        "rate_limits.rs",
        include_str!("rate_limits.rs"),
        rate_limits::VARS,
    ),
    ("ready.rs", include_str!("ready.rs"), ready::VARS),
    ("redis.rs", include_str!("redis.rs"), redis::VARS),
    ("shutdown.rs", include_str!("shutdown.rs"), shutdown::VARS),
    ("storage.rs", include_str!("storage.rs"), storage::VARS),
];

fn doc_row(var: &Var) -> String {
    let default = match var.default {
        Fallback::Value(text) | Fallback::Derived(text) => format!("`{text}`"),
        Fallback::Required => "required".to_owned(),
        Fallback::Unset(effect) => effect.to_owned(),
    };
    format!("//! | `{}` | {default} | {} |", var.name, var.about)
}

#[test]
fn each_module_doc_lists_its_declared_variables() {
    let mut problems = Vec::new();
    for (file, text, vars) in MODULES {
        let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("//! | `")).collect();
        let expected: Vec<String> = vars.iter().map(doc_row).collect();
        if listed != expected {
            problems.push(format!(
                "src/config/{file}'s doc should list:\n{}",
                expected.join("\n")
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

#[test]
fn every_concern_is_checked_against_its_doc() {
    let in_docs: BTreeSet<&str> = MODULES
        .iter()
        .flat_map(|(_, _, vars)| vars.iter().map(|v| v.name))
        .collect();
    assert_eq!(in_docs, declared_names());
}

#[test]
#[should_panic(expected = "NOT_DECLARED is read but not declared")]
fn reading_an_undeclared_variable_is_a_bug_caught_at_once() {
    Reader::new(&source(&[]), http::VARS).text("NOT_DECLARED");
}

#[test]
#[should_panic(expected = "HTTP_BODY_LIMIT_BYTES is read as required but declared Value")]
fn reading_a_variable_otherwise_than_declared_is_a_bug_caught_at_once() {
    let _ = Reader::new(&source(&[]), http::VARS).required("HTTP_BODY_LIMIT_BYTES");
}

#[test]
fn secrets_do_not_print() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s:?}"), "Secret(***)");
}

#[test]
fn a_default_must_end_where_the_comment_says_it_does() {
    assert_eq!(says_default("Default: 10.", "10"), Some(true));
    assert_eq!(says_default("Default: 100.", "10"), Some(false));
    assert_eq!(says_default("Default: 10.5", "10"), Some(false));
    assert_eq!(
        says_default("Default: the host name (unique)", "the host name"),
        Some(true)
    );
    assert_eq!(says_default("The address.", "10"), None);
}
