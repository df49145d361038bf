//! The vm.conf parser: a recursive-descent reading of OpenBSD's grammar
//! (parse.y) over the lexer's tokens. It owns the include stack, the macro
//! table and the diagnostics, reports every error with its file and line, and
//! recovers at the end of the line or option so that one load reports all
//! errors. Files are read only here and through `host`.

mod globals;
mod switch;
mod vm;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, Location, Owner, Principal};
use crate::diagnostic::{Diagnostic, Severity};
use crate::host::{self, HostFacts};
use crate::lexer::{Keyword, Lexer, MAX_TOKEN_BYTES, Macros, Token, TokenKind};
use crate::suggest;

/// Deepest nesting of `include` files.
pub(crate) const MAX_INCLUDE_DEPTH: usize = 16;

/// Most files read in one load, counting every include.
pub(crate) const MAX_FILES: usize = 1024;

/// Largest configuration file read, in bytes.
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Errors after which the parser stops reading.
pub(crate) const MAX_ERRORS: usize = 1000;

/// The name of interface blocks in messages.
pub(crate) const INTERFACE_BLOCK: &str = "interface block";

/// The recovery a failed parse step asks of its caller. The error has
/// already been recorded either way.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Skip the rest of the line (or option) and continue.
    Skip,
    /// The next token starts a new top-level statement: a block was left
    /// unclosed. Continue from there without skipping.
    Resync,
}

pub(crate) type Parsed<T> = Result<T, Stop>;

/// One file being parsed: its lexer and a token of lookahead.
pub(crate) struct Cursor<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
    file: Arc<Path>,
}

/// Everything one load accumulates across the files it reads.
pub(crate) struct Parser {
    pub(crate) macros: Macros,
    pub(crate) config: Config,
    diagnostics: Vec<Diagnostic>,
    error_count: usize,
    host: HostFacts,
    /// The files being parsed, outermost first: canonical path for loop
    /// detection and the name used in messages.
    include_stack: Vec<(PathBuf, Arc<Path>)>,
    files_read: usize,
    /// Prefix for errors inside a block, like `vm "web1"`.
    context: Option<String>,
    vm_index: HashMap<String, usize>,
    switch_index: HashMap<String, usize>,
    /// Owner strings already resolved in this load: each lookup in the
    /// user database can read the whole passwd or group file.
    owner_cache: HashMap<String, Result<Owner, String>>,
    /// `boot` and `initrd` paths already resolved in this load, as many VMs
    /// usually share one kernel.
    image_cache: HashMap<String, Result<PathBuf, String>>,
    pub(crate) directories: host::DirectoryCache,
}

/// Keywords that only start top-level statements. Met inside a block, they
/// mean the block's closing brace is missing.
/// `switch` is also an option of interface blocks, so there it does not count.
fn starts_top_level_statement(kind: &TokenKind, block: &str) -> bool {
    if *kind == TokenKind::Keyword(Keyword::Switch) {
        return block != INTERFACE_BLOCK;
    }
    matches!(
        kind,
        TokenKind::Keyword(
            Keyword::Vm | Keyword::Include | Keyword::Socket | Keyword::Staggered | Keyword::Agentx
        )
    )
}

/// Describes a token for a syntax error message.
pub(crate) fn describe(kind: &TokenKind) -> String {
    match kind {
        TokenKind::Keyword(keyword) => format!("\"{}\"", keyword.as_str()),
        TokenKind::Word(text) | TokenKind::Quoted(text) => format!("\"{text}\""),
        TokenKind::Number(number) => format!("number {number}"),
        TokenKind::OpenBrace => "\"{\"".to_owned(),
        TokenKind::CloseBrace => "\"}\"".to_owned(),
        TokenKind::Equals => "\"=\"".to_owned(),
        TokenKind::Comma => "\",\"".to_owned(),
        TokenKind::Newline => "end of line".to_owned(),
        TokenKind::Other(char) => format!("{char:?}"),
        TokenKind::Invalid => "an invalid token".to_owned(),
        TokenKind::Eof => "end of file".to_owned(),
    }
}

