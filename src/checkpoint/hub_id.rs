//! Hub ids as the field writes them: `org/name`, `org/name@revision`, timm's `hf-hub:org/name`,
//! and `org/name:FILE` for one file of a repository.

/// A repository on the hub, at a revision, and optionally one file of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// A branch, a tag or a commit (`main` unless given).
    pub revision: String,
    /// One file of the repository (a GGUF), from `org/name:FILE`.
    pub file: Option<String>,
}

impl HubId {
    /// Reads `spec` as a hub id; `None` when it is not one (`./x`, `/x`, `a/b/c`, a bare name).
    pub fn parse(spec: &str) -> Option<HubId> {
        let spec = spec.strip_prefix("hf-hub:").unwrap_or(spec);
        let (rest, file) = match spec.split_once(':') {
            Some((r, f)) if !f.is_empty() && !f.contains('/') => (r, Some(f.to_string())),
            Some(_) => return None,
            None => (spec, None),
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return None,
            None => (rest, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let part = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (part(org) && part(name) && !revision.contains(['/', '\\'])).then(|| HubId {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file,
        })
    }

    /// The repository's folder in the cache: `models--org--name`.
    pub fn folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl std::fmt::Display for HubId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repo)?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        if let Some(file) = &self.file {
            write!(f, ":{file}")?;
        }
        Ok(())
    }
}

/// A full commit hash: 40 lower-case hex digits.
pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_parse_and_paths_do_not() {
        let id = |s: &str| HubId::parse(s);
        assert_eq!(
            id("timm/deit_small_patch16_224.fb_in1k").unwrap().repo,
            "timm/deit_small_patch16_224.fb_in1k"
        );
        assert_eq!(id("hf-hub:org/name").unwrap().revision, "main");
        let pinned = id("org/name@v1.0").unwrap();
        assert_eq!(
            (pinned.repo.as_str(), pinned.revision.as_str()),
            ("org/name", "v1.0")
        );
        let gguf = id("org/name:model.Q4_0.gguf").unwrap();
        assert_eq!(gguf.file.as_deref(), Some("model.Q4_0.gguf"));
        assert_eq!(gguf.to_string(), "org/name:model.Q4_0.gguf");
        for path in [
            "model",
            "./org/name",
            "/org/name",
            "a/b/c",
            "org/",
            "/x",
            "../a",
            "org/name@",
        ] {
            assert_eq!(id(path), None, "{path}");
        }
    }
}
