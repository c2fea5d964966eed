"""metric_digest: one identity per metric, the same on every send, shared by backends."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from kaneda_core import Metric
from kaneda_core.identity import DIGEST_SIZE, metric_digest

WHEN = datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=timezone.utc)
texts = st.text(min_size=1, max_size=8)
tag_dicts = st.dictionaries(texts, st.one_of(texts, st.integers()), max_size=3)


def test_a_later_value_of_the_same_point_has_the_same_digest() -> None:
    metric = Metric.create("cpu", "gauge", 0.5, {"a": "1", "b": "2"}, timestamp=WHEN)
    again = metric._replace(value=0.9, tags={"b": "2", "a": "1"})
    assert metric_digest(metric) == metric_digest(again)
    assert len(metric_digest(metric)) == DIGEST_SIZE


@given(
    first=st.tuples(texts, texts, texts, tag_dicts, st.integers(0, 10)),
    second=st.tuples(texts, texts, texts, tag_dicts, st.integers(0, 10)),
)
def test_digests_differ_exactly_when_host_time_kind_name_or_tags_do(
    first: tuple[str, str, str, dict[str, object], int],
    second: tuple[str, str, str, dict[str, object], int],
) -> None:
    base = Metric.create("n", "gauge", 1, timestamp=WHEN)

    def made(parts: tuple[str, str, str, dict[str, object], int]) -> Metric:
        host, kind, name, tags, step = parts
        return base._replace(
            host=host, kind=kind, name=name, tags=tags, time_ns=base.epoch_ns + step
        )

    one, other = made(first), made(second)
    same = first[:3] == second[:3] and first[3] == second[3] and first[4] == second[4]
    assert (metric_digest(one) == metric_digest(other)) is same
