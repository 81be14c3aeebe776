"""Secret redaction as a user sees it: what ``get()`` returns, what reaches the file, what
``redaction="reject"`` refuses, and what ordinary text is left alone.

The secrets here are fakes made from a seeded RNG in each supported format; none is real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import string
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import flightlog
import msgspec
import pytest
from conftest import count_records
from flightlog.sample import standard_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_format import all_records

ALNUM = string.ascii_letters + string.digits
BASE64URL = ALNUM + "-_"
BASE32 = string.ascii_uppercase + "234567"
# The longest replacement the built-in rules write, "[REDACTED:huggingface_token]", and
# then some: what one redaction may add to a text at most.
MAX_MARKER = 32
MAX_NAME = 256  # characters of a decision's intent, purpose or data_ref


class Example(NamedTuple):
    """A fake secret in some format, in the text it would appear in."""

    kind: str
    text: str
    redacted: str  # ``text`` once redacted
    secret: str  # what must never be stored


def _chars(rng: random.Random, alphabet: str, n: int, digit: bool = True) -> str:
    """``n`` random characters, at least one a digit (as random tokens have) if asked."""
    chars = [rng.choice(alphabet) for _ in range(n)]
    if digit:
        chars[rng.randrange(n)] = rng.choice(string.digits)
    return "".join(chars)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def examples(rng: random.Random) -> list[Example]:
    """One fake secret of each supported format, with random bodies."""

    def token(kind: str, secret: str) -> Example:
        return Example(kind, secret, f"[REDACTED:{kind}]", secret)

    pem_body = "\n".join(
        _chars(rng, string.ascii_letters + string.digits + "+/", 64) for _ in range(4)
    )
    pem = f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n-----END RSA PRIVATE KEY-----"
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = _b64url(json.dumps({"sub": _chars(rng, ALNUM, 12), "iat": 1717000000}).encode())
    jwt = f"{header}.{claims}.{_chars(rng, BASE64URL, 43)}"
    bearer = _chars(rng, ALNUM + "-._~", 40)
    password = _chars(rng, ALNUM + "!$%*", 14)
    return [
        Example("private_key", pem, "[REDACTED:private_key]", pem_body.split("\n")[1]),
        # As it appears inside JSON text: newlines escaped.
        Example(
            "private_key",
            pem.replace("\n", "\\n"),
            "[REDACTED:private_key]",
            pem_body.split("\n")[2],
        ),
        token("anthropic_api_key", f"sk-ant-api03-{_chars(rng, BASE64URL, 93)}AA"),
        token("openai_api_key", f"sk-proj-{_chars(rng, BASE64URL, 156)}"),
        token("openai_api_key", f"sk-{_chars(rng, ALNUM, 48)}"),
        token("aws_access_key", f"AKIA{_chars(rng, BASE32, 16, digit=False)}"),
        token("aws_access_key", f"ASIA{_chars(rng, BASE32, 16, digit=False)}"),
        token("github_token", f"ghp_{_chars(rng, ALNUM, 36)}"),
        token("github_token", f"gho_{_chars(rng, ALNUM, 36)}"),
        token("github_token", f"ghu_{_chars(rng, ALNUM, 36)}"),
        token("github_token", f"ghs_{_chars(rng, ALNUM, 36)}"),
        token("github_token", f"ghr_{_chars(rng, ALNUM, 36)}"),
        token("github_token", f"github_pat_{_chars(rng, ALNUM + '_', 82)}"),
        token("gitlab_token", f"glpat-{_chars(rng, BASE64URL, 20)}"),
        token("slack_token", f"xoxb-{_chars(rng, string.digits, 12)}-{_chars(rng, ALNUM, 24)}"),
        token("slack_token", f"xoxp-{_chars(rng, string.digits, 12)}-{_chars(rng, ALNUM, 32)}"),
        token("slack_token", f"xoxs-{_chars(rng, string.digits, 10)}-{_chars(rng, ALNUM, 24)}"),
        token("slack_token", f"xapp-1-A{_chars(rng, string.digits, 10)}-{_chars(rng, ALNUM, 30)}"),
        token(
            "slack_webhook",
            f"https://hooks.slack.com/services/T{_chars(rng, string.ascii_uppercase, 8)}"
            f"/B{_chars(rng, string.ascii_uppercase, 8)}/{_chars(rng, ALNUM, 24)}",
        ),
        token("stripe_key", f"sk_live_{_chars(rng, ALNUM, 24)}"),
        token("stripe_key", f"rk_live_{_chars(rng, ALNUM, 24)}"),
        token("google_api_key", f"AIza{_chars(rng, BASE64URL, 35)}"),
        token("huggingface_token", f"hf_{_chars(rng, string.ascii_letters, 34, digit=False)}"),
        token("npm_token", f"npm_{_chars(rng, ALNUM, 36)}"),
        token("jwt", jwt),
        Example(
            "bearer_token",
            f"Authorization: Bearer {bearer}",
            "Authorization: Bearer [REDACTED:bearer_token]",
            bearer,
        ),
        Example(
            "url_password",
            f"postgresql://app:{password}@db.example.com:5432/orders",
            "postgresql://app:[REDACTED:url_password]@db.example.com:5432/orders",
            password,
        ),
        Example(
            "credential",
            f"DB_PASSWORD={password};",
            "DB_PASSWORD=[REDACTED:credential];",
            password,
        ),
    ]


EXAMPLES = examples(random.Random(20250602))


def example_of(kind: str) -> Example:
    """The first of ``EXAMPLES`` of this kind."""
    return next(e for e in EXAMPLES if e.kind == kind)


def prose(text: str) -> str:
    return f"Sure - I used {text} to call the API, then summarised the result."


def trace_with(text: str) -> dict[str, Any]:
    """A trace holding ``text`` (in prose) in every free-text field; see ``TEXT_PATHS``."""
    said = prose(text)
    return {
        "agent_name": "redaction-check",
        "input": said,
        "output": said,
        "tool_calls": [
            {
                "tool_name": "http",
                "input": {"request": {"headers": [said]}},
                "output": {"body": [1, {"text": said}]},
                "error": said,
            }
        ],
        "metadata": {"deploy": {"notes": [said]}, "config": json.dumps({"value": said})},
        "spans": [
            {
                "name": said,
                "status_code": "ERROR",
                "status_message": said,
                "attributes": {"request_body": said},
                "events": [{"name": said, "attributes": {"detail": said}}],
            }
        ],
        "events": [{"type": "tool", "metadata": {"log": said}}],
    }


# Where ``trace_with`` put the text; ``metadata.config`` holds it JSON-escaped.
TEXT_PATHS = [
    "input",
    "output",
    "tool_calls[0].input.request.headers[0]",
    "tool_calls[0].output.body[1].text",
    "tool_calls[0].error",
    "metadata.deploy.notes[0]",
    "spans[0].name",
    "spans[0].status_message",
    "spans[0].attributes.request_body",
    "spans[0].events[0].name",
    "spans[0].events[0].attributes.detail",
    "events[0].metadata.log",
]


def value_at(document: Any, path: str) -> Any:
    """The value at a field path like ``spans[0].events[1].name``."""
    for part in path.split("."):
        name, *indices = re.split(r"\[(\d+)\]", part)
        if name:
            document = document[name]
        for index in filter(None, indices):
            document = document[int(index)]
    return document


def stored(store: flightlog.Store, trace_id: str) -> Any:
    store.flush()
    return msgspec.to_builtins(store.get(trace_id))


def stored_bytes(path: Path) -> Iterator[bytes]:
    """What a closed store holds: the file, then every record decompressed."""
    yield (path / "data.mdb").read_bytes()
    for record in all_records(path):
        yield record.decoded()


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.kind}-{e.text[:8]}" for e in EXAMPLES])
def test_a_secret_in_any_field_is_redacted_before_it_reaches_disk(
    example: Example, store_path: Path
) -> None:
    with flightlog.open(store_path) as store:
        trace_id = store.log(trace_with(example.text))
        got = stored(store, trace_id)
    for path in TEXT_PATHS:
        assert value_at(got, path) == prose(example.redacted), path
    assert got["metadata"]["config"] == json.dumps({"value": prose(example.redacted)})
    assert got["redactions"] == len(TEXT_PATHS) + 1
    for data in stored_bytes(store_path):
        assert example.secret.encode() not in data


def test_values_under_secret_looking_keys_are_replaced_whole(
    store: flightlog.Store,
) -> None:
    trace_id = store.log(
        agent_name="keys",
        metadata={
            "password": "hunter2",
            "db": {"Password": 1234, "user": "app"},
            "x-api-key": {"nested": ["anything", 1]},
            "OPENAI_API_KEY": "not even key-shaped",
            "clientSecret": True,
            "refresh_token": None,
            "cookie": "",
            "max_tokens": 512,
            "token_usage": {"prompt": 3},
        },
        tool_calls=[{"tool_name": "http", "input": {"headers": {"Authorization": "Basic x"}}}],
        spans=[{"name": "s", "attributes": {"http.request.header.x-api-key": ["k"]}}],
        events=[{"metadata": {"api_key": "k"}}],
    )
    got = stored(store, trace_id)
    metadata = got["metadata"]
    for key in ("password", "x-api-key", "OPENAI_API_KEY", "clientSecret"):
        assert metadata[key] == "[REDACTED]", key
    assert metadata["db"] == {"Password": "[REDACTED]", "user": "app"}
    # Nothing to hide in these; and these keys only look alike.
    assert metadata["refresh_token"] is None
    assert metadata["cookie"] == ""
    assert metadata["max_tokens"] == 512
    assert metadata["token_usage"] == {"prompt": 3}
    assert got["tool_calls"][0]["input"] == {"headers": {"Authorization": "[REDACTED]"}}
    assert got["spans"][0]["attributes"] == {"http.request.header.x-api-key": "[REDACTED]"}
    assert got["events"][0]["metadata"] == {"api_key": "[REDACTED]"}
    assert got["redactions"] == 8


def test_ids_names_and_tags_are_stored_as_given(store: flightlog.Store) -> None:
    secret = example_of("github_token").secret  # a GitHub token
    trace_id = store.log(
        agent_name="ids",
        session_id=secret,
        tags=[secret],
        tool_calls=[{"tool_name": secret}],
    )
    got = stored(store, trace_id)
    assert (got["session_id"], got["tags"], got["tool_calls"][0]["tool_name"]) == (
        secret,
        [secret],
        secret,
    )
    assert got["redactions"] == 0


def test_reject_refuses_the_trace_naming_paths_and_kinds_never_the_secret(
    store_path: Path,
) -> None:
    key = example_of("anthropic_api_key")
    with flightlog.open(store_path, redaction="reject") as store:
        record = trace_with(key.text)
        record["spans"].insert(0, {"name": "first", "attributes": {"api_key": key.secret}})
        with pytest.raises(flightlog.SecretDetected) as caught:
            store.log(record)
        clean_id = store.log(agent_name="clean", input="nothing to hide")
    error = caught.value
    assert isinstance(error, flightlog.ValidationError)
    expected_paths = [
        "input",
        "output",
        "tool_calls[0].input.request.headers[0]",
        "tool_calls[0].output.body[1].text",
        "tool_calls[0].error",
        "metadata.deploy.notes[0]",
        "metadata.config",
        "spans[0].attributes.api_key",
        *(path.replace("spans[0]", "spans[1]") for path in TEXT_PATHS[6:11]),
        "events[0].metadata.log",
    ]
    assert [e["path"] for e in error.errors] == expected_paths
    assert error.errors[7] == {
        "path": "spans[0].attributes.api_key",
        "message": "is under a secret-looking key name",
        "kind": "key_name",
    }
    assert error.errors[0] == {
        "path": "input",
        "message": "holds a secret (anthropic_api_key)",
        "kind": "anthropic_api_key",
    }
    assert str(error) == "input: holds a secret (anthropic_api_key) (and 13 more problems)"
    for shown in (str(error), repr(error), repr(error.errors)):
        assert key.secret not in shown
        assert key.secret[:12] not in shown
    # Nothing of it was stored; the clean trace was.
    assert count_records(store_path) == 1
    with flightlog.open(store_path, readonly=True) as store:
        assert store.get(clean_id).input == "nothing to hide"


def test_reject_in_log_many_stores_none_and_prefixes_paths(store_path: Path) -> None:
    with flightlog.open(store_path, redaction="reject") as store:
        batch: list[dict[str, Any]] = [
            {"agent_name": "a", "input": "fine"},
            {"agent_name": "b", "metadata": {"dsn": example_of("url_password").text}},
        ]
        with pytest.raises(flightlog.SecretDetected) as caught:
            store.log_many(batch)
    assert caught.value.errors == [
        {
            "path": "[1].metadata.dsn",
            "message": "holds a secret (url_password)",
            "kind": "url_password",
        }
    ]
    assert count_records(store_path) == 0


def test_reject_reports_a_schema_error_rather_than_a_secret(store: flightlog.Store) -> None:
    secret = example_of("github_token").secret
    with pytest.raises(flightlog.ValidationError) as caught:
        store.log(agent_name="a", input=secret, status="bogus")
    assert not isinstance(caught.value, flightlog.SecretDetected)
    assert [e["path"] for e in caught.value.errors] == ["status"]


def test_off_stores_secrets_as_given(store_path: Path) -> None:
    github = example_of("github_token")
    with flightlog.open(store_path, redaction="off") as store:
        got = stored(store, store.log(trace_with(github.text)))
    assert got["input"] == prose(github.text)
    assert got["metadata"]["deploy"]["notes"] == [prose(github.text)]
    assert got["redactions"] == 0


def test_extra_keys_and_patterns_are_redacted_too(store_path: Path) -> None:
    with flightlog.open(
        store_path,
        redaction_keys=["ssn", "session-id"],
        redaction_patterns={"employee_id": r"\bEMP-\d{6}\b", "ticket": r"ticket #(?P<secret>\d+)"},
    ) as store:
        trace_id = store.log(
            agent_name="custom",
            input=f"EMP-123456 opened ticket #4521 with {example_of('github_token').secret}",
            metadata={"user": {"SSN": "078-05-1120", "userSessionId": "abc", "name": "Jo"}},
        )
        got = stored(store, trace_id)
    assert got["input"] == (
        "[REDACTED:employee_id] opened ticket #[REDACTED:ticket] with [REDACTED:github_token]"
    )
    assert got["metadata"]["user"] == {
        "SSN": "[REDACTED]",
        "userSessionId": "[REDACTED]",
        "name": "Jo",
    }
    assert got["redactions"] == 3


@pytest.mark.parametrize(
    ("options", "path", "message"),
    [
        ({"redaction": "loud"}, "redaction", "expected 'redact', 'reject' or 'off'"),
        ({"redaction": None}, "redaction", "expected 'redact', 'reject' or 'off'"),
        ({"redaction_keys": "password"}, "redaction_keys", "expected a list of strings or None"),
        ({"redaction_keys": ["ok", 3]}, "redaction_keys", "expected a list of strings or None"),
        ({"redaction_keys": ["ok", "--"]}, "redaction_keys[1]", "must be a key name with"),
        ({"redaction_patterns": ["a"]}, "redaction_patterns", "expected a dict of kind to regex"),
        ({"redaction_patterns": {"k": 1}}, "redaction_patterns", "expected a dict of kind to"),
        ({"redaction_patterns": {"k": "(open"}}, "redaction_patterns.k", "invalid regex: "),
        ({"redaction_patterns": {"k": "a*"}}, "redaction_patterns.k", "must not match the empty"),
        ({"redaction_patterns": {"a kind": "a"}}, "redaction_patterns", "a kind must be 1..32"),
    ],
)
def test_bad_redaction_options_are_refused_naming_the_option(
    options: dict[str, Any], path: str, message: str, store_path: Path
) -> None:
    with pytest.raises(flightlog.ValidationError) as caught:
        flightlog.open(store_path, **options)
    assert [e["path"] for e in caught.value.errors] == [path]
    assert caught.value.errors[0]["message"].startswith(message)
    assert str(caught.value).startswith(f"{path}: ")
    assert not store_path.exists(), "a refused open creates nothing"


def test_sample_traces_have_nothing_to_redact(store: flightlog.Store) -> None:
    rng = random.Random(5)
    ids = store.log_many([standard_trace(rng) for _ in range(200)])
    store.flush()
    assert {store.get(trace_id).redactions for trace_id in ids} == {0}


# --- ordinary text ---------------------------------------------------------------------------

_PROSE = (
    "the customer asked about a refund for the order and the agent checked the invoice then "
    "confirmed the payment token usage was high so we reduced max tokens the secret to good "
    "support is patience please reset your password from the account page bearer of good news "
    "authorization pending cookie banner accepted credentials rotated api key limits apply "
    "risk-free sk-learn task-specific desk-top Asia academic akin ghost hooks slack github "
    "private key management is documented in the security handbook"
)

_CODE = [
    "def get_{name}(self, {arg}: int) -> str:\n    return self._{name}[{arg}]",
    'token = os.environ["{NAME}_TOKEN"]',
    "api_key = settings.{NAME}_API_KEY",
    "password = getpass.getpass(prompt='Password: ')",
    'headers = {{"Authorization": f"Bearer {{token}}"}}',
    "secret_key = generate_secret(length={n})",
    "SELECT id, password_hash FROM users WHERE id = {n} AND token_expires > now()",
    "git clone git@github.com:{name}/{arg}.git && cd {arg}",
    "pip install scikit-learn=={n}.{n}.1 sk-video",
    "for (let i = 0; i < {n}; i++) {{ total += prices[i] * qty[i]; }}",
    "curl -s https://api.example.com/v1/{name}?page={n} | jq '.items[].id'",
    'const cookie = document.cookie.split("; ").find(c => c.startsWith("{name}="));',
    "export PATH=$HOME/.local/bin:$PATH  # {name}",
    "docker run -p {n}:{n} -e LOG_LEVEL=debug {name}/{arg}:latest",
]


def benign_strings(rng: random.Random, count: int) -> list[str]:
    """Ordinary trace text of many shapes: ids, hashes, blobs, code, prose, URLs."""

    words = _PROSE.split()

    def word() -> str:
        return rng.choice(words)

    def name() -> str:
        return "_".join(word().lower().replace("-", "_") for _ in range(rng.randint(1, 3)))

    makers: list[Callable[[], str]] = [
        lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        lambda: hashlib.sha256(rng.randbytes(16)).hexdigest(),
        lambda: hashlib.sha1(rng.randbytes(16)).hexdigest(),  # a git SHA
        lambda: base64.b64encode(rng.randbytes(rng.randint(12, 400))).decode(),
        lambda: _b64url(rng.randbytes(rng.randint(12, 64))),
        lambda: " ".join(word() for _ in range(rng.randint(5, 60))).capitalize() + ".",
        lambda: rng.choice(_CODE).format(
            name=name(), arg=name(), NAME=name().upper(), n=rng.randint(1, 9999)
        ),
        lambda: f"https://{name().replace('_', '-')}.example.com/{name()}?q={word()}&n=7",
        lambda: f"ssh://git@github.com/{name()}/{name()}.git",
        lambda: f"sk-{word()}-{word()}",
        lambda: f"{name()}@example.org",
        lambda: f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}",
        lambda: (
            rng.choice(["AKIA", "ASIA", "AIza", "ghp_", "hf_", "npm_", "xoxb-", "eyJ"])
            + _chars(rng, ALNUM, rng.randint(2, 12), digit=False)
        ),
    ]
    return [rng.choice(makers)() for _ in range(count)]


def test_ordinary_text_is_almost_never_taken_for_a_secret(store: flightlog.Store) -> None:
    strings = benign_strings(random.Random(11), 10_000)
    flagged = 0
    for first in range(0, len(strings), 1_000):
        chunk = strings[first : first + 1_000]
        trace_id = store.log(agent_name="benign", metadata={"strings": chunk})
        flagged += stored(store, trace_id)["redactions"]
    assert flagged <= len(strings) // 1_000  # at most 0.1%


# --- any text --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[flightlog.Store]:
    path = tmp_path_factory.mktemp("redaction") / "store"
    with flightlog.open(path, durability="none") as store:
        yield store


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.text(max_size=200),
    after=st.text(max_size=200),
    rng=st.randoms(use_true_random=False),
    which=st.integers(0, len(EXAMPLES) - 1),
)
def test_a_secret_anywhere_in_any_text_is_redacted(
    shared_store: flightlog.Store, before: str, after: str, rng: random.Random, which: int
) -> None:
    example = examples(rng)[which]
    text = f"{before} {example.text} {after}"
    got = stored(shared_store, shared_store.log(agent_name="any", input=text))
    assert example.secret not in got["input"]
    markers = got["input"].count("[REDACTED")
    assert markers >= 1
    assert got["redactions"] == 1
    assert len(got["input"]) <= len(text) + MAX_MARKER * markers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.recursive(st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner))
)
def test_any_text_is_stored_valid_and_at_most_a_little_longer(
    shared_store: flightlog.Store, value: Any
) -> None:
    got = stored(shared_store, shared_store.log(agent_name="any", metadata={"v": value}))
    if got["redactions"] == 0:
        assert got["metadata"]["v"] == value
    encoded = json.dumps(got["metadata"]["v"])
    assert len(encoded) <= len(json.dumps(value)) + MAX_MARKER * encoded.count("[REDACTED")


# --- decisions -------------------------------------------------------------------------------


def record_everywhere(store: flightlog.Store, text: str) -> flightlog.Decision:
    """A committed decision holding ``text`` (in prose) in every free-text field; in those
    limited to a name's length (intent, purpose, data_ref) only when it fits."""
    said = prose(text)
    name = fitting(said)
    nested = {"deploy": {"notes": [said]}, "password": "pw-1", "config": json.dumps([said])}
    d = store.open_decision("redactor", name, "autonomous", metadata=nested)
    d.read(product="pg_orders", purpose=name, data_ref=name)
    d.evaluate(policy_id="p1", outcome="allow", rationale=said)
    d.write(product="pg_orders", purpose=name, mutation_summary=nested)
    d.add_context(nested, summary=said)
    d.request_approval(reason=said)
    d.resolve_approval(approved=True, reason=said)
    d.close("commit", reason=said)
    return d


