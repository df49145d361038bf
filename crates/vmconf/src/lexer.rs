//! The vm.conf lexer: turns the bytes of one file into tokens, expanding
//! `$macro` references on the way. It follows OpenBSD's parse.y lexer rule
//! for rule (quoting, backslashes, numbers versus words, comments) and does
//! no I/O: the parser hands it the file contents.

use std::collections::HashMap;

use crate::config::Location;

/// Longest quoted string, word or number, in bytes (OpenBSD's lexer buffer
/// of 8096 bytes less room for the terminating NUL).
pub(crate) const MAX_TOKEN_BYTES: usize = 8094;

/// Total bytes of macro text expanded during one load. References cost their
/// value's length each time, so this bounds the work a small file with many
/// references to a long macro can cause.
pub(crate) const MAX_EXPANSION_BYTES: usize = 16 * 1024 * 1024;

/// A reserved word of the grammar. Words in this table are never strings
/// unless quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyword {
    Add,
    Agentx,
    Allow,
    Boot,
    Cdrom,
    Context,
    Delay,
    Device,
    Disable,
    Disk,
    Down,
    Enable,
    Format,
    Group,
    Id,
    Include,
    Inet6,
    Instance,
    Interface,
    Interfaces,
    Lladdr,
    Local,
    Locked,
    Memory,
    Net,
    Owner,
    Parallel,
    Path,
    Prefix,
    Rdomain,
    Sev,
    Seves,
    Size,
    Socket,
    Staggered,
    Start,
    Switch,
    Up,
    Vm,
}

/// The keyword table of OpenBSD's vm.conf (parse.y 1.72). `cpus`, `initrd`
/// and `cmdline` are not here: they are keywords only at the start of a vm
/// option, so configurations that use them as plain words keep working.
const KEYWORDS: &[(&str, Keyword)] = &[
    ("add", Keyword::Add),
    ("agentx", Keyword::Agentx),
    ("allow", Keyword::Allow),
    ("boot", Keyword::Boot),
    ("cdrom", Keyword::Cdrom),
    ("context", Keyword::Context),
    ("delay", Keyword::Delay),
    ("device", Keyword::Device),
    ("disable", Keyword::Disable),
    ("disk", Keyword::Disk),
    ("down", Keyword::Down),
    ("enable", Keyword::Enable),
    ("format", Keyword::Format),
    ("group", Keyword::Group),
    ("id", Keyword::Id),
    ("include", Keyword::Include),
    ("inet6", Keyword::Inet6),
    ("instance", Keyword::Instance),
    ("interface", Keyword::Interface),
    ("interfaces", Keyword::Interfaces),
    ("lladdr", Keyword::Lladdr),
    ("local", Keyword::Local),
    ("locked", Keyword::Locked),
    ("memory", Keyword::Memory),
    ("net", Keyword::Net),
    ("owner", Keyword::Owner),
    ("parallel", Keyword::Parallel),
    ("path", Keyword::Path),
    ("prefix", Keyword::Prefix),
    ("rdomain", Keyword::Rdomain),
    ("sev", Keyword::Sev),
    ("seves", Keyword::Seves),
    ("size", Keyword::Size),
    ("socket", Keyword::Socket),
    ("staggered", Keyword::Staggered),
    ("start", Keyword::Start),
    ("switch", Keyword::Switch),
    ("up", Keyword::Up),
    ("vm", Keyword::Vm),
];

impl Keyword {
    pub(crate) fn from_word(word: &str) -> Option<Keyword> {
        // Every keyword is 2 to 10 lowercase letters or digits; most words
        // of a configuration are not keywords and fail this cheap test.
        let plausible = (2..=10).contains(&word.len())
            && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'6');
        if !plausible {
            return None;
        }
        KEYWORDS
            .iter()
            .find(|(text, _)| *text == word)
            .map(|(_, keyword)| *keyword)
    }

    /// Returns the keyword as written in a configuration.
    pub(crate) fn as_str(self) -> &'static str {
        KEYWORDS
            .iter()
            .find(|(_, keyword)| *keyword == self)
            .map(|(text, _)| *text)
            .expect("every keyword variant has an entry in KEYWORDS")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Keyword(Keyword),
    /// An unquoted word that is not a keyword.
    Word(String),
    /// A quoted string, quotes and escapes removed.
    Quoted(String),
    Number(i64),
    OpenBrace,
    CloseBrace,
    Equals,
    Comma,
    Newline,
    /// Any other character; the grammar never accepts it.
    Other(char),
    /// A token with a lexical error, already reported.
    Invalid,
    Eof,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) line: u32,
}

