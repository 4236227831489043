"""The report stage on small fixed inputs: the evaluate stage's metrics, per-class table and
embeddings, the preprocess summary and dvclive curves, all written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from slrpipe.config import parse_params
from slrpipe.errors import SlrpipeError
from slrpipe.evaluation.report import markdown_table, read_inputs, run_report
from slrpipe.evaluation.report.figures import tsne_2d, tsne_perplexity
from slrpipe.evaluation.report.render import NO_PUBLISHED, schedule, selection_text
from tests.conftest import one_dataset
from slrpipe.evaluation.report.tables import (accuracies, best_and_worst, intervals, paper_dataset, paper_results,
                                              run_table, set_intervals)

GLOSSES = ["bad", "do it", "don't", "follow me", "glad", "good", "hate", "i'm fine", "no", "sorry", "tired", "yes"]
METRICS = {"per_instance": {"top1": 0.423077, "top5": 0.884615}, "per_class": {"top1": 0.401389, "top5": 0.875}}


def make_params(tmp_path: Path, source: str = "msasl", num_classes: int | None = 100, name: str = "data", **sections: dict):
    """Params with the one dataset `name` (the corpus and the only target)."""
    data = one_dataset({"source": source, "root": str(tmp_path / "data"), "num_classes": num_classes}, name, **sections)
    return parse_params(data, tmp_path / "params.yaml")


def write_eval(folder: Path, metrics: dict | None = None, branches: tuple[str, ...] = ("joint", "motion"),
               samples: int = 60, classes: int = 12, signers: dict[str, tuple[int, float]] | None = None) -> Path:
    """metrics.json, per_class.csv, per_signer.csv (signer -> (samples, top1); None: the header
    only, as for test samples without signer ids) and embeddings.npz as the evaluate stage writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    labels = np.arange(samples) % classes
    metrics = {**(METRICS if metrics is None else metrics), "samples": samples}
    # As evaluate writes it: the test split's numbers under "test", how best.pt was chosen beside them.
    selected = {"selected": metrics.pop("selected")} if "selected" in metrics else {}
    (folder / "metrics.json").write_text(json.dumps({"test": metrics, **selected}, indent=2))
    with (folder / "per_class.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["label", "gloss", "samples", "top1", "top5"])
        for label in range(classes):
            writer.writerow([label, GLOSSES[label % len(GLOSSES)], samples // classes, f"{label / (classes - 1):.6f}", "1.000000"])
    with (folder / "per_signer.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["signer", "samples", "top1"])
        writer.writerows([signer, count, f"{top1:.6f}"] for signer, (count, top1) in (signers or {}).items())
    centres = {b: rng.normal(size=(classes, 32)) for b in branches}
    features = {b: (centres[b][labels] + 0.35 * rng.normal(size=(samples, 32))).astype(np.float32) for b in branches}
    np.savez(folder / "embeddings.npz", labels=labels, sample_ids=np.array([f"s{i}" for i in range(samples)]), **features)
    return folder


def write_preprocess(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"samples": 128, "bad": 2, "frames": 3578, "train_samples": 77, "val_samples": 26, "test_samples": 25,
               "labelled_20%": 25, "labelled_40%": 38, "labelled_60%": 51}
    (folder / "preprocess_summary.json").write_text(json.dumps(summary))
    (folder / "label_subsets.json").write_text(json.dumps({"20%": [f"s{i}" for i in range(25)],
                                                           "40%": [f"s{i}" for i in range(38)],
                                                           "60%": [f"s{i}" for i in range(51)]}))
    return folder


def write_curve(live_dir: Path, name: str, steps, values) -> None:
    path = live_dir / "plots" / "metrics" / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    leaf = name.rsplit("/", 1)[-1]
    path.write_text(f"step\t{leaf}\n" + "".join(f"{s}\t{v}\n" for s, v in zip(steps, values)))


def write_live(root: Path, pretrain: bool = True, finetune: bool = True) -> dict[str, Path]:
    epochs = np.arange(30)
    decay = np.exp(-epochs / 10)
    if pretrain:
        for name, scale in (("total", 12), ("contrast_joint", 5), ("contrast_motion", 4.5), ("consistency_joint", 1.3),
                            ("consistency_motion", 1.5), ("transfer_joint_to_motion", 2.8), ("transfer_motion_to_joint", 3)):
            write_curve(root / "pretrain", f"train/loss/{name}", epochs, scale * (0.3 + 0.7 * decay))
        write_curve(root / "pretrain", "val/knn_top1", [4, 9, 14, 19, 24, 29], [0.31, 0.35, 0.42, 0.46, 0.5, 0.5])
        write_curve(root / "pretrain", "lr", epochs, np.where(epochs < 20, 0.01, 0.001))
    if finetune:
        write_curve(root / "finetune", "train/loss", epochs, 4.5 * decay + 0.02)
        write_curve(root / "finetune", "train/top1", epochs, 1 - 0.9 * decay)
        write_curve(root / "finetune", "val/top1", epochs, 0.46 - 0.4 * decay)
        write_curve(root / "finetune", "val/top5", epochs, 0.88 - 0.5 * decay)
        write_curve(root / "finetune", "lr", epochs, np.where(epochs < 20, 0.01, 0.001))
    return {"pretrain": root / "pretrain", "finetune": root / "finetune"}


def render(tmp_path: Path, params=None, metrics: dict | None = None, branches=("joint", "motion"), signers=None, **live: bool):
    params = params or make_params(tmp_path)
    eval_dir = write_eval(tmp_path / "reports" / "eval", metrics, branches, signers=signers)
    path = run_report(params, eval_dir, write_preprocess(tmp_path / "preprocess"), write_live(tmp_path / "dvclive", **live),
                      tmp_path / "reports")
    return path, path.read_text(encoding="utf-8")


def csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> np.ndarray:
    """The PNG exists and is not blank: many distinct colours, not one flat image."""
    from matplotlib.image import imread

    assert path.is_file(), path
    image = imread(path)[..., :3]
    assert image.std() > 0.05
    rgb = (image.reshape(-1, 3) * 255).astype(np.uint32)
    assert len(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])) > 20
    return image


@pytest.fixture(scope="module")
def msasl(tmp_path_factory) -> tuple[Path, str]:
    return render(tmp_path_factory.mktemp("msasl"))


def test_paper_results_are_package_data():
    paper = paper_results()
    assert set(paper.table) == {"I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI"}
    ours = paper[(paper.table == "I") & (paper.method == "Ours")].set_index(["dataset", "metric"])
    assert ours.number[("MSASL100", "P-I top1")] == 86.26
    # as printed: NMFs-CSL has one decimal, kept as text for results.csv
    assert paper[(paper.table == "III") & (paper.method == "Ours") & (paper.dataset == "NMFs-CSL total")].value.iloc[0] == "75.6"


@pytest.mark.parametrize(("source", "classes", "expected"), [
    ("msasl", 100, "MSASL100"), ("msasl", None, "MSASL1000"), ("wlasl", 300, "WLASL300"), ("wlasl", None, "WLASL2000"),
    ("wlasl", 1000, None), ("nmfs_csl", None, "NMFs-CSL"), ("slr500", None, "SLR500"), ("mp_data", None, None),
])
def test_paper_dataset(tmp_path, source, classes, expected):
    assert paper_dataset(make_params(tmp_path, source, classes)) == expected


def test_msasl_finetune_beside_table_one(msasl):
    _path, text = msasl
    assert text.startswith("# Results: MSASL100, protocol finetune")
    # this run, percent with 2 decimals
    assert "| all test samples | 42.31 | 88.46 | 40.14 | 87.50 |" in text
    assert "| this run | finetune | 42.31 | 88.46 | 40.14 | 87.50 |" in text
    # the paper's "Ours" row of Table I and the strongest skeleton baselines
    assert "| paper, Table I | Ours | 86.26 | 96.96 | 86.63 | 96.79 |" in text
    assert "| paper, Table I | SignBERT+ | 84.94 |" in text
    assert "Ours (+R)" not in text  # no fused metrics in this run
    assert NO_PUBLISHED not in text
    # what was run, and the reproducibility block
    assert "official split" in text and "train 77, val 26, test 25" in text
    assert "Pretraining | 150 epochs" in text
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block)["datasets"]["data"]["num_classes"] == 100
    assert "(figures/tsne.png)" in text and "(figures/curves.png)" in text


def test_msasl_csv_is_tidy(msasl):
    path, _ = msasl
    rows = csv_rows(path.parent / "results.csv")
    assert list(rows[0]) == ["source", "method", "dataset", "metric", "value"]
    assert {"source": "this run", "method": "finetune", "dataset": "MSASL100", "metric": "P-I top1", "value": "42.3077"} in rows
    assert {"source": "paper", "method": "Ours", "dataset": "MSASL100", "metric": "P-C top5", "value": "96.79"} in rows
    assert {r["source"] for r in rows} == {"this run", "paper"}
    assert all(r["dataset"] == "MSASL100" for r in rows)


def test_figures_are_readable_pngs(msasl):
    path, _ = msasl
    tsne = assert_png(path.parent / "figures" / "tsne.png")
    curves = assert_png(path.parent / "figures" / "curves.png")
    assert tsne.shape[1] > 2.5 * tsne.shape[0]  # three panels side by side
    assert curves.shape[0] > 500


def test_per_class_best_and_worst(msasl):
    _, text = msasl
    section = text.split("## Per-class results", 1)[1].split("## Reproducibility", 1)[0]
    best, worst = section.split("Worst 5 classes:")
    assert "| yes | 11 | 5 | 100.00 | 100.00 |" in best  # label 11 has top-1 1.0
    assert "| bad | 0 | 5 | 0.00 | 100.00 |" in worst


def test_fused_metrics_show_ours_plus_r(tmp_path):
    fused = {**METRICS, "fused": {"per_instance": {"top1": 0.5, "top5": 0.9}, "per_class": {"top1": 0.49, "top5": 0.9}}}
    path, text = render(tmp_path, metrics=fused)
    assert "| this run | finetune (+R) | 50.00 | 90.00 | 49.00 | 90.00 |" in text
    assert "| paper, Table I | Ours (+R) | 90.76 | 98.41 | 91.97 | 98.42 |" in text
    rows = csv_rows(path.parent / "results.csv")
    assert {"source": "this run", "method": "finetune (+R)", "dataset": "MSASL100", "metric": "P-C top1", "value": "49.0000"} in rows


def test_dataset_not_in_the_paper(tmp_path):
    params = make_params(tmp_path, "mp_data", None, "ksl13", preprocess={"split": "signer", "seed": 3})
    path, text = render(tmp_path, params)
    assert f"{NO_PUBLISHED}:" in text
    assert "| all test samples | 42.31 | 88.46 | 40.14 | 87.50 |" in text
    assert "86.26" not in text and "Table I" not in text
    assert "split by signer" in text.replace("seeded split by signer", "split by signer") and "seed 3" in text
    rows = csv_rows(path.parent / "results.csv")
    assert {r["source"] for r in rows} == {"this run"}
    assert {r["dataset"] for r in rows} == {"ksl13"}  # its name under datasets:
    assert text.startswith("# Results: ksl13, protocol finetune")


def test_semi_protocol_uses_table_five(tmp_path):
    params = make_params(tmp_path, finetune={"protocol": "semi", "label_fraction": 0.4})
    _, text = render(tmp_path, params)
    assert "Table V: fine-tuned, 40% of the labels, MSASL100" in text
    assert "| this run | semi 40% | 42.31 | 40.14 |" in text
    assert "| paper, Table V | Ours semi 40% | 80.85 | 80.83 |" in text
    assert "38 labelled samples" in text


def test_scratch_on_a_label_subset_beside_semi(tmp_path):
    params = make_params(tmp_path, finetune={"protocol": "scratch", "label_fraction": 0.2})
    _, text = render(tmp_path, params, pretrain=False)
    assert "| this run | scratch 20% | 42.31 | 40.14 |" in text
    assert "| paper, Table V | Ours semi 20% | 71.07 | 72.06 |" in text
    assert "; 20% of the training labels (25 labelled samples)" in text


def test_linear_protocol_on_wlasl(tmp_path):
    params = make_params(tmp_path, "wlasl", 2000, finetune={"protocol": "linear"})
    _, text = render(tmp_path, params)
    assert "| paper, Table V | Ours linear 100% | 32.35 | 32.49 |" in text
    assert "| paper, Table II | Ours | 51.98 | 49.46 |" in text


def test_nmfs_csl_subsets_in_table_three(tmp_path):
    metrics = {"per_instance": {"top1": 0.7, "top2": 0.8, "top5": 0.9}, "per_class": {"top1": 0.69, "top2": 0.79, "top5": 0.89},
               "confusing": {"per_instance": {"top1": 0.5, "top2": 0.7, "top5": 0.85},
                             "per_class": {"top1": 0.5, "top2": 0.7, "top5": 0.85}},
               "normal": {"per_instance": {"top1": 0.95, "top2": 0.97, "top5": 0.99},
                          "per_class": {"top1": 0.95, "top2": 0.97, "top5": 0.99}}}
    path, text = render(tmp_path, make_params(tmp_path, "nmfs_csl", None), metrics=metrics)
    assert "Table III" in text and "Confusing top-1" in text
    assert "official train/test split; validation: 20% of the training samples, drawn by signer" in text
    assert "| this run | finetune | 70.00 | 80.00 | 90.00 | 50.00 | 70.00 | 85.00 | 95.00 | 97.00 | 99.00 |" in text
    assert "| paper, Table III | Ours | 75.6 | 92.1 | 97.9 | 59.4 | 86.7 | 96.4 | 97.3 | 99.2 | 99.6 |" in text
    assert "| paper, Table III | BEST | 68.5 | – | 94.4 |" in text  # the paper leaves BEST's top-2 blank
    rows = csv_rows(path.parent / "results.csv")
    assert {"source": "this run", "method": "finetune", "dataset": "NMFs-CSL confusing", "metric": "P-I top2", "value": "70.0000"} in rows


def test_ablation_row_for_a_joint_only_run(tmp_path):
    params = make_params(tmp_path, finetune={"branches": "joint"})
    _, text = render(tmp_path, params, branches=("joint",))
    assert "| paper, Table VII | only joint | 83.75 | – | 83.88 | – |" in text
    assert "joint-only: the model has no motion branch" in text
    tsne = assert_png(tmp_path / "reports" / "figures" / "tsne.png")
    assert tsne.shape[1] < 2 * tsne.shape[0]  # one panel


def test_scratch_without_pretraining_curves(tmp_path):
    params = make_params(tmp_path, finetune={"protocol": "scratch"})
    _, text = render(tmp_path, params, pretrain=False)
    assert "protocol scratch trains without pretraining" in text
    assert "| paper, Table VI | pretrain data 0% | 69.88 | – | 70.97 | – |" in text
    assert "Pretraining | none (protocol scratch)" in text
    assert_png(tmp_path / "reports" / "figures" / "curves.png")


def test_no_curves_at_all(tmp_path):
    (tmp_path / "reports" / "figures").mkdir(parents=True)
    (tmp_path / "reports" / "figures" / "curves.png").write_bytes(b"stale")
    _, text = render(tmp_path, pretrain=False, finetune=False)
    assert "No training-curve figure: neither pretraining nor fine-tuning curves were found." in text
    assert "no pretraining curves found" in text and "no fine-tuning curves found" in text
    assert not (tmp_path / "reports" / "figures" / "curves.png").exists()
    assert_png(tmp_path / "reports" / "figures" / "tsne.png")


def test_missing_metrics_is_one_line_error(tmp_path):
    with pytest.raises(SlrpipeError, match=r"metrics.json not found: run `dvc repro evaluate`"):
        run_report(make_params(tmp_path), tmp_path / "nothing", write_preprocess(tmp_path / "pre"), {}, tmp_path / "out")


def test_metrics_without_the_split_name_ask_for_a_rerun(tmp_path):
    eval_dir = write_eval(tmp_path / "eval")
    (eval_dir / "metrics.json").write_text(json.dumps({**METRICS, "samples": 60}))  # written before names had the split
    with pytest.raises(SlrpipeError, match=r"has no test/per_instance/top1 accuracy: rerun `dvc repro evaluate`"):
        run_report(make_params(tmp_path), eval_dir, write_preprocess(tmp_path / "pre"), {}, tmp_path / "out")


def test_perplexity_fits_small_test_sets():
    for n in (5, 6, 10, 25, 60, 91, 1000):
        assert 1 <= tsne_perplexity(n) < n
    assert tsne_perplexity(1000) == 30


def test_tsne_is_deterministic():
    features = np.random.default_rng(0).normal(size=(12, 8))
    first = tsne_2d(features)
    assert first.shape == (12, 2)
    np.testing.assert_array_equal(first, tsne_2d(features))


def test_stage_command(tmp_path):
    from stages.common import standalone
    from stages.report import report

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(one_dataset({"source": "mp_data", "root": "data"}, "ksl")))
    runner = CliRunner()
    missing = runner.invoke(standalone(report), ["--params", str(tmp_path / "params.yaml"), "--eval-dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "run `dvc repro evaluate`" in missing.output
    assert str(tmp_path / "none" / "ksl" / "metrics.json") in missing.output  # the target's own folder
    write_eval(tmp_path / "eval" / "ksl")
    write_preprocess(tmp_path / "pre" / "ksl")
    arguments = ["--params", str(tmp_path / "params.yaml"), "--eval-dir", str(tmp_path / "eval"), "--preprocess-dir",
                 str(tmp_path / "pre"), "--live-dir", str(tmp_path / "live"), "--out-dir", str(tmp_path / "out"),
                 "--baseline-dir", str(tmp_path / "baseline")]
    missing = runner.invoke(standalone(report), arguments)
    assert missing.exit_code == 1 and "run `dvc repro baseline`" in missing.output
    assert str(tmp_path / "baseline" / "ksl" / "metrics.json") in missing.output  # the target's own folder
    write_scores(tmp_path / "eval" / "ksl", np.ones(60, bool))
    write_baseline(tmp_path / "baseline" / "ksl", np.ones(60, bool))
    result = runner.invoke(standalone(report), arguments)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "results.md").is_file() and (tmp_path / "out" / "results.csv").is_file()
    assert "baseline: logistic regression" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.parametrize("classes", [11, 12, 14])
def test_best_and_worst_classes_never_overlap(classes):
    # Mostly perfect classes: ties everywhere, broken by the number of test samples.
    rows = [{"label": i, "gloss": f"g{i}", "samples": 3 if i < classes - 2 else 2, "top1": 1.0 if i < classes - 2 else 0.0}
            for i in range(classes)]
    best, worst = best_and_worst(pd.DataFrame(rows))
    assert len(best) == 5 and len(worst) == 5
    assert not set(best.Gloss) & set(worst.Gloss)
    assert set(worst.Gloss[:2]) == {f"g{classes - 2}", f"g{classes - 1}"}  # the two never recognized come first
    assert list(worst.columns) == ["Gloss", "Label", "Test samples", "top-1 (%)"]


def test_ten_classes_or_fewer_are_all_shown_best_first():
    rows = [{"label": i, "gloss": f"g{i}", "samples": 2, "top1": i / 10, "top5": 1.0} for i in range(10)]
    best, worst = best_and_worst(pd.DataFrame(rows))
    assert worst is None
    assert list(best.Gloss) == [f"g{i}" for i in range(9, -1, -1)]
    assert list(best["top-1 (%)"][:2]) == ["90.00", "80.00"]


def test_schedule_describes_only_the_lr_drops_that_happened():
    assert schedule(0.01, 0.1, (20,), 30) == "0.01 (x0.1 after epoch 20)"
    assert schedule(0.01, 0.1, (20,), 20) == "0.01 (constant; lr_steps 20 not reached in 20 epochs)"
    assert schedule(0.01, 0.1, (10, 40), 30) == "0.01 (x0.1 after epoch 10; lr_steps 40 not reached in 30 epochs)"
    assert schedule(0.01, 0.1, (), 30) == "0.01 (constant)"


@pytest.mark.parametrize(("selected", "expected"), [
    ({"epoch": 12, "val": {"top1": 0.5}}, "epoch 12 of 30, the best validation top-1 (50.00 %) (`finetune.select: val`)"),
    ({"epoch": 30}, "epoch 30 of 30, the last (`finetune.select: last`)"),
    ({"epoch": 7, "test": {"top1": 0.625}}, "selected on test (authors' protocol, optimistic): epoch 7 of 30, the best test "
                                            "top-1 during training (62.50 %) (`finetune.select: test`)"),
])
def test_selection_text_names_the_split_that_chose_the_epoch(selected, expected):
    assert selection_text({**METRICS, "selected": selected}, 30) == expected


def test_results_md_says_how_the_model_was_selected(msasl, tmp_path):
    _path, text = msasl  # metrics.json without `selected`: a model file that did not record it
    assert "| Model selection | not recorded in the model file" in text
    _path, text = render(tmp_path, metrics={**METRICS, "selected": {"epoch": 7, "test": {"top1": 0.625}}})
    assert "| Model selection | selected on test (authors' protocol, optimistic): epoch 7 of 60" in text
    assert "The model was selected on test (authors' protocol, optimistic)" in text
    assert "| all test samples | 42.31 |" in text  # `selected` is not an evaluated set


def test_markdown_table_renders_any_dataframe():
    frame = pd.DataFrame({"Gloss": ["yes", "a|b", "two\nlines"], "Label": [3, 4, 5], "top-1 (%)": ["50.00", "–", "1.50"]})
    assert markdown_table(frame, left=2).splitlines() == [
        "| Gloss | Label | top-1 (%) |",
        "|---|---|---:|",
        "| yes | 3 | 50.00 |",
        "| a\\|b | 4 | – |",  # a pipe in a cell does not split it
        "| two lines | 5 | 1.50 |",
    ]
    assert markdown_table(frame.iloc[:0]).splitlines() == ["| Gloss | Label | top-1 (%) |", "|---|---:|---:|"]


def test_run_table_orders_sets_and_ks():
    metrics = {"fused": {"per_instance": {"top5": 0.9, "top1": 0.5}, "per_class": {"top1": 0.4}},
               "per_instance": {"top5": 0.8, "top1": 0.25}, "per_class": {"top5": 0.75, "top1": 0.2},
               "samples": 8, "selected": {"epoch": 3, "val": {"top1": 0.3}}}
    table = run_table(accuracies(metrics))
    assert list(table.columns) == ["Evaluated on", "P-I top-1", "P-I top-5", "P-C top-1", "P-C top-5"]
    assert table.values.tolist() == [["all test samples", "25.00", "80.00", "20.00", "75.00"],
                                     ["fused (+R)", "50.00", "90.00", "40.00", "–"]]


def test_glosses_and_per_class_table_are_read_as_text(tmp_path):
    eval_dir = write_eval(tmp_path / "eval")
    text = (eval_dir / "per_class.csv").read_text().replace(",bad,", ",null,")
    (eval_dir / "per_class.csv").write_text(text)
    pre = write_preprocess(tmp_path / "pre")
    (pre / "glosses.txt").write_text("".join(f"{g}\n" for g in [*GLOSSES, "NA"]))
    inputs = read_inputs(eval_dir, pre, {})
    assert inputs.glosses[-1] == "NA" and len(inputs.glosses) == 13
    assert inputs.per_class.gloss[0] == "null" and inputs.per_class.label.dtype.kind == "i"
    _path, text = render(tmp_path)  # no glosses.txt: the class count is the per-class table's
    assert "| Classes | 100 classes, 12 of them in the test split |" in text
    path = run_report(make_params(tmp_path), eval_dir, pre, {}, tmp_path / "out")
    assert "| Classes | 13 classes, 12 of them in the test split |" in path.read_text()


def test_unreadable_per_class_table_names_the_file(tmp_path):
    eval_dir = write_eval(tmp_path / "eval")
    (eval_dir / "per_class.csv").write_text("label,gloss,samples,top1\n0,bad,five,0.5\n")
    with pytest.raises(SlrpipeError, match=r"per_class.csv: .*not a number: rerun `dvc repro evaluate`"):
        read_inputs(eval_dir, write_preprocess(tmp_path / "pre"), {})
    (eval_dir / "per_class.csv").write_text("label,gloss\n")
    with pytest.raises(SlrpipeError, match=r"per_class.csv: lacks the column\(s\) samples, top1"):
        read_inputs(eval_dir, write_preprocess(tmp_path / "pre"), {})


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("metrics.json", "{bad", r"metrics.json: not valid JSON"), ("metrics.json", "[]", r"metrics.json: should hold a JSON object"),
    ("embeddings.npz", "not an archive", r"embeddings.npz: .*: rerun `dvc repro evaluate`"),
    ("per_signer.csv", "signer,samples\n", r"per_signer.csv: lacks the column\(s\) top1: rerun `dvc repro evaluate`"),
    ("per_signer.csv", "signer,samples,top1\nNA,two,0.5\n", r"per_signer.csv: .*not a number"),
])
def test_unreadable_evaluate_files_name_the_file(tmp_path, name, content, problem):
    eval_dir = write_eval(tmp_path / "eval")
    (eval_dir / name).write_text(content)
    with pytest.raises(SlrpipeError, match=problem):
        read_inputs(eval_dir, write_preprocess(tmp_path / "pre"), {})


