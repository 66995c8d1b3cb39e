"""The extension path: a method registered from this file alone (k-nearest neighbours on the strong model's
cached features) runs in `compare` beside the built-in ones, with its diagnostics, summary rows, figure
entries and CLI options, and no other module touched."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import toolkit
from toolkit import compare, methods
from toolkit._util import ToolkitError
from toolkit.extract import ExtractConfig, extract
from toolkit.records import Predictions
from toolkit.tasks import SplitSizes

SIZES = SplitSizes(10, 10, 6, 10)


@dataclass(frozen=True)
class KnnOptions:
    """k-nearest neighbours on the last layer's features."""

    neighbours: int = 3
    """Neighbours whose mean label is P(y=1)."""


def knn(train: np.ndarray, targets: np.ndarray, X: np.ndarray, k: int) -> np.ndarray:
    """Mean target of the k nearest rows of `train` (Euclidean) for each row of X."""
    d = ((X[:, None, :] - train[None, :, :]) ** 2).sum(-1)
    return targets[np.argsort(d, axis=1, kind="stable")[:, :k]].mean(1)


@toolkit.register_method
class KnnMethod(toolkit.Method):
    """Student: kNN on strong_train's weak labels; ceiling: on its gold labels."""

    name = "knn"
    Options = KnnOptions

    def check(self, job, opts, losses):
        if opts.neighbours < 1:
            raise ToolkitError(f"neighbours must be >= 1, got {opts.neighbours}")

    def summary_settings(self, opts: KnnOptions) -> tuple[str, ...]:
        return (f"neighbours={opts.neighbours}",)

    def run(self, ctx: toolkit.Context, opts: KnnOptions) -> toolkit.MethodResult:
        feats = extract(ExtractConfig(model=ctx.strong, task=ctx.task_spec, limit=ctx.job.limit,
                                      cache_dir=ctx.job.cache_dir), progress=False)
        recs = []
        for sup in ctx.sups:
            train = feats.take(sup.splits.strong_train.ids)[-1]  # the last layer
            for role, targets in (("student", sup.soft("strong_train") > 0.5),
                                  ("ceiling", sup.splits.strong_train.labels)):
                for split in ("strong_train", "val", "test"):
                    ids = sup.splits[split].ids
                    p = knn(train, np.asarray(targets, float), feats.take(ids)[-1], opts.neighbours)
                    recs.append(Predictions(task=ctx.task.name, weak=ctx.weak, strong=ctx.strong, method=self.name,
                                            role=role, loss="none", setting=f"neighbours={opts.neighbours}",
                                            params={"neighbours": opts.neighbours}, seed=sup.seed, split=split,
                                            ids=ids, p=p))
        return toolkit.MethodResult(recs, computed={"knn_fits": 2 * len(ctx.sups)})


@pytest.fixture(scope="module")
def registered():
    yield
    methods.unregister("knn")


def test_a_method_registered_here_runs_beside_the_others(registered, tiny_causal, tiny_task, tmp_path):
    assert "knn" in methods.registered()
    out = tmp_path / "out"
    result = toolkit.run_comparison(str(tiny_task), weak=str(tiny_causal), strong=str(tiny_causal),
                                    methods=("probe", "knn"), seeds=2, sizes=SIZES, neighbours=5, n_boot=20,
                                    cache_dir=str(tmp_path / "cache"), out=out, progress=False)
    assert result.config.opts("knn") == KnnOptions(5)
    summ = result.summary
    assert set(summ.method) == {"probe", "knn"}
    row = summ[summ.method == "knn"].iloc[0]
    assert row.setting == "neighbours=5" and row.n_seeds == 2 and 0 <= row.student_acc <= 1
    assert result.stats["knn_fits"] == 4
    # its diagnostics: agreement with the supervisor, misfit on strong_train
    diag = result.diagnostics
    mine = diag[diag.method == "knn"]
    assert {"agree", "agree_weak_wrong", "misfit", "ece"} <= set(mine.diagnostic)
    assert result.student_settings == {"probe": "select", "knn": "neighbours=5"}
    assert {r.params["neighbours"] for r in result.records if r.method == "knn"} == {5}
    # its figure entries: the cross-method agreement and the accuracy bars hold it
    figs = result.figures()
    labels = [t.get_text() for ax in figs["cross_agreement"].axes for t in ax.get_xticklabels()]
    assert any(label.startswith("knn") for label in labels)
    assert "knn" in (out / "report.md").read_text() and "knn" in (out / "summary.csv").read_text()


def test_its_options_are_on_the_command_line(registered, tiny_causal, tiny_task, tmp_path, capsys):
    args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--seeds", "1",
            "--sizes", "10,10,6,10", "--methods", "knn", "--n-boot", "20", "--cache-dir", str(tmp_path / "c"),
            "--quiet", "--no-figures", "--out", str(tmp_path / "cli")]
    assert compare.main(args + ["--neighbours", "2"]) == 0
    assert "knn" in capsys.readouterr().out
    assert compare.main(args + ["--neighbours", "0"]) == 2
    assert "neighbours must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    assert "Neighbours whose mean label is P(y=1)." in capsys.readouterr().out


def test_an_unknown_method_suggests_the_nearest():
    with pytest.raises(ToolkitError, match="did you mean 'prompt'"):
        methods.get("promt")
    with pytest.raises(ToolkitError, match="not a Method subclass"):
        methods.register(KnnOptions)