/// Formats "unknown X "word"" with a suggestion, or the list of choices.
fn unknown_word_message(subject: &str, word: &str, choices: &[&str]) -> String {
    match suggest::closest(word, choices.iter().copied()) {
        Some(best) => format!("unknown {subject} \"{word}\", did you mean \"{best}\"?"),
        None => format!(
            "unknown {subject} \"{word}\": expected one of {}",
            choices.join(", ")
        ),
    }
}

/// Returns the directory-relative name of an included file.
fn include_path(including: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_path_buf();
    }
    match including.parent() {
        Some(directory) => directory.join(name),
        None => name.to_path_buf(),
    }
}

/// Reads a whole configuration file, refusing anything but a regular file
/// and files over [`MAX_FILE_BYTES`]. The open does not block, so a FIFO is
/// refused instead of waiting for a writer.
pub(crate) fn read_config_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|error| host::describe_io_error(&error))?;
    let metadata = file
        .metadata()
        .map_err(|error| host::describe_io_error(&error))?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    let mut contents = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|error| host::describe_io_error(&error))?;
    if contents.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("file is larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(contents)
}

impl Parser {
    pub(crate) fn new(host: HostFacts) -> Self {
        Parser {
            macros: Macros::default(),
            config: Config::default(),
            diagnostics: Vec::new(),
            error_count: 0,
            host,
            include_stack: Vec::new(),
            files_read: 0,
            context: None,
            vm_index: HashMap::new(),
            switch_index: HashMap::new(),
            owner_cache: HashMap::new(),
            image_cache: HashMap::new(),
            directories: host::DirectoryCache::default(),
        }
    }

    pub(crate) fn error_count(&self) -> usize {
        self.error_count
    }

    /// Returns the configuration and all diagnostics, in the order found.
    pub(crate) fn finish(self) -> (Config, Vec<Diagnostic>) {
        (self.config, self.diagnostics)
    }

    fn stopped(&self) -> bool {
        self.error_count >= MAX_ERRORS
    }

    /// Records an error without a location (command-line problems).
    pub(crate) fn global_error(&mut self, message: String) {
        self.push(Diagnostic::error(None, message));
    }

    pub(crate) fn global_warning(&mut self, message: String) {
        self.push(Diagnostic::warning(None, message));
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        if self.stopped() {
            return;
        }
        if diagnostic.severity == Severity::Error {
            self.error_count += 1;
            if self.stopped() {
                let message = format!("too many errors ({MAX_ERRORS}), stopping");
                self.diagnostics
                    .push(Diagnostic::error(diagnostic.location.clone(), message));
                return;
            }
        }
        self.diagnostics.push(diagnostic);
    }

    fn with_context(&self, message: String) -> String {
        match &self.context {
            Some(context) => format!("{context}: {message}"),
            None => message,
        }
    }

    /// Records an error at `line` of the cursor's file and returns the
    /// value that makes the caller skip the rest of the option.
    pub(crate) fn error(&mut self, cursor: &Cursor<'_>, line: u32, message: String) -> Stop {
        let location = Location {
            file: cursor.file.clone(),
            line,
        };
        let message = self.with_context(message);
        self.push(Diagnostic::error(Some(location), message));
        Stop::Skip
    }

    pub(crate) fn warning(&mut self, location: Location, message: String) {
        let message = self.with_context(message);
        self.push(Diagnostic::warning(Some(location), message));
    }

    pub(crate) fn location(&self, cursor: &Cursor<'_>, line: u32) -> Location {
        Location {
            file: cursor.file.clone(),
            line,
        }
    }

    // ---- tokens ----

    pub(crate) fn peek<'c>(&mut self, cursor: &'c mut Cursor<'_>) -> &'c Token {
        if cursor.peeked.is_none() {
            let token = cursor.lexer.next_token(&mut self.macros);
            let errors = std::mem::take(&mut cursor.lexer.errors);
            for (line, message) in errors {
                self.error(cursor, line, message);
            }
            cursor.peeked = Some(token);
        }
        cursor
            .peeked
            .as_ref()
            .expect("the lookahead token was filled above")
    }

    pub(crate) fn next(&mut self, cursor: &mut Cursor<'_>) -> Token {
        self.peek(cursor);
        cursor
            .peeked
            .take()
            .expect("peek fills the lookahead token")
    }