def fitting(text: str) -> str:
    """``text`` if a decision's name fields can hold it, else a stand-in."""
    return text if len(text) <= MAX_NAME else "text.too.long.for.a.name"


def decision_texts(trace: flightlog.DecisionTrace) -> list[Any]:
    """Every free-text value ``record_everywhere`` wrote, as stored."""
    e = trace.events
    values: list[Any] = [trace.intent, trace.metadata, e[1].purpose, e[1].data_ref]
    values += [e[2].rationale, e[3].purpose, e[3].mutation_summary, e[4].context]
    values += [e[4].summary, e[5].reason, e[6].reason, e[7].reason]
    return values


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"{e.kind}-{e.text[:8]}" for e in EXAMPLES])
def test_a_secret_in_any_decision_field_is_redacted_before_it_is_hashed(
    example: Example, store_path: Path
) -> None:
    with flightlog.open(store_path) as store:
        d = record_everywhere(store, example.text)
        got = store.decision_trace(d.decision_id, agent="redactor")
        assert store.verify_decision(d.decision_id, agent="redactor")
    redacted = prose(example.redacted)
    nested = {
        "deploy": {"notes": [redacted]},
        "password": "[REDACTED]",
        "config": json.dumps([redacted]),
    }
    said = prose(example.text)
    name = redacted if fitting(said) == said else fitting(said)
    texts = [v if isinstance(v, str) else msgspec.to_builtins(v) for v in decision_texts(got)]
    assert texts == [name, nested, name, name, redacted, name, nested, nested] + [redacted] * 4
    data = (store_path / "data.mdb").read_bytes()
    assert example.secret.encode() not in data
    assert b"pw-1" not in data


