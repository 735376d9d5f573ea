"""Drives the official `openai` Python SDK against the mock directly and through genai-tap,
and checks that every call gives the SDK the same result both ways.

Usage: openai_python.py DIRECT_BASE PROXY_BASE AZURE_PROXY_ENDPOINT
Prints one JSON object per scenario; exits 1 if any result differs.
"""

import json
import sys

import openai
from openai import AzureOpenAI, OpenAI

direct_base, proxy_base, azure_endpoint = sys.argv[1:4]

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the conformance suite."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def dump(obj):
    # exclude_unset: fields present in the JSON count, so a leftover "usage": null would show.
    return obj.model_dump(mode="json", exclude_unset=True)


def chat(client):
    return dump(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2))


def chat_stream(client):
    # No stream_options: what every proxy records with zero tokens.
    return [dump(c) for c in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)]


def chat_stream_first_choice(client):
    # The pattern that crashes on a usage-only chunk: every chunk must have a choice.
    text = ""
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
        text += chunk.choices[0].delta.content or ""
    return text


def chat_tools(client):
    return dump(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS))


def chat_tools_stream(client):
    return [
        dump(c)
        for c in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream=True)
    ]


def responses(client):
    return dump(client.responses.create(model="gpt-4.1", input="Say hello", instructions="Be brief."))


def responses_stream(client):
    return [dump(e) for e in client.responses.create(model="gpt-4.1", input="Say hello", stream=True)]


def embeddings(client):
    # The SDK asks for base64 and decodes it to floats.
    return dump(client.embeddings.create(model="text-embedding-3-small", input=["hello world", "again"]))


SCENARIOS = [chat, chat_stream, chat_stream_first_choice, chat_tools, chat_tools_stream, responses, responses_stream, embeddings]

direct = OpenAI(base_url=direct_base + "/v1", api_key="sk-conformance", max_retries=0)
proxied = OpenAI(base_url=proxy_base + "/v1", api_key="sk-conformance", max_retries=0)
failed = False
for scenario in SCENARIOS:
    want, got = scenario(direct), scenario(proxied)
    same = want == got
    failed |= not same
    print(json.dumps({"sdk": "python", "version": openai.__version__, "scenario": scenario.__name__, "same": same}))
    if not same:
        print(json.dumps({"want": want, "got": got}), file=sys.stderr)

# Azure OpenAI: deployment paths and api-version, through a route that names the provider.
azure_direct = AzureOpenAI(azure_endpoint=direct_base, api_key="azure-key", api_version="2024-10-21", max_retries=0)
azure_proxied = AzureOpenAI(azure_endpoint=azure_endpoint, api_key="azure-key", api_version="2024-10-21", max_retries=0)
for name, call in [
    ("azure_chat", lambda c: dump(c.chat.completions.create(model="prod-4o", messages=MESSAGES))),
    ("azure_chat_stream", lambda c: [dump(x) for x in c.chat.completions.create(model="prod-4o", messages=MESSAGES, stream=True)]),
    ("azure_embeddings", lambda c: dump(c.embeddings.create(model="ada-prod", input="hello"))),
]:
    want, got = call(azure_direct), call(azure_proxied)
    same = want == got
    failed |= not same
    print(json.dumps({"sdk": "python", "scenario": name, "same": same}))
    if not same:
        print(json.dumps({"want": want, "got": got}), file=sys.stderr)

sys.exit(1 if failed else 0)
