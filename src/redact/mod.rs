//! Redaction: the one seam every captured text passes through before any exporter sees it.
//!
//! Owns: [`Content`], whose only constructor ([`Redactor::seal`]) applies the rules to every
//! free-text field, so captured content cannot reach telemetry unredacted by construction;
//! [`Redactor::text`] for other free-text values (allowlisted header values, conversation ids);
//! and the rule engine: presets, custom regexes, JSON-key rules for tool arguments and results,
//! and keyed-hash replacement, built from the `[redaction]` configuration section
//! ([`RedactionConfig`]; `config` layers and validates it). Rules apply in order. Each text is
//! first scanned once by the combined pattern set; when nothing matches, the input is returned
//! as is, without allocating.
//! Does not: decide whether content is captured.

pub mod presets;

use std::borrow::Cow;
use std::sync::Arc;

use regex::{Captures, Regex, RegexSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::genai::content::{Message, Part, RequestContent, TextKind, ToolDefinition};
use crate::stats::Stats;
use presets::Validator;

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

/// Redaction rules, applied in order to every captured text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    pub rules: Vec<RuleConfig>,
    /// In JSON content (tool arguments and results), values under these keys are replaced
    /// whatever they hold. Compared case-insensitively.
    pub json_keys: Vec<String>,
    /// Text for those values, or `hash`.
    pub json_key_replacement: String,
    /// The key of `hash` replacements; a secret (masked by check-config, never logged).
    pub hash_key: Option<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            rules: Vec::new(),
            json_keys: Vec::new(),
            json_key_replacement: "[REDACTED]".to_owned(),
            hash_key: None,
        }
    }
}

/// One rule: a preset (or group: `api_keys`, `pii`, `all`), or a named regex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Fixed text (may use `$1`, `${name}`), or `hash`. Default `[REDACTED:<name>]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// A rule that cannot be built, with the configuration key it came from.
#[derive(Debug, thiserror::Error)]
#[error("invalid `{key}`: {message}")]
pub struct RuleError {
    pub key: String,
    pub message: String,
}

fn rule_error(key: impl Into<String>, message: impl Into<String>) -> RuleError {
    RuleError {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone)]
enum Replace {
    /// Fixed text; `$1` / `${name}` refer to the match's groups.
    Fixed(String),
    /// `[{rule}:{token}]`, the token a keyed hash of the match: equal values, equal tokens.
    Hash,
}

#[derive(Debug)]
struct Rule {
    name: String,
    regex: Regex,
    replace: Replace,
    validate: Option<Validator>,
    /// Group 1 is kept, the rest of the match replaced (`Bearer ` stays).
    keeps_prefix: bool,
}

/// Applies the configured rules. With none configured, text passes unchanged.
#[derive(Debug, Default)]
pub struct Redactor {
    rules: Vec<Rule>,
    /// All rule patterns at once: the single scan that decides whether any rule needs to run.
    set: Option<RegexSet>,
    /// Lowercased keys whose values are replaced in JSON content, whatever they hold.
    json_keys: Vec<String>,
    key_replace: Option<Replace>,
    hash_key: Option<ring::hmac::Key>,
    stats: Option<Arc<Stats>>,
}

/// Letters only, so a token can never match a rule (that would make redaction not idempotent).
const TOKEN_ALPHABET: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

impl Redactor {
    /// A redactor with no rules (capture mode `full`).
    pub fn none() -> Redactor {
        Redactor::default()
    }

