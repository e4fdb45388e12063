"""Routing among the versions of one model: policy, pinned default, labels, canary, rollback."""

from __future__ import annotations

import pytest

from ember.serve.errors import ServeError
from ember.serve.routing import ModelRoutes, VersionEntry


def _routes(serving: list[int], policy: dict | None = None) -> ModelRoutes:
    routes = ModelRoutes("m", policy or {"latest": {"num_versions": 1}}, {})
    for v in serving:
        entry = routes.entries[v] = VersionEntry()
        entry.state, entry.mv = "AVAILABLE", object()  # stands in for a loaded ModelVersion
    routes.rebuild()
    return routes


def test_default_route_is_the_newest_version_the_policy_serves():
    routes = _routes([1, 2, 3], {"specific": {"versions": [2]}})
    assert routes.serving == [3, 2, 1] and routes.route() == 2  # 1, 3 kept for labels only
    assert _routes([1, 2, 3]).route() == 3
    assert _routes([]).route() is None


def test_pin_canary_and_rollback():
    routes = _routes([1, 2])
    routes.set_default(1)
    assert routes.route() == 1
    routes.set_canary("2", 100)
    assert {routes.route() for _ in range(20)} == {2}
    routes.set_canary(2, 0)
    assert routes.canary is None and routes.route() == 1
    assert routes.rollback() == {"default": 1, "canary": (2, 100.0)}
    assert routes.rollback() == {"default": 1, "canary": None}
    assert routes.rollback() == {"default": 2, "canary": None}  # back before set_default
    with pytest.raises(ServeError, match="Nothing to roll back for model 'm'"):
        routes.rollback()


def test_bad_routing_requests_are_clear_errors():
    routes = _routes([1, 2])
    with pytest.raises(ServeError, match=r"Version 7 of model 'm' is not available.*2, 1"):
        routes.set_default(7)
    with pytest.raises(ServeError, match="'percent' must be a number from 0 to 100, received 101"):
        routes.set_canary(2, 101)
    with pytest.raises(ServeError, match="Invalid label 'a b'"):
        routes.set_label("a b", 1)
    with pytest.raises(ServeError, match=r"Invalid label 'stable\\n'"):  # full match, not "$"
        routes.set_label("stable\n", 1)
    routes.set_label("stable", 1)
    assert routes.labels == {"stable": 1}


def test_wanted_keeps_labelled_versions_and_skips_failed_ones():
    routes = _routes([1, 2, 3])
    routes.set_label("stable", 1)
    on_disk = {1: None, 2: None, 3: None}
    assert routes.wanted(on_disk, failed=set()) == {3, 1}
    assert routes.wanted(on_disk, failed={3}) == {2, 1}  # 3 failed: 2 keeps serving
    rows = routes.status_rows(unloaded=False)
    assert [(r["version"], r["default"], r["labels"]) for r in rows] == [
        (1, False, ["stable"]), (2, False, []), (3, True, []),
    ]  # fmt: skip


def test_why_no_version_serves_leaves_the_full_stop_to_the_caller():
    routes = _routes([])
    routes.entries[1] = VersionEntry("FAILED", "Failed parity: off by 0.03 (allowed 0.0001).")
    routes.entries[2] = VersionEntry("PENDING", "ember.json is missing")
    why = routes.not_serving()
    assert (
        why
        == "version 2 PENDING: ember.json is missing; version 1 FAILED: Failed parity: off by 0.03 (allowed 0.0001)"
    )