    pub(crate) fn peek_kind(&mut self, cursor: &mut Cursor<'_>) -> TokenKind {
        self.peek(cursor).kind.clone()
    }

    /// Consumes the next token if it is `keyword`.
    pub(crate) fn accept_keyword(&mut self, cursor: &mut Cursor<'_>, keyword: Keyword) -> bool {
        if self.peek(cursor).kind == TokenKind::Keyword(keyword) {
            self.next(cursor);
            return true;
        }
        false
    }

    /// Consumes `keyword` or reports what was found instead.
    pub(crate) fn expect_keyword(
        &mut self,
        cursor: &mut Cursor<'_>,
        keyword: Keyword,
        after: &str,
    ) -> Parsed<()> {
        let token = self.next(cursor);
        match token.kind {
            TokenKind::Keyword(found) if found == keyword => Ok(()),
            TokenKind::Invalid => Err(Stop::Skip),
            other => {
                let message = format!(
                    "syntax error: expected \"{}\" after {after}, found {}",
                    keyword.as_str(),
                    describe(&other)
                );
                Err(self.error(cursor, token.line, message))
            }
        }
    }

    /// Reports `keyword = value`: keywords cannot name macros.
    pub(crate) fn reject_keyword_macro(
        &mut self,
        cursor: &mut Cursor<'_>,
        keyword: Keyword,
        line: u32,
    ) -> Parsed<()> {
        if self.peek(cursor).kind != TokenKind::Equals {
            return Ok(());
        }
        let message = format!(
            "macro name \"{}\" is a keyword: choose another name",
            keyword.as_str()
        );
        Err(self.error(cursor, line, message))
    }

    /// Consumes the `{` that opens a block. A `{` on the next line is
    /// reported, since OpenBSD requires it on the declaration line, but the
    /// block is still read so that errors inside it are found.
    pub(crate) fn expect_open_brace(
        &mut self,
        cursor: &mut Cursor<'_>,
        declaration: &str,
    ) -> Parsed<()> {
        let token = self.next(cursor);
        if token.kind == TokenKind::OpenBrace {
            return Ok(());
        }
        if token.kind == TokenKind::Newline {
            self.skip_newlines(cursor);
            if self.peek(cursor).kind == TokenKind::OpenBrace {
                let line = self.next(cursor).line;
                let message = format!("syntax error: \"{{\" must be on the {declaration} line");
                self.error(cursor, line, message);
                return Ok(());
            }
        }
        Err(self.syntax_error(cursor, token, &format!("\"{{\" on the {declaration} line")))
    }

    fn syntax_error(&mut self, cursor: &Cursor<'_>, token: Token, expected: &str) -> Stop {
        let message = match token.kind {
            TokenKind::Invalid => return Stop::Skip,
            TokenKind::Number(number) => format!(
                "syntax error: expected {expected}, found number {number}: quote it as \"{number}\""
            ),
            other => format!(
                "syntax error: expected {expected}, found {}",
                describe(&other)
            ),
        };
        self.error(cursor, token.line, message)
    }

    /// Reports a token that is not one of a block's options: a keyword
    /// or word gets the closest of `choices` suggested, anything else is a
    /// syntax error expecting `expected`.
    fn unknown_option(
        &mut self,
        cursor: &Cursor<'_>,
        token: Token,
        subject: &str,
        choices: &[&str],
        expected: &str,
    ) -> Stop {
        let message = match &token.kind {
            TokenKind::Keyword(keyword) => unknown_word_message(subject, keyword.as_str(), choices),
            TokenKind::Word(word) => unknown_word_message(subject, word, choices),
            _ => return self.syntax_error(cursor, token, expected),
        };
        self.error(cursor, token.line, message)
    }

