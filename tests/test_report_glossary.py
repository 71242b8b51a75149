"""Reports name what they show in words (issue 32): readable column headers with a one-line definition (hover and
a list under the table), hook points as words, every compare metric named and defined; report.json keeps the keys."""

from __future__ import annotations

import json
import re

from hooked_reward.report.glossary import COLUMNS, METRICS, readable
from hooked_reward.report.html import Report


def test_hook_points_read_as_words() -> None:
    assert readable("blocks.0.hook_mlp_out:zero") == "layer 0 MLP output (zero)"
    assert readable("blocks.3.hook_attn_out") == "layer 3 attention output"
    assert readable("blocks.1.hook_resid_post") == "residual stream after layer 1"
    assert readable("blocks.1.attn.hook_z") == "layer 1 attention heads' outputs (z)"
    assert readable("sycophancy") == "sycophancy"  # anything else as given


def test_a_table_shows_readable_headers_definitions_and_components(tmp_path) -> None:
    rows = [{"patch": "blocks.0.hook_mlp_out:zero", "frac_flagged": 0.25, "coverage_low": 0.5, "other": 1}]
    with Report(tmp_path / "r", "t", command="test") as report:
        report.add_table("Table", rows)
        report.add_data("rows", rows)
        report.write()
    page = (tmp_path / "r" / "index.html").read_text()
    headers = re.findall(r"<th(?: title=\"([^\"]*)\")?>([^<]*)</th>", page)
    assert ("the component whose output was replaced", "component patched") in headers
    assert (COLUMNS["frac_flagged"][1], "share flagged") in headers
    assert ("", "other") in headers  # a column without a definition keeps its key and gets no hover
    assert "layer 0 MLP output (zero)" in page and "blocks.0.hook_mlp_out" not in page
    assert "What the columns mean" in page and "<dd>" + COLUMNS["coverage_low"][1] + "</dd>" in page
    assert json.loads((tmp_path / "r" / "report.json").read_text())["results"]["rows"] == rows  # keys kept


def test_every_compare_metric_is_named_and_defined() -> None:
    """The metrics `CompareResult.scalars` produces (its key prefixes and names, from the source) all have words."""
    import inspect

    from hooked_reward.analysis import compare

    source = inspect.getsource(compare)
    for key in ("pearson", "spearman", "kendall", "agreement", "accuracy_a", "accuracy_b"):
        assert f"behaviour.{key}" in METRICS
    for key in re.findall(r'formation\["(\w+)"\] = ', source) + ["depth_a", "depth_b"]:
        assert f"formation.{key}" in METRICS, key
    for key in ("cosine_raw", "cosine_whitened"):
        assert f'"{key}"' in source and f"geometry.{key}" in METRICS
    assert "mechanism.profile_similarity" in METRICS and "geometry.cka_final" in METRICS
    assert all(name and help_ for name, help_ in METRICS.values())