# As evaluate writes them: each interval right after the value it bounds.
WITH_INTERVALS = {"per_instance": {"top1": 0.423077, "top1_ci_low": 0.3, "top1_ci_high": 0.55, "top5": 0.884615},
                  "per_class": {"top1": 0.401389, "top1_ci_low": 0.28, "top1_ci_high": 0.52, "top5": 0.875}}


def test_run_table_brackets_the_intervals_of_all_test_samples():
    metrics = {**WITH_INTERVALS, "fused": {"per_instance": {"top1": 0.5}, "per_class": {"top1": 0.4}}}
    assert intervals(metrics) == {("P-I", 1): (0.3, 0.55), ("P-C", 1): (0.28, 0.52)}
    assert intervals(metrics, "signer_ci") == {}
    table = run_table(accuracies(metrics), intervals(metrics))
    assert table.values.tolist()[0] == ["all test samples", "42.31 [30.00, 55.00]", "88.46", "40.14 [28.00, 52.00]", "87.50"]
    assert table.values.tolist()[1][1] == "50.00"  # fused: no interval of its own


def test_intervals_over_signers_and_per_signer_table(tmp_path):
    metrics = {"per_instance": {**WITH_INTERVALS["per_instance"], "top1_signer_ci_low": 0.1, "top1_signer_ci_high": 0.7},
               "per_class": {**WITH_INTERVALS["per_class"], "top1_signer_ci_low": 0.12, "top1_signer_ci_high": 0.66},
               "signers": 3}
    _path, text = render(tmp_path, metrics=metrics, signers={"p1": (20, 0.25), "p2": (20, 0.5), "NA": (20, 0.5)})
    assert "| all test samples | 42.31 [30.00, 55.00] | 88.46 | 40.14 [28.00, 52.00] | 87.50 |" in text
    assert "In brackets: the 95 % bootstrap interval over the 60 test samples (2000 resamples, seed 0)." in text
    assert ("Resampling the 3 test signers instead, whole signers and then the samples within each (the interval that "
            "speaks for new signers): P-I top-1 [10.00, 70.00], P-C top-1 [12.00, 66.00]. With 3 signers this interval "
            "is itself rough.") in text
    section = text.split("## Per-signer results\n\n", 1)[1].split("\n## ", 1)[0]
    assert section.splitlines() == ["P-I top-1 of each of the 3 test signers:", "",
                                    "| Signer | Test samples | top-1 (%) |", "|---|---:|---:|",
                                    "| p1 | 20 | 25.00 |", "| p2 | 20 | 50.00 |", "| NA | 20 | 50.00 |"]
    _path, text = render(tmp_path / "more", metrics={**metrics, "signers": 5}, signers={f"p{i}": (12, 0.5) for i in range(5)})
    assert "Resampling the 5 test signers instead" in text and "rough" not in text