    /// Parses the grammar's `string`: one or more quoted strings or words,
    /// concatenated (`disk $dir "/a.img"`).
    pub(crate) fn parse_string(
        &mut self,
        cursor: &mut Cursor<'_>,
        expected: &str,
    ) -> Parsed<String> {
        let first = self.next(cursor);
        let line = first.line;
        let mut text = match first.kind {
            TokenKind::Word(text) | TokenKind::Quoted(text) => text,
            _ => return Err(self.syntax_error(cursor, first, expected)),
        };
        while let TokenKind::Word(_) | TokenKind::Quoted(_) = self.peek(cursor).kind {
            let (TokenKind::Word(more) | TokenKind::Quoted(more)) = self.next(cursor).kind else {
                unreachable!("the peeked token is a string");
            };
            if text.len() + more.len() > MAX_TOKEN_BYTES {
                return Err(self.error(cursor, line, "string too long".to_owned()));
            }
            text.push_str(&more);
        }
        Ok(text)
    }

    /// Parses the grammar's `STRING`: exactly one quoted string or word.
    pub(crate) fn parse_single_string(
        &mut self,
        cursor: &mut Cursor<'_>,
        expected: &str,
    ) -> Parsed<String> {
        let token = self.next(cursor);
        match token.kind {
            TokenKind::Word(text) | TokenKind::Quoted(text) => Ok(text),
            _ => Err(self.syntax_error(cursor, token, expected)),
        }
    }

    pub(crate) fn parse_number(
        &mut self,
        cursor: &mut Cursor<'_>,
        expected: &str,
    ) -> Parsed<(i64, u32)> {
        let token = self.next(cursor);
        match token.kind {
            TokenKind::Number(number) => Ok((number, token.line)),
            TokenKind::Invalid => Err(Stop::Skip),
            other => {
                let message = format!(
                    "syntax error: expected {expected}, found {}",
                    describe(&other)
                );
                Err(self.error(cursor, token.line, message))
            }
        }
    }

    /// Skips the rest of a failed statement: to the end of the line,
    /// consuming the newline, and over a block that opens on the line, so
    /// that its options are not read as statements. A line inside the
    /// skipped block that starts a top-level statement ends the skip, in
    /// case the block's closing brace is missing.
    fn skip_line(&mut self, cursor: &mut Cursor<'_>) {
        let mut depth = 0usize;
        loop {
            let token = self.next(cursor);
            match token.kind {
                TokenKind::Newline if depth == 0 => return,
                TokenKind::Newline => {
                    self.skip_newlines(cursor);
                    if starts_top_level_statement(&self.peek(cursor).kind, "") {
                        return;
                    }
                }
                TokenKind::OpenBrace => depth += 1,
                TokenKind::CloseBrace => depth = depth.saturating_sub(1),
                TokenKind::Eof => {
                    cursor.peeked = Some(token);
                    return;
                }
                _ => {}
            }
        }
    }

    /// Skips to the `}` that closes the current brace list, consuming it.
    pub(crate) fn skip_past_close_brace(&mut self, cursor: &mut Cursor<'_>) {
        self.skip_until(cursor, false);
        if self.peek(cursor).kind == TokenKind::CloseBrace {
            self.next(cursor);
        }
    }

    /// Skips the rest of a failed option inside a block: up to the end of
    /// the line or the block's closing brace, whichever comes first, over
    /// any nested braces. Neither is consumed.
    fn skip_option(&mut self, cursor: &mut Cursor<'_>) {
        self.skip_until(cursor, true);
    }

    /// Skips tokens, over nested braces, up to the `}` that closes the
    /// current brace list, or with `stop_at_newline` up to the end of the
    /// line if that comes first. Neither is consumed.
    fn skip_until(&mut self, cursor: &mut Cursor<'_>, stop_at_newline: bool) {
        let mut depth = 0usize;
        loop {
            match self.peek(cursor).kind {
                TokenKind::Eof => return,
                TokenKind::Newline if stop_at_newline => return,
                TokenKind::CloseBrace if depth == 0 => return,
                TokenKind::CloseBrace => depth -= 1,
                TokenKind::OpenBrace => depth += 1,
                _ => {}
            }
            self.next(cursor);
        }
    }

    pub(crate) fn skip_newlines(&mut self, cursor: &mut Cursor<'_>) {
        while self.peek(cursor).kind == TokenKind::Newline {
            self.next(cursor);
        }
    }