def test_reject_refuses_a_decision_event_naming_paths_and_records_nothing(
    store_path: Path,
) -> None:
    key = example_of("github_token")
    with flightlog.open(store_path, redaction="reject") as store:
        with pytest.raises(flightlog.SecretDetected) as opening:
            store.open_decision("a", "intent", "autonomous", metadata={"k": [prose(key.text)]})
        assert opening.value.errors == [
            {"path": "metadata.k[0]", "message": "holds a secret (github_token)", "kind": key.kind}
        ]
        assert store.decisions(agent="a").items == []
        d = store.open_decision("a", "intent", "autonomous")
        with pytest.raises(flightlog.SecretDetected) as caught:
            d.write(
                product="p",
                purpose=key.text,
                mutation_summary={"db": {"api_key": "k"}, "log": [1, key.text]},
            )
        assert [(e["path"], e["kind"]) for e in caught.value.errors] == [
            ("purpose", "github_token"),
            ("mutation_summary.db.api_key", "key_name"),
            ("mutation_summary.log[1]", "github_token"),
        ]
        for shown in (str(caught.value), repr(caught.value.errors)):
            assert key.secret not in shown
        d.close("commit")
        events = store.decision_trace(d.decision_id, agent="a").events
        assert [e.type for e in events] == ["open", "close"]
    assert key.secret.encode() not in (store_path / "data.mdb").read_bytes()


def test_off_records_decision_fields_as_given(store_path: Path) -> None:
    key = example_of("url_password")
    with flightlog.open(store_path, redaction="off") as store:
        d = store.open_decision("a", "intent", "autonomous", metadata={"dsn": key.text})
        event = d.add_context({"dsn": key.text}, summary=key.text)
        got = store.decision_trace(d.decision_id, agent="a")
    assert got.metadata == {"dsn": key.text}
    assert (event.context, event.summary) == ({"dsn": key.text}, key.text)
