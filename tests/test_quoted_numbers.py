"""Every number the README and docs quote from a result, checked against the committed reference output it comes from.

The quotes are listed explicitly in QUOTES: the document, a regex whose group `value` captures the quoted number,
the reference file (a git-tracked stage output: paper_figures/*.csv or outputs/*/metrics.json), the key or column,
the rows it is taken over and how they are reduced (min / max of a range, or the single value), and the scale from
the file's unit to the quote's (e.g. 100 for a fraction quoted in %). A quote matches when it equals the reference
rounded to the digits the quote shows. A reference file that is not in the checkout (before the first clean
`dvc repro` is committed) skips its quotes, naming the file; a quote whose text is no longer in its document fails,
so that a reworded document updates this list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPER_NETWORKS = "network != 'pipeline_model'"  # the paper's networks in the cost-model tables


@dataclass(frozen=True)
class Quote:
    doc: str  # the document, relative to the repository root
    pattern: str  # regex; group `value` is the quoted number
    reference: str  # the stage output it comes from
    key: str  # metrics.json key or csv column
    rows: str | None = None  # pandas query selecting the rows (csv only)
    reduce: str = "value"  # value (exactly one row / a json key), min, max
    scale: float = 1.0  # reference unit -> quoted unit (100: fraction -> %)

    @property
    def name(self) -> str:
        return f"{self.doc}: {self.pattern[:50]}"


EVALUATE, TRAIN, FINETUNE = (
    "outputs/evaluate/metrics.json",
    "outputs/train/metrics.json",
    "outputs/finetune/metrics.json",
)
HEADLINE = "paper_figures/headline_ratios.csv"
QUOTES = [
    # README, "Results on the default profile"
    Quote("README.md", r"dense baseline \((?P<value>\d+) epochs\)", TRAIN, "epochs"),
    Quote(
        "README.md",
        r"dense baseline \(\d+ epochs\) \| \*\*(?P<value>[\d.]+)%\*\*",
        EVALUATE,
        "dense_accuracy",
        scale=100,
    ),
    Quote("README.md", r"before fine-tuning \| (?P<value>[\d.]+)%", EVALUATE, "decomposed_accuracy", scale=100),
    Quote("README.md", r"after (?P<value>\d+) epochs of fine-tuning", FINETUNE, "epochs"),
    Quote(
        "README.md",
        r"fine-tuning with distillation \| \*\*(?P<value>[\d.]+)%\*\*",
        EVALUATE,
        "basisn_accuracy",
        scale=100,
    ),
    Quote("README.md", r"\*\* \((?P<value>[-+][\d.]+) pp; the target", EVALUATE, "basisn_minus_dense_pp"),
    Quote("README.md", r"\(`to_dense`\) \| (?P<value>[\d.]+)%", EVALUATE, "basisn_folded_accuracy", scale=100),
    # README, the cost model's headline (paper networks, report crossbar counts, base point): see README_SPANS
    Quote("README.md", r"networks at\s+N = (?P<value>\d+)-\d+ crossbars", HEADLINE, "n_crossbars", None, "min"),
    Quote("README.md", r"networks at\s+N = \d+-(?P<value>\d+) crossbars", HEADLINE, "n_crossbars", None, "max"),
    # README, the pipeline's own model
    Quote(
        "README.md",
        r"BasisN spends (?P<value>[\d.]+)-[\d.]+% of the best",
        HEADLINE,
        "energy_vs_best",
        "network == 'pipeline_model'",
        "min",
        100,
    ),
    Quote(
        "README.md",
        r"BasisN spends [\d.]+-(?P<value>[\d.]+)% of the best",
        HEADLINE,
        "energy_vs_best",
        "network == 'pipeline_model'",
        "max",
        100,
    ),
    *[
        Quote(
            "docs/hardware.md",
            r"BasisN / best cycles " + "[\\d.]+% / " * _k + r"(?P<value>[\d.]+)%",
            "paper_figures/headline_presets.csv",
            "cycles_ratio_best",
            f"preset == 'design_prototype' and network == 'resnet18' and n_crossbars == {_n}",
            scale=100,
        )
        for _k, _n in enumerate((16, 64, 256))
    ],  # fmt: skip
]


def span_quotes(doc: str, prefix: str, reference: str, key: str, rows: str | None, scale: float = 100) -> list[Quote]:
    """The two ends of a quoted range 'A-B%' that follows the regex `prefix`: the min and the max of `key`."""
    return [
        Quote(doc, prefix + r"(?P<value>[\d.]+)-[\d.]+%", reference, key, rows, "min", scale),
        Quote(doc, prefix + r"[\d.]+-(?P<value>[\d.]+)%", reference, key, rows, "max", scale),
    ]


# README, the cost model's headline: vs best, vs plain reprogram, vs digital (operands delivered), paper networks
_RANGE = r"[\d.]+-[\d.]+%"
for _prefix, _key in (
    (r"as ISAAC and PUMA do\), BasisN needs ", "cycles_vs_best"),
    (rf"as ISAAC and PUMA do\), BasisN needs {_RANGE} of\s+its cycles and ", "edp_vs_best"),
    (r"against plain reprogramming ", "cycles_vs_reprogram"),
    (rf"against plain reprogramming {_RANGE} and ", "edp_vs_reprogram"),
    (r"BasisN is (?:not always )?faster, ", "cycles_vs_digital"),
    (r"its EDP is\s+", "edp_vs_digital"),
):
    QUOTES += span_quotes("README.md", _prefix, HEADLINE, _key, PAPER_NETWORKS)
QUOTES.append(
    Quote("README.md", r"operands free for both, a labelled variant, BasisN's EDP is (?P<value>[\d.]+)% of",
          "paper_figures/cost_model_choices.csv", "edp_vs_digital_alternative", "choice == 'operand_delivery'",
          scale=100)
)  # fmt: skip

# docs/hardware.md section 6 (the tables it shows are EMBEDDED copies of the notebooks' files, below)
CHOICES_TABLE = "paper_figures/cost_model_choices.csv"
for _prefix, _key in (
    (r"nowhere below 1%\.\*\* Cycles ", "cycles_vs_best"),
    (rf"nowhere below 1%\.\*\* Cycles {_RANGE}, EDP ", "edp_vs_best"),
    (r"\(against plain `reprogram`: cycles ", "cycles_vs_reprogram"),
    (rf"\(against plain `reprogram`: cycles {_RANGE}, EDP ", "edp_vs_reprogram"),
    (r"\*\*BasisN vs the digital baseline\*\*[^:]*: cycles ", "cycles_vs_digital"),
    (rf"\*\*BasisN vs the digital baseline\*\*[^:]*: cycles {_RANGE}, EDP ", "edp_vs_digital"),
):
    QUOTES += span_quotes("docs/hardware.md", _prefix, HEADLINE, _key, PAPER_NETWORKS)
for _column, _pattern in (
    ("edp_vs_digital_alternative", r"operands free for both[^:]*: EDP (?P<value>[\d.]+)% instead of"),
    ("edp_vs_digital", r"operands free for both[^:]*: EDP [\d.]+% instead of (?P<value>[\d.]+)%"),
):
    QUOTES.append(
        Quote("docs/hardware.md", _pattern, CHOICES_TABLE, _column, "choice == 'operand_delivery'", scale=100)
    )

# README, "The headline on one configuration" (the tradeoff stage's table and its accuracy targets)
TRADEOFF, TARGETS = "paper_figures/headline_tradeoff.csv", "paper_figures/headline_tradeoff_targets.csv"
DENSE = "paper_figures/headline_tradeoff_dense.csv"
CHEAPEST_NAMED = (
    r"The cheapest one within 1 pp of dense \(with its spread\) is G = (?P<groups>\d+) with "
    r"(?P<option>the fixed mask|`\w+`)"
)


def cheapest_within_the_accuracy_bound() -> pd.Series:
    """The configuration CLAIMS.md row 12 calls the cheapest within 1 pp (basisn.summary.tradeoff_answer's rule:
    the smallest factor over the 1% line of its larger cost), computed here rather than named, so that a rerun
    on which another configuration wins fails the README's quote instead of checking the old winner's numbers."""
    table = pd.read_csv(ROOT / TRADEOFF)
    accurate = table[table["meets_accuracy"]]
    return accurate.loc[accurate[["edp_vs_best", "cycles_vs_best"]].max(axis=1).idxmin()]


CHEAPEST = f"key == '{cheapest_within_the_accuracy_bound().key}'" if (ROOT / TRADEOFF).is_file() else "False"
QUOTES += [
    Quote(
        "README.md",
        r"spread\) is G = \d+ with [^:]+: \*\*(?P<value>[\d.]+)%\*\*",
        TRADEOFF,
        "accuracy",
        CHEAPEST,
        scale=100,
    ),
    Quote("README.md", r"\(\*\*(?P<value>-[\d.]+) pp\*\*, standard", TRADEOFF, "accuracy_loss_pp", CHEAPEST, scale=-1),
    Quote(
        "README.md",
        r"standard deviation \*\*(?P<value>[\d.]+)\*\* pp over 3 seeds",
        TRADEOFF,
        "accuracy_loss_pp_sd",
        CHEAPEST,
    ),
    Quote("README.md", r"dense \*\*(?P<value>[\d.]+)%\*\* ±", DENSE, "dense_accuracy", reduce="mean", scale=100),
    Quote(
        "README.md",
        r"\(dense (?P<value>[\d.]+)% ± [\d.]+%, BasisN at G = 1",
        DENSE,
        "dense_accuracy",
        reduce="mean",
        scale=100,
    ),
    Quote(
        "README.md",
        r"\(dense [\d.]+% ± (?P<value>[\d.]+)%, BasisN at G = 1",
        DENSE,
        "dense_accuracy",
        reduce="std",
        scale=100,
    ),
    Quote(
        "README.md",
        r"BasisN at G = 1 (?P<value>-[\d.]+) ± [\d.]+ pp",
        TRADEOFF,
        "accuracy_loss_pp",
        "key == 'G1-b4-learned-full'",
        scale=-1,
    ),
    Quote(
        "README.md",
        r"BasisN at G = 1 -[\d.]+ ± (?P<value>[\d.]+) pp",
        TRADEOFF,
        "accuracy_loss_pp_sd",
        "key == 'G1-b4-learned-full'",
    ),
    Quote("README.md", r"dense \*\*[\d.]+%\*\* ± (?P<value>[\d.]+)%", DENSE, "dense_accuracy", reduce="std", scale=100),
    Quote(
        "README.md",
        r"seeds\), EDP \*\*(?P<value>[\d.]+)%\*\* and cycles",
        TRADEOFF,
        "edp_vs_best",
        CHEAPEST,
        scale=100,
    ),
    Quote(
        "README.md",
        r"and cycles \*\*(?P<value>[\d.]+)%\*\* of the best",
        TRADEOFF,
        "cycles_vs_best",
        CHEAPEST,
        scale=100,
    ),
    Quote(
        "README.md",
        r"`learned` loses\s+(?P<value>[\d.]+) pp at G = 2",
        TRADEOFF,
        "accuracy_loss_pp",
        "key == 'G2-b4-learned-full'",
    ),
    *[
        Quote("README.md", pattern, TARGETS, column, f"groups == {groups} and option == 'learned'")
        for groups, column, pattern in (
            (4, "accuracy_loss_pp", r"\*\*(?P<value>[\d.]+) pp at G = 4\*\*"),
            (4, "target_loss_pp", r"at G = 4\*\*\s+\(target (?P<value>[\d.]+) pp"),
            (4, "miss_pp", r"at G = 4\*\*\s+\(target [\d.]+ pp: missed by (?P<value>[\d.]+) pp"),
            (8, "accuracy_loss_pp", r"\*\*(?P<value>[\d.]+) pp at G = 8\*\*"),
            (8, "target_loss_pp", r"at G = 8\*\*\s+\(target (?P<value>[\d.]+) pp"),
            (8, "miss_pp", r"at G = 8\*\*\s+\(target [\d.]+ pp:\s+missed by (?P<value>[\d.]+) pp"),
        )
    ],
    *[
        Quote("README.md", pattern, TARGETS, "accuracy_loss_pp", f"groups == {groups} and option == 'fixed'")
        for groups, pattern in (
            (4, r"the fixed mask of the same run loses (?P<value>[\d.]+) and [\d.]+ pp"),
            (8, r"the fixed mask of the same run loses [\d.]+ and (?P<value>[\d.]+) pp"),
        )
    ],
]


# Tables the docs embed whole: the block between `<!-- NAME: begin -->` and `<!-- NAME: end -->` of the document is
# paper_figures/NAME.md as the notebook wrote it (a rerun that moves a number fails here until the copy is refreshed).
EMBEDDED = [
    ("docs/hardware.md", name)
    for name in ("cost_model_choices", "headline_ratios", "headline_groups", "memory_headline", "storage")
]


@pytest.mark.parametrize(("doc", "name"), EMBEDDED)
def test_embedded_table_is_the_notebook_output(doc: str, name: str):
    text = (ROOT / doc).read_text()
    found = re.search(rf"<!-- {name}: begin -->\n(?P<table>.*?)<!-- {name}: end -->", text, re.S)
    assert found, f"{doc} has no <!-- {name}: begin/end --> block"
    reference = ROOT / "paper_figures" / f"{name}.md"
    if not reference.is_file():
        pytest.skip(f"reference output {reference.relative_to(ROOT)} is not committed yet")
    assert found["table"] == reference.read_text(), f"{doc}: paste paper_figures/{name}.md into the {name} block"


def reference_value(quote: Quote) -> float:
    path = ROOT / quote.reference
    if path.suffix == ".json":
        return float(json.loads(path.read_text())[quote.key]) * quote.scale
    frame = pd.read_csv(path)
    if quote.rows:
        frame = frame.query(quote.rows)
    values = frame[quote.key]
    assert len(values) > 0, f"{quote.reference}: no rows where {quote.rows}"
    if quote.reduce == "value":
        assert len(values) == 1, f"{quote.reference}: {len(values)} rows where {quote.rows}, expected one"
        value = values.iloc[0]
    else:
        value = getattr(values, quote.reduce)()
    return float(value) * quote.scale


def matches(quoted: str, actual: float) -> bool:
    """`quoted` is `actual` rounded to the digits it shows (7.6 for 7.62, 54 for 53.6, 91.35 for 91.3477)."""
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    return abs(float(quoted) - actual) <= 0.5 * 10.0**-decimals + 1e-9


def test_match_rounds_to_the_quoted_digits():
    assert matches("7.6", 7.62) and matches("54", 53.6) and matches("-0.12", -0.1172)
    assert not matches("9", 7.62) and not matches("91.47", 91.35)


@pytest.mark.parametrize("quote", QUOTES, ids=lambda q: q.name)
def test_quoted_number_is_the_reference_output(quote: Quote):
    text = (ROOT / quote.doc).read_text()
    found = re.search(quote.pattern, text)
    assert found, f"{quote.doc} no longer contains /{quote.pattern}/: update tests/test_quoted_numbers.py"
    if not (ROOT / quote.reference).is_file():
        pytest.skip(f"reference output {quote.reference} is not committed yet (from a clean `dvc repro`)")
    actual = reference_value(quote)
    assert matches(found.group("value"), actual), (
        f"{quote.doc} quotes {found.group('value')}, {quote.reference} [{quote.key}"
        f"{', ' + quote.rows if quote.rows else ''}, {quote.reduce}] gives {actual:.4g}"
    )


@pytest.mark.skipif(not (ROOT / TRADEOFF).is_file(), reason="paper_figures/headline_tradeoff.csv not committed yet")
def test_readme_names_the_cheapest_configuration_and_the_fixed_masks_lead():
    """The words around the tradeoff numbers are conclusions too: which configuration is the cheapest within
    1 pp, and that `learned` does not beat the fixed mask of its own run at G = 4 or 8."""
    text = (ROOT / "README.md").read_text()
    named = re.search(CHEAPEST_NAMED, text)
    assert named, f"README.md no longer contains /{CHEAPEST_NAMED}/"
    cheapest = cheapest_within_the_accuracy_bound()
    option = "fixed" if named["option"] == "the fixed mask" else named["option"].strip("`")
    assert (int(named["groups"]), option) == (cheapest.groups, cheapest.option), (
        f"README.md names G = {named['groups']} {option}; {TRADEOFF} gives G = {cheapest.groups} {cheapest.option}"
    )
    targets = pd.read_csv(ROOT / TARGETS)
    learned = targets[targets["option"] == "learned"]
    assert "missed, beyond the spread of the seeds" in text
    assert (learned["verdict"] == "missed").all(), f"a target is not missed beyond the spread:\n{learned}"
    table = pd.read_csv(ROOT / TRADEOFF)
    versus = table[(table["schedule"] == "full") & (table["option"] == "learned")].set_index("groups")["vs_fixed"]
    said = {int(g): word for word, g in re.findall(r"\*\*(within noise|ahead|behind) at G = (\d+)\*\*", text)}
    assert said and said == {g: versus[g] for g in said}, f"README.md says {said}; {TRADEOFF} vs_fixed: {versus}"
    assert set(said) == set(versus.dropna().index), "the README names the paired verdict at every G with a fixed mask"
    method = (ROOT / "docs" / "method.md").read_text()
    for g, word in said.items():
        assert f"{word} it at G = {g}" in method or f"{word} of it at G = {g}" in method
    assert ("it does not beat the fixed mask anywhere" in " ".join(text.split())) == (
        "ahead" not in set(versus.dropna())
    )


def test_reference_files_are_what_dvc_hands_to_git():
    """The references named here are git-tracked stage outputs (cache: false), not cached or hand-made files."""
    import yaml

    tracked = set()
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            if isinstance(entry, dict):
                path, options = next(iter(entry.items()))
                if (options or {}).get("cache") is False:
                    tracked.add(path)
    assert {q.reference for q in QUOTES} <= tracked


def test_section_6_counts_and_words_are_the_reference_files():
    """The counts and conclusions of docs/hardware.md section 6 that are not single numbers: how many base points
    fall below 1% at each G, which network does not beat the digital lanes, and that no paper network's weights
    fit the SRAM."""
    if not (ROOT / "paper_figures" / "headline_groups.csv").is_file():
        pytest.skip("paper_figures/headline_groups.csv is not committed yet")
    text = " ".join((ROOT / "docs" / "hardware.md").read_text().split())
    groups = pd.read_csv(ROOT / "paper_figures" / "headline_groups.csv").query(PAPER_NETWORKS)
    for metric, column in (
        ("EDP vs best is below 1% at", "edp_ratio_best"),
        ("cycles vs best at", "cycles_ratio_best"),
    ):
        sentence = re.search(rf"{metric} ((?:\d+ with G = \d+(?:, |;| \())+)", text)
        assert sentence, f"docs/hardware.md no longer counts '{metric}'"
        said = {int(g): int(c) for c, g in re.findall(r"(\d+) with G = (\d+)", sentence.group(1))}
        counted = {int(g): int((part[column] < 0.01).sum()) for g, part in groups.groupby("groups")}
        assert said == counted, f"docs/hardware.md says {said}, headline_groups.csv gives {counted}"
    headline = pd.read_csv(ROOT / HEADLINE).query(PAPER_NETWORKS)
    losing = sorted(set(headline.loc[headline["edp_vs_digital"] >= 1, "network"]))
    assert f"digital lanes' for every paper network but {', '.join(losing)}." in text
    storage = pd.read_csv(ROOT / "paper_figures" / "storage.csv").query(PAPER_NETWORKS + " and groups == 1")
    if "none fits the 4 MiB SRAM" in text:
        assert not storage["dense_fits_sram"].any()
    if "cycles below 1% appear at no G at these N" in text:
        assert (groups["cycles_ratio_best"] >= 0.01).all()
    if "nowhere below 1% at the base point" in text:
        assert (headline[["cycles_vs_best", "edp_vs_best"]] >= 0.01).all().all()