def test_one_test_signer_has_no_interval_over_signers(tmp_path):
    _path, text = render(tmp_path, metrics={**WITH_INTERVALS, "signers": 1}, signers={"MP_Data2": (60, 0.42)})
    assert "all come from one signer (MP_Data2), so there is no interval over signers" in text
    assert "P-I top-1 of the test signer:" in text and "| MP_Data2 | 60 | 42.00 |" in text


def test_no_signer_ids_and_no_intervals(tmp_path):
    _path, text = render(tmp_path, metrics=WITH_INTERVALS)
    assert "The test samples have no signer ids, so there is no interval over signers." in text
    assert "No per-signer results: the test samples have no signer ids" in text
    _path, text = render(tmp_path / "none")  # bootstrap_draws: 0, or a metrics.json from before intervals
    assert "In brackets" not in text and "| all test samples | 42.31 | 88.46 | 40.14 | 87.50 |" in text


def test_many_signers_are_summarized_with_the_lowest_listed(tmp_path):
    signers = {f"s{i:02d}": (3, i / 29) for i in range(30)}
    _path, text = render(tmp_path, signers=signers)
    assert "30 test signers; P-I top-1 from 0.00 to 100.00 % (median 50.00 %). All signers: [per_signer.csv](eval/per_signer.csv)." in text
    section = text.split("## Per-signer results\n\n", 1)[1].split("\n## ", 1)[0]
    listed = [line.split(" | ")[0][2:] for line in section.splitlines() if line.startswith("| s")]
    assert listed == [f"s{i:02d}" for i in range(10)]


