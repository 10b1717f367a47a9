//! Backend parameters: parsing the three forms users write, normalizing them to the backend's
//! `parameter_format` (`render::render_command` puts them together with the run command).
//!
//! Each list item may be `--k=v`, `--k v` (shell-quoted, JSON values allowed, a whole pasted
//! command line with `\` continuations too), or a lone word that is the key or the value of its
//! neighbour. An item that does not start with a flag is kept as one word, verbatim (a JSON blob,
//! a path with spaces).

use thiserror::Error;

use super::shell::{SplitError, split_words};
use crate::api::backend::ParameterFormat;

/// Why backend parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamError {
    #[error("backend parameter {parameter:?}: {source}")]
    Split {
        parameter: String,
        #[source]
        source: SplitError,
    },
    #[error("backend parameter {parameter:?}: JSON value after \"=\" is never closed")]
    UnterminatedJson { parameter: String },
    #[error("backend parameter {parameter:?}: flag {flag:?} has no name")]
    EmptyFlag { parameter: String, flag: String },
}

impl ParamError {
    /// The parameter, as the user wrote it.
    pub fn parameter(&self) -> &str {
        match self {
            Self::Split { parameter, .. }
            | Self::UnterminatedJson { parameter }
            | Self::EmptyFlag { parameter, .. } => parameter,
        }
    }
}

/// A flag with its values, or a positional word (`flag: None`, one value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The flag with its dashes (`--max-model-len`, `-ngl`), without any `=value`.
    pub flag: Option<String>,
    pub values: Vec<String>,
    /// Written as `--flag=value`.
    pub joined: bool,
}

impl Param {
    /// The name used to match flags: dashes stripped, `_` read as `-` (`--max_model_len` and
    /// `--max-model-len` are the same flag).
    pub fn key(&self) -> Option<String> {
        self.flag.as_deref().map(flag_key)
    }

    /// The words exactly as entered.
    pub fn as_given(&self) -> Vec<String> {
        match (&self.flag, self.values.split_first()) {
            (Some(flag), Some((first, rest))) if self.joined => {
                let mut words = vec![format!("{flag}={first}")];
                words.extend(rest.iter().cloned());
                words
            }
            (Some(flag), _) => std::iter::once(flag.clone()).chain(self.values.iter().cloned()).collect(),
            (None, _) => self.values.clone(),
        }
    }

    /// The words in the backend's format. Short (`-x`) flags and multi-value flags keep their form.
    pub fn formatted(&self, format: Option<ParameterFormat>) -> Vec<String> {
        let Some(flag) = &self.flag else {
            return self.values.clone();
        };
        let long = flag.starts_with("--");
        match (format, self.values.as_slice()) {
            (Some(ParameterFormat::Equal), [value]) if long => vec![format!("{flag}={value}")],
            (Some(_), values) if long => std::iter::once(flag.clone()).chain(values.iter().cloned()).collect(),
            _ => self.as_given(),
        }
    }
}

/// Parses parameter list items into flags and positional words.
pub fn parse_params(items: &[String]) -> Result<Vec<Param>, ParamError> {
    let mut params: Vec<Param> = Vec::new();
    for item in items {
        for word in item_words(item)? {
            push_word(&mut params, word, item)?;
        }
    }
    Ok(params)
}

/// Groups words that are already split (a rendered run command) into flags and positional words,
/// without splitting any word again.
pub fn parse_words(words: Vec<String>) -> Vec<Param> {
    let mut params: Vec<Param> = Vec::new();
    for word in words {
        // An `--=x` word cannot be a flag of ours: keep it as a positional word.
        if push_word(&mut params, word.clone(), "").is_err() {
            params.push(Param { flag: None, values: vec![word], joined: false });
        }
    }
    params
}

/// Renders parameters as argv words in the given format (`None`: as entered).
pub fn format_params(params: &[Param], format: Option<ParameterFormat>) -> Vec<String> {
    params.iter().flat_map(|p| p.formatted(format)).collect()
}

/// Parses and formats in one step.
pub fn normalize_params(items: &[String], format: Option<ParameterFormat>) -> Result<Vec<String>, ParamError> {
    Ok(format_params(&parse_params(items)?, format))
}

/// The first parameter with this flag (`name` with or without dashes).
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    let key = flag_key(name);
    params.iter().find(|p| p.key().as_deref() == Some(key.as_str()))
}

