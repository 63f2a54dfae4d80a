//! A small SQLite tokenizer for the statement rewriter and the pragma filter.
//!
//! Owns: splitting SQL text into significant tokens with their byte spans, skipping
//! whitespace and comments, and keeping string literals, quoted identifiers and blob literals
//! whole so nothing inside them is ever mistaken for a keyword.
//! Does not: parse. It never fails: unterminated strings or comments run to the end of the
//! text, and SQLite itself reports the error later.

/// What a token is, as far as rewriting and filtering need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A bare word: keyword or identifier.
    Word,
    /// `"x"`, `` `x` `` or `[x]`.
    QuotedIdent,
    /// `'text'`.
    Str,
    /// `x'00ff'`.
    Blob,
    Number,
    /// `?`, `?NNN`, `:name`, `@name`, `$name`.
    Variable,
    /// Any other single character, e.g. `(`, `)`, `,`, `;`, `.`, `=`.
    Punct(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        sql.get(self.start..self.end).unwrap_or("")
    }

    /// True for a bare word equal to `word` (ASCII case-insensitive).
    pub fn is_word(&self, sql: &str, word: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(word)
    }

    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == Kind::Punct(c)
    }

    /// The name a word, quoted identifier or string stands for (quotes removed, doubled
    /// quotes collapsed). SQLite accepts all three where a name is expected.
    pub fn name(&self, sql: &str) -> Option<String> {
        let text = self.text(sql);
        match self.kind {
            Kind::Word => Some(text.to_string()),
            Kind::QuotedIdent | Kind::Str => Some(unquote(text)),
            _ => None,
        }
    }
}

/// Removes the surrounding quotes of a quoted token and collapses doubled quotes.
pub(crate) fn unquote(text: &str) -> String {
    let mut chars = text.chars();
    let Some(open) = chars.next() else {
        return String::new();
    };
    let close = if open == '[' { ']' } else { open };
    let inner = &text[open.len_utf8()..];
    let inner = inner.strip_suffix(close).unwrap_or(inner);
    if open == '[' {
        return inner.to_string();
    }
    let doubled: String = [close, close].iter().collect();
    inner.replace(&doubled, &close.to_string())
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Splits `sql` into significant tokens (whitespace and comments dropped).
pub(crate) fn tokenize(sql: &str) -> Vec<Token> {
    Tokens::new(sql).collect()
}

/// The tokens of `sql` one at a time (whitespace and comments skipped), for callers that
/// look at a few and stop: no list is built.
pub(crate) struct Tokens<'a> {
    bytes: &'a [u8],
    i: usize,
}

impl<'a> Tokens<'a> {
    pub(crate) fn new(sql: &'a str) -> Self {
        Self {
            bytes: sql.as_bytes(),
            i: 0,
        }
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let bytes = self.bytes;
        let mut i = self.i;
        while i < bytes.len() {
            let b = bytes[i];
            let start = i;
            let kind = match b {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                    i += 1;
                    continue;
                }
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    continue;
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/'))
                    {
                        i += 1;
                    }
                    i = (i + 2).min(bytes.len());
                    continue;
                }
                b'\'' => {
                    i = skip_quoted(bytes, i, b'\'');
                    Kind::Str
                }
                b'"' | b'`' => {
                    i = skip_quoted(bytes, i, b);
                    Kind::QuotedIdent
                }
                b'[' => {
                    while i < bytes.len() && bytes[i] != b']' {
                        i += 1;
                    }
                    i = (i + 1).min(bytes.len());
                    Kind::QuotedIdent
                }
                b'x' | b'X' if bytes.get(i + 1) == Some(&b'\'') => {
                    i = skip_quoted(bytes, i + 1, b'\'');
                    Kind::Blob
                }
                b'0'..=b'9' => {
                    i = skip_number(bytes, i);
                    Kind::Number
                }
                b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    i = skip_number(bytes, i);
                    Kind::Number
                }
                b'?' => {
                    i += 1;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    Kind::Variable
                }
                b':' | b'@' | b'$' if bytes.get(i + 1).is_some_and(|&c| is_ident_char(c)) => {
                    i += 1;
                    while i < bytes.len() && is_ident_char(bytes[i]) {
                        i += 1;
                    }
                    Kind::Variable
                }
                _ if is_ident_start(b) => {
                    while i < bytes.len() && is_ident_char(bytes[i]) {
                        i += 1;
                    }
                    Kind::Word
                }
                _ => {
                    i += 1;
                    Kind::Punct(b)
                }
            };
            self.i = i;
            return Some(Token {
                kind,
                start,
                end: i,
            });
        }
        self.i = i;
        None
    }
}

/// Index just past a quoted run starting at `open` (doubled quotes stay inside).
fn skip_quoted(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

fn skip_number(bytes: &[u8], mut i: usize) -> usize {
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_') {
        i += 1;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            i = j;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        tokenize(sql)
            .iter()
            .map(|t| (t.kind, t.text(sql)))
            .collect()
    }

    #[test]
    fn strings_comments_and_quoted_names_are_single_tokens() {
        let sql =
            "SELECT 'a''b -- no', \"x\"\"y\", [z w] -- tail random()\n/* now */ x'0A' FROM t;";
        assert_eq!(
            kinds(sql),
            vec![
                (Kind::Word, "SELECT"),
                (Kind::Str, "'a''b -- no'"),
                (Kind::Punct(b','), ","),
                (Kind::QuotedIdent, "\"x\"\"y\""),
                (Kind::Punct(b','), ","),
                (Kind::QuotedIdent, "[z w]"),
                (Kind::Blob, "x'0A'"),
                (Kind::Word, "FROM"),
                (Kind::Word, "t"),
                (Kind::Punct(b';'), ";"),
            ]
        );
    }

    #[test]
    fn numbers_variables_and_unterminated_input() {
        let sql = "?1 :a @b $c 1.5e-3 0x1F .5 'open";
        assert_eq!(
            kinds(sql),
            vec![
                (Kind::Variable, "?1"),
                (Kind::Variable, ":a"),
                (Kind::Variable, "@b"),
                (Kind::Variable, "$c"),
                (Kind::Number, "1.5e-3"),
                (Kind::Number, "0x1F"),
                (Kind::Number, ".5"),
                (Kind::Str, "'open"),
            ]
        );
        assert!(tokenize("/* never closed").is_empty());
    }

    #[test]
    fn unquote_collapses_doubled_quotes() {
        assert_eq!(unquote("\"a\"\"b\""), "a\"b");
        assert_eq!(unquote("'it''s'"), "it's");
        assert_eq!(unquote("[x]"), "x");
        assert_eq!(unquote("`q`"), "q");
    }

    #[test]
    fn non_ascii_words_keep_char_boundaries() {
        let sql = "SELECT héllo, 日本 FROM t";
        let toks = tokenize(sql);
        assert_eq!(toks[1].text(sql), "héllo");
        assert_eq!(toks[3].text(sql), "日本");
    }
}