# --- The baseline row and paired comparisons (issue 13) -------------------------------------------

BASELINE = {"per_instance": {"top1": 0.3, "top1_ci_low": 0.2, "top1_ci_high": 0.41, "top5": 0.7},
            "per_class": {"top1": 0.28, "top1_ci_low": 0.18, "top1_ci_high": 0.4, "top5": 0.69}, "samples": 60}


def write_scores(folder: Path, right: np.ndarray, classes: int = 12) -> Path:
    """scores.csv of the 60 test samples of write_eval: top-1 is the label where `right`, the next class elsewhere."""
    from slrpipe.evaluation.metrics import write_scores_csv

    labels = np.arange(len(right)) % classes
    scores = np.full((len(right), classes), 0.5 / (classes - 1))
    scores[np.arange(len(right)), np.where(right, labels, (labels + 1) % classes)] = 0.5
    folder.mkdir(parents=True, exist_ok=True)
    write_scores_csv(folder / "scores.csv", [f"s{i}" for i in range(len(right))], labels, scores,
                     [f"{GLOSSES[i % len(GLOSSES)]}{i}" for i in range(classes)])
    return folder / "scores.csv"


def write_baseline(folder: Path, right: np.ndarray, metrics: dict | None = None) -> Path:
    write_scores(folder, right)
    (folder / "metrics.json").write_text(json.dumps({"baseline": {"test": metrics or BASELINE,
                                                                  "selected": {"C": 0.1, "val": {"top1": 0.35}}}}))
    return folder


