//! POSIX-shell word splitting without a shell: quotes, backslashes and line continuations, no
//! expansion, no operators (`&&` or `|` are ordinary words).

use thiserror::Error;

/// Why a command line could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SplitError {
    #[error("unterminated {quote} quote starting at column {column}")]
    UnterminatedQuote { quote: &'static str, column: usize },
    #[error("trailing backslash at column {column} escapes nothing")]
    TrailingBackslash { column: usize },
}

/// Splits `line` into words the way `sh` would, without expanding anything.
pub fn split_words(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().enumerate().peekable();
    while let Some((index, c)) = chars.next() {
        let column = index + 1;
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => match chars.next() {
                Some((_, '\n')) => {}
                Some((_, escaped)) => {
                    word.push(escaped);
                    in_word = true;
                }
                None => return Err(SplitError::TrailingBackslash { column }),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, inner)) => word.push(inner),
                        None => {
                            return Err(SplitError::UnterminatedQuote { quote: "single", column });
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek().map(|&(_, next)| next) {
                            Some('\n') => {
                                chars.next();
                            }
                            Some(next @ ('\\' | '"' | '$' | '`')) => {
                                word.push(next);
                                chars.next();
                            }
                            _ => word.push('\\'),
                        },
                        Some((_, inner)) => word.push(inner),
                        None => {
                            return Err(SplitError::UnterminatedQuote { quote: "double", column });
                        }
                    }
                }
            }
            other => {
                word.push(other);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_posix_sh() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("a b  c", &["a", "b", "c"]),
            ("  lead trail  ", &["lead", "trail"]),
            ("'a b' c", &["a b", "c"]),
            (r#""a b" c"#, &["a b", "c"]),
            ("x'y z'w", &["xy zw"]),
            ("''", &[""]),
            (r#""""#, &[""]),
            (r"a\ b", &["a b"]),
            (r#""a\"b""#, &[r#"a"b"#]),
            (r#""a\nb""#, &[r"a\nb"]),
            (r"'a\b'", &[r"a\b"]),
            ("a \\\n b", &["a", "b"]),
            ("--x '{\"a\": 1}'", &["--x", "{\"a\": 1}"]),
            ("a && b | c", &["a", "&&", "b", "|", "c"]),
            ("tab\tsep\nnl", &["tab", "sep", "nl"]),
            ("$HOME", &["$HOME"]),
        ];
        for (line, expected) in cases {
            let words = split_words(line).unwrap();
            assert_eq!(words, *expected, "splitting {line:?}");
        }
    }

    #[test]
    fn reports_unbalanced_input() {
        let cases = [
            ("a 'b", SplitError::UnterminatedQuote { quote: "single", column: 3 }),
            ("\"b", SplitError::UnterminatedQuote { quote: "double", column: 1 }),
            ("a\\", SplitError::TrailingBackslash { column: 2 }),
        ];
        for (line, expected) in cases {
            assert_eq!(split_words(line), Err(expected), "splitting {line:?}");
        }
    }
}
