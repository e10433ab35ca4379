"""`dastudy study compare A B`: configuration means with t intervals, paired differences where configurations and
seeds match, a clear line when nothing does. Expected numbers are computed here from the trial files."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import LAMBDA, LUCKY, PAPER, SEED, TRIALS, dastudy, make_study  # noqa: E402

from study.commands.compare import compare_studies, format_comparison  # noqa: E402

T975 = {1: 12.706, 2: 4.303, 3: 3.182}  # Student-t 0.975 quantiles (printed tables)


def _scores(study_dir: Path) -> dict[tuple, dict[int, float]]:
    """(λ, lr, model) → seed → metric of the last report, read from Ray's result.json of completed trials."""
    out: dict[tuple, dict[int, float]] = {}
    for trial in sorted(study_dir.glob("trial_*")):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        if not rows[-1].get("finished"):
            continue
        params = json.loads((trial / "params.json").read_text())
        key = (params[LAMBDA], params["optim.lr@deeplabv2_tiny"], params.get("model.name"))
        out.setdefault(key, {})[params[SEED]] = rows[-1]["val/mIoU13"]
    return out


def _shifted(trials, shift):
    return [(name, lam, lr, seed, rounds, fate, model, q + shift * seed)
            for name, lam, lr, seed, rounds, fate, model, q in trials]


def test_matched_configurations_are_paired_by_seed(tmp_path):
    a = make_study(tmp_path / "a", name="a", trials=PAPER, baseline=False)
    # B: the same grid, better by a seed-dependent amount, and one seed fewer for λ = 0.004
    b_trials = [t for t in _shifted(PAPER, 0.01) if not (t[1] == 0.004 and t[3] == 3)]
    b = make_study(tmp_path / "b", name="b", trials=b_trials, baseline=False)
    result = compare_studies(a, b)
    assert len(result.matched) == 6 and result.only_a == result.only_b == 0
    sa, sb = _scores(a), _scores(b)
    for m in result.matched:
        (key,) = [k for k in sa if m.label == _label(k)]
        seeds = sorted(set(sa[key]) & set(sb[key]))
        assert list(m.seeds) == seeds
        d = np.array([sb[key][s] - sa[key][s] for s in seeds])
        assert m.difference.n == len(seeds) and m.difference.mean == pytest.approx(d.mean())
        assert m.difference.half == pytest.approx(T975[len(seeds) - 1] * d.std(ddof=1) / math.sqrt(len(seeds)),
                                                  rel=1e-3)
        assert m.a.n == 3 and m.b.n == (2 if key[0] == 0.004 else 3)
        va = np.array(list(sa[key].values()))
        assert m.a.mean == pytest.approx(va.mean())
        assert m.a.half == pytest.approx(T975[2] * va.std(ddof=1) / math.sqrt(3), rel=1e-3)
        from scipy import stats

        assert m.p_value == pytest.approx(stats.ttest_rel([sb[key][s] for s in seeds],
                                                          [sa[key][s] for s in seeds]).pvalue)
    text = format_comparison(result)
    assert "in both: 6 configuration(s)" in text and "B − A paired by seed" in text
    assert "val/mIoU13 %" in text
    first = result.matched[0]
    assert f"{100 * first.difference.mean:+.2f} [" in text


def _label(key) -> str:
    lam, lr, model = key
    return f"λ={lam:g} lr={lr:g} {model}"


def test_nothing_matches_says_so_in_one_line(tmp_path):
    a = make_study(tmp_path / "a", name="a", trials=LUCKY, baseline=False)
    b = make_study(tmp_path / "b", name="b", trials=TRIALS, baseline=False)
    result = compare_studies(a, b)
    assert result.matched == () and result.only_a == 2 and result.only_b == 2
    text = format_comparison(result)
    assert "no configuration of A matches one of B: nothing to pair" in text
    assert "A searches lambda_adv, lr, backbone; B searches lambda_adv, lr" in text
    # each side's configurations are still listed, best first, with intervals where n >= 2
    assert "λ=0.002 lr=0.01 deeplabv2_tiny" in text and "(n=3)" in text and "(n=1, no interval)" in text


@pytest.mark.slow  # > 3 s: outside make test-quick
def test_cli_compare_and_refusals(tmp_path):
    a = make_study(tmp_path / "a", name="a", trials=PAPER, baseline=False)
    b = make_study(tmp_path / "b", name="b", trials=_shifted(PAPER, 0.01), baseline=False)
    done = dastudy("study", "compare", str(a), str(b), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert len(data["matched"]) == 6 and data["a"]["study"] == "a"
    assert all(m["difference_b_minus_a"]["mean"] > 0 for m in data["matched"])
    done = dastudy("study", "compare", str(a), str(tmp_path / "missing"))
    assert done.returncode != 0 and "missing" in done.stderr and "Traceback" not in done.stderr
    holdout = make_study(tmp_path / "h", name="h", trials=PAPER, baseline=False, selection="holdout")
    done = dastudy("study", "compare", str(a), str(holdout))
    assert done.returncode != 0 and "val/mIoU13" in done.stderr and "select/mIoU13" in done.stderr
