"""The package's classes are ``msgspec.Struct``s that behave as the dataclasses they
replaced: hidden fields stay out of repr, a field left out of eq/hash stays out,
``dataclasses.asdict``'s deep conversion is kept where it was used, ``replace`` still
validates, pickling and JSON output are unchanged."""

from __future__ import annotations

import dataclasses
import pickle
from collections import defaultdict, namedtuple
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.pretty import pretty_repr

from shadow_burnin.config import load
from shadow_burnin.config_sections import HaltConfig
from shadow_burnin.core.halt import HaltRule
from shadow_burnin.core.liveness import LivenessRule
from shadow_burnin.core.prompt import Message, Prompt
from shadow_burnin.core.structs import deep_asdict, repr_without
from shadow_burnin.io.http.client import Endpoint
from shadow_burnin.io.ppl.scoring import PplSide
from shadow_burnin.io.proxy.caddy import RouteRef
from shadow_burnin.io.proxy.mirror import Mirrored, ProxyStats
from shadow_burnin.render.escape import json_bytes

SECRET = "sk-the-secret-itself-1234"


@pytest.mark.parametrize("obj", [Endpoint("http://v1", "m", SECRET, True),
                                 PplSide("v1", "http://v1", api_key=SECRET)])
def test_the_api_key_is_in_no_repr(obj: Any) -> None:
    assert obj.api_key == SECRET
    for text in (repr(obj), str(obj), pretty_repr(obj), repr([obj]), f"{obj!r}"):
        assert SECRET not in text
    assert "api_key" not in repr(obj)


def test_repr_is_the_dataclass_one_without_the_hidden_fields() -> None:
    e = Endpoint("http://v1:8080", None, SECRET, False)
    assert repr(e) == "Endpoint(url='http://v1:8080', model=None, insecure=False)"
    assert repr(HaltRule()) == ("HaltRule(window_s=3600.0, min_rounds=30, threshold=0.2, "
                                "worst=5, on='no-match')")
    assert repr_without(HaltRule(), frozenset({"on", "worst"})) == (
        "HaltRule(window_s=3600.0, min_rounds=30, threshold=0.2)")


def _route(route: dict[str, Any], upstream: str = "127.0.0.1:8080") -> RouteRef:
    return RouteRef(("apps", "http", "servers", "srv0", "routes", 0), "srv0", (":80",),
                    ("/v1/*",), (), (upstream,), route)


def test_a_route_ref_compares_and_hashes_without_its_route_object() -> None:
    a, b = _route({"handle": [1]}), _route({"handle": [2], "match": []})
    assert a == b and (a != b) is False and hash(a) == hash(b)
    assert len({a, b}) == 1
    c = _route({"handle": [1]}, upstream="127.0.0.1:8180")
    assert a != c
    assert "handle" not in repr(a) and "srv0" in repr(a)
    assert a.route == {"handle": [1]}


def test_a_prompt_hashes_without_its_params_but_compares_with_them() -> None:
    p = Prompt("a", "cat", prompt="hi", params={"stop": ["x"]})
    q = Prompt("a", "cat", prompt="hi", params={"stop": ["y"]})
    assert hash(p) == hash(q)  # a dict field, unhashable: left out of the hash as before
    assert p != q
    assert p == Prompt("a", "cat", prompt="hi", params={"stop": ["x"]})
    assert {p: 1}[Prompt("a", "cat", prompt="hi", params={"stop": ["x"]})] == 1
    chat = Prompt("b", "cat", messages=(Message("user", "hi"),))
    assert hash(chat) == hash(Prompt("b", "cat", messages=(Message("user", "hi"),)))


def test_replace_still_validates() -> None:
    rule = LivenessRule()
    assert msgspec.structs.replace(rule, stall_s=5.0).stall_s == 5.0
    with pytest.raises(ValueError, match="spike_rounds"):
        msgspec.structs.replace(rule, spike_rounds=rule.spike_window + 1)
    with pytest.raises(ValueError, match="exactly one"):
        msgspec.structs.replace(Prompt("a", "c", prompt="x"), messages=(Message("user", "y"),))


def test_frozen_ones_stay_frozen() -> None:
    with pytest.raises(AttributeError):
        HaltRule().window_s = 1.0  # type: ignore[misc]