/// A byte of input with its line and whether it came from a macro value.
#[derive(Clone, Copy, Debug)]
struct Char {
    byte: u8,
    line: u32,
    expanded: bool,
    /// Read once already and put back: backslash processing has been done.
    reread: bool,
}

/// Macros defined with `name = "value"` or `-D name=value`, shared by a
/// file and the files it includes.
#[derive(Debug, Default)]
pub(crate) struct Macros {
    entries: Vec<Macro>,
    index: HashMap<String, usize>,
    expanded_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Macro {
    pub(crate) name: String,
    value: String,
    /// Set with `-D`: definitions in files do not replace it.
    persistent: bool,
    pub(crate) used: bool,
    /// The location of the definition, or `None` for `-D`.
    pub(crate) location: Option<Location>,
}

/// The reason a macro reference was not expanded.
pub(crate) enum ExpandError {
    Undefined,
    BudgetExhausted,
}

impl Macros {
    /// Defines a macro. A definition from a file does not replace one given
    /// with `-D`, so the command line takes precedence.
    pub(crate) fn define(
        &mut self,
        name: &str,
        value: &str,
        location: Option<Location>,
        persistent: bool,
    ) {
        if let Some(&slot) = self.index.get(name) {
            let entry = &mut self.entries[slot];
            if entry.persistent && !persistent {
                return;
            }
            entry.value = value.to_owned();
            entry.persistent = persistent;
            entry.used = false;
            entry.location = location;
            return;
        }
        self.index.insert(name.to_owned(), self.entries.len());
        self.entries.push(Macro {
            name: name.to_owned(),
            value: value.to_owned(),
            persistent,
            used: false,
            location,
        });
    }

    fn expand(&mut self, name: &str) -> Result<&str, ExpandError> {
        let slot = *self.index.get(name).ok_or(ExpandError::Undefined)?;
        let entry = &mut self.entries[slot];
        entry.used = true;
        let total = self.expanded_bytes.saturating_add(entry.value.len());
        if total > MAX_EXPANSION_BYTES {
            return Err(ExpandError::BudgetExhausted);
        }
        self.expanded_bytes = total;
        Ok(&entry.value)
    }

    /// Returns the macros in definition order.
    pub(crate) fn entries(&self) -> &[Macro] {
        &self.entries
    }
}

/// Characters that end a number, so that `512` is a number but `512M` a word.
fn ends_number(byte: u8) -> bool {
    byte.is_ascii_whitespace() || matches!(byte, b')' | b',' | b'/' | b'}' | b'=')
}

pub(crate) fn starts_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b':' | b'_' | b'/')
}

pub(crate) fn continues_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || (byte.is_ascii_punctuation()
            && !matches!(byte, b'(' | b')' | b'{' | b'}' | b'!' | b'=' | b'#' | b','))
}

pub(crate) struct Lexer<'a> {
    input: &'a [u8],
    position: usize,
    /// Line of the next byte read from `input`.
    line: u32,
    /// Bytes to read before `input`, last first: read-ahead that was put
    /// back, and macro values.
    pushback: Vec<Char>,
    /// Errors found since the parser last collected them, with their lines.
    pub(crate) errors: Vec<(u32, String)>,
}