def render_with_baseline(tmp_path: Path, ours: np.ndarray, theirs: np.ndarray, params=None, metrics=None):
    params = params or make_params(tmp_path)
    eval_dir = write_eval(tmp_path / "reports" / "eval", metrics)
    write_scores(eval_dir, ours)
    baseline_dir = write_baseline(tmp_path / "reports" / "baseline", theirs)
    path = run_report(params, eval_dir, write_preprocess(tmp_path / "preprocess"), write_live(tmp_path / "dvclive"),
                      tmp_path / "reports", baseline_dir)
    return path, path.read_text(encoding="utf-8")


def test_baseline_row_beside_this_run(tmp_path):
    ours, theirs = np.arange(60) % 5 != 0, np.arange(60) % 3 == 0  # 80 % vs 33 % right
    path, text = render_with_baseline(tmp_path, ours, theirs, metrics=WITH_INTERVALS)
    assert ("| baseline: logistic regression, all test samples | 30.00 [20.00, 41.00] | 70.00 | 28.00 [18.00, 40.00] "
            "| 69.00 |") in text
    assert "fitted on the same training split and scored on the same test split (`reports/baseline/`, C = 0.1, chosen by" in text
    line = next(line for line in text.splitlines() if line.startswith("**This run minus the baseline**"))
    assert "on the same 60 test samples: P-I top-1 +46.67 points [" in line
    assert line.endswith("This run beats the baseline: the interval over the 60 test samples lies above 0.")
    # The paper's table for MS-ASL100 has the baseline's row too, and results.csv its numbers.
    assert "| this run | baseline (logistic regression) | 30.00 | 70.00 | 28.00 | 69.00 |" in text
    rows = csv_rows(path.parent / "results.csv")
    assert {"source": "this run", "method": "baseline (logistic regression)", "dataset": "MSASL100", "metric": "P-I top1",
            "value": "30.0000"} in rows


