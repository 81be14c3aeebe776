"""Ingest or update (SPEC §4): later fragments of a trace, the rules they must follow, exact
re-sends, and summaries that follow the merged view of ``get()``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import flightlog
import pytest
from conftest import count_entries, count_records
from flightlog import Span, TokenUsage, ToolCall, Trace, ValidationError, trace_id_for
from flightlog.store import Durability
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = dt.datetime(2025, 6, 2, tzinfo=dt.timezone.utc)
SPAN = "00f067aa0ba902b7"


def merge_states(path: Path) -> int:
    """How many traces of a *closed* store have a merge state (docs/format.md, ``merges``)."""
    return count_entries(path, "merges")


def llm(span_id: str, prompt: int, completion: int, status: str = "OK") -> Span:
    return Span(
        name="chat",
        span_id=span_id,
        kind="LLM",
        status_code=status,  # type: ignore[arg-type]
        attributes={
            "gen_ai.usage.input_tokens": prompt,
            "gen_ai.usage.output_tokens": completion,
        },
    )


def summary(store: flightlog.Store, trace_id: str) -> flightlog.TraceSummary:
    store.flush()
    (found,) = [s for s in store.query(limit=1000) if s.trace_id == trace_id]
    return found


# --- the rules an update follows --------------------------------------------------------------


def test_an_update_cannot_change_the_agent(store: flightlog.Store, store_path: Path) -> None:
    store.log(agent_name="draft-bot", trace_id=TID, input="question")
    store.flush()

    with pytest.raises(ValidationError) as caught:
        store.log(agent_name="support-bot", trace_id=TID, output="answer")

    assert [e["path"] for e in caught.value.errors] == ["agent_name"]
    assert "draft-bot" in str(caught.value) and "support-bot" in str(caught.value)
    trace = store.get(TID)
    assert (trace.agent_name, trace.output) == ("draft-bot", flightlog.UNSET)
    store.close()
    assert count_records(store_path) == 1


@pytest.mark.parametrize("done", ["succeeded", "failed"])
def test_a_finished_trace_cannot_be_running_again(store: flightlog.Store, done: str) -> None:
    store.log(agent_name="bot", trace_id=TID, status="running")
    store.log(agent_name="bot", trace_id=TID, status=done)
    store.flush()

    with pytest.raises(ValidationError) as caught:
        store.log(agent_name="bot", trace_id=TID, status="running", output="late")

    assert [e["path"] for e in caught.value.errors] == ["status"]
    assert store.get(TID).status == done
    assert store.count(status="running") == 0


def test_finished_traces_may_still_be_updated(store: flightlog.Store) -> None:
    store.log(agent_name="bot", trace_id=TID, status="failed")
    store.log(agent_name="bot", trace_id=TID, status="succeeded", output="retried")
    store.log(agent_name="bot", trace_id=TID, tags=["late"])
    store.flush()

    trace = store.get(TID)
    assert (trace.status, trace.output, trace.tags) == ("succeeded", "retried", ["late"])


def test_a_conflict_still_queued_is_refused_by_the_writer(store: flightlog.Store) -> None:
    """Both fragments are queued before either commits: the writer refuses the second, and
    the error surfaces at the next flush (group durability), storing nothing of it."""
    store.log(agent_name="bot", trace_id=TID, status="succeeded")
    store.log(agent_name="other", trace_id=TID, output="lost")

    with pytest.raises(ValidationError, match="agent_name"):
        store.flush()

    assert store.get(TID).output is flightlog.UNSET
    store.flush()  # reported once


def test_in_sync_mode_the_conflicting_log_call_raises(store_path: Path) -> None:
    with flightlog.open(store_path, durability="sync") as store:
        store.log(agent_name="bot", trace_id=TID, status="succeeded")
        with pytest.raises(ValidationError, match="running"):
            store.log(agent_name="bot", trace_id=TID, status="running")
        assert store.get(TID).status == "succeeded"


def test_a_batch_with_a_conflict_stores_nothing(store: flightlog.Store, store_path: Path) -> None:
    other = trace_id_for("other")
    with pytest.raises(ValidationError) as caught:
        store.log_many(
            [
                Trace(agent_name="bot", trace_id=other),
                Trace(agent_name="bot", trace_id=TID, status="failed"),
                Trace(agent_name="bot", trace_id=TID, status="running"),
            ]
        )

    assert [e["path"] for e in caught.value.errors] == ["[2].status"]
    store.close()
    assert count_records(store_path) == 0


@pytest.mark.parametrize("durability", ["sync", "group"])
def test_a_refused_update_in_log_many_of_one_trace_still_names_its_position(
    store_path: Path, durability: Durability
) -> None:
    """Found writing the model test: log_many names the trace's position in every error
    path, but an update it refused as the only trace of the call had a bare path. In group
    mode the writer may be the one refusing it, reported by the next flush."""
    with flightlog.open(store_path, durability=durability) as store:
        store.log(agent_name="bot", trace_id=TID, status="succeeded")
        with pytest.raises(ValidationError) as caught:
            store.log_many([Trace(agent_name="other", trace_id=TID, status="running")])
            store.flush()

        assert [e["path"] for e in caught.value.errors] == ["[0].agent_name", "[0].status"]
        assert store.get(TID).agent_name == "bot"
    assert count_records(store_path) == 1


# --- exact re-sends ---------------------------------------------------------------------------


def test_sending_the_same_fragment_again_changes_nothing(
    store: flightlog.Store, store_path: Path
) -> None:
    fragment = Trace(
        agent_name="bot",
        trace_id=TID,
        input="find flights",
        tool_calls=[ToolCall(tool_name="search", error="timeout")],
        metadata={"api_key": "x"},
        spans=[llm(SPAN, 10, 5)],
    )
    store.log(fragment)
    store.flush()
    before = store.get(TID)

    for _ in range(3):
        store.log(fragment)
    store.log_many([fragment, fragment])
    store.flush()

    assert store.get(TID) == before
    assert len(store.get(TID).tool_calls) == 1, "tool calls are appended, but not re-sent ones"
    assert summary(store, TID).span_count == 1
    store.close()
    assert count_records(store_path) == 1


def test_retrying_an_earlier_fragment_is_not_an_error(store: flightlog.Store) -> None:
    """A retried `running` fragment after the trace finished is the same fragment, not a
    step back: it is dropped silently."""
    started = Trace(agent_name="bot", trace_id=TID, status="running", input="q")
    store.log(started)
    store.log(agent_name="bot", trace_id=TID, status="succeeded", output="a")
    store.flush()

    store.log(started)
    store.flush()

    assert store.get(TID).status == "succeeded"
    assert store.count(status="running") == 0


def test_traces_logged_once_under_a_minted_id_keep_no_merge_state(
    store: flightlog.Store, store_path: Path
) -> None:
    ids = store.log_many([Trace(agent_name="bot") for _ in range(20)])
    store.log(agent_name="bot", trace_id=TID)
    store.log(agent_name="bot", trace_id=ids[0], output="updated")
    store.close()

    assert merge_states(store_path) == 2


# --- summaries follow the merged view ---------------------------------------------------------


def test_a_resent_span_counts_once_and_replaces_its_status(store: flightlog.Store) -> None:
    store.log(
        agent_name="bot", trace_id=TID, spans=[Span(name="a", span_id=SPAN, status_code="ERROR")]
    )
    assert summary(store, TID).has_errors
    assert store.count(has_errors=True) == 1

    store.log(
        agent_name="bot", trace_id=TID, spans=[Span(name="a", span_id=SPAN, status_code="OK")]
    )
    found = summary(store, TID)

    assert (found.span_count, found.has_errors) == (1, False)
    assert store.count(has_errors=True) == 0
    assert store.check().ok


def test_token_usage_follows_resent_llm_spans(store: flightlog.Store) -> None:
    other = "00f067aa0ba902b8"
    store.log(agent_name="bot", trace_id=TID, spans=[llm(SPAN, 100, 10), llm(other, 50, 5)])
    store.log(agent_name="bot", trace_id=TID, spans=[llm(SPAN, 200, 20)])

    usage = summary(store, TID).token_usage
    assert usage == TokenUsage(prompt_tokens=250, completion_tokens=25, total_tokens=275)

    # A trace-level report is authoritative once given, whatever spans come later.
    store.log(
        agent_name="bot", trace_id=TID, token_usage=TokenUsage(prompt_tokens=1, completion_tokens=1)
    )
    store.log(agent_name="bot", trace_id=TID, spans=[llm("00f067aa0ba902b9", 999, 999)])
    usage = summary(store, TID).token_usage
    assert usage == TokenUsage(prompt_tokens=1, completion_tokens=1, total_tokens=2)


def test_a_trace_first_logged_under_a_minted_id_merges_exactly(store: flightlog.Store) -> None:
    """The writer rebuilds the merge state from the stored fragment on the first update."""
    tid = store.log(
        agent_name="bot",
        spans=[Span(name="a", span_id=SPAN, status_code="ERROR"), llm("00f067aa0ba902b8", 7, 3)],
    )
    store.flush()
    store.log(
        agent_name="bot", trace_id=tid, spans=[Span(name="a", span_id=SPAN, status_code="OK")]
    )

    found = summary(store, tid)
    assert (found.span_count, found.has_errors) == (2, False)
    assert found.token_usage == TokenUsage(prompt_tokens=7, completion_tokens=3, total_tokens=10)


def test_a_run_id_keeps_updating_one_trace(store: flightlog.Store) -> None:
    tid = trace_id_for("run_abc")
    store.log(agent_name="bot", trace_id=tid, run_id="run_abc", status="running")
    store.log(agent_name="bot", trace_id=trace_id_for("run_abc"), status="failed")
    store.flush()

    assert store.count(run_id="run_abc") == 1
    assert store.count(status="failed", has_errors=True) == 1
    assert store.count(status="running") == 0


def test_deleting_an_updated_trace_removes_its_merge_state(
    store: flightlog.Store, store_path: Path
) -> None:
    store.log(agent_name="bot", trace_id=TID)
    store.log(agent_name="bot", trace_id=TID, output="more")
    store.flush()

    assert store.delete(TID)
    assert store.check().ok
    store.close()
    assert merge_states(store_path) == 0


# --- the model: any sequence of fragments and re-sends ----------------------------------------

SPAN_IDS = [f"{i:016x}" for i in range(1, 6)]


@st.composite
def fragment(draw: st.DrawFn) -> Trace:
    spans = [
        Span(
            name="step",
            span_id=span_id,
            kind=draw(st.sampled_from(["LLM", "TOOL"])),
            status_code=draw(st.sampled_from(["OK", "ERROR", "UNSET"])),
            attributes=draw(
                st.one_of(
                    st.just({}),
                    st.fixed_dictionaries(
                        {
                            "gen_ai.usage.input_tokens": st.integers(0, 100),
                            "gen_ai.usage.output_tokens": st.integers(0, 100),
                        }
                    ),
                )
            ),
        )
        for span_id in draw(st.lists(st.sampled_from(SPAN_IDS), unique=True, max_size=3))
    ]
    fields: dict[str, Any] = {"agent_name": "bot", "trace_id": TID, "timestamp": T0, "spans": spans}
    if draw(st.booleans()):
        failed = draw(st.booleans())
        fields["tool_calls"] = [ToolCall(tool_name="t", error="x" if failed else flightlog.UNSET)]
    if draw(st.integers(0, 3)) == 0:
        fields["token_usage"] = TokenUsage(
            prompt_tokens=draw(st.integers(0, 9)), completion_tokens=1
        )
    if draw(st.booleans()):
        fields["status"] = draw(st.sampled_from(["succeeded", "failed"]))
    return Trace(**fields)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fragments=st.lists(fragment(), min_size=1, max_size=5),
    resends=st.lists(st.integers(0, 4), max_size=4),
)
def test_summaries_equal_the_merged_view_whatever_is_resent(
    tmp_path_factory: pytest.TempPathFactory, fragments: list[Trace], resends: list[int]
) -> None:
    """Logging fragments with re-sends of earlier ones in between gives what logging each
    distinct fragment once gives, and the summary agrees with that merged view."""
    root = tmp_path_factory.mktemp("model")
    distinct = [f for i, f in enumerate(fragments) if f not in fragments[:i]]
    with flightlog.open(root / "once") as reference:
        reference.log_many(distinct)
        reference.flush()
        merged = reference.get(TID)
    with flightlog.open(root / "resent") as store:
        for i, fragment in enumerate(fragments):
            store.log(fragment)
            for earlier in resends:
                if earlier <= i and earlier % 2 == i % 2:
                    store.log(fragments[earlier])
        store.flush()
        assert store.get(TID) == merged
        found = store.query().items[0]
        assert store.check().ok

    assert found.span_count == len(merged.spans)
    assert found.has_errors == (
        merged.status == "failed"
        or any(s.status_code == "ERROR" for s in merged.spans)
        or any(c.error is not flightlog.UNSET for c in merged.tool_calls)
    )
    if merged.token_usage is not flightlog.UNSET:
        assert found.token_usage == merged.token_usage
        return
    usage = [s.attributes for s in merged.spans if s.kind == "LLM" and s.attributes]
    if not usage:
        assert found.token_usage is flightlog.UNSET
        return
    prompt = sum(a["gen_ai.usage.input_tokens"] for a in usage)
    completion = sum(a["gen_ai.usage.output_tokens"] for a in usage)
    assert found.token_usage == TokenUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


# --- parents in earlier fragments ------------------------------------------------------------

ROOT, CHILD, GRANDCHILD = "1111111111111111", "2222222222222222", "3333333333333333"


@pytest.mark.parametrize("durability", ["sync", "group", "none"])
def test_an_update_may_add_children_of_spans_stored_earlier(
    store_path: Path, durability: Durability
) -> None:
    with flightlog.open(store_path, durability=durability) as store:
        store.log(agent_name="bot", trace_id=TID, spans=[Span(name="root", span_id=ROOT)])
        store.log(
            agent_name="bot",
            trace_id=TID,
            spans=[Span(name="child", span_id=CHILD, parent_span_id=ROOT)],
        )
        store.log_many(
            [
                Trace(
                    agent_name="bot",
                    trace_id=TID,
                    spans=[Span(name="grandchild", span_id=GRANDCHILD, parent_span_id=CHILD)],
                )
            ]
        )
        store.flush()
        parents = {s.name: s.parent_span_id for s in store.get(TID).spans}
    assert parents == {"root": flightlog.UNSET, "child": ROOT, "grandchild": CHILD}


def test_a_parent_in_an_earlier_fragment_of_the_same_batch_is_found(
    store: flightlog.Store,
) -> None:
    store.log_many(
        [
            Trace(agent_name="bot", trace_id=TID, spans=[Span(name="root", span_id=ROOT)]),
            Trace(
                agent_name="bot",
                trace_id=TID,
                spans=[Span(name="child", span_id=CHILD, parent_span_id=ROOT)],
            ),
        ]
    )
    store.flush()
    assert [s.parent_span_id for s in store.get(TID).spans] == [flightlog.UNSET, ROOT]


@pytest.mark.parametrize("durability", ["sync", "group"])
def test_a_parent_no_fragment_holds_is_refused_and_nothing_is_stored(
    store_path: Path, durability: Durability
) -> None:
    with flightlog.open(store_path, durability=durability) as store:
        store.log(agent_name="bot", trace_id=TID, spans=[Span(name="root", span_id=ROOT)])
        store.flush()
        orphan = [Span(name="orphan", span_id=CHILD, parent_span_id=GRANDCHILD)]
        with pytest.raises(ValidationError) as caught:
            store.log(agent_name="bot", trace_id=TID, spans=orphan)
            store.flush()
        assert caught.value.errors == [
            {"path": "spans[0].parent_span_id", "message": "names no span of this trace"}
        ]
        with pytest.raises(ValidationError) as batched:
            store.log_many([Trace(agent_name="bot", trace_id=trace_id_for("new"), spans=orphan)])
            store.flush()
        assert [e["path"] for e in batched.value.errors] == ["[0].spans[0].parent_span_id"]
        assert [s.name for s in store.get(TID).spans] == ["root"]
    assert count_records(store_path) == 1


def test_a_parent_chain_through_earlier_fragments_may_not_close_a_cycle(
    store: flightlog.Store,
) -> None:
    store.log(
        agent_name="bot",
        trace_id=TID,
        spans=[Span(name="root", span_id=ROOT), Span(name="c", span_id=CHILD, parent_span_id=ROOT)],
    )
    # Re-sending the root under a new span whose parent is the root's own child.
    cycle = [
        Span(name="root", span_id=ROOT, parent_span_id=GRANDCHILD),
        Span(name="g", span_id=GRANDCHILD, parent_span_id=CHILD),
    ]
    store.log(agent_name="bot", trace_id=TID, spans=cycle)
    with pytest.raises(ValidationError) as caught:
        store.flush()
    assert caught.value.errors == [
        {"path": "spans[1].parent_span_id", "message": "span parent chain forms a cycle"}
    ]
    assert [s.parent_span_id for s in store.get(TID).spans] == [flightlog.UNSET, ROOT]


def test_a_trace_under_a_minted_id_still_refuses_unknown_parents_at_once(
    store: flightlog.Store,
) -> None:
    with pytest.raises(ValidationError, match="names no span of this trace"):
        store.log(agent_name="bot", spans=[Span(name="s", span_id=CHILD, parent_span_id=ROOT)])