impl<'a> Lexer<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Lexer {
            input,
            position: 0,
            line: 1,
            pushback: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Reads one byte without backslash processing. A CR directly before a
    /// LF is dropped, so CRLF files read like LF files.
    fn read_raw(&mut self) -> Option<Char> {
        if let Some(char) = self.pushback.pop() {
            return Some(char);
        }
        let mut byte = *self.input.get(self.position)?;
        self.position += 1;
        if byte == b'\r' && self.input.get(self.position) == Some(&b'\n') {
            byte = b'\n';
            self.position += 1;
        }
        let line = self.line;
        if byte == b'\n' {
            self.line = self.line.saturating_add(1);
        }
        Some(Char {
            byte,
            line,
            expanded: false,
            reread: false,
        })
    }

    /// Reads one byte outside quotes: backslash-newline joins lines, and a
    /// backslash before any other byte stands for that byte.
    fn read(&mut self) -> Option<Char> {
        loop {
            let char = self.read_raw()?;
            if char.byte != b'\\' || char.reread {
                return Some(char);
            }
            let next = self.read_raw()?;
            if next.byte != b'\n' {
                return Some(next);
            }
        }
    }

    fn unread(&mut self, char: Char) {
        self.pushback.push(Char {
            reread: true,
            ..char
        });
    }

    fn error(&mut self, line: u32, message: String) -> TokenKind {
        self.errors.push((line, message));
        TokenKind::Invalid
    }

    /// Skips the rest of the line after a lexical error, leaving the newline
    /// for the parser.
    fn skip_to_end_of_line(&mut self) {
        while let Some(char) = self.read() {
            if char.byte == b'\n' {
                self.unread(char);
                return;
            }
        }
    }

    /// Returns the next token. Lexical errors are queued in `errors` and
    /// returned as [`TokenKind::Invalid`].
    pub(crate) fn next_token(&mut self, macros: &mut Macros) -> Token {
        loop {
            let mut char = match self.skip_blanks() {
                Some(char) => char,
                None => return self.eof(),
            };
            if char.byte == b'#' {
                char = match self.skip_comment() {
                    Some(char) => char,
                    None => return self.eof(),
                };
            }
            if char.byte == b'$' && !char.expanded {
                match self.expand_macro(char.line, macros) {
                    Ok(()) => continue,
                    Err(kind) => {
                        return Token {
                            kind,
                            line: char.line,
                        };
                    }
                }
            }
            let kind = self.lex_token(char);
            return Token {
                kind,
                line: char.line,
            };
        }
    }

    fn eof(&self) -> Token {
        Token {
            kind: TokenKind::Eof,
            line: self.line,
        }
    }

    fn skip_blanks(&mut self) -> Option<Char> {
        loop {
            let char = self.read()?;
            if char.byte != b' ' && char.byte != b'\t' {
                return Some(char);
            }
        }
    }

    /// Skips a comment and returns the newline that ends it. A comment line
    /// ending in a backslash continues on the next line, as in OpenBSD.
    fn skip_comment(&mut self) -> Option<Char> {
        loop {
            let char = self.read()?;
            if char.byte == b'\n' {
                return Some(char);
            }
        }
    }

    /// Replaces `$name` with the macro's value, which is then lexed as if it
    /// had been written in place. A `$` inside a value is not expanded again,
    /// so expansion cannot recurse.
    fn expand_macro(&mut self, line: u32, macros: &mut Macros) -> Result<(), TokenKind> {
        let mut name = String::new();
        while let Some(char) = self.read() {
            if !(char.byte.is_ascii_alphanumeric() || char.byte == b'_') {
                self.unread(char);
                break;
            }
            if name.len() >= MAX_TOKEN_BYTES {
                self.skip_to_end_of_line();
                return Err(self.error(line, "macro name too long".to_owned()));
            }
            name.push(char::from(char.byte));
        }
        let value = match macros.expand(&name) {
            Ok(value) => value,
            Err(ExpandError::Undefined) => {
                self.skip_to_end_of_line();
                return Err(self.error(line, format!("macro '{name}' not defined")));
            }
            Err(ExpandError::BudgetExhausted) => {
                self.skip_to_end_of_line();
                let message = format!(
                    "macro '{name}' not expanded: macro expansion exceeds {MAX_EXPANSION_BYTES} bytes"
                );
                return Err(self.error(line, message));
            }
        };
        for &byte in value.as_bytes().iter().rev() {
            self.pushback.push(Char {
                byte,
                line,
                expanded: true,
                reread: false,
            });
        }
        Ok(())
    }

    fn lex_token(&mut self, char: Char) -> TokenKind {
        match char.byte {
            b'"' | b'\'' => self.lex_quoted(char),
            b'-' | b'0'..=b'9' => self.lex_number_or_word(char),
            byte if starts_word(byte) => self.lex_word(char),
            b'\n' => TokenKind::Newline,
            b'{' => TokenKind::OpenBrace,
            b'}' => TokenKind::CloseBrace,
            b'=' => TokenKind::Equals,
            b',' => TokenKind::Comma,
            0 => self.error(char.line, "NUL byte in the configuration".to_owned()),
            byte if byte.is_ascii() => TokenKind::Other(char::from(byte)),
            _ => self.lex_non_ascii(char),
        }
    }

    fn lex_quoted(&mut self, open: Char) -> TokenKind {
        let quote = open.byte;
        let mut text = Vec::new();
        let mut problem: Option<(u32, &str)> = None;
        loop {
            let Some(mut char) = self.read_raw() else {
                let message = "reached end of file while parsing quoted string".to_owned();
                return self.error(open.line, message);
            };
            match char.byte {
                b'\n' => continue,
                b'\\' => {
                    let Some(next) = self.read_raw() else {
                        let message = "reached end of file while parsing quoted string".to_owned();
                        return self.error(open.line, message);
                    };
                    if next.byte == quote || next.byte == b' ' || next.byte == b'\t' {
                        char = next;
                    } else if next.byte == b'\n' {
                        continue;
                    } else {
                        self.unread(next);
                    }
                }
                byte if byte == quote => break,
                0 => {
                    problem.get_or_insert((char.line, "NUL byte in quoted string"));
                    continue;
                }
                _ => {}
            }
            if text.len() >= MAX_TOKEN_BYTES {
                problem.get_or_insert((open.line, "string too long"));
                continue;
            }
            text.push(char.byte);
        }
        if let Some((line, message)) = problem {
            return self.error(line, message.to_owned());
        }
        match String::from_utf8(text) {
            Ok(text) => TokenKind::Quoted(text),
            Err(_) => self.error(open.line, "invalid UTF-8 in quoted string".to_owned()),
        }
    }

    /// Lexes `-?[0-9]+` as a number when the next byte may end a number;
    /// otherwise the bytes are read again as a word (`512M`, `00:11:...`).
    fn lex_number_or_word(&mut self, first: Char) -> TokenKind {
        let mut chars = vec![first];
        let mut terminator = None;
        while let Some(char) = self.read() {
            if !char.byte.is_ascii_digit() {
                terminator = Some(char);
                break;
            }
            if chars.len() >= MAX_TOKEN_BYTES {
                self.skip_to_end_of_line();
                return self.error(first.line, "string too long".to_owned());
            }
            chars.push(char);
        }
        if let Some(char) = terminator {
            self.unread(char);
        }
        let only_sign = chars.len() == 1 && first.byte == b'-';
        let ends = terminator.is_none_or(|char| ends_number(char.byte));
        if ends && !only_sign {
            let text: String = chars.iter().map(|char| char::from(char.byte)).collect();
            return match text.parse::<i64>() {
                Ok(number) => TokenKind::Number(number),
                Err(_) => {
                    let reason = if first.byte == b'-' {
                        "too small"
                    } else {
                        "too large"
                    };
                    self.skip_to_end_of_line();
                    self.error(first.line, format!("\"{text}\" invalid number: {reason}"))
                }
            };
        }
        for &char in chars[1..].iter().rev() {
            self.unread(char);
        }
        if first.byte == b'-' {
            return TokenKind::Other('-');
        }
        self.lex_word(first)
    }

    fn lex_word(&mut self, first: Char) -> TokenKind {
        let mut text = String::new();
        text.push(char::from(first.byte));
        while let Some(char) = self.read() {
            if !continues_word(char.byte) {
                self.unread(char);
                break;
            }
            if text.len() >= MAX_TOKEN_BYTES {
                self.skip_to_end_of_line();
                return self.error(first.line, "string too long".to_owned());
            }
            text.push(char::from(char.byte));
        }
        match Keyword::from_word(&text) {
            Some(keyword) => TokenKind::Keyword(keyword),
            None => TokenKind::Word(text),
        }
    }

    /// Decodes one UTF-8 character outside quotes, which the grammar never
    /// accepts, so that the error can show it.
    fn lex_non_ascii(&mut self, first: Char) -> TokenKind {
        let length = match first.byte {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        let mut bytes = vec![first.byte];
        while length > 0 && bytes.len() < length {
            match self.read_raw() {
                Some(char) if (0x80..0xc0).contains(&char.byte) => bytes.push(char.byte),
                Some(char) => {
                    self.unread(char);
                    break;
                }
                None => break,
            }
        }
        match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.chars().next())
        {
            Some(decoded) => TokenKind::Other(decoded),
            None => self.error(first.line, "invalid UTF-8 in the configuration".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(input: &str) -> Vec<TokenKind> {
        lex_with(input, &mut Macros::default())
    }

    fn lex_with(input: &str, macros: &mut Macros) -> Vec<TokenKind> {
        let mut lexer = Lexer::new(input.as_bytes());
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next_token(macros);
            if token.kind == TokenKind::Eof {
                return tokens;
            }
            tokens.push(token.kind);
        }
    }

    fn word(text: &str) -> TokenKind {
        TokenKind::Word(text.to_owned())
    }

    fn quoted(text: &str) -> TokenKind {
        TokenKind::Quoted(text.to_owned())
    }

    #[test]
    fn number_needs_a_terminator() {
        assert_eq!(lex("512 512M"), vec![TokenKind::Number(512), word("512M")]);
        assert_eq!(lex("-5x"), vec![TokenKind::Other('-'), word("5x")]);
        assert_eq!(lex("10/8"), vec![TokenKind::Number(10), word("/8")]);
        assert_eq!(lex("00:0a"), vec![word("00:0a")]);
    }

    #[test]
    fn quoted_escapes_follow_openbsd() {
        assert_eq!(lex(r#""a\"b""#), vec![quoted("a\"b")]);
        assert_eq!(lex(r#""a\xb""#), vec![quoted("a\\xb")]);
        assert_eq!(lex("\"a\\ b\""), vec![quoted("a b")]);
        assert_eq!(lex("\"a\nb\""), vec![quoted("ab")]);
        assert_eq!(lex("'x\"y'"), vec![quoted("x\"y")]);
    }

    #[test]
    fn comment_ends_word_and_continues_with_backslash() {
        assert_eq!(
            lex("vm#x\nup"),
            vec![
                TokenKind::Keyword(Keyword::Vm),
                TokenKind::Newline,
                TokenKind::Keyword(Keyword::Up)
            ]
        );
        assert_eq!(lex("# a \\\nup\n"), vec![TokenKind::Newline]);
    }

    #[test]
    fn crlf_reads_as_lf() {
        assert_eq!(
            lex("up\r\ndown\r\n"),
            vec![
                TokenKind::Keyword(Keyword::Up),
                TokenKind::Newline,
                TokenKind::Keyword(Keyword::Down),
                TokenKind::Newline
            ]
        );
    }

    #[test]
    fn macro_expands_into_the_word_it_starts() {
        let mut macros = Macros::default();
        macros.define("dir", "/var/vm", None, false);
        assert_eq!(
            lex_with("$dir/a.img", &mut macros),
            vec![word("/var/vm/a.img")]
        );
        assert_eq!(lex_with("\"$dir\"", &mut macros), vec![quoted("$dir")]);
        assert_eq!(lex_with("a$dir", &mut macros), vec![word("a$dir")]);
    }

    #[test]
    fn macro_value_is_not_expanded_again() {
        let mut macros = Macros::default();
        macros.define("a", "$a", None, false);
        assert_eq!(
            lex_with("$a", &mut macros),
            vec![TokenKind::Other('$'), TokenKind::Word("a".to_owned())]
        );
    }

    #[test]
    fn command_line_macro_wins_over_file() {
        let mut macros = Macros::default();
        macros.define("m", "cli", None, true);
        macros.define("m", "file", None, false);
        assert_eq!(lex_with("$m", &mut macros), vec![word("cli")]);
    }

    #[test]
    fn nul_in_quotes_is_an_error() {
        let mut lexer = Lexer::new(b"\"a\0b\" up");
        let token = lexer.next_token(&mut Macros::default());
        assert_eq!(token.kind, TokenKind::Invalid);
        assert_eq!(
            lexer.errors,
            vec![(1, "NUL byte in quoted string".to_owned())]
        );
    }

    #[test]
    fn number_out_of_range_is_an_error() {
        let mut lexer = Lexer::new(b"99999999999999999999\n");
        let token = lexer.next_token(&mut Macros::default());
        assert_eq!(token.kind, TokenKind::Invalid);
        assert_eq!(
            lexer.errors,
            vec![(
                1,
                "\"99999999999999999999\" invalid number: too large".to_owned()
            )]
        );
    }
}
