//! The documentation site's links: every link and image in README.md and in
//! the site's pages (`docs/src/**/*.md`) leads somewhere, and so does every
//! link of the site `make docs` built into `dist/docs/`.
//!
//! - A relative link names a file that exists; from a site page, a file
//!   inside `docs/src/` (anything else is not part of the site).
//! - A `#fragment` names a heading of the page it points to, with the ids
//!   mdBook gives headings (`normalize_id`).
//! - Every page is in `docs/src/SUMMARY.md`, the site's table of contents,
//!   and every `{{#include path}}` names a file.
//! - In the built site, every relative `href` and `src` names a file of the
//!   site and every fragment an `id` in it.
//!
//! Run: `make docs`, then `cargo test -p palisade-tests --test docs`
//! (`make test` does both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use palisade_tests::readme::{self, include_target};
use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use regex::Regex;

fn root() -> PathBuf {
    palisade_tests::repo_root()
}

/// The id mdBook gives a heading: its text lowercased, whitespace as `-`,
/// anything but letters, digits, `-` and `_` left out.
fn normalize_id(text: &str) -> String {
    text.trim()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().collect::<String>())
            } else if c.is_whitespace() {
                Some("-".into())
            } else {
                None
            }
        })
        .collect()
}

/// A page's heading ids, with mdBook's `-1`, `-2`… for repeated ones.
fn heading_ids(markdown: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = heading.take() {
                    let base = normalize_id(&h);
                    let n = seen.entry(base.clone()).or_insert(0);
                    ids.insert(if *n == 0 {
                        base.clone()
                    } else {
                        format!("{base}-{n}")
                    });
                    *n += 1;
                }
            }
            _ => {}
        }
    }
    ids
}

/// Every link and image destination of a page, with its line.
fn links(markdown: &str) -> Vec<(usize, String)> {
    Parser::new(markdown)
        .into_offset_iter()
        .filter_map(|(event, range)| match event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => {
                let line = markdown[..range.start].matches('\n').count() + 1;
                Some((line, dest_url.to_string()))
            }
            _ => None,
        })
        .collect()
}

fn external(url: &str) -> bool {
    url.starts_with("http://")
        || url.starts_with("https://")
        || url.starts_with("mailto:")
        || url.starts_with("//")
}

