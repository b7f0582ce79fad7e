//! The module graph of `src/`, read from the source: no cycles between top-level modules, and
//! the dependencies point one way (config, errors, db, storage, redis → domain modules → http
//! → processes). A `use` that breaks the direction fails here, not in a later review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules its files name as `crate::<module>`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let first = relative
                .components()
                .next()
                .expect("a component")
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if first == "main" || first == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            let deps = graph.entry(first.clone()).or_default();
            deps.extend(crate_modules(&text).into_iter().filter(|m| *m != first));
        }
    }
    graph
}

/// The top-level modules `text` names through `crate::`, grouped imports included
/// (`use crate::{accounts, files::repo};`).
fn crate_modules(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the first segment of each item is a top-level module; nested groups of a
            // module (`files::{repo, upload}`) start with that module's name.
            let mut depth = 0;
            let mut item_start = true;
            for (at, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    _ if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[at..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

#[test]
fn the_module_reader_sees_paths_and_grouped_imports() {
    let text = "use crate::db::Writer;\nuse crate::{accounts, files::{repo, upload}, http};\n\
                let x = crate::error::ApiError::NotFound;";
    assert_eq!(
        crate_modules(text),
        BTreeSet::from(["accounts", "db", "error", "files", "http"].map(str::to_owned))
    );
}

/// Every module `from` reaches through the graph.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(module) = todo.pop() {
        for next in graph.get(&module).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn no_top_level_module_depends_on_itself_through_others() {
    let graph = module_graph();
    assert!(graph.len() > 10, "read {} modules", graph.len());
    let cyclic: Vec<&String> = graph
        .keys()
        .filter(|m| reachable(&graph, m).contains(*m))
        .collect();
    assert!(
        cyclic.is_empty(),
        "modules in a cycle: {cyclic:?}\n{graph:#?}"
    );
}

#[test]
fn only_the_processes_use_http_and_nothing_uses_the_processes() {
    let graph = module_graph();
    for (module, deps) in &graph {
        if module != "process" {
            assert!(
                !deps.contains("process"),
                "{module} imports process, the top layer"
            );
        }
        if module != "process" && module != "http" {
            assert!(
                !deps.contains("http"),
                "{module} imports http: the HTTP layer sits above the domain"
            );
        }
    }
    for lower in [
        "config",
        "media_types",
        "db",
        "storage",
        "redis_client",
        "error",
    ] {
        let reached = reachable(&graph, lower);
        for domain in ["accounts", "files", "jobs", "workspace", "app"] {
            assert!(
                !reached.contains(domain),
                "{lower} depends on the domain module {domain}: {reached:?}"
            );
        }
    }
}

/// The `.rs` files under `src/<dir>`, with their text.
fn sources(dir: &str) -> Vec<(std::path::PathBuf, String)> {
    let mut found = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("readable");
                found.push((path, text));
            }
        }
    }
    found
}

#[test]
fn handlers_carry_no_sql_and_write_only_through_a_unit_of_work() {
    let routes = sources("http/routes");
    assert!(routes.len() >= 5, "read {} route files", routes.len());
    for (path, text) in routes {
        // SQL lives in the repos; writes go through `db.begin(..)`, whose commit records the
        // writer's position. The bare primary pool would skip that.
        for forbidden in ["sqlx::query", "primary_pool"] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                path.display()
            );
        }
    }
}
