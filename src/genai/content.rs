//! Message content in the conventions' form: messages made of typed parts, system
//! instructions, tool definitions. Only built when content capture is on.
//!
//! Owns: converting each API's request and response shapes into [`Message`]s and [`Part`]s,
//! visiting every free-text field (so redaction can reach all of them), and serialising to the
//! JSON the conventions define, within a byte budget (oldest input messages go first, then the
//! longest strings are shortened; the result stays valid JSON and says it was truncated).
//! Does not: decide whether to capture or redact.

use serde_json::{Map, Value, json};

use super::Api;

/// One message: `{"role", "parts", "name"?, "finish_reason"?}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub role: String,
    pub parts: Vec<Part>,
    pub name: Option<String>,
    /// Output messages only.
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// `arguments` as sent: a JSON document in a string, exported parsed when it parses.
    ToolCall {
        id: Option<String>,
        name: String,
        arguments: Option<String>,
    },
    ToolCallResponse {
        id: Option<String>,
        response: String,
    },
    Reasoning(String),
    Blob {
        mime_type: Option<String>,
        modality: String,
        content: String,
    },
    Uri {
        mime_type: Option<String>,
        modality: String,
        uri: String,
    },
    File {
        mime_type: Option<String>,
        modality: String,
        file_id: String,
    },
}

/// A tool the model may call: `{"type": "function", "name", "description"?, "parameters"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    pub kind: String,
    pub name: String,
    pub description: Option<String>,
    /// A JSON schema, as sent.
    pub parameters: Option<Value>,
}

/// What the request said, in the conventions' form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestContent {
    pub messages: Vec<Message>,
    pub system_instructions: Vec<Part>,
    pub tools: Vec<ToolDefinition>,
}

/// How a free-text field should be treated by whoever rewrites it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Prose, a URI, an identifier the user chose.
    Text,
    /// A JSON document in a string (tool arguments and results): structure-aware rules apply.
    Json,
}

impl Part {
    fn for_each_text(&mut self, f: &mut impl FnMut(TextKind, &mut String)) {
        match self {
            Part::Text(s) | Part::Reasoning(s) => f(TextKind::Text, s),
            Part::ToolCall { arguments, .. } => {
                if let Some(a) = arguments {
                    f(TextKind::Json, a);
                }
            }
            Part::ToolCallResponse { response, .. } => f(TextKind::Json, response),
            Part::Uri { uri, .. } => f(TextKind::Text, uri),
            // Base64 payloads and provider file ids carry no text to rewrite.
            Part::Blob { .. } | Part::File { .. } => {}
        }
    }

    fn to_json(&self) -> Value {
        fn tool(kind: &str, id: &Option<String>, rest: [(&str, Option<Value>); 2]) -> Value {
            let mut v = Map::new();
            v.insert("type".into(), json!(kind));
            if let Some(id) = id {
                v.insert("id".into(), json!(id));
            }
            for (key, value) in rest {
                if let Some(value) = value {
                    v.insert(key.into(), value);
                }
            }
            Value::Object(v)
        }
        fn media(
            kind: &str,
            mime_type: &Option<String>,
            modality: &str,
            key: &str,
            value: &str,
        ) -> Value {
            let mut v = Map::new();
            v.insert("type".into(), json!(kind));
            v.insert("modality".into(), json!(modality));
            v.insert(key.into(), json!(value));
            if let Some(m) = mime_type {
                v.insert("mime_type".into(), json!(m));
            }
            Value::Object(v)
        }
        match self {
            Part::Text(s) => json!({"type": "text", "content": s}),
            Part::Reasoning(s) => json!({"type": "reasoning", "content": s}),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => tool(
                "tool_call",
                id,
                [
                    ("name", Some(json!(name))),
                    ("arguments", arguments.as_deref().map(json_or_string)),
                ],
            ),
            Part::ToolCallResponse { id, response } => tool(
                "tool_call_response",
                id,
                [("response", Some(json_or_string(response))), ("", None)],
            ),
            Part::Blob {
                mime_type,
                modality,
                content,
            } => media("blob", mime_type, modality, "content", content),
            Part::Uri {
                mime_type,
                modality,
                uri,
            } => media("uri", mime_type, modality, "uri", uri),
            Part::File {
                mime_type,
                modality,
                file_id,
            } => media("file", mime_type, modality, "file_id", file_id),
        }
    }
}