def test_a_deep_model_no_better_than_the_baseline_is_said_to_be_within_noise(tmp_path):
    same = np.arange(60) % 2 == 0
    _path, text = render_with_baseline(tmp_path, same, same)
    assert ("This run and the baseline are within noise of each other: the interval over the 60 test samples holds 0."
            in text)


def test_reference_run_difference(tmp_path):
    reference = write_scores(tmp_path / "scratch", np.arange(60) % 2 == 0)
    params = make_params(tmp_path, "mp_data", None, report={"reference_scores": str(reference), "reference_name": "scratch"})
    _path, text = render_with_baseline(tmp_path, np.arange(60) % 5 != 0, np.arange(60) % 2 == 0, params)
    line = next(line for line in text.splitlines() if line.startswith("**This run minus scratch**"))
    assert "P-I top-1 +30.00 points [" in line and "This run beats scratch" in line
    params = make_params(tmp_path, "mp_data", None, report={"reference_scores": str(tmp_path / "gone.csv")})
    with pytest.raises(SlrpipeError, match="report.reference_scores: .*gone.csv not found"):
        render_with_baseline(tmp_path / "again", np.ones(60, bool), np.ones(60, bool), params)


def test_a_baseline_run_shows_no_second_baseline_row(tmp_path):
    params = make_params(tmp_path, "mp_data", None, finetune={"protocol": "baseline"})
    eval_dir = write_eval(tmp_path / "reports" / "eval", WITH_INTERVALS, branches=())
    path = run_report(params, eval_dir, write_preprocess(tmp_path / "preprocess"), write_live(tmp_path / "dvclive", finetune=False),
                      tmp_path / "reports", tmp_path / "reports" / "baseline")  # no baseline stage output needed
    text = path.read_text(encoding="utf-8")
    assert "baseline: logistic regression, all test samples" not in text and "This run minus" not in text
    assert "| Protocol | baseline: no encoder; a logistic regression" in text
    assert "No t-SNE figure: the model has no learned embedding (protocol baseline" in text