/// `dir/rel` without `.` and `..` parts.
fn resolve(dir: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dir.join(rel).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Problems of one documentation file's links (`file` relative to the root).
fn link_problems(file: &str, text: &str) -> Vec<String> {
    let root = root();
    let site = root.join("docs/src");
    let path = root.join(file);
    let dir = path.parent().unwrap_or(&root).to_path_buf();
    let in_site = path.starts_with(&site);
    let mut problems = Vec::new();
    for (line, url) in links(text) {
        if external(&url) {
            continue;
        }
        let (target, fragment) = match url.split_once('#') {
            Some((t, f)) => (t, Some(f)),
            None => (url.as_str(), None),
        };
        let at = format!("{file}:{line}: {url}");
        if target.is_empty() {
            if let Some(f) = fragment.filter(|f| !heading_ids(text).contains(*f)) {
                problems.push(format!("{at}: this page has no heading with the id {f:?}"));
            }
            continue;
        }
        let target_path = resolve(&dir, target);
        if !target_path.exists() {
            problems.push(format!("{at}: no such file"));
            continue;
        }
        if in_site && !target_path.starts_with(&site) {
            problems.push(format!(
                "{at}: outside docs/src, so not part of the site (name the file as code instead)"
            ));
            continue;
        }
        if let Some(fragment) = fragment {
            let is_md = target_path.extension().is_some_and(|x| x == "md");
            if !is_md {
                problems.push(format!("{at}: a fragment on a file that is not a page"));
                continue;
            }
            let page = std::fs::read_to_string(&target_path).unwrap_or_default();
            if !heading_ids(&page).contains(fragment) {
                problems.push(format!(
                    "{at}: {} has no heading with the id {fragment:?}",
                    target_path
                        .strip_prefix(&root)
                        .unwrap_or(&target_path)
                        .display()
                ));
            }
        }
    }
    for (i, line) in text.lines().enumerate() {
        if let Some(t) = include_target(line) {
            if !dir.join(t).is_file() {
                problems.push(format!(
                    "{file}:{}: {{{{#include {t}}}}}: no such file",
                    i + 1
                ));
            }
        }
    }
    problems
}

#[test]
fn every_link_in_the_readme_and_the_pages_leads_somewhere() {
    let files = readme::doc_files(&root());
    assert!(files.len() > 10, "only {} documentation files", files.len());
    let mut problems = Vec::new();
    let mut count = 0;
    for (file, text) in &files {
        count += links(text).len();
        problems.extend(link_problems(file, text));
    }
    println!("{count} links in {} files", files.len());
    assert!(count > 50, "only {count} links found");
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_link_checker_finds_broken_links() {
    let text = "# Page\n\n## A `b`: c\n\n[ok](#a-b-c) [bad](#nope) [gone](missing.md) \
                [out](../../Makefile) [page](controls/jwt.md#answers) \
                [anchor](controls/jwt.md#no-such-heading)\n\n```json\n{{#include nothing.json}}\n```\n";
    let problems = link_problems("docs/src/fake.md", text);
    let expected = [
        "#nope",
        "missing.md: no such file",
        "../../Makefile: outside docs/src",
        "controls/jwt.md#no-such-heading",
        "nothing.json}}: no such file",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (p, e) in problems.iter().zip(expected) {
        assert!(p.contains(e), "{p} should mention {e}");
    }
    // From the README, a repository file is fine.
    assert!(link_problems("README.md", "[m](Makefile)").is_empty());
}

#[test]
fn ids_are_mdbooks() {
    assert_eq!(
        normalize_id("One module for the whole chain: palisade.wasm"),
        "one-module-for-the-whole-chain-palisadewasm"
    );
    assert_eq!(
        normalize_id("Kong (3.4 – 3.10, wasm = on)"),
        "kong-34--310-wasm--on"
    );
    let ids = heading_ids("# Metrics\n\n## Metrics\n\n## `count`\n");
    assert_eq!(
        ids,
        ["count", "metrics", "metrics-1"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[test]
fn every_page_is_in_the_table_of_contents() {
    let root = root();
    let summary = std::fs::read_to_string(root.join("docs/src/SUMMARY.md")).expect("SUMMARY.md");
    let listed: BTreeSet<String> = links(&summary).into_iter().map(|(_, u)| u).collect();
    let missing: Vec<String> = readme::doc_files(&root)
        .into_iter()
        .filter_map(|(file, _)| file.strip_prefix("docs/src/").map(String::from))
        .filter(|page| page != "SUMMARY.md" && !listed.contains(page))
        .collect();
    assert!(
        missing.is_empty(),
        "pages missing from docs/src/SUMMARY.md (the site would not show them): {missing:?}"
    );
}

/// Every `.html` file of the built site.
fn html_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            html_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "html") {
            out.push(p);
        }
    }
}

#[test]
fn the_built_site_has_no_broken_links() {
    let site = root().join("dist/docs");
    assert!(
        site.join("index.html").is_file(),
        "{} has no built site: run `make docs` first",
        site.display()
    );
    let mut pages = Vec::new();
    html_files(&site, &mut pages);
    let attr = Regex::new(r#"(?:href|src)="([^"]*)""#).expect("a valid regex");
    let id = Regex::new(r#"\bid="([^"]*)""#).expect("a valid regex");
    let html: BTreeMap<PathBuf, String> = pages
        .iter()
        .map(|p| (p.clone(), std::fs::read_to_string(p).unwrap_or_default()))
        .collect();
    let ids: BTreeMap<&PathBuf, BTreeSet<String>> = html
        .iter()
        .map(|(p, text)| {
            (
                p,
                id.captures_iter(text).map(|c| c[1].to_string()).collect(),
            )
        })
        .collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (p, html) in &html {
        // mdBook's 404 page links from the site's root URL, wherever it is served.
        if p.file_name().is_some_and(|n| n == "404.html") {
            continue;
        }
        let dir = p.parent().unwrap_or(&site).to_path_buf();
        for c in attr.captures_iter(html) {
            let url = c[1].replace("&amp;", "&");
            if external(&url) || url.starts_with("javascript:") || url.starts_with("data:") {
                continue;
            }
            checked += 1;
            let (target, fragment) = match url.split_once('#') {
                Some((t, f)) => (t.to_string(), Some(f.to_string())),
                None => (url.clone(), None),
            };
            let target = target.split('?').next().unwrap_or("").to_string();
            let path = if target.is_empty() {
                p.clone()
            } else {
                resolve(&dir, &target)
            };
            let at = format!("{}: {url}", p.strip_prefix(&site).unwrap_or(p).display());
            if !path.starts_with(&site) || !path.exists() {
                problems.push(format!("{at}: no such file in the site"));
                continue;
            }
            if let Some(f) = fragment.filter(|f| !f.is_empty()) {
                if ids.get(&path).is_some_and(|set| !set.contains(&f)) {
                    problems.push(format!("{at}: no element with id {f:?}"));
                }
            }
        }
    }
    println!("{checked} links in {} pages", pages.len());
    assert!(checked > 100, "only {checked} links checked");
    assert!(
        problems.is_empty(),
        "broken links in the built site:\n{}",
        problems.join("\n")
    );
}