/// A flag: starts with `-`, is not `-` or `--`, and is not a negative number such as `-0.5`.
pub fn is_flag(word: &str) -> bool {
    word.len() > 1 && word.starts_with('-') && word != "--" && word.parse::<f64>().is_err()
}

/// The name used to match a flag: dashes stripped, `_` read as `-`.
pub fn flag_key(flag: &str) -> String {
    flag.trim_start_matches('-').replace('_', "-")
}

/// Splits one list item into words: shell-like when it starts with a flag, else one word.
fn item_words(item: &str) -> Result<Vec<String>, ParamError> {
    let first = item.split_whitespace().next().unwrap_or_default();
    let first = first.split('=').next().unwrap_or_default();
    if !is_flag(first) {
        return Ok(vec![item.to_owned()]);
    }
    let text = item.replace("\r\n", "\n");
    let text = text.trim_end();
    let text = text.strip_suffix('\\').unwrap_or(text);
    let (masked, json) =
        mask_json_values(text).ok_or_else(|| ParamError::UnterminatedJson { parameter: item.to_owned() })?;
    let words = split_words(&masked).map_err(|source| ParamError::Split { parameter: item.to_owned(), source })?;
    Ok(words.into_iter().map(|w| unmask(&w, &json)).collect())
}

fn push_word(params: &mut Vec<Param>, word: String, item: &str) -> Result<(), ParamError> {
    if let Some((dashes, _)) = word.split_once('=')
        && !dashes.is_empty()
        && dashes.chars().all(|c| c == '-')
    {
        return Err(ParamError::EmptyFlag { parameter: item.to_owned(), flag: dashes.to_owned() });
    }
    if is_flag(word.split('=').next().unwrap_or_default()) {
        let (flag, value) = match word.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (word, None),
        };
        params.push(Param { flag: Some(flag), joined: value.is_some(), values: value.into_iter().collect() });
        return Ok(());
    }
    match params.last_mut() {
        Some(last) if last.flag.is_some() => last.values.push(word),
        _ => params.push(Param { flag: None, values: vec![word], joined: false }),
    }
    Ok(())
}

const MASK: char = '\u{1f}';

/// Replaces each `=`-attached JSON value (`--x={"a": "b c"}`) by a marker so that splitting keeps
/// it whole. Returns `None` when a JSON value is never closed.
fn mask_json_values(text: &str) -> Option<(String, Vec<String>)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut json = Vec::new();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '=' && matches!(chars.get(i + 1), Some('{' | '[')) => {
                let end = json_end(&chars, i + 1)?;
                out.push('=');
                out.push(MASK);
                out.push_str(&json.len().to_string());
                out.push(MASK);
                json.push(chars[i + 1..=end].iter().collect());
                i = end + 1;
                continue;
            }
            None => {}
        }
        out.push(c);
        i += 1;
    }
    Some((out, json))
}

/// The index of the bracket closing the one at `start`, skipping JSON strings.
fn json_end(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &c) in chars[start..].iter().enumerate() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(start + offset);
                }
            }
            _ => {}
        }
    }
    None
}