fn json_or_string(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

impl Message {
    pub fn for_each_text(&mut self, f: &mut impl FnMut(TextKind, &mut String)) {
        for p in &mut self.parts {
            p.for_each_text(f);
        }
    }

    fn to_json(&self) -> Value {
        let mut v = Map::new();
        v.insert("role".into(), json!(self.role));
        v.insert(
            "parts".into(),
            Value::Array(self.parts.iter().map(Part::to_json).collect()),
        );
        if let Some(name) = &self.name {
            v.insert("name".into(), json!(name));
        }
        if let Some(reason) = &self.finish_reason {
            v.insert("finish_reason".into(), json!(reason));
        }
        Value::Object(v)
    }
}

impl RequestContent {
    pub fn for_each_text(&mut self, f: &mut impl FnMut(TextKind, &mut String)) {
        for m in &mut self.messages {
            m.for_each_text(f);
        }
        for p in &mut self.system_instructions {
            p.for_each_text(f);
        }
        for t in &mut self.tools {
            if let Some(d) = &mut t.description {
                f(TextKind::Text, d);
            }
        }
    }
}

/// The conventions' JSON for messages.
pub fn messages_json(messages: &[Message]) -> Value {
    Value::Array(messages.iter().map(Message::to_json).collect())
}

pub fn parts_json(parts: &[Part]) -> Value {
    Value::Array(parts.iter().map(Part::to_json).collect())
}

pub fn tools_json(tools: &[ToolDefinition]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                let mut v = Map::new();
                v.insert("type".into(), json!(t.kind));
                v.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    v.insert("description".into(), json!(d));
                }
                if let Some(p) = &t.parameters {
                    v.insert("parameters".into(), p.clone());
                }
                Value::Object(v)
            })
            .collect(),
    )
}

/// Serialises `value` within `budget` bytes. When it does not fit, elements are dropped from
/// the front of the top-level array (the oldest messages; one always stays), then the longest
/// strings are cut. Returns the JSON and whether anything was cut.
pub fn fit(mut value: Value, budget: usize) -> (String, bool) {
    let mut text = value.to_string();
    if text.len() <= budget {
        return (text, false);
    }
    if let Value::Array(items) = &mut value {
        // Each element's share of the text, its separator included.
        let mut sizes: Vec<usize> = items.iter().map(|i| i.to_string().len() + 1).collect();
        let mut total = text.len();
        let mut drop = 0;
        while items.len() - drop > 1 && total > budget {
            total -= sizes[drop];
            drop += 1;
        }
        items.drain(..drop);
        sizes.drain(..drop);
        text = value.to_string();
    }
    while text.len() > budget {
        let excess = text.len() - budget;
        let Some(longest) = longest_string(&mut value) else {
            break;
        };
        let len = longest.len();
        if len <= MARKER.len() + 8 {
            break;
        }
        let keep = len.saturating_sub(excess + MARKER.len()).max(8);
        let cut = floor_char_boundary(longest, keep);
        longest.truncate(cut);
        longest.push_str(MARKER);
        text = value.to_string();
    }
    if text.len() > budget {
        // Too many small pieces to cut down: an empty list is still valid, and marked.
        return ("[]".to_owned(), true);
    }
    (text, true)
}

const MARKER: &str = "…[truncated]";

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn longest_string(v: &mut Value) -> Option<&mut String> {
    fn walk<'a>(v: &'a mut Value, best: &mut Option<&'a mut String>) {
        match v {
            Value::String(s)
                if best.as_ref().is_none_or(|b| s.len() > b.len()) && !s.ends_with(MARKER) =>
            {
                *best = Some(s);
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, best)),
            Value::Object(map) => map.values_mut().for_each(|i| walk(i, best)),
            _ => {}
        }
    }
    let mut best = None;
    walk(v, &mut best);
    best
}

