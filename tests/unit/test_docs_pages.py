"""The docs' generated pages are what their sources say, and the README stays short.

docs/performance.md's figure tables and docs/img/results.svg come from
bench/results.json and bench/results.svg (bench/pages.py); the configuration
reference's table is checked in test_config_reference.py.
"""

import copy
import json
import pathlib
import re

import pytest

from bench import pages

ROOT = pathlib.Path(__file__).parents[2]
FIX = "run `make docs-pages` (python -m bench.pages .) and commit the result"
README_MAX_LINES = 260


def _results():
    return json.loads((ROOT / pages.RESULTS).read_text())


def test_performance_page_is_generated_from_the_results():
    page = (ROOT / pages.PAGE).read_text()
    assert pages.page(page, _results()) == page, FIX


def test_performance_picture_is_the_bench_s():
    assert (ROOT / pages.PAGE_PICTURE).read_bytes() == (ROOT / pages.PICTURE).read_bytes(), FIX


def test_expected_covers_the_page_and_the_pictures():
    model = {ROOT / pages.MODEL_PAGE_PICTURE} if _results().get("model") else set()
    assert set(pages.expected(ROOT)) == {ROOT / pages.PAGE, ROOT / pages.PAGE_PICTURE, *model}


def test_the_cost_model_block_says_its_misses():
    from bench import model
    from tests.bench.test_bench_parts import _fleet_shape

    fleet = {f"f{n}": _fleet_shape(n, "25%", 1.0 + n, 0.3) for n in (1, 3, 9, 30)}
    fleet["f60"] = _fleet_shape(60, "25%", 300.0, 0.3)
    block = pages.cost_model({"model": model.build(fleet, cores=2)})
    assert "| 60, 25 % |" in block and "**missed**" in block and "misses over 25 %: " in block
    assert "No cost model" in pages.cost_model({})


@pytest.mark.parametrize("edit", [
    lambda r: r["real_apps"]["digest_rollout"].update(median=r["real_apps"]["digest_rollout"]["median"] + 1),
    lambda r: r["zero_downtime"]["cases"]["good"]["stop-first"]["failed"].update(median=99),
    lambda r: r["realistic"]["cases"]["r3b1_50mb"].update(saltcd_over_ideal=0.99),
    lambda r: r["fleet"]["f30b25"]["wall"].update(median=99.9),
    lambda r: r["machine"].update(commit="0000000"),
    lambda r: r["targets"][0].update(met=False),
], ids=["real_apps", "zero_downtime", "realistic", "fleet", "machine", "targets"])
def test_a_new_figure_makes_the_page_stale(edit):
    """results.json changed without regenerating: the page no longer matches."""
    page = (ROOT / pages.PAGE).read_text()
    results = copy.deepcopy(_results())
    edit(results)
    assert pages.page(page, results) != page


def test_the_generated_tables_are_the_figures():
    results = _results()
    real_apps = pages.real_apps(results)
    median = results["real_apps"]["digest_rollout"]["median"]
    assert f"| digest rollout, one role | {pages.fixed(median, 2)} s (" in real_apps
    assert f"measured at {results['real_apps']['measured']['machine']['commit']}" in real_apps
    assert f"| commit | {results['machine']['commit']} |" in pages.run(results)
    assert pages.fixed(540.5, 0) == "541" and pages.fixed(0.795, 2) == "0.80"
    assert pages.spread({"median": 9.986, "min": 9.82, "max": 10.151, "runs": 2}) == "9.99 s (9.82–10.15)"
    assert pages.spread({"median": 17.962, "min": 17.962, "max": 17.962, "runs": 1}) == "18.0 s"


def test_every_block_has_its_markers_once():
    page = (ROOT / pages.PAGE).read_text()
    for name in pages.BLOCKS:
        assert page.count(pages.start_marker(name)) == 1 and page.count(pages.end_marker(name)) == 1, name
    with pytest.raises(ValueError, match="fleet"):
        pages.page(page.replace(pages.end_marker("fleet"), ""), _results())


def test_readme_stays_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the detail into docs/"


def test_readme_links_into_docs_resolve():
    """The README's relative links (docs/*.md, also on GitHub) name files that exist."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert any(t.startswith("docs/") for t in targets)
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages_in_nav = set(re.findall(r":\s*([\w/-]+\.md)\s*$", nav, re.M))
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages_in_nav == on_disk