fn unmask(word: &str, json: &[String]) -> String {
    if !word.contains(MASK) {
        return word.to_owned();
    }
    let mut out = String::new();
    for (index, part) in word.split(MASK).enumerate() {
        // Odd parts are marker numbers.
        let restored = (index % 2 == 1).then(|| part.parse::<usize>().ok().and_then(|n| json.get(n))).flatten();
        match restored {
            Some(value) => out.push_str(value),
            None if index % 2 == 1 => {
                out.push(MASK);
                out.push_str(part);
                out.push(MASK);
            }
            None => out.push_str(part),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_the_three_forms_alike() {
        let forms: &[&[&str]] = &[&["--max-model-len=8192"], &["--max-model-len 8192"], &["--max-model-len", "8192"]];
        for form in forms {
            let params = parse_params(&strings(form)).unwrap();
            assert_eq!(params.len(), 1, "{form:?}");
            assert_eq!(params[0].key().as_deref(), Some("max-model-len"));
            assert_eq!(params[0].values, ["8192"], "{form:?}");
        }
    }

    #[test]
    fn normalizes_to_the_parameter_format() {
        use ParameterFormat::{Equal, Space};
        let cases: &[(&[&str], Option<ParameterFormat>, &[&str])] = &[
            (&["--a=1"], Some(Space), &["--a", "1"]),
            (&["--a 1"], Some(Space), &["--a", "1"]),
            (&["--a", "1"], Some(Space), &["--a", "1"]),
            (&["--a 1"], Some(Equal), &["--a=1"]),
            (&["--a", "1"], Some(Equal), &["--a=1"]),
            (&["--a=1"], Some(Equal), &["--a=1"]),
            (&["--a=1"], None, &["--a=1"]),
            (&["--a 1"], None, &["--a", "1"]),
            (&["--flag"], Some(Equal), &["--flag"]),
            (&["--flag --b=2"], Some(Space), &["--flag", "--b", "2"]),
            (&["--lora-modules a=/p1 b=/p2"], Some(Equal), &["--lora-modules", "a=/p1", "b=/p2"]),
            (&["-ngl 99"], Some(Equal), &["-ngl", "99"]),
            (&["-c=5"], Some(Space), &["-c=5"]),
            (&["--temp -0.5"], Some(Equal), &["--temp=-0.5"]),
            (&["--seed", "-1"], Some(Space), &["--seed", "-1"]),
            (&["/models/my model"], Some(Space), &["/models/my model"]),
            (&["--x -- y"], Some(Space), &["--x", "--", "y"]),
            (
                &["--tensor-parallel-size 2 --max-model-len 8192 --lora-modules a=/path1 b=/path2"],
                Some(Equal),
                &["--tensor-parallel-size=2", "--max-model-len=8192", "--lora-modules", "a=/path1", "b=/path2"],
            ),
        ];
        for (items, format, expected) in cases {
            let got = normalize_params(&strings(items), *format).unwrap();
            assert_eq!(got, *expected, "{items:?} as {format:?}");
        }
    }

    #[test]
    fn keeps_quoted_and_json_values_whole() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[r#"--hf-overrides '{"a": 1}'"#], &["--hf-overrides", r#"{"a": 1}"#]),
            (&[r#"--hf-overrides={"a": "b c", "d": [1, 2]}"#], &[r#"--hf-overrides={"a": "b c", "d": [1, 2]}"#]),
            (&["--hf-overrides", r#"{"a": 1}"#], &["--hf-overrides", r#"{"a": 1}"#]),
            (&[r#"--x={"q": "}\""} --y 1"#], &[r#"--x={"q": "}\""}"#, "--y", "1"]),
            (&[r#"--name "two words""#], &["--name", "two words"]),
            (&["vllm serve m \\\n  --a 1 \\\n  --b 2 \\"], &["vllm serve m \\\n  --a 1 \\\n  --b 2 \\"]),
            (&["--a 1 \\\n  --b 2 \\"], &["--a", "1", "--b", "2"]),
            (&["--a 1 \\\r\n --b 2"], &["--a", "1", "--b", "2"]),
        ];
        for (items, expected) in cases {
            assert_eq!(normalize_params(&strings(items), None).unwrap(), *expected, "{items:?}");
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        let cases: &[(&str, &str)] = &[
            ("--a 'open", "backend parameter \"--a 'open\": unterminated single quote"),
            ("--x={\"a\": 1", "backend parameter \"--x={\\\"a\\\": 1\": JSON value"),
            ("--=v", "flag \"--\" has no name"),
        ];
        for (item, expected) in cases {
            let err = parse_params(&strings(&[item])).unwrap_err();
            assert_eq!(err.parameter(), *item);
            let message = err.to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn finds_flags_by_name() {
        let params = parse_params(&strings(&["--a=1", "-tp 2"])).unwrap();
        assert_eq!(find_param(&params, "a").unwrap().values, ["1"]);
        assert_eq!(find_param(&params, "--tp").unwrap().values, ["2"]);
        assert!(find_param(&params, "b").is_none());
    }

    #[test]
    fn recognizes_flags() {
        for (word, flag) in [
            ("--a", true),
            ("-a", true),
            ("-", false),
            ("--", false),
            ("-1", false),
            ("-0.5", false),
            ("-1e3", false),
            ("a", false),
            ("", false),
        ] {
            assert_eq!(is_flag(word), flag, "{word:?}");
        }
    }

    proptest! {
        #[test]
        fn random_params_never_panic(items in proptest::collection::vec("\\PC{0,40}", 0..5)) {
            if let Ok(params) = parse_params(&items) {
                let _ = format_params(&params, Some(ParameterFormat::Equal));
                let _ = format_params(&params, Some(ParameterFormat::Space));
            }
        }

        #[test]
        fn shelly_params_never_panic(
            items in proptest::collection::vec("-[-a-z={}\\[\\]\"' \\\\]{0,30}", 0..5)
        ) {
            let _ = normalize_params(&items, Some(ParameterFormat::Space));
        }
    }
}