// ---- conversion from the wire shapes (content capture only, so plain `Value` walking) ----

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// `data:image/png;base64,....` → (mime type, base64 payload).
fn data_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime.to_owned(), data.to_owned()))
}

fn modality_of(mime: &str) -> String {
    match mime.split('/').next() {
        Some(m @ ("image" | "audio" | "video")) => m.to_owned(),
        _ => "document".to_owned(),
    }
}

fn image_part(url: &str) -> Part {
    match data_url(url) {
        Some((mime, content)) => Part::Blob {
            modality: modality_of(&mime),
            mime_type: Some(mime),
            content,
        },
        None => Part::Uri {
            mime_type: None,
            modality: "image".into(),
            uri: url.to_owned(),
        },
    }
}

/// A content value: a string, or an array of typed content parts (chat and Responses alike).
fn content_parts(content: &Value) -> Vec<Part> {
    match content {
        Value::String(s) => vec![Part::Text(s.clone())],
        Value::Array(items) => items.iter().filter_map(content_part).collect(),
        _ => Vec::new(),
    }
}

fn content_part(item: &Value) -> Option<Part> {
    let text = || item.get("text").and_then(str_of);
    match item.get("type")?.as_str()? {
        "text" | "input_text" | "output_text" => text().map(Part::Text),
        "refusal" => item.get("refusal").and_then(str_of).map(Part::Text),
        "image_url" => {
            let url = item.get("image_url")?;
            let url = url.get("url").and_then(Value::as_str).or(url.as_str())?;
            Some(image_part(url))
        }
        "input_image" => match (
            item.get("image_url").and_then(Value::as_str),
            item.get("file_id").and_then(Value::as_str),
        ) {
            (Some(url), _) => Some(image_part(url)),
            (None, Some(id)) => Some(Part::File {
                mime_type: None,
                modality: "image".into(),
                file_id: id.to_owned(),
            }),
            _ => None,
        },
        "input_audio" => {
            let audio = item.get("input_audio")?;
            Some(Part::Blob {
                mime_type: audio
                    .get("format")
                    .and_then(Value::as_str)
                    .map(|f| format!("audio/{f}")),
                modality: "audio".into(),
                content: audio.get("data").and_then(str_of)?,
            })
        }
        "file" | "input_file" => {
            let file = item.get("file").unwrap_or(item);
            if let Some(id) = file.get("file_id").and_then(Value::as_str) {
                return Some(Part::File {
                    mime_type: None,
                    modality: "document".into(),
                    file_id: id.to_owned(),
                });
            }
            let data = file.get("file_data").and_then(Value::as_str)?;
            Some(match data_url(data) {
                Some((mime, content)) => Part::Blob {
                    modality: modality_of(&mime),
                    mime_type: Some(mime),
                    content,
                },
                None => Part::Blob {
                    mime_type: None,
                    modality: "document".into(),
                    content: data.to_owned(),
                },
            })
        }
        _ => None,
    }
}

fn tool_definition(tool: &Value) -> Option<ToolDefinition> {
    let kind = tool
        .get("type")
        .and_then(str_of)
        .unwrap_or_else(|| "function".into());
    // Chat nests the function; Responses flattens it; built-ins have only a type.
    let f = tool.get("function").unwrap_or(tool);
    let name = f
        .get("name")
        .and_then(str_of)
        .unwrap_or_else(|| kind.clone());
    Some(ToolDefinition {
        kind,
        name,
        description: f.get("description").and_then(str_of),
        parameters: f.get("parameters").cloned(),
    })
}

