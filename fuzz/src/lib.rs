//! What the fuzz targets share: the bound on error text, and a reader of
//! nginx's config syntax so the nginx target can check a rendered site's
//! structure (directives, blocks, words) instead of grepping it.

use std::collections::BTreeSet;

/// The longest error text any parser here may produce, in bytes: the
/// agent's gRPC layer cuts messages at 2048 bytes, so an error longer than
/// that loses its end, and a longer one almost always echoes the input.
pub const MAX_ERROR: usize = 2048;

/// Panics when `error` is longer than [`MAX_ERROR`] bytes.
pub fn assert_bounded(what: &str, error: &str, input_len: usize) {
    assert!(
        error.len() <= MAX_ERROR,
        "{what}: a {}-byte error for {input_len} bytes of input (the cap is {MAX_ERROR}):\n{}",
        error.len(),
        error.chars().take(600).collect::<String>()
    );
}

/// One directive of an nginx config: `name arg...;` or `name arg... { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Its name (the first word).
    pub name: String,
    /// The words after the name, unquoted.
    pub args: Vec<String>,
    /// The directives of its block, for `name ... { ... }`.
    pub block: Option<Vec<Directive>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

/// Splits nginx config text the way nginx's own reader does: words are
/// separated by whitespace, `;`, `{` and `}` end or open things, `#` starts
/// a comment to the end of the line, and quoted words keep their spaces.
fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' => {
                chars.next();
                out.push(Token::Semicolon);
            }
            '{' => {
                chars.next();
                out.push(Token::Open);
            }
            '}' => {
                chars.next();
                out.push(Token::Close);
            }
            '"' | '\'' => {
                let quote = c;
                chars.next();
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated {quote} string")),
                        Some('\\') => match chars.next() {
                            Some(escaped) => word.push(escaped),
                            None => return Err("a backslash at the end".into()),
                        },
                        Some(c) if c == quote => break,
                        Some(c) => word.push(c),
                    }
                }
                // nginx wants a separator after a quoted word.
                if let Some(&next) = chars.peek()
                    && !(next.is_whitespace() || matches!(next, ';' | '{' | '}'))
                {
                    return Err(format!("{next:?} right after a quoted word"));
                }
                out.push(Token::Word(word));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'') {
                        break;
                    }
                    if c == '\\' {
                        chars.next();
                        match chars.next() {
                            Some(escaped) => word.push(escaped),
                            None => return Err("a backslash at the end".into()),
                        }
                        continue;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

/// Reads nginx config text into its directives; an unbalanced brace, a
/// directive without its `;` or an unterminated string is an error.
pub fn parse_nginx(text: &str) -> Result<Vec<Directive>, String> {
    let tokens = tokens(text)?;
    let mut pos = 0;
    let directives = block(&tokens, &mut pos, 0)?;
    if pos != tokens.len() {
        return Err("a '}' closes nothing".into());
    }
    Ok(directives)
}

fn block(tokens: &[Token], pos: &mut usize, depth: usize) -> Result<Vec<Directive>, String> {
    let mut out = Vec::new();
    loop {
        let Some(token) = tokens.get(*pos) else {
            return if depth == 0 {
                Ok(out)
            } else {
                Err("a block is not closed".into())
            };
        };
        match token {
            Token::Close => {
                return if depth == 0 {
                    Err("a '}' closes nothing".into())
                } else {
                    *pos += 1;
                    Ok(out)
                };
            }
            Token::Semicolon => return Err("an empty directive (a ';' alone)".into()),
            Token::Open => return Err("a block without a directive name".into()),
            Token::Word(name) => {
                *pos += 1;
                let mut args = Vec::new();
                loop {
                    match tokens.get(*pos) {
                        Some(Token::Word(w)) => {
                            args.push(w.clone());
                            *pos += 1;
                        }
                        Some(Token::Semicolon) => {
                            *pos += 1;
                            out.push(Directive {
                                name: name.clone(),
                                args,
                                block: None,
                            });
                            break;
                        }
                        Some(Token::Open) => {
                            *pos += 1;
                            let inner = block(tokens, pos, depth + 1)?;
                            out.push(Directive {
                                name: name.clone(),
                                args,
                                block: Some(inner),
                            });
                            break;
                        }
                        Some(Token::Close) | None => {
                            return Err(format!("directive {name:?} is not ended by ';'"));
                        }
                    }
                }
            }
        }
    }
}

/// Every `(context, directive name)` in `directives`, the context being the
/// names of the enclosing blocks joined by `/` (`server/location`).
pub fn directive_names(directives: &[Directive]) -> BTreeSet<(String, String)> {
    fn walk(directives: &[Directive], context: &str, out: &mut BTreeSet<(String, String)>) {
        for d in directives {
            out.insert((context.to_owned(), d.name.clone()));
            if let Some(inner) = &d.block {
                let context = if context.is_empty() {
                    d.name.clone()
                } else {
                    format!("{context}/{}", d.name)
                };
                walk(inner, &context, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(directives, "", &mut out);
    out
}

/// Every nginx variable (`$name`) used in the arguments of `directives`.
pub fn variables(directives: &[Directive]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<&Directive> = directives.iter().collect();
    while let Some(d) = stack.pop() {
        for arg in &d.args {
            let mut rest = arg.as_str();
            while let Some(at) = rest.find('$') {
                let tail = &rest[at + 1..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '{' || c == '}'))
                    .unwrap_or(tail.len());
                out.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
        if let Some(inner) = &d.block {
            stack.extend(inner);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_blocks_strings_and_comments() {
        let site = "# c { \nupstream u {\n server 1.2.3.4:80 max_fails=0;\n}\nserver {\n location = /a {\n return 503 \"x; {y}\";\n }\n}\n";
        let d = parse_nginx(site).expect("valid");
        assert_eq!(d.len(), 2);
        let server = d[1].block.as_ref().expect("block");
        let location = &server[0];
        assert_eq!(location.args, ["=", "/a"]);
        assert_eq!(location.block.as_ref().expect("block")[0].args, ["503", "x; {y}"]);
        assert!(parse_nginx("server {").is_err());
        assert!(parse_nginx("a b").is_err());
        assert!(parse_nginx("}").is_err());
        assert!(parse_nginx("return \"x").is_err());
    }
}
