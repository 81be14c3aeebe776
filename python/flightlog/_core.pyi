from os import PathLike
from typing import final

__all__ = ["Store", "new_span_id", "new_trace_id", "trace_id_for"]

@final
class Store:
    def __new__(
        cls,
        path: str | PathLike[str],
        *,
        durability: str = "group",
        readonly: bool = False,
        map_size: int = ...,
        queue_bytes: int = ...,
        max_trace_bytes: int = ...,
        max_depth: int = 64,
        max_spans: int = 100000,
        retention_s: float | None = None,
        max_bytes: int | None = None,
        redaction: str = "redact",
        redaction_keys: list[str] = ...,
        redaction_patterns: list[tuple[str, str]] = ...,
    ) -> Store: ...
    def log(self, payload: bytes) -> str: ...
    def log_many(self, payload: bytes) -> list[str]: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def fragments(self, trace_id: str) -> list[bytes]: ...
    def query(
        self, filters: bytes, order_by: str, descending: bool, limit: int, cursor: str | None
    ) -> bytes: ...
    def count(self, filters: bytes) -> int: ...
    def stats(self, filters: bytes, group_by: str | None = None) -> bytes: ...
    def delete(self, trace_id: str) -> bool: ...
    def delete_where(self, filters: bytes) -> int: ...
    def check(self) -> bytes: ...
    def compact(self, dest: str) -> None: ...
    def open_decision(
        self,
        agent: str,
        intent: str,
        automation_mode: str,
        metadata: bytes | None = None,
        trace_id: str | None = None,
        run_id: str | None = None,
    ) -> str: ...
    def decision_event(
        self,
        decision_id: str,
        agent: str,
        type: str,
        *,
        product: str | None = None,
        purpose: str | None = None,
        data_ref: str | None = None,
        mutation_summary: bytes | None = None,
        idempotency_key: str | None = None,
        policy_id: str | None = None,
        outcome: str | None = None,
        rationale: str | None = None,
        approved: bool | None = None,
        by: str | None = None,
        context: bytes | None = None,
        summary: str | None = None,
        action: str | None = None,
        reason: str | None = None,
    ) -> bytes: ...
    def decision_trace(self, decision_id: str, agent: str, events: bool = True) -> bytes: ...
    def verify_decision(self, decision_id: str, agent: str) -> bool: ...
    def decisions(
        self,
        agent: str,
        status: str | None,
        intent: str | None,
        since: bytes | None,
        until: bytes | None,
        limit: int,
        cursor: str | None,
    ) -> bytes: ...
    def purge_decisions(self, before: bytes) -> int: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...

def trace_id_for(key: str) -> str: ...
def new_trace_id() -> str: ...
def new_span_id() -> str: ...