/// The content of a request body, per API. `None` when the body is not a JSON object.
pub fn request_content(api: Api, body: &[u8]) -> Option<RequestContent> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = v.as_object()?;
    let tools = v
        .get("tools")
        .or(v.get("functions"))
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(tool_definition).collect())
        .unwrap_or_default();
    let mut content = RequestContent {
        tools,
        ..RequestContent::default()
    };
    match api {
        Api::ChatCompletions => {
            for m in v
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                content.messages.push(chat_message(m));
            }
        }
        Api::Completions => content.messages = user_texts(v.get("prompt")),
        Api::Responses => {
            if let Some(instructions) = v.get("instructions").and_then(str_of) {
                content.system_instructions.push(Part::Text(instructions));
            }
            match v.get("input") {
                Some(Value::String(s)) => content.messages.push(Message {
                    role: "user".into(),
                    parts: vec![Part::Text(s.clone())],
                    ..Message::default()
                }),
                Some(Value::Array(items)) => {
                    content.messages = items.iter().filter_map(responses_item).collect();
                }
                _ => {}
            }
        }
        Api::Embeddings => content.messages = user_texts(v.get("input")),
    }
    Some(content)
}

/// A string or an array of strings (a prompt, embeddings input): one user message each.
fn user_texts(value: Option<&Value>) -> Vec<Message> {
    let texts: Vec<String> = match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(str_of).collect(),
        _ => Vec::new(),
    };
    texts
        .into_iter()
        .map(|t| Message {
            role: "user".into(),
            parts: vec![Part::Text(t)],
            ..Message::default()
        })
        .collect()
}

fn chat_message(m: &Value) -> Message {
    let role = m
        .get("role")
        .and_then(str_of)
        .unwrap_or_else(|| "user".into());
    let mut parts = Vec::new();
    if role == "tool" {
        let response = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => content_parts(other)
                .into_iter()
                .filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(""),
            None => String::new(),
        };
        parts.push(Part::ToolCallResponse {
            id: m.get("tool_call_id").and_then(str_of),
            response,
        });
    } else if let Some(content) = m.get("content") {
        parts.extend(content_parts(content));
    }
    if let Some(refusal) = m.get("refusal").and_then(str_of) {
        parts.push(Part::Text(refusal));
    }
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = call.get("function").unwrap_or(call);
        parts.push(Part::ToolCall {
            id: call.get("id").and_then(str_of),
            name: f.get("name").and_then(str_of).unwrap_or_default(),
            arguments: f.get("arguments").and_then(str_of),
        });
    }
    Message {
        role,
        parts,
        name: m.get("name").and_then(str_of),
        finish_reason: None,
    }
}

/// One Responses API input item.
fn responses_item(item: &Value) -> Option<Message> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    let assistant = |parts| Message {
        role: "assistant".into(),
        parts,
        ..Message::default()
    };
    match kind {
        "message" => Some(Message {
            role: item
                .get("role")
                .and_then(str_of)
                .unwrap_or_else(|| "user".into()),
            parts: item.get("content").map(content_parts).unwrap_or_default(),
            ..Message::default()
        }),
        "function_call" => Some(assistant(vec![Part::ToolCall {
            id: item.get("call_id").and_then(str_of),
            name: item.get("name").and_then(str_of).unwrap_or_default(),
            arguments: item.get("arguments").and_then(str_of),
        }])),
        "function_call_output" => Some(Message {
            role: "tool".into(),
            parts: vec![Part::ToolCallResponse {
                id: item.get("call_id").and_then(str_of),
                response: match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
            }],
            ..Message::default()
        }),
        "reasoning" => Some(assistant(reasoning_parts(item))),
        _ => None,
    }
}

fn reasoning_parts(item: &Value) -> Vec<Part> {
    item.get("summary")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("text").and_then(str_of))
        .map(Part::Reasoning)
        .collect()
}

