//! `cargo xtask docs`: builds the book in `docs/` with mdBook and checks its links.
//!
//! mdBook is not a dependency of the workspace: the pinned version is installed once with
//! `cargo install --locked` into `<target>/tools` (without its `serve` and `watch` features,
//! which the build does not need) and reused afterwards; an `mdbook` of the pinned version on
//! the `PATH` is used instead when there is one. The book is built into `<target>/book`.
//!
//! The link check reads the built HTML: every relative `href` and `src` must name a file of
//! the book, and every `#fragment` an `id` in that file. Links to other sites are not
//! followed (no network).

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, cargo, workspace_root};

/// The mdBook version the book is built with.
pub(crate) const MDBOOK_VERSION: &str = "0.5.4";

/// Builds the book and checks its links.
pub(crate) fn run() -> Result<()> {
    let mdbook = mdbook()?;
    let root = workspace_root();
    let out = target_dir().join("book");
    let mut build = Command::new(&mdbook);
    build
        .arg("build")
        .arg(root.join("docs"))
        .arg("--dest-dir")
        .arg(&out);
    cmd::run(&mut build)?;
    let report = check_links(&out)?;
    println!(
        "docs: {} pages, {} links checked, book in {}",
        report.pages,
        report.links,
        out.display()
    );
    Ok(())
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else `target` in the workspace.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// An `mdbook` of the pinned version: on the `PATH`, in `<target>/tools/bin`, or installed
/// there now.
fn mdbook() -> Result<PathBuf> {
    let on_path = PathBuf::from("mdbook");
    if has_pinned_version(&on_path) {
        return Ok(on_path);
    }
    let tools = target_dir().join("tools");
    let installed = tools
        .join("bin")
        .join(format!("mdbook{}", std::env::consts::EXE_SUFFIX));
    if has_pinned_version(&installed) {
        return Ok(installed);
    }
    println!(
        "docs: installing mdbook {MDBOOK_VERSION} into {}",
        tools.display()
    );
    let started = Instant::now();
    let mut install = cargo([
        "install",
        "mdbook",
        "--locked",
        "--version",
        MDBOOK_VERSION,
        "--no-default-features",
        "--features",
        "search",
        "--root",
    ]);
    install.arg(&tools);
    // Builds in a directory of its own (removed afterwards), not in the workspace's target.
    install.env_remove("CARGO_TARGET_DIR");
    cmd::run(&mut install).context("installing mdbook")?;
    println!(
        "docs: mdbook installed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    if !has_pinned_version(&installed) {
        bail!(
            "{} does not report version {MDBOOK_VERSION}",
            installed.display()
        );
    }
    Ok(installed)
}

fn has_pinned_version(mdbook: &Path) -> bool {
    Command::new(mdbook)
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .any(|word| word.trim_start_matches('v') == MDBOOK_VERSION)
        })
}

/// What the link check saw.
#[derive(Debug, PartialEq, Eq)]
struct LinkReport {
    pages: usize,
    links: usize,
}

/// Checks every relative link of every HTML file under `book`.
fn check_links(book: &Path) -> Result<LinkReport> {
    let mut pages = HashMap::new();
    collect_html(book, book, &mut pages)?;
    let ids: HashMap<&PathBuf, HashSet<String>> = pages
        .iter()
        .map(|(path, html)| (path, attribute_values(html, "id").into_iter().collect()))
        .collect();
    let mut links = 0;
    let mut broken = Vec::new();
    let mut sorted: Vec<_> = pages.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (page, html) in sorted {
        // mdBook's 404 page resolves its links against the site's URL (`<base href>`),
        // which only the deployment knows.
        if html.contains("<base href=") {
            continue;
        }
        let mut targets = attribute_values(html, "href");
        targets.extend(attribute_values(html, "src"));
        for target in targets {
            if is_external(&target) {
                continue;
            }
            links += 1;
            if let Err(problem) = resolve(book, page, &target, &ids) {
                broken.push(format!("{}: {target}: {problem}", page.display()));
            }
        }
    }
    if !broken.is_empty() {
        bail!(
            "{} broken link(s) in the book:\n  {}",
            broken.len(),
            broken.join("\n  ")
        );
    }
    Ok(LinkReport {
        pages: pages.len(),
        links,
    })
}

