//! Redaction: the one seam every captured text passes through before any exporter sees it.
//!
//! Owns: [`Content`], whose only constructor ([`Redactor::seal`]) applies the redaction rules
//! to every free-text field, so captured content cannot reach telemetry unredacted by
//! construction; and [`Redactor::text`] for free-text attributes outside content.
//! Does not: decide whether content is captured.

use std::borrow::Cow;

use crate::genai::content::{Message, Part, RequestContent, TextKind, ToolDefinition};

/// Captured content that has been through the redactor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Content {
    input: Vec<Message>,
    system_instructions: Vec<Part>,
    tools: Vec<ToolDefinition>,
    output: Vec<Message>,
}

impl Content {
    pub fn input(&self) -> &[Message] {
        &self.input
    }
    pub fn output(&self) -> &[Message] {
        &self.output
    }
    pub fn system_instructions(&self) -> &[Part] {
        &self.system_instructions
    }
    pub fn tools(&self) -> &[ToolDefinition] {
        &self.tools
    }
}

/// Applies the configured rules. With none configured, text passes unchanged.
#[derive(Debug, Clone, Default)]
pub struct Redactor {}

impl Redactor {
    /// A redactor with no rules (capture mode `full`).
    pub fn none() -> Redactor {
        Redactor::default()
    }

    /// Redacts one free-text value.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(s)
    }

    fn apply(&self, _kind: TextKind, s: &mut String) {
        if let Cow::Owned(redacted) = self.text(s) {
            *s = redacted;
        }
    }

    /// Redacts every free-text field of a request's and a response's content.
    pub fn seal(&self, mut request: RequestContent, mut output: Vec<Message>) -> Content {
        let mut apply = |kind: TextKind, s: &mut String| self.apply(kind, s);
        request.for_each_text(&mut apply);
        for m in &mut output {
            m.for_each_text(&mut apply);
        }
        Content {
            input: request.messages,
            system_instructions: request.system_instructions,
            tools: request.tools,
            output,
        }
    }
}