/// A Responses API `output` array as one assistant message.
pub fn responses_output(output: &Value, finish_reason: Option<String>) -> Vec<Message> {
    let mut parts = Vec::new();
    for item in output.as_array().into_iter().flatten() {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                parts.extend(item.get("content").map(content_parts).unwrap_or_default())
            }
            Some("function_call") => parts.push(Part::ToolCall {
                id: item.get("call_id").and_then(str_of),
                name: item.get("name").and_then(str_of).unwrap_or_default(),
                arguments: item.get("arguments").and_then(str_of),
            }),
            Some("reasoning") => parts.extend(reasoning_parts(item)),
            Some(other) if other.ends_with("_call") => parts.push(Part::ToolCall {
                id: item.get("id").and_then(str_of),
                name: other.trim_end_matches("_call").to_owned(),
                arguments: None,
            }),
            _ => {}
        }
    }
    vec![Message {
        role: "assistant".into(),
        parts,
        name: None,
        finish_reason,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genai::fixture;

    #[test]
    fn chat_messages_in_the_conventions_form() {
        let content =
            request_content(Api::ChatCompletions, &fixture("chat_request_tools.json")).unwrap();
        let json = messages_json(&content.messages);
        assert_eq!(
            json,
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "You are a weather bot."}]},
                {"role": "user", "parts": [
                    {"type": "text", "content": "Weather in Paris?"},
                    {"type": "uri", "modality": "image", "uri": "https://example.com/paris.png"},
                    {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORw0KGgo="}
                ]},
                {"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
                ]},
                {"role": "tool", "parts": [
                    {"type": "tool_call_response", "id": "call_1", "response": "rainy, 57°F"}
                ]}
            ])
        );
        assert_eq!(
            tools_json(&content.tools),
            json!([
                {"type": "function", "name": "get_weather", "description": "Current weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"type": "function", "name": "get_time"},
                {"type": "web_search", "name": "web_search"}
            ])
        );
        assert!(
            content.system_instructions.is_empty(),
            "chat system messages stay in the input"
        );
    }

    #[test]
    fn responses_input_instructions_and_items() {
        let content = request_content(Api::Responses, &fixture("responses_request.json")).unwrap();
        assert_eq!(
            parts_json(&content.system_instructions),
            json!([{"type": "text", "content": "Answer in French."}])
        );
        assert_eq!(
            messages_json(&content.messages),
            json!([
                {"role": "user", "parts": [{"type": "text", "content": "What is the weather?"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_9", "name": "get_weather", "arguments": {"city": "Lyon"}}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_9", "response": {"temp": 12}}]}
            ])
        );
        assert_eq!(content.tools[0].name, "get_weather");
        let simple = request_content(Api::Responses, br#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(simple.messages[0].parts, vec![Part::Text("hi".into())]);
    }

    #[test]
    fn every_free_text_field_is_visited() {
        let mut content =
            request_content(Api::ChatCompletions, &fixture("chat_request_tools.json")).unwrap();
        let mut seen = Vec::new();
        content.for_each_text(&mut |kind, s| {
            seen.push((kind, s.clone()));
            s.clear();
        });
        assert!(seen.contains(&(TextKind::Json, r#"{"city":"Paris"}"#.into())));
        assert!(seen.contains(&(TextKind::Json, "rainy, 57°F".into())));
        assert!(seen.contains(&(TextKind::Text, "Current weather".into())));
        assert!(seen.contains(&(TextKind::Text, "https://example.com/paris.png".into())));
        let json = messages_json(&content.messages).to_string();
        assert!(
            !json.contains("Paris?") && !json.contains("rainy"),
            "{json}"
        );
    }

    #[test]
    fn fit_drops_oldest_messages_then_cuts_long_strings_and_stays_json() {
        let messages: Vec<Message> = (0..20)
            .map(|i| Message {
                role: "user".into(),
                parts: vec![Part::Text(format!("message {i} {}", "x".repeat(200)))],
                ..Message::default()
            })
            .collect();
        let (whole, cut) = fit(messages_json(&messages), 1 << 20);
        assert!(!cut);
        let (text, cut) = fit(messages_json(&messages), 1000);
        assert!(cut && text.len() <= 1000, "{}", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        let kept = v.as_array().unwrap();
        let last = kept.last().unwrap()["parts"][0]["content"]
            .as_str()
            .unwrap();
        assert!(last.starts_with("message 19"), "the newest message stays");
        assert!(!text.contains("message 0 "), "the oldest goes first");
        assert!(whole.len() > text.len());
        let one = vec![Message {
            role: "user".into(),
            parts: vec![Part::Text("é".repeat(5000))],
            ..Message::default()
        }];
        let (text, cut) = fit(messages_json(&one), 300);
        assert!(cut && text.len() <= 300, "{}", text.len());
        assert!(text.contains("[truncated]"));
        serde_json::from_str::<Value>(&text).unwrap();
    }
}