    /// Parses the options of a block up to and including its closing brace;
    /// the opening brace has been consumed. Options are separated by
    /// newlines, and the last one may share its line with the brace.
    pub(crate) fn parse_block<S>(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut S,
        block: &str,
        open_line: u32,
        mut option: impl FnMut(&mut Self, &mut Cursor<'_>, &mut S) -> Parsed<()>,
    ) -> Parsed<()> {
        self.skip_newlines(cursor);
        loop {
            let token = self.peek(cursor);
            let line = token.line;
            match &token.kind {
                TokenKind::CloseBrace => {
                    self.next(cursor);
                    return Ok(());
                }
                TokenKind::Eof => {
                    let message = format!(
                        "missing \"}}\": the {block} opened at line {open_line} is not closed at the end of the file"
                    );
                    self.error(cursor, line, message);
                    return Err(Stop::Resync);
                }
                TokenKind::Newline => {
                    self.next(cursor);
                    continue;
                }
                kind if starts_top_level_statement(kind, block) => {
                    let message =
                        format!("missing \"}}\" to close the {block} opened at line {open_line}");
                    self.error(cursor, line, message);
                    return Err(Stop::Resync);
                }
                _ => {}
            }
            if self.stopped() {
                return Err(Stop::Resync);
            }
            match option(self, cursor, state) {
                Ok(()) => self.end_option(cursor),
                Err(Stop::Skip) => self.skip_option(cursor),
                Err(Stop::Resync) => return Err(Stop::Resync),
            }
        }
    }

    /// Checks that an option is followed by a newline or the closing brace.
    fn end_option(&mut self, cursor: &mut Cursor<'_>) {
        let token = self.peek(cursor).clone();
        match token.kind {
            TokenKind::Newline | TokenKind::CloseBrace | TokenKind::Eof => {}
            TokenKind::Invalid => self.skip_option(cursor),
            other => {
                let message = format!(
                    "syntax error: unexpected {} after the option: put each option on its own line",
                    describe(&other)
                );
                self.error(cursor, token.line, message);
                self.skip_option(cursor);
            }
        }
    }

    // ---- files and statements ----

    /// Parses one file's contents. `canonical` identifies the file for
    /// include-loop detection.
    pub(crate) fn parse_contents(&mut self, name: Arc<Path>, canonical: PathBuf, contents: &[u8]) {
        self.files_read += 1;
        self.include_stack.push((canonical, name.clone()));
        let mut cursor = Cursor {
            lexer: Lexer::new(contents),
            peeked: None,
            file: name,
        };
        self.parse_statements(&mut cursor);
        self.include_stack.pop();
    }

    fn parse_statements(&mut self, cursor: &mut Cursor<'_>) {
        loop {
            if self.stopped() {
                return;
            }
            match self.peek(cursor).kind {
                TokenKind::Eof => return,
                TokenKind::Newline => {
                    self.next(cursor);
                    continue;
                }
                _ => {}
            }
            self.context = None;
            let result = self.parse_statement(cursor);
            self.context = None;
            match result {
                Ok(()) => self.end_statement(cursor),
                Err(Stop::Skip) => self.skip_line(cursor),
                Err(Stop::Resync) => {}
            }
        }
    }

    fn end_statement(&mut self, cursor: &mut Cursor<'_>) {
        let token = self.next(cursor);
        match token.kind {
            TokenKind::Newline => {}
            TokenKind::Eof => cursor.peeked = Some(token),
            TokenKind::Invalid => self.skip_line(cursor),
            other => {
                let message = format!(
                    "syntax error: unexpected {} at the end of the statement",
                    describe(&other)
                );
                self.error(cursor, token.line, message);
                self.skip_line(cursor);
            }
        }
    }

    fn parse_statement(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        match self.peek_kind(cursor) {
            TokenKind::Keyword(Keyword::Include) => self.parse_include(cursor),
            TokenKind::Keyword(Keyword::Local) => self.parse_local(cursor),
            TokenKind::Keyword(Keyword::Socket) => self.parse_socket_owner(cursor),
            TokenKind::Keyword(Keyword::Staggered) => self.parse_staggered_start(cursor),
            TokenKind::Keyword(Keyword::Agentx) => self.parse_agentx(cursor),
            TokenKind::Keyword(Keyword::Switch) => self.parse_switch(cursor),
            TokenKind::Keyword(Keyword::Vm) => self.parse_vm(cursor),
            TokenKind::Word(_) | TokenKind::Quoted(_) => self.parse_macro_definition(cursor),
            TokenKind::Keyword(keyword) => self.misplaced_keyword(cursor, keyword),
            _ => {
                let token = self.next(cursor);
                Err(self.syntax_error(cursor, token, "a statement"))
            }
        }
    }

    fn misplaced_keyword(&mut self, cursor: &mut Cursor<'_>, keyword: Keyword) -> Parsed<()> {
        let token = self.next(cursor);
        let message = if self.peek(cursor).kind == TokenKind::Equals {
            format!(
                "macro name \"{}\" is a keyword: choose another name",
                keyword.as_str()
            )
        } else if vm::VM_OPTIONS.contains(&keyword.as_str()) {
            format!(
                "\"{}\" is a vm option: put it inside a vm block",
                keyword.as_str()
            )
        } else if switch::SWITCH_OPTIONS.contains(&keyword.as_str()) {
            format!(
                "\"{}\" is a switch option: put it inside a switch block",
                keyword.as_str()
            )
        } else {
            format!(
                "syntax error: unexpected {} at the start of a statement",
                describe(&token.kind)
            )
        };
        Err(self.error(cursor, token.line, message))
    }

    fn parse_include(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let line = self.next(cursor).line;
        self.reject_keyword_macro(cursor, Keyword::Include, line)?;
        let name = self.parse_string(cursor, "a file name after include")?;

        // The included file is read before the end of this line is checked,
        // so the line must end here.
        let token = self.peek(cursor).clone();
        if !matches!(token.kind, TokenKind::Newline | TokenKind::Eof) {
            let message = format!(
                "syntax error: unexpected {} after the include file name",
                describe(&token.kind)
            );
            return Err(self.error(cursor, token.line, message));
        }
        self.include_file(cursor, line, &name);
        Ok(())
    }

    fn include_file(&mut self, cursor: &Cursor<'_>, line: u32, name: &str) {
        let path = include_path(&cursor.file, name);
        if self.include_stack.len() >= MAX_INCLUDE_DEPTH {
            let message = format!(
                "failed to include file {name}: include depth exceeds {MAX_INCLUDE_DEPTH}: {}",
                self.include_chain(&path)
            );
            self.error(cursor, line, message);
            return;
        }
        if self.files_read >= MAX_FILES {
            let message =
                format!("failed to include file {name}: more than {MAX_FILES} files included");
            self.error(cursor, line, message);
            return;
        }
        let canonical = match std::fs::canonicalize(&path) {
            Ok(canonical) => canonical,
            Err(error) => {
                let message = format!(
                    "failed to include file {name}: {}",
                    host::describe_io_error(&error)
                );
                self.error(cursor, line, message);
                return;
            }
        };
        if self
            .include_stack
            .iter()
            .any(|(open, _)| *open == canonical)
        {
            let message = format!("include loop: {}", self.include_chain(&path));
            self.error(cursor, line, message);
            return;
        }
        match read_config_file(&canonical) {
            Ok(contents) => self.parse_contents(Arc::from(path), canonical, &contents),
            Err(reason) => {
                self.error(
                    cursor,
                    line,
                    format!("failed to include file {name}: {reason}"),
                );
            }
        }
    }

    /// Formats the open files and `next` as `a.conf -> b.conf -> next`.
    fn include_chain(&self, next: &Path) -> String {
        let mut names: Vec<String> = self
            .include_stack
            .iter()
            .map(|(_, name)| name.display().to_string())
            .collect();
        names.push(next.display().to_string());
        names.join(" -> ")
    }

    /// Parses `name = value`, or reports an unknown keyword when no `=`
    /// follows the word.
    fn parse_macro_definition(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let token = self.next(cursor);
        let line = token.line;
        let (TokenKind::Word(name) | TokenKind::Quoted(name)) = token.kind else {
            unreachable!("parse_statement only calls this for strings");
        };
        if self.peek(cursor).kind != TokenKind::Equals {
            return Err(self.unknown_statement(cursor, line, &name));
        }
        self.next(cursor);
        let value_token = self.next(cursor);
        let value = match value_token.kind {
            TokenKind::Word(value) | TokenKind::Quoted(value) => value,
            TokenKind::Number(number) => {
                let message =
                    format!("macro {name}: value {number} must be quoted: {name} = \"{number}\"");
                return Err(self.error(cursor, value_token.line, message));
            }
            _ => return Err(self.syntax_error(cursor, value_token, "a macro value")),
        };
        if let Err(message) = check_macro_name(&name) {
            return Err(self.error(cursor, line, message));
        }
        let location = self.location(cursor, line);
        self.macros.define(&name, &value, Some(location), false);
        Ok(())
    }

    fn unknown_statement(&mut self, cursor: &Cursor<'_>, line: u32, word: &str) -> Stop {
        let message = if vm::LINUX_VM_OPTIONS.contains(&word) {
            format!("\"{word}\" is a vm option: put it inside a vm block")
        } else {
            let choices = ["include", "local", "socket", "staggered", "switch", "vm"];
            unknown_word_message("keyword", word, &choices)
        };
        self.error(cursor, line, message)
    }

    /// Parses the grammar's `owner_id`: a numeric uid, or `user`,
    /// `user:group` or `:group` looked up in the user database.
    pub(crate) fn parse_owner(&mut self, cursor: &mut Cursor<'_>) -> Parsed<Owner> {
        let token = self.next(cursor);
        let text = match token.kind {
            TokenKind::Number(uid) => {
                return match u32::try_from(uid).ok().filter(|uid| *uid != u32::MAX) {
                    Some(id) => Ok(Owner {
                        user: Some(Principal { id, name: None }),
                        group: None,
                    }),
                    None => Err(self.error(cursor, token.line, format!("invalid uid {uid}"))),
                };
            }
            TokenKind::Word(text) | TokenKind::Quoted(text) => text,
            _ => {
                return Err(self.syntax_error(
                    cursor,
                    token,
                    "an owner (user, user:group or :group)",
                ));
            }
        };
        let resolved = match self.owner_cache.get(&text) {
            Some(resolved) => resolved.clone(),
            None => {
                let resolved = resolve_owner(&text);
                self.owner_cache.insert(text, resolved.clone());
                resolved
            }
        };
        resolved.map_err(|message| self.error(cursor, token.line, message))
    }

    /// Resolves a `boot` or `initrd` file with realpath, once per load for
    /// each path as written.
    pub(crate) fn resolve_regular_file(&mut self, written: &str) -> Result<PathBuf, String> {
        if let Some(resolved) = self.image_cache.get(written) {
            return resolved.clone();
        }
        let resolved = host::resolve_regular_file(written);
        self.image_cache
            .insert(written.to_owned(), resolved.clone());
        resolved
    }
}

/// Checks a macro name: letters, digits and `_` only, because `$name`
/// references can use no other characters.
fn check_macro_name(name: &str) -> Result<(), String> {
    if name.chars().any(char::is_whitespace) {
        return Err("macro name cannot contain whitespace".to_owned());
    }
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if !valid {
        return Err(format!(
            "invalid macro name \"{name}\": use letters, digits and '_'"
        ));
    }
    Ok(())
}

/// Splits `user:group` and looks both up.
fn resolve_owner(text: &str) -> Result<Owner, String> {
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, group),
        None => (text, ""),
    };
    if user.is_empty() && group.is_empty() {
        return Err(format!(
            "invalid owner \"{text}\": use user, user:group or :group"
        ));
    }
    let user = match user {
        "" => None,
        name => Some(Principal {
            id: host::lookup_user(name)?,
            name: Some(name.to_owned()),
        }),
    };
    let group = match group {
        "" => None,
        name => Some(Principal {
            id: host::lookup_group(name)?,
            name: Some(name.to_owned()),
        }),
    };
    Ok(Owner { user, group })
}

/// Applies a `-D name=value` definition.
pub(crate) fn define_from_command_line(parser: &mut Parser, definition: &str) {
    let Some((name, value)) = definition.split_once('=') else {
        parser.global_error(format!("-D {definition}: missing '=': use -D name=value"));
        return;
    };
    if let Err(message) = check_macro_name(name) {
        parser.global_error(format!("-D {definition}: {message}"));
        return;
    }
    parser.macros.define(name, value, None, true);
}
