//! The shape of a model hub's ids and file names (Hugging Face, ModelScope): what the server admits
//! and what a worker agrees to turn into a path under its download cache.
//!
//! A repository id is `owner/name`, each part 1-96 of `A-Z a-z 0-9 _ . -`, starting and ending
//! with a letter, digit or `_` (so never `.`, `..` or a leading `-`), with no `..` or `--` inside
//! and not ending in `.git`: Hugging Face's own rule (`huggingface_hub.utils.validate_repo_id`),
//! which ModelScope's ids also follow. A file name is a relative path whose every component is a
//! plain name: no `/` at the start, no `.` or `..`, no empty component, no backslash.

/// The longest part of a repository id.
pub const MAX_PART: usize = 96;
/// The longest file name inside a repository.
pub const MAX_FILE: usize = 1024;

/// Why `id` is not a repository id, or `None` when it is one.
pub fn repo_id_problem(id: &str) -> Option<&'static str> {
    let Some((owner, name)) = id.split_once('/') else {
        return Some("must be owner/name");
    };
    if name.contains('/') {
        return Some("must be owner/name (one '/')");
    }
    for part in [owner, name] {
        if part.is_empty() || part.len() > MAX_PART {
            return Some("each part of owner/name must be 1-96 characters");
        }
        if !part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Some("each part of owner/name may hold only letters, digits, '_', '.', '-'");
        }
        let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !edge(part.chars().next()) || !edge(part.chars().last()) {
            return Some("each part of owner/name must start and end with a letter, digit or '_'");
        }
    }
    if id.contains("..") || id.contains("--") {
        return Some("must not contain '..' or '--'");
    }
    if id.ends_with(".git") {
        return Some("must not end with .git");
    }
    None
}

/// Why `name` is not a file name inside a repository, or `None` when it is one.
pub fn repo_file_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_FILE {
        return Some("must be 1-1024 characters");
    }
    if name.starts_with('/') {
        return Some("must be a path relative to the repository, not an absolute one");
    }
    if name.contains('\\') || name.contains('\0') {
        return Some("must not contain a backslash or a NUL");
    }
    if name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Some("must not hold '.', '..' or empty components");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ids() {
        let long = "a".repeat(MAX_PART);
        let too_long = "a".repeat(MAX_PART + 1);
        let cases: &[(&str, bool)] = &[
            ("Qwen/Qwen2.5-0.5B-Instruct", true),
            ("bartowski/SmolLM2-135M-Instruct-GGUF", true),
            ("_org/model_v1.2", true),
            ("a/b", true),
            (&format!("{long}/{long}"), true),
            (&format!("{too_long}/x"), false),
            ("gpt2", false),
            ("", false),
            ("/", false),
            ("owner/", false),
            ("/name", false),
            ("a/b/c", false),
            ("../etc", false),
            ("..", false),
            ("./x", false),
            ("x/.", false),
            ("x/..", false),
            ("../../tmp/pwn", false),
            ("/etc/passwd", false),
            ("owner/na..me", false),
            ("owner/na--me", false),
            ("-owner/name", false),
            ("owner/name-", false),
            (".hidden/name", false),
            ("owner/name.", false),
            ("owner/name.git", false),
            ("own er/name", false),
            ("owner/näme", false),
            ("owner\\name", false),
            ("owner/name\0", false),
        ];
        for (id, ok) in cases {
            assert_eq!(repo_id_problem(id).is_none(), *ok, "{id:?}: {:?}", repo_id_problem(id));
        }
    }

    #[test]
    fn file_names_inside_a_repository() {
        let cases: &[(&str, bool)] = &[
            ("model.gguf", true),
            ("sub/dir/config.json", true),
            ("*Q4_K_M.gguf", true),
            ("..gguf", true),
            ("", false),
            ("/etc/passwd", false),
            ("../x", false),
            ("a/../../b", false),
            ("./x", false),
            ("a/./b", false),
            ("a//b", false),
            ("a/", false),
            ("..", false),
            ("a\\..\\b", false),
            (&"a".repeat(MAX_FILE + 1), false),
        ];
        for (name, ok) in cases {
            assert_eq!(repo_file_problem(name).is_none(), *ok, "{name:?}: {:?}", repo_file_problem(name));
        }
    }
}
