//! `switch NAME { ... }` blocks.

use super::{Cursor, Parsed, Parser};
use crate::config::Switch;
use crate::lexer::{Keyword, TokenKind};
use crate::values::{self, InterfaceNameProblem, MAX_INTERFACE_NAME_LEN};

/// The options of a switch block, for suggestions.
pub(crate) const SWITCH_OPTIONS: &[&str] = &[
    "enable",
    "disable",
    "group",
    "interface",
    "locked",
    "rdomain",
    "up",
    "down",
];

/// A switch block being parsed.
struct SwitchState {
    switch: Switch,
    /// `interface` lines written, including those with errors.
    interface_lines: usize,
}

impl Parser {
    /// Parses a switch block and registers the switch unless it has errors
    /// of its own (bad or duplicate name, no interface).
    pub(super) fn parse_switch(&mut self, cursor: &mut Cursor<'_>) -> Parsed<()> {
        let line = self.next(cursor).line;
        self.reject_keyword_macro(cursor, Keyword::Switch, line)?;
        let name = self.parse_string(cursor, "a switch name")?;
        let mut valid = true;
        if let Err(message) = values::check_switch_name(&name) {
            self.error(cursor, line, message);
            valid = false;
        }
        if let Some(&index) = self.switch_index.get(&name) {
            let previous = self.config.switches[index].location.clone();
            self.error(
                cursor,
                line,
                format!("switch \"{name}\" is already defined at {previous}"),
            );
            valid = false;
        }
        self.context = Some(format!("switch \"{name}\""));
        self.expect_open_brace(cursor, "switch")?;

        let switch = Switch {
            name: name.clone(),
            location: self.location(cursor, line),
            enabled: true,
            interface: String::new(),
            group: None,
            locked_lladdr: false,
            rdomain: None,
            up: true,
        };
        let mut state = SwitchState {
            switch,
            interface_lines: 0,
        };
        self.parse_block(cursor, &mut state, "block", line, Self::parse_switch_option)?;
        let switch = state.switch;

        // A failed interface line has been reported already.
        if state.interface_lines == 0 {
            let message = format!(
                "switch \"{name}\" is missing interface name: add interface \"NAME\" with the bridge to use"
            );
            self.context = None;
            self.error(cursor, line, message);
            valid = false;
        }
        if valid && switch.interface.is_empty() {
            valid = false;
        }
        if valid {
            self.switch_index.insert(name, self.config.switches.len());
            self.config.switches.push(switch);
        }
        Ok(())
    }

    fn parse_switch_option(
        &mut self,
        cursor: &mut Cursor<'_>,
        state: &mut SwitchState,
    ) -> Parsed<()> {
        let switch = &mut state.switch;
        let token = self.next(cursor);
        let line = token.line;
        match token.kind {
            TokenKind::Keyword(Keyword::Enable) => switch.enabled = true,
            TokenKind::Keyword(Keyword::Disable) => switch.enabled = false,
            TokenKind::Keyword(Keyword::Up) => switch.up = true,
            TokenKind::Keyword(Keyword::Down) => switch.up = false,
            TokenKind::Keyword(Keyword::Group) => {
                let group = self.parse_string(cursor, "a group name")?;
                values::check_group_name(&group)
                    .map_err(|message| self.error(cursor, line, message))?;
                switch.group = Some(group);
            }
            TokenKind::Keyword(Keyword::Interface) => {
                state.interface_lines += 1;
                let interface = self.parse_string(cursor, "a bridge interface name")?;
                match values::interface_name_problem(&interface) {
                    None => switch.interface = interface,
                    Some(InterfaceNameProblem::TooLong) => {
                        let message = format!(
                            "switch interface too long: {interface}: the maximum is {MAX_INTERFACE_NAME_LEN} bytes"
                        );
                        return Err(self.error(cursor, line, message));
                    }
                    Some(InterfaceNameProblem::Invalid) => {
                        let message = format!("invalid switch interface: {interface}");
                        return Err(self.error(cursor, line, message));
                    }
                }
            }
            TokenKind::Keyword(Keyword::Locked) => {
                self.expect_keyword(cursor, Keyword::Lladdr, "locked")?;
                switch.locked_lladdr = true;
            }
            TokenKind::Keyword(Keyword::Rdomain) => {
                switch.rdomain = Some(self.parse_rdomain(cursor)?);
            }
            _ => {
                return Err(self.unknown_option(
                    cursor,
                    token,
                    "switch option",
                    SWITCH_OPTIONS,
                    "a switch option",
                ));
            }
        }
        Ok(())
    }

    /// Parses the number after `rdomain`: a routing domain from 0 to 255.
    pub(super) fn parse_rdomain(&mut self, cursor: &mut Cursor<'_>) -> Parsed<u8> {
        let (rdomain, line) = self.parse_number(cursor, "a routing domain number")?;
        u8::try_from(rdomain).map_err(|_| {
            let message = format!("invalid rdomain: {rdomain}: use 0 to 255");
            self.error(cursor, line, message)
        })
    }
}
