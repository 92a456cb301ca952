//! The house rules of docs/ARCHITECTURE.md, checked on the source itself: no file in `src/`
//! imports a module that imports it back (directly or through others), and no model family
//! imports another. A path `crate::a::b::C` counts as an import of the file that defines
//! module `a::b` (or `a::b::C`, where that is a module); test modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`model::vit::config`) → source text, with `#[cfg(test)]` modules cut off.
fn sources() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
            if parts
                .last()
                .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
            {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]\nmod ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            // main.rs and lib.rs are both the root; the binary's modules live under cli/.
            if !(parts.is_empty() && path.ends_with("main.rs")) {
                out.insert(parts.join("::"), code);
            }
        }
    }
    out
}

/// The longest prefix of `path` that is a module.
fn module_of(modules: &BTreeMap<String, String>, path: &[&str]) -> String {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains_key(m))
        .unwrap_or_default()
}

/// Every module each module imports.
fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (me, code) in modules {
        let mine: Vec<&str> = me.split("::").filter(|s| !s.is_empty()).collect();
        let mut out = BTreeSet::new();
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        for (i, _) in code
            .match_indices("crate::")
            .chain(code.match_indices("super::"))
        {
            if i > 0 && code[..i].ends_with(|c: char| ident(c) || c == ':') {
                continue;
            }
            let rest = &code[i..];
            let end = rest
                .find(|c: char| !(ident(c) || c == ':'))
                .unwrap_or(rest.len());
            let segs: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Vec<&str> = Vec::new();
            let mut segs = &segs[..];
            if segs.first() == Some(&"crate") {
                segs = &segs[1..];
            } else {
                // `super` from a file `a/b.rs` (module a::b) is module a.
                base = mine.clone();
                while segs.first() == Some(&"super") {
                    base.pop();
                    segs = &segs[1..];
                }
            }
            base.extend_from_slice(segs);
            let target = module_of(modules, &base);
            if &target != me && !me.starts_with(&format!("{target}::")) {
                out.insert(target);
            }
        }
        // `use child::…` of a module this file declares (a re-export in a mod.rs).
        for line in code.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("pub use ").or(line.strip_prefix("use ")) else {
                continue;
            };
            let rest = rest.strip_prefix("self::").unwrap_or(rest);
            let first = rest.split("::").next().unwrap_or("");
            let declared = [format!("mod {first};"), format!("pub mod {first};")];
            if declared.iter().any(|d| code.contains(d.as_str())) {
                let child: Vec<&str> = mine.iter().copied().chain([first]).collect();
                out.insert(child.join("::"));
            }
        }
        graph.insert(me.clone(), out);
    }
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = sources();
    let graph = imports(&modules);
    // Depth-first search for a back edge; the stack is the cycle when one is found.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            return Some(stack[i..].to_vec());
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        stack.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    assert!(graph.len() > 50, "read {} modules", graph.len());
}

#[test]
fn no_model_family_imports_another() {
    let modules = sources();
    let family = |m: &str| {
        let m = m.strip_prefix("model::")?;
        ["vit", "swin", "llama"]
            .into_iter()
            .find(|f| m == *f || m.starts_with(&format!("{f}::")))
    };
    for (m, targets) in imports(&modules) {
        let Some(mine) = family(&m) else { continue };
        for t in targets {
            if t == "model::arch" {
                panic!("{m} imports the family dispatch (model::arch)");
            }
            if let Some(theirs) = family(&t) {
                assert_eq!(mine, theirs, "{m} imports {t}");
            }
        }
    }
}