def test_halt_defaults_are_the_rule_defaults() -> None:
    rule, cfg = HaltRule(), HaltConfig()
    assert (cfg.window, cfg.min_rounds, cfg.threshold, cfg.worst, cfg.on) == (
        rule.window_s, rule.min_rounds, rule.threshold, rule.worst, rule.on)
    assert cfg.rule() == rule


def test_config_pickles_and_serialises_as_before(tmp_path: Any) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[request]\nmax_tokens = 9\n[request.extra]\nstop = ["a", "b"]\n'
                    '[gates.exact_match]\ntarget = 0.9\n', encoding="utf-8")
    cfg = load(toml)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    d = cfg.to_dict()
    assert orjson.loads(json_bytes(d)) == orjson.loads(orjson.dumps(cfg.to_dict()))
    assert isinstance(d["gates"]["exact_match"], dict)
    assert d["gates"]["exact_match"]["target"] == 0.9
    # a deep copy, as dataclasses.asdict made: changing it leaves the config alone
    d["request"]["extra"]["stop"].append("c")
    assert cfg.request.extra["stop"] == ["a", "b"]
    fp = cfg.fingerprint_fields("digest")
    assert fp["request"]["extra"] == {"stop": ["a", "b"]}
    assert fp["request"]["extra"] is not cfg.request.extra


def test_a_mirrored_job_pickles_through_its_own_reduce() -> None:
    job = Mirrored("t", "/v1/chat/completions", "chat", False, {"a": 1}, b'{"a":1}',
                   raw=b'{"a":1}', meta={"k": [1]})
    back = pickle.loads(pickle.dumps(job))
    assert back is not job and back != job  # identity equality (eq=False), as before
    assert (back.body, back.raw, back.meta, back.shadow_body) == (
        job.body, job.raw, job.meta, job.shadow_body)
    assert len({job, back}) == 2
    stats = ProxyStats(requests=3, mirrored=2)
    assert stats.to_json()["requests"] == 3 and list(stats.to_json())[:2] == [
        "requests", "passthrough"]


# -- deep_asdict against dataclasses.asdict on twin classes ----------------------------

Pair = namedtuple("Pair", "a b")


@dataclasses.dataclass
class DInner:
    x: Any
    tags: list[Any] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DOuter:
    inner: DInner
    many: tuple[DInner, ...]
    by: dict[str, Any]
    other: Any = None


class SInner(msgspec.Struct):
    x: Any
    tags: list[Any] = msgspec.field(default_factory=list)


class SOuter(msgspec.Struct):
    inner: SInner
    many: tuple[SInner, ...]
    by: dict[str, Any]
    other: Any = None


leaf = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                 st.booleans())
nested = st.recursive(leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.tuples(kids, kids),
    st.dictionaries(st.text(max_size=3), kids, max_size=3),
    st.builds(Pair, kids, kids)), max_leaves=10)


@given(x=nested, tags=st.lists(nested, max_size=3), by=st.dictionaries(
    st.text(max_size=3), nested, max_size=3), n=st.integers(0, 3), other=nested)
def test_deep_asdict_is_dataclasses_asdict(x: Any, tags: list[Any], by: dict[str, Any],
                                           n: int, other: Any) -> None:
    d = DOuter(DInner(x, list(tags)), tuple(DInner(x) for _ in range(n)),
               {**by, "nested": DInner(x, [DInner(other)])}, Pair(DInner(x), other))
    s = SOuter(SInner(x, list(tags)), tuple(SInner(x) for _ in range(n)),
               {**by, "nested": SInner(x, [SInner(other)])}, Pair(SInner(x), other))
    want, got = dataclasses.asdict(d), deep_asdict(s)
    assert got == want
    assert repr(got) == repr(want)  # same container types, same order
    if tags:
        assert got["inner"]["tags"] is not s.inner.tags


def test_deep_asdict_keeps_a_defaultdict() -> None:
    dd: defaultdict[str, list[int]] = defaultdict(list, {"a": [1]})
    got = deep_asdict(SInner(dd))
    assert isinstance(got["x"], defaultdict) and got["x"].default_factory is list
    assert got["x"] == {"a": [1]} and got["x"]["a"] is not dd["a"]