def test_fused_and_subset_rows_carry_their_own_intervals():
    metrics = {**WITH_INTERVALS,
               "fused": {"per_instance": {"top1": 0.5, "top1_ci_low": 0.4, "top1_ci_high": 0.6},
                         "per_class": {"top1": 0.45, "top1_ci_low": 0.35, "top1_ci_high": 0.55}},
               "confusing": {"per_instance": {"top1": 0.2, "top1_ci_low": 0.1, "top1_ci_high": 0.3}, "per_class": {"top1": 0.2}}}
    found = set_intervals(metrics)
    table = run_table(accuracies(metrics), found[""], {k: v for k, v in found.items() if k}).values.tolist()
    assert table[1][:2] == ["fused (+R)", "50.00 [40.00, 60.00]"] and table[1][3] == "45.00 [35.00, 55.00]"
    assert table[2][:2] == ["subset confusing", "20.00 [10.00, 30.00]"] and table[2][3] == "20.00"


def test_several_targets_get_a_section_each_after_the_corpus_table(tmp_path):
    """One results.md: the pretraining corpus (with its unlabelled member), then a section per
    target, MSASL100 beside the paper's Table I, the demo's dataset without published numbers."""
    from slrpipe.evaluation.report import TargetDirs, run_reports

    params = parse_params({
        "datasets": {"msasl100": {"source": "msasl", "root": "m", "num_classes": 100},
                     "ksl13": {"source": "mp_data", "root": "k"},
                     "rec": {"source": "mp_data", "root": "r", "labelled": False}},
        "pretrain": {"corpus": ["msasl100", "ksl13", "rec"], "corpus_fraction": 0.5},
        "finetune": {"targets": ["msasl100", "ksl13"]}}, tmp_path / "params.yaml")
    live = write_live(tmp_path / "dvclive")
    targets = {name: TargetDirs(write_eval(tmp_path / "eval" / name), write_preprocess(tmp_path / "pre" / name),
                                {"pretrain": live["pretrain"], "finetune": live["finetune"]}) for name in ("msasl100", "ksl13")}
    member = {"labelled": True, "splits": ["train"], "samples": 128, "eligible": 77, "test_duplicates": 0, "chosen": 38}
    corpus = {"fraction": 0.5, "samples": 106, "unlabelled": 30, "monitor": {"dataset": "msasl100", "file_digest": "x"},
              "members": {"msasl100": member, "ksl13": {**member, "test_duplicates": 2, "chosen": 38},
                          "rec": {"labelled": False, "splits": ["train"], "samples": 60, "eligible": 60, "test_duplicates": 0,
                                  "chosen": 30}}}
    text = run_reports(params, targets, corpus, tmp_path / "out").read_text(encoding="utf-8")
    assert text.startswith("# Results: MSASL100, ksl13, protocol finetune")
    corpus_part = text.split("## Pretraining corpus", 1)[1].split("## MSASL100", 1)[0]
    assert "Pretraining read 106 samples (30 of them unlabelled), `pretrain.corpus_fraction: 0.5`" in corpus_part
    assert "| rec | no | train | 60 | 60 | 0 | 30 |" in corpus_part and "| total |  |  | 316 | 214 | 2 | 106 |" in corpus_part
    msasl, ksl = text.split("## MSASL100", 1)[1].split("## ksl13", 1)
    assert "| paper, Table I | Ours | 86.26 |" in msasl and NO_PUBLISHED not in msasl
    assert NO_PUBLISHED in ksl and "86.26" not in ksl
    assert (tmp_path / "out" / "figures" / "msasl100" / "tsne.png").is_file()
    assert (tmp_path / "out" / "figures" / "ksl13" / "tsne.png").is_file()
    rows = csv_rows(tmp_path / "out" / "results.csv")
    assert {r["dataset"] for r in rows if r["source"] == "this run"} == {"MSASL100", "ksl13"}
