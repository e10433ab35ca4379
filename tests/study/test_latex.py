"""`dastudy study report --format latex`: the λ_adv × backbone table as a booktabs tabular, escaped."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import PAPER, TRIALS, dastudy, make_study  # noqa: E402

from study.report.latex import escape, tabular, write_lambda_table  # noqa: E402

def _outside_math(line: str) -> str:
    return re.sub(r"(?<!\\)\$[^$]*(?<!\\)\$", "", line)


def test_escape_every_special_character_and_the_report_symbols():
    assert escape("a_b & 50% #1 {x} ~^\\") == (r"a\_b \& 50\% \#1 \{x\} \textasciitilde{}\textasciicircum{}"
                                                r"\textbackslash{}")
    assert escape("Δ mIoU16 ± 0.41 (1)†") == r"$\Delta$ mIoU16 $\pm$ 0.41 (1)$^\dagger$"
    assert escape("$λ") == r"\$$\lambda$"  # an escaped dollar next to math stays a literal dollar
    assert escape("λ=0 n = 1–3 −0.2") == r"$\lambda$=0 n = 1--3 $-$0.2"
    with pytest.raises(ValueError, match="U\\+4E2D"):
        escape("中")


def test_tabular_rules_alignment_and_shape():
    text = tabular(["backbone", "λ_adv", "mIoU16 mean ± sd (n)"],
                   [["deeplabv2_tiny", "0.001", "38.30 ± 0.41 (3)"], ["v3+", "0", "n/a"]], caption="c")
    lines = text.splitlines()
    assert lines[0] == "% c"
    assert lines[1] == r"\begin{tabular}{lrr}"  # text left, numbers (n/a included) right
    assert lines[2] == r"\toprule" and lines[4] == r"\midrule" and lines[-2] == r"\bottomrule"
    assert lines[3] == r"backbone & $\lambda$\_adv & mIoU16 mean $\pm$ sd (n) \\"
    assert lines[5] == r"deeplabv2\_tiny & 0.001 & 38.30 $\pm$ 0.41 (3) \\"
    with pytest.raises(ValueError, match="3 cells"):
        tabular(["a", "b", "c"], [["1", "2"]])


def test_lambda_table_file_matches_the_report_table(tmp_path):
    from study.report import load_study
    from study.report.paper import paper_markdown, paper_rows

    study_dir = make_study(tmp_path, trials=PAPER, baseline=True)
    path = write_lambda_table(study_dir)
    assert path == study_dir / "tables" / "lambda_backbone.tex"
    text = path.read_text()
    header, body = paper_markdown(load_study(study_dir), paper_rows(load_study(study_dir)))
    rows = [ln for ln in text.splitlines() if ln.endswith(r" \\")]
    assert len(rows) == 1 + len(body) == 1 + 6
    for line, cells in zip(rows, [header, *body]):
        assert line.count(" & ") == len(cells) - 1
        assert line == " & ".join(escape(c) for c in cells) + r" \\"
    for line in text.splitlines():
        if line.startswith("%"):
            continue
        assert line.count("$") % 2 == 0 or r"\$" in line, line
        assert not re.search(r"(?<!\\)[_%#&]", _outside_math(line).replace(" & ", " ")), line
    assert r"deeplabv3plus\_tiny" in text and r"$\pm$" in text and "±" not in text.split("\n", 1)[1]
    # a study that searches neither λ nor the backbone has no such table
    other = make_study(tmp_path / "other", trials=TRIALS)
    for params in [*other.glob("trial_*/params.json")]:
        data = json.loads(params.read_text())
        del data["adapt.lambda_adv_main"]
        params.write_text(json.dumps(data))
    space = json.loads((other / "space.json").read_text())
    del space["dimensions"]["adapt.lambda_adv_main"]
    (other / "space.json").write_text(json.dumps(space))
    assert write_lambda_table(other) is None and not (other / "tables" / "lambda_backbone.tex").exists()
    if shutil.which("pdflatex"):
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + text
                       + "\\end{document}\n")
        done = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", doc.name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:]


@pytest.mark.slow  # > 2 s: outside make test-quick
def test_cli_report_format_latex(tmp_path):
    study_dir = make_study(tmp_path, trials=PAPER, baseline=False)
    done = dastudy("study", "report", str(study_dir), "--format", "latex")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (study_dir / "tables" / "lambda_backbone.tex").read_text()
    assert r"\toprule" in done.stdout and (study_dir / "report.md").is_file()
    done = dastudy("study", "report", str(study_dir), "--format", "html")
    assert done.returncode == 2 and "latex" in done.stderr


def test_escape_joins_adjacent_math_and_refuses_anything_past_ascii():
    assert escape("Δ±−λ x") == r"$\Delta\pm-\lambda$ x"  # one $...$ for the run of symbols
    assert escape("\x7f") == "\x7f"  # the last ASCII character passes through
    with pytest.raises(ValueError) as err:
        escape("a\x80")  # the first one past it does not
    assert str(err.value) == ("escape: character '\\x80' (U+0080) has no LaTeX form here; allowed: ASCII and "
                              "λ Δ ± † ≥ ≤ − × · – —")


def test_tabular_without_rows_or_caption_is_exactly_the_rules_and_the_header():
    assert tabular(["a", "b_c"], []) == "\\begin{tabular}{ll}\n\\toprule\na & b\\_c \\\\\n\\midrule\n\\bottomrule\n" \
                                        "\\end{tabular}\n"


def test_lambda_table_goes_to_a_new_out_dir_with_its_caption_and_rewrites(tmp_path):
    study_dir = make_study(tmp_path, trials=PAPER, baseline=True)
    out = tmp_path / "new" / "out"  # neither exists yet
    path = write_lambda_table(study_dir, out)
    assert path == out / "tables" / "lambda_backbone.tex" and not (study_dir / "tables").exists()
    text = path.read_text()
    assert text.splitlines()[0] == ("% Study fixture: completed trials, final target-val numbers (%), mean +/- sample "
                                    "sd (n seeds); generated by dastudy study report --format latex. Needs "
                                    "\\usepackage{booktabs}.")
    assert text.splitlines()[1].startswith("\\begin{tabular}{")
    path.unlink()
    assert write_lambda_table(study_dir, out) == path and path.read_text() == text  # tables/ exists by now
