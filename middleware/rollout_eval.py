"""Staged rollout on the request path: the active bundle and the rollout candidate decide the same input.

Both outcomes (and the engine time of each evaluation that was not memoized) go to the
`RolloutController`, which compares the bundles' deny/allow rates and reverts a breaching candidate;
the request's ticket says whether the candidate enforces. A candidate that fails to evaluate never
decides: the active bundle does. The controller's events and stage feed the gate's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ig_gate.bundles.policy import PolicySnapshot
from ig_gate.bundles.rollout import RolloutController, Ticket
from ig_gate.middleware.decision import ERROR, DecisionMemo, InputKey, Verdict
from ig_gate.middleware.metrics import GateMetrics

Report = Callable[[str, BaseException], None]
# the gate's evaluation of a memo miss: (snapshot, key, memo to fill or None, report) -> (verdict, document)
Evaluate = Callable[
    [PolicySnapshot, InputKey, DecisionMemo | None, Report], tuple[Verdict | None, Mapping[str, Any]]
]


class RolloutComparison:
    """Wires a RolloutController to the gate's metrics and compares the two bundles per request."""

    def __init__(
        self,
        controller: RolloutController,
        metrics: GateMetrics,
        memo: DecisionMemo | None,
        evaluate: Evaluate,
        report_active: Report,
        report_candidate: Report,
    ) -> None:
        self.controller = controller
        self._metrics = metrics
        self._memo = memo
        self._evaluate = evaluate
        self._report_active = report_active
        self._report_candidate = report_candidate
        controller.on_event = self._event
        controller.on_stage = metrics.rollout_stage
        metrics.rollout_stage(controller.stage_index)

    def ticket(self, tenant: str | None, session_key: str | None) -> Ticket | None:
        """The controller's assignment for this request (None: the active bundle alone decides)."""
        return self.controller.assign(tenant, session_key)

    def compare(
        self, ticket: Ticket, active: PolicySnapshot, key: InputKey
    ) -> tuple[PolicySnapshot, Verdict | None, Mapping[str, Any]]:
        """Evaluate the active bundle and the ticket's candidate on the same input, report both outcomes
        to the controller, and return (deciding snapshot, verdict, input document): the candidate decides
        when the ticket enforces it and it did not fail, else the active bundle."""
        candidate = ticket.snapshot
        ours, document, our_s = self._observed(active, key, self._report_active)
        candidate_key = (candidate.digest, *key[1:])  # memoized beside the active bundle's entries
        theirs, _, their_s = self._observed(candidate, candidate_key, self._report_candidate)
        our_outcome = ERROR if ours is None else ours.outcome
        their_outcome = ERROR if theirs is None else theirs.outcome
        self.controller.observe(ticket, our_outcome, our_s, their_outcome, their_s)
        self._metrics.decision_by_role("active", our_outcome)
        self._metrics.decision_by_role("candidate", their_outcome)
        if ticket.enforce and theirs is not None:
            return candidate, theirs, document
        return active, ours, document

    def _observed(
        self, snapshot: PolicySnapshot, key: InputKey, report: Report
    ) -> tuple[Verdict | None, Mapping[str, Any], float | None]:
        """The (memoized) verdict and input document, plus the engine's seconds (None when memoized)."""
        memo = self._memo if snapshot.cacheable else None
        if memo is not None:
            memoized = memo.get(key)
            self._metrics.memo(memoized is not None)
            if memoized is not None:
                return memoized[0], memoized[1], None
        started = time.perf_counter()
        verdict, document = self._evaluate(snapshot, key, memo, report)
        return verdict, document, time.perf_counter() - started

    def _event(self, kind: str, detail: str) -> None:
        """Count a rollout event; a revert also raises the rollout_reverts alert metric."""
        self._metrics.bundle_event(kind)
        if kind == "rollout_reverted":
            self._metrics.rollout_revert()