    /// The configured rules, checked: a bad rule names its key.
    pub fn from_config(config: &RedactionConfig) -> Result<Redactor, RuleError> {
        let hash_key = config
            .hash_key
            .as_ref()
            .map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.as_bytes()));
        let mut uses_hash = false;
        let mut replace_of =
            |key: String, text: Option<&str>, default: &str| -> Result<Replace, RuleError> {
                match text {
                    Some("hash") => {
                        uses_hash = true;
                        Ok(Replace::Hash)
                    }
                    Some("") => Err(rule_error(
                        key,
                        "must not be empty (use \"hash\" or some text)",
                    )),
                    Some(t) => Ok(Replace::Fixed(t.to_owned())),
                    None => Ok(Replace::Fixed(default.to_owned())),
                }
            };
        let mut rules = Vec::new();
        for (
            i,
            RuleConfig {
                preset,
                name,
                regex,
                replacement,
            },
        ) in config.rules.iter().enumerate()
        {
            let at = |field: &str| format!("redaction.rules[{i}].{field}");
            let replacement = replacement.as_deref();
            match (preset, regex) {
                (Some(preset), None) => {
                    let expanded = presets::expand(preset).ok_or_else(|| {
                        rule_error(
                            at("preset"),
                            format!(
                                "unknown preset {preset:?} (known: {}, api_keys, pii, all)",
                                known_presets()
                            ),
                        )
                    })?;
                    for p in expanded {
                        let regex = Regex::new(p.pattern)
                            .map_err(|e| rule_error(at("preset"), e.to_string()))?;
                        rules.push(Rule {
                            name: p.name.to_owned(),
                            regex,
                            replace: replace_of(
                                at("replacement"),
                                replacement,
                                &format!("[REDACTED:{}]", p.name),
                            )?,
                            validate: p.validate,
                            keeps_prefix: p.keeps_prefix,
                        });
                    }
                }
                (None, Some(pattern)) => {
                    let name = name
                        .as_deref()
                        .filter(|n| !n.trim().is_empty())
                        .ok_or_else(|| rule_error(at("name"), "a custom rule needs a name"))?;
                    let regex =
                        Regex::new(pattern).map_err(|e| rule_error(at("regex"), e.to_string()))?;
                    if regex.is_match("") {
                        return Err(rule_error(at("regex"), "matches the empty string"));
                    }
                    rules.push(Rule {
                        name: name.to_owned(),
                        regex,
                        replace: replace_of(
                            at("replacement"),
                            replacement,
                            &format!("[REDACTED:{name}]"),
                        )?,
                        validate: None,
                        keeps_prefix: false,
                    });
                }
                (Some(_), Some(_)) => {
                    return Err(rule_error(
                        at("preset"),
                        "a rule has a preset or a regex, not both",
                    ));
                }
                (None, None) => {
                    return Err(rule_error(
                        format!("redaction.rules[{i}]"),
                        "a rule needs a preset or a regex",
                    ));
                }
            }
        }
        let mut json_keys = Vec::new();
        for (i, key) in config.json_keys.iter().enumerate() {
            if key.trim().is_empty() {
                return Err(rule_error(
                    format!("redaction.json_keys[{i}]"),
                    "must not be empty",
                ));
            }
            json_keys.push(key.trim().to_ascii_lowercase());
        }
        let key_replace = if json_keys.is_empty() {
            None
        } else {
            Some(replace_of(
                "redaction.json_key_replacement".into(),
                Some(&config.json_key_replacement),
                "[REDACTED]",
            )?)
        };
        if uses_hash && hash_key.is_none() {
            return Err(rule_error(
                "redaction.hash_key",
                "\"hash\" replacements need a key (set redaction.hash_key or GENAI_TAP_REDACTION__HASH_KEY)",
            ));
        }
        if config.hash_key.as_ref().is_some_and(|k| k.len() < 16) {
            return Err(rule_error(
                "redaction.hash_key",
                "must be at least 16 characters",
            ));
        }
        let set = if rules.is_empty() {
            None
        } else {
            Some(
                RegexSet::new(rules.iter().map(|r| r.regex.as_str()))
                    .map_err(|e| rule_error("redaction.rules", e.to_string()))?,
            )
        };
        let redactor = Redactor {
            rules,
            set,
            json_keys,
            key_replace,
            hash_key,
            stats: None,
        };
        // A replacement the rules would redact again makes redaction depend on how often it runs.
        for (i, rule) in redactor.rules.iter().enumerate() {
            if let Replace::Fixed(text) = &rule.replace
                && !text.contains('$')
                && redactor.matches_any(text)
            {
                return Err(rule_error(
                    format!("redaction.rules[{i}].replacement"),
                    format!("{text:?} would itself be redacted by the rules"),
                ));
            }
        }
        Ok(redactor)
    }

    /// Whether any rule would redact something in `text`.
    fn matches_any(&self, text: &str) -> bool {
        self.rules.iter().any(|r| {
            r.regex
                .find_iter(text)
                .any(|m| r.validate.is_none_or(|v| v(m.as_str())))
        })
    }

    /// Counts each replacement in `stats.redactions`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// Whether any rule is configured.
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty() || !self.json_keys.is_empty()
    }

    /// Redacts one free-text value.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let Some(set) = &self.set else {
            return Cow::Borrowed(s);
        };
        // `is_match` answers without allocating; only a text with something to redact pays
        // for the list of which rules matched.
        if !set.is_match(s) {
            return Cow::Borrowed(s);
        }
        let matched = set.matches(s);
        let mut out = Cow::Borrowed(s);
        for i in matched.iter() {
            if let Cow::Owned(replaced) = self.apply(&self.rules[i], &out) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    fn apply<'a>(&self, rule: &Rule, text: &'a str) -> Cow<'a, str> {
        rule.regex.replace_all(text, |caps: &Captures<'_>| {
            let whole = caps.get(0).map_or("", |m| m.as_str());
            if rule.validate.is_some_and(|v| !v(whole)) {
                return whole.to_owned();
            }
            if let Some(stats) = &self.stats {
                Stats::incr(&stats.redactions);
            }
            let mut out = String::new();
            if rule.keeps_prefix {
                out.push_str(caps.get(1).map_or("", |m| m.as_str()));
            }
            match &rule.replace {
                Replace::Fixed(template) => caps.expand(template, &mut out),
                Replace::Hash => out.push_str(&self.token(&rule.name, whole)),
            }
            out
        })
    }

    /// `[{label}:{letters}]` from a keyed hash of the value.
    fn token(&self, label: &str, value: &str) -> String {
        let Some(key) = &self.hash_key else {
            return format!("[REDACTED:{label}]");
        };
        let tag = ring::hmac::sign(key, value.as_bytes());
        let mut n = u64::from_be_bytes(tag.as_ref()[..8].try_into().unwrap_or_default());
        let mut letters = String::with_capacity(12);
        for _ in 0..12 {
            letters.push(TOKEN_ALPHABET[(n % 26) as usize] as char);
            n /= 26;
        }
        format!("[{label}:{letters}]")
    }

    /// A JSON document in a string: values under the configured keys are replaced whatever they
    /// hold, every string in it gets the text rules. Not JSON: text rules only.
    pub fn json(&self, s: &mut String) {
        if !self.is_active() {
            return;
        }
        match serde_json::from_str::<Value>(s) {
            Ok(mut v) => {
                if self.walk(&mut v) {
                    *s = v.to_string();
                }
            }
            Err(_) => self.text_in_place(s),
        }
    }

    /// Applies the rules to a JSON value; true when anything changed.
    pub fn walk(&self, v: &mut Value) -> bool {
        match v {
            Value::String(s) => {
                let redacted = match self.text(s) {
                    Cow::Owned(r) => Some(r),
                    Cow::Borrowed(_) => None,
                };
                let changed = redacted.is_some();
                if let Some(r) = redacted {
                    *s = r;
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |acc, i| self.walk(i) | acc),
            Value::Object(map) => {
                let mut changed = false;
                for (key, value) in map.iter_mut() {
                    if self.json_keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                        let replaced = match self.key_replace.as_ref() {
                            Some(Replace::Hash) => self.token(key, &value.to_string()),
                            Some(Replace::Fixed(t)) => t.clone(),
                            None => "[REDACTED]".to_owned(),
                        };
                        if let Some(stats) = &self.stats {
                            Stats::incr(&stats.redactions);
                        }
                        *value = Value::String(replaced);
                        changed = true;
                    } else {
                        changed |= self.walk(value);
                    }
                }
                changed
            }
            _ => false,
        }
    }

    fn text_in_place(&self, s: &mut String) {
        if let Cow::Owned(redacted) = self.text(s) {
            *s = redacted;
        }
    }

    /// Redacts every free-text field of a request's and a response's content.
    pub fn seal(&self, mut request: RequestContent, mut output: Vec<Message>) -> Content {
        let mut apply = |kind: TextKind, s: &mut String| match kind {
            TextKind::Text => self.text_in_place(s),
            TextKind::Json => self.json(s),
        };
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

fn known_presets() -> String {
    presets::PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(preset: &str) -> RuleConfig {
        RuleConfig {
            preset: Some(preset.into()),
            ..RuleConfig::default()
        }
    }

    fn redactor(rules: Vec<RuleConfig>) -> Redactor {
        Redactor::from_config(&RedactionConfig {
            rules,
            json_keys: vec!["password".into(), "card_number".into()],
            hash_key: Some("a-test-key-of-32-bytes-length!!!".into()),
            ..RedactionConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn presets_replace_what_they_recognise_and_leave_the_rest() {
        let r = redactor(vec![rule("all")]);
        let text = "Mail jane@example.com or call +1 415 555 2671; card 4111 1111 1111 1111, \
                    order 4111 1111 1111 1112; key sk-proj-abcdefghijklmnopqrstuvwxyz; \
                    Authorization: Bearer abcdefghijklmnopqrstuvwx; from 10.1.2.3.";
        let out = r.text(text);
        assert_eq!(
            out,
            "Mail [REDACTED:email] or call [REDACTED:phone]; card [REDACTED:payment_card], \
             order 4111 1111 1111 1112; key [REDACTED:openai_key]; \
             Authorization: Bearer [REDACTED:bearer_token]; from [REDACTED:ipv4]."
        );
    }

    #[test]
    fn nothing_to_redact_borrows_the_input() {
        let r = redactor(vec![rule("all")]);
        let text = "The weather in Paris is mild today.";
        assert!(matches!(r.text(text), Cow::Borrowed(_)));
    }

    #[test]
    fn custom_rules_with_capture_references_apply_in_order() {
        let r = redactor(vec![
            RuleConfig {
                name: Some("employee".into()),
                regex: Some(r"(EMP)-(\d{6})".into()),
                replacement: Some("$1-[ID]".into()),
                ..RuleConfig::default()
            },
            rule("email"),
        ]);
        assert_eq!(
            r.text("EMP-123456 is emp@corp.example"),
            "EMP-[ID] is [REDACTED:email]"
        );
    }

    #[test]
    fn hash_tokens_are_stable_keyed_and_inert() {
        let r = redactor(vec![RuleConfig {
            replacement: Some("hash".into()),
            ..rule("email")
        }]);
        let a = r
            .text("a@example.com and a@example.com and b@example.com")
            .into_owned();
        let tokens: Vec<&str> = a.split(" and ").collect();
        assert_eq!(tokens[0], tokens[1], "same value, same token");
        assert_ne!(tokens[0], tokens[2]);
        assert!(tokens[0].starts_with("[email:") && tokens[0].len() == "[email:]".len() + 12);
        let other_key = Redactor::from_config(&RedactionConfig {
            rules: vec![RuleConfig {
                replacement: Some("hash".into()),
                ..rule("email")
            }],
            hash_key: Some("another-key-entirely-0123456789".into()),
            ..RedactionConfig::default()
        })
        .unwrap();
        assert_ne!(
            other_key.text("a@example.com"),
            tokens[0],
            "the key matters"
        );
        assert_eq!(r.text(&a), a, "a token is never redacted again");
    }

    #[test]
    fn json_keys_replace_values_whatever_they_are_and_strings_get_the_text_rules() {
        let r = redactor(vec![rule("email")]);
        let mut args = r#"{"user":{"Password":"hunter2","card_number":4111111111111111},"note":"mail x@y.io","n":3}"#.to_owned();
        r.json(&mut args);
        let v: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(v["user"]["Password"], "[REDACTED]");
        assert_eq!(v["user"]["card_number"], "[REDACTED]");
        assert_eq!(v["note"], "mail [REDACTED:email]");
        assert_eq!(v["n"], 3);
        let mut not_json = "password is x@y.io".to_owned();
        r.json(&mut not_json);
        assert_eq!(not_json, "password is [REDACTED:email]");
    }

    #[test]
    fn bad_rules_are_named() {
        let err = |cfg: RedactionConfig| Redactor::from_config(&cfg).unwrap_err().to_string();
        assert!(
            err(RedactionConfig {
                rules: vec![rule("credit_cards")],
                ..Default::default()
            })
            .starts_with("invalid `redaction.rules[0].preset`: unknown preset \"credit_cards\"")
        );
        let bad_regex = RuleConfig {
            name: Some("x".into()),
            regex: Some("(unclosed".into()),
            ..Default::default()
        };
        assert!(
            err(RedactionConfig {
                rules: vec![rule("email"), bad_regex],
                ..Default::default()
            })
            .starts_with("invalid `redaction.rules[1].regex`")
        );
        let no_name = RuleConfig {
            regex: Some("x+".into()),
            ..Default::default()
        };
        assert!(
            err(RedactionConfig {
                rules: vec![no_name],
                ..Default::default()
            })
            .contains("rules[0].name")
        );
        let empty = RuleConfig {
            name: Some("e".into()),
            regex: Some("x*".into()),
            ..Default::default()
        };
        assert!(
            err(RedactionConfig {
                rules: vec![empty],
                ..Default::default()
            })
            .contains("empty string")
        );
        assert!(
            err(RedactionConfig {
                json_keys: vec![" ".into()],
                ..Default::default()
            })
            .contains("json_keys[0]")
        );
        let hashed = RuleConfig {
            replacement: Some("hash".into()),
            ..rule("email")
        };
        assert!(
            err(RedactionConfig {
                rules: vec![hashed],
                ..Default::default()
            })
            .contains("redaction.hash_key")
        );
        let loop_back = RuleConfig {
            replacement: Some("me@example.com".into()),
            ..rule("email")
        };
        assert!(
            err(RedactionConfig {
                rules: vec![loop_back],
                ..Default::default()
            })
            .contains("itself be redacted")
        );
    }

    #[test]
    fn seal_reaches_messages_tool_arguments_results_and_instructions() {
        let r = redactor(vec![rule("email")]);
        let request = RequestContent {
            messages: vec![
                Message {
                    role: "user".into(),
                    parts: vec![Part::Text("I am a@b.io".into())],
                    ..Message::default()
                },
                Message {
                    role: "tool".into(),
                    parts: vec![Part::ToolCallResponse {
                        id: None,
                        response: r#"{"email":"c@d.io","password":"p"}"#.into(),
                    }],
                    ..Message::default()
                },
            ],
            system_instructions: vec![Part::Text("Escalate to boss@corp.io".into())],
            tools: Vec::new(),
        };
        let output = vec![Message {
            role: "assistant".into(),
            parts: vec![Part::ToolCall {
                id: None,
                name: "send".into(),
                arguments: Some(r#"{"to":"e@f.io"}"#.into()),
            }],
            ..Message::default()
        }];
        let sealed = format!("{:?}", r.seal(request, output));
        for secret in ["a@b.io", "c@d.io", "boss@corp.io", "e@f.io", "\\\"p\\\""] {
            assert!(!sealed.contains(secret), "{secret} in {sealed}");
        }
    }

    /// Every preset, built once for the property tests.
    fn all() -> &'static Redactor {
        static ALL: std::sync::LazyLock<Redactor> =
            std::sync::LazyLock::new(|| redactor(vec![rule("all")]));
        &ALL
    }

    proptest! {
        #[test]
        fn never_panics_is_idempotent_and_leaves_no_match(text in "\\PC{0,200}") {
            let r = all();
            let once = r.text(&text).into_owned();
            prop_assert_eq!(r.text(&once).into_owned(), once.clone());
            prop_assert!(!r.matches_any(&once), "a rule still matches {:?}", once);
        }

        #[test]
        fn secrets_planted_anywhere_are_removed(prefix in "[a-z ,.]{0,30}", suffix in "[a-z ,.]{0,30}", which in 0usize..6) {
            let secrets = [
                "jane.doe@example.com",
                "4111 1111 1111 1111",
                "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
                "AKIAIOSFODNN7EXAMPLE",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0",
                "GB82WEST12345698765432",
            ];
            let text = format!("{prefix} {} {suffix}", secrets[which]);
            let out = all().text(&text).into_owned();
            prop_assert!(!all().matches_any(&out), "{:?}", out);
            prop_assert!(!out.contains(secrets[which]), "{:?}", out);
        }
    }
}
