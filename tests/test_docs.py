"""The docs hold what the code does: every metric key the trainers log is in docs/metrics.md, every citation of a
docs/fidelity.md row names an anchor that row has, the README's Python snippet runs, and the protocol tables are
rendered from their JSON."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "prefix_rft"

# `metrics["key"].append(...)`, `self._metrics[mode][f"hpt/{name}_questions"].append(...)`, `log_metric("key", ...)`
_LOGGED = re.compile(r'\[(f?)"([^"]+)"\]\.append\(|log_metric\((f?)"([^"]+)"')


def logged_metric_keys(source: str) -> set[str]:
    """The metric keys `source` logs; an f-string key keeps its `{...}` fields."""
    return {m.group(2) or m.group(4) for m in _LOGGED.finditer(source)}


def documented(key: str, doc: str) -> bool:
    """`key` appears in backticks in `doc`; an f-string field `{...}` stands for any name (e.g. `<name>` or `sft`)."""
    pattern = "`" + re.sub(r"\\\{[^}]*\\\}", "[^`|]+", re.escape(key)) + "`"
    return re.search(pattern, doc) is not None


def test_the_scan_reads_appends_fstrings_and_log_metric():
    source = 'm["a/b"].append(1)\nself._metrics[mode][f"hpt/{name}_q"].append(2)\nlog_metric("v/t", 3.0)\nx["c"] = 1\n'
    assert logged_metric_keys(source) == {"a/b", "hpt/{name}_q", "v/t"}


def test_an_fstring_key_matches_any_name_in_its_place():
    assert documented("hpt/{name}_questions", "| `hpt/sft_questions` |")
    assert documented("reward/partial_rows/{name}", "| `reward/partial_rows/<name>` |")
    assert not documented("hpt/{name}_questions", "| `hpt/sft_steps` |")
    assert not documented("kl", "the kl estimate")


def test_every_logged_metric_is_documented():
    keys = set()
    for path in PACKAGE.rglob("*.py"):
        keys |= logged_metric_keys(path.read_text())
    assert {
        "prefix/ratio_floor",
        "train/skipped_nonfinite_steps",
        "relift/sft_loss",
        "verifier/timeout_fraction",
    } <= keys
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert sorted(key for key in keys if not documented(key, doc)) == []


# `fidelity.md#a`, then any `, #b` / ` and #c` / ` to #d` that continue the citation
_CITATION = re.compile(r"fidelity\.md`?\s?\(?(#[a-z0-9-]+(?:(?:,\s|\sand\s|\sto\s)#[a-z0-9-]+)*)")
_ROW_NUMBER = re.compile(r"fidelity(?:\.md)?`?,? rows? \d")
# a row cited by its number alone in the docs, as `(row 37)` after a paper (code comments number tensor rows so)
_BARE_ROW_NUMBER = re.compile(r"\(rows? \d+\)")


def cited_anchors(text: str) -> set[str]:
    """The anchors `text` cites in docs/fidelity.md."""
    return {name for m in _CITATION.finditer(text) for name in re.findall(r"#([a-z0-9-]+)", m.group(1))}


def test_citations_are_read_with_their_continuations():
    text = "(docs/fidelity.md#a-b, #c and #d) and fidelity.md#e to #f; `docs/fidelity.md` (#g to #h) #not-cited"
    assert cited_anchors(text) == {"a-b", "c", "d", "e", "f", "g", "h"}
    assert _ROW_NUMBER.search("docs/fidelity.md rows 3-6") and _ROW_NUMBER.search("fidelity row 12")
    assert _BARE_ROW_NUMBER.search("HPT, arXiv 2509.04419 (row 37)")
    assert not _BARE_ROW_NUMBER.search("failed on row 1 of the training dataset (row 8 of this rank's batch)")


def test_fidelity_rows_are_cited_by_anchors_that_exist():
    fidelity = (ROOT / "docs" / "fidelity.md").read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', fidelity))
    assert len(anchors) == len(re.findall(r"^\| <a id=", fidelity, flags=re.M)) >= 40
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "docs").glob("*.md")]
    files.append(ROOT / "README.md")
    skipped = ("LOG.md", Path(__file__).name)  # history, and this file's examples
    texts = {path: path.read_text() for path in files if path.name not in skipped}
    assert not [str(path) for path, text in texts.items() if _ROW_NUMBER.search(text)]
    assert not [str(path) for path, text in texts.items() if path.suffix == ".md" and _BARE_ROW_NUMBER.search(text)]
    cited = set().union(*(cited_anchors(text) for text in texts.values()))
    assert {"entropy-scope", "sampler-correction", "trapo"} <= cited
    assert sorted(cited - anchors) == []


def readme_python() -> str:
    """The one ```python block of README.md."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.slow  # one training step: about 5 s on one core
def test_the_readme_snippet_trains_one_step_on_the_shipped_base(tmp_path):
    from prefix_rft.tasks.pretrain import SHIPPED_DIR
    from prefix_rft.trl.cpu import cpu_trainer_kwargs

    snippet = readme_python()
    # Offline and small: the shipped tiny base in place of Qwen, one fp32 CPU step with short completions.
    swaps = {'"Qwen/Qwen2.5-Math-1.5B"': repr(str(SHIPPED_DIR)), 'output_dir="out"': "**overrides"}
    for old, new in swaps.items():
        assert snippet.count(old) == 1, old
        snippet = snippet.replace(old, new)
    overrides = dict(cpu_trainer_kwargs(tmp_path, seed=0, max_steps=1), max_completion_length=48)
    namespace = {"overrides": overrides}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 1


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every table row of `markdown` (separator rows left out)."""
    rows = [line.strip().strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows if not set("".join(row)) <= set("-: ")]


def protocol_exports() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "docs" / "benchmarks").glob("protocol*/selection.json"))


def load_export(folder: Path) -> tuple[dict, int, list[dict]]:
    """An exported protocol's selection.json, its eval k and its final runs' JSON."""
    import json

    selection = json.loads((folder / "selection.json").read_text())
    k = json.loads((folder / "plan.json").read_text())["settings"]["eval_k"]
    return selection, k, [json.loads(p.read_text()) for p in sorted((folder / "final").rglob("*.json"))]


def rendered_results_table(selection: dict, k: int, runs: list[dict]) -> str:
    """The finals' table that today's report code renders from the runs and selection.json."""
    from prefix_rft.recipes.compare import summarize
    from prefix_rft.recipes.protocol_report import inputs_by_method, results_table
    from prefix_rft.recipes.protocol_rules import REFERENCE
    from prefix_rft.recipes.toy import BASE

    summary = summarize(runs, k, references=(BASE, REFERENCE))
    return results_table(summary, selection["chosen"], k, inputs_by_method(runs))


def in_results_md(table: str) -> bool:
    """Whether `table`'s rows stand together, unchanged, in docs/results.md."""
    rows, shipped = table_rows(table), table_rows((ROOT / "docs" / "results.md").read_text())
    return any(shipped[i : i + len(rows)] == rows for i in range(len(shipped)))


@pytest.mark.parametrize("folder", protocol_exports(), ids=lambda p: p.name)
def test_protocol_tables_are_rendered_from_the_shipped_json(folder):
    # Every number of an exported protocol's tables comes from its JSON: the results table from the finals' runs and
    # selection.json (columns later versions added are left out for exports that predate them), and for v2 (which
    # records the grids) the tuning table from selection.json.
    from prefix_rft.recipes.protocol_report import has_grids, tuning_markdown

    selection, k, runs = load_export(folder)
    if not (folder / "results.json").exists():
        # The finals are under way: their records are committed as each run finishes, the tables once all have.
        assert not (folder / "results.md").exists()
    elif runs:
        rendered = table_rows(rendered_results_table(selection, k, runs))
        shipped = table_rows((folder / "results.md").read_text())
        assert [row[: len(shipped[0])] for row in rendered] == shipped
    if has_grids(selection):
        assert (folder / "tuning.md").read_text() == tuning_markdown(selection, k)


V2 = ROOT / "docs" / "benchmarks" / "protocol_v2"


def test_results_md_shows_protocol_v2_tuning_table_as_rendered_from_its_selection_json():
    # docs/results.md reports v2's tuning stage: its table and summary line are what selection.json renders.
    from prefix_rft.recipes.protocol_report import tuning_table

    selection, k, _ = load_export(V2)
    rendered = tuning_table(selection, k)
    assert in_results_md(rendered)
    assert rendered.splitlines()[-1] in (ROOT / "docs" / "results.md").read_text().replace("\n", " ")


def test_results_md_shows_protocol_v2_finals_table_as_rendered_from_its_runs():
    # docs/results.md reports v2's finals: its table is what the final runs' JSON and selection.json render.
    assert in_results_md(rendered_results_table(*load_export(V2)))
