//! Global options: `local prefix`, `local inet6`, `socket owner`,
//! `staggered start` and the unsupported `agentx`.

use super::{Cursor, Parsed, Parser, Stop, describe};
use crate::config::{Setting, StaggeredStart};
use crate::lexer::{Keyword, TokenKind};
use crate::values;

impl Parser {
    /// Parses `local prefix P`, `local inet6` or `local inet6 prefix P`.
    /// When repeated, the last line wins, as in OpenBSD.
    pub(super) fn parse_local(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let line = self.next(cursor).line;
        self.reject_keyword_macro(cursor, Keyword::Local, line)?;
        let token = self.next(cursor);
        match token.kind {
            TokenKind::Keyword(Keyword::Prefix) => {
                let text = self.parse_single_string(cursor, "an IPv4 prefix after local prefix")?;
                let prefix = values::parse_local_prefix(&text)
                    .map_err(|message| self.error(cursor, line, message))?;
                let location = self.location(cursor, line);
                self.config.globals.local_prefix = Some(Setting {
                    value: prefix,
                    location,
                });
                Ok(())
            }
            TokenKind::Keyword(Keyword::Inet6) => {
                let mut prefix = None;
                if self.accept_keyword(cursor, Keyword::Prefix) {
                    let text = self
                        .parse_single_string(cursor, "an IPv6 prefix after local inet6 prefix")?;
                    let parsed = values::parse_inet6_prefix(&text)
                        .map_err(|message| self.error(cursor, line, message))?;
                    prefix = Some(parsed);
                }
                let location = self.location(cursor, line);
                self.config.globals.local_inet6 = Some(Setting {
                    value: prefix,
                    location,
                });
                Ok(())
            }
            TokenKind::Keyword(Keyword::Interface) => {
                let message =
                    "\"local interface\" is a vm option: put it inside a vm block".to_owned();
                Err(self.error(cursor, token.line, message))
            }
            TokenKind::Invalid => Err(Stop::Skip),
            other => {
                let message = format!(
                    "syntax error: expected \"prefix\" or \"inet6\" after local, found {}",
                    describe(&other)
                );
                Err(self.error(cursor, token.line, message))
            }
        }
    }

    /// Parses `socket owner OWNER`.
    pub(super) fn parse_socket_owner(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let line = self.next(cursor).line;
        self.reject_keyword_macro(cursor, Keyword::Socket, line)?;
        self.expect_keyword(cursor, Keyword::Owner, "socket")?;
        let owner = self.parse_owner(cursor)?;
        let location = self.location(cursor, line);
        self.config.globals.socket_owner = Some(Setting {
            value: owner,
            location,
        });
        Ok(())
    }

    /// Parses `staggered start parallel N delay S`.
    pub(super) fn parse_staggered_start(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let line = self.next(cursor).line;
        self.reject_keyword_macro(cursor, Keyword::Staggered, line)?;
        self.expect_keyword(cursor, Keyword::Start, "staggered")?;
        self.expect_keyword(cursor, Keyword::Parallel, "staggered start")?;
        let (parallel, _) = self.parse_number(cursor, "the number of VMs started at once")?;
        self.expect_keyword(cursor, Keyword::Delay, "staggered start parallel N")?;
        let (delay, _) = self.parse_number(cursor, "the delay in seconds")?;

        let parallel = match u32::try_from(parallel) {
            Ok(parallel) if parallel >= 1 => parallel,
            _ => {
                let message = format!(
                    "staggered start parallel {parallel} is invalid: start at least 1 VM at once"
                );
                return Err(self.error(cursor, line, message));
            }
        };
        let Ok(delay_seconds) = u32::try_from(delay) else {
            let message = format!(
                "staggered start delay {delay} is invalid: use 0 to {} seconds",
                u32::MAX
            );
            return Err(self.error(cursor, line, message));
        };
        let location = self.location(cursor, line);
        self.config.globals.staggered_start = Some(Setting {
            value: StaggeredStart {
                parallel,
                delay_seconds,
            },
            location,
        });
        Ok(())
    }

    /// Parses `agentx [context NAME] [path PATH]` and rejects it: there is
    /// no AgentX subagent on Linux.
    pub(super) fn parse_agentx(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let line = self.next(cursor).line;
        self.reject_keyword_macro(cursor, Keyword::Agentx, line)?;
        loop {
            if self.accept_keyword(cursor, Keyword::Context) {
                self.parse_single_string(cursor, "a context name after agentx context")?;
            } else if self.accept_keyword(cursor, Keyword::Path) {
                self.parse_single_string(cursor, "a socket path after agentx path")?;
            } else {
                break;
            }
        }
        let message = "agentx is not supported on Linux: remove the agentx line".to_owned();
        Err(self.error(cursor, line, message))
    }
}