/// Every `.html` file under `dir`, by its path relative to `book`, with its text.
fn collect_html(book: &Path, dir: &Path, out: &mut HashMap<PathBuf, String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_html(book, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "html") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let relative = path.strip_prefix(book).unwrap_or(&path).to_path_buf();
            out.insert(relative, text);
        }
    }
    Ok(())
}

/// The values of every `name="…"` attribute in `html` (double-quoted, as mdBook writes them;
/// entities `&amp;` and `&quot;` decoded).
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    let mut values = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        let after = &rest[at + needle.len()..];
        let Some(end) = after.find('"') else {
            break;
        };
        values.push(after[..end].replace("&amp;", "&").replace("&quot;", "\""));
        rest = &after[end..];
    }
    values
}

/// Links the check does not follow: other sites, mail, scripts, and data.
fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    lower.starts_with("http://")
        || lower.starts_with("https://")
        || lower.starts_with("//")
        || lower.starts_with("mailto:")
        || lower.starts_with("javascript:")
        || lower.starts_with("data:")
}

/// Resolves `target`, linked from `page`: the file must exist in the book and the fragment,
/// if any, must be an `id` in it.
fn resolve(
    book: &Path,
    page: &Path,
    target: &str,
    ids: &HashMap<&PathBuf, HashSet<String>>,
) -> std::result::Result<(), String> {
    let target = target.split('?').next().unwrap_or(target);
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        page.to_path_buf()
    } else {
        let base = page.parent().unwrap_or(Path::new(""));
        let mut joined = normalize(&base.join(path)).ok_or("leaves the book")?;
        if path.ends_with('/') || book.join(&joined).is_dir() {
            joined = joined.join("index.html");
        }
        joined
    };
    if !book.join(&file).exists() {
        return Err(format!("no file {}", file.display()));
    }
    match fragment {
        None | Some("") => Ok(()),
        Some(fragment) => match ids.get(&file) {
            Some(page_ids) if page_ids.contains(&percent_decode(fragment)) => Ok(()),
            Some(_) => Err(format!("no id {fragment:?} in {}", file.display())),
            // Not an HTML page (an image, a script): fragments are not checked.
            None => Ok(()),
        },
    }
}

/// `a/./b/../c` as `a/c`; `None` when `..` climbs above the start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `%20` and friends, for fragments.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary directory (the xtask keeps to one dependency): removed on drop.
    struct TempBook(PathBuf);

    impl Drop for TempBook {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn book(files: &[(&str, &str)]) -> TempBook {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = TempBook(std::env::temp_dir().join(format!(
            "xtask-links-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )));
        for (name, text) in files {
            let path = dir.0.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn good_links_pass() {
        let dir = book(&[
            (
                "index.html",
                r##"<a href="guide/a.html#intro">a</a> <a href="https://example.com/x">x</a>
                   <img src="img/logo.svg"> <a href="#top">top</a> <h1 id="top">t</h1>"##,
            ),
            (
                "guide/a.html",
                r#"<h2 id="intro">i</h2><a href="../index.html">home</a><a href="./">dir</a>"#,
            ),
            ("guide/index.html", ""),
            ("img/logo.svg", "<svg/>"),
        ]);
        let report = check_links(&dir.0).unwrap();
        assert_eq!(report, LinkReport { pages: 3, links: 5 });
    }

    #[test]
    fn broken_links_fail() {
        let dir = book(&[(
            "index.html",
            r##"<a href="missing.html">m</a> <a href="index.html#nowhere">n</a>
               <a href="../../ARCHITECTURE.md">out</a>"##,
        )]);
        let error = check_links(&dir.0).unwrap_err().to_string();
        assert!(error.contains("3 broken"), "{error}");
        assert!(error.contains("no file missing.html"), "{error}");
        assert!(error.contains("no id \"nowhere\""), "{error}");
        assert!(error.contains("leaves the book"), "{error}");
    }

    #[test]
    fn attributes_and_fragments() {
        assert_eq!(
            attribute_values(r#"<a class="x" href="a.html?x=1&amp;y=2">"#, "href"),
            ["a.html?x=1&y=2"]
        );
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(
            normalize(Path::new("a/./b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(normalize(Path::new("../x")), None);
    }
}
