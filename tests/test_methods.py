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
from toolkit.compare import BUILTIN
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


class KnnSweep(KnnMethod):
    """Every neighbour count from 1 to `neighbours` (like the probe's layers), the last one in the summary: an
    option named as knn's, and records under settings that knn's summary rows also use."""

    name = "knn_sweep"

    def run(self, ctx, opts):
        recs = [r for n in range(1, opts.neighbours + 1) for r in KnnMethod.run(self, ctx, KnnOptions(n)).records]
        return toolkit.MethodResult([r.with_(method=self.name) for r in recs])


def test_two_methods_options_of_one_name_are_kept_apart(registered, tiny_causal, tiny_task, tmp_path, capsys):
    """Options are keyed by method (issue #36): two methods may both have `neighbours`; each gets its own value
    (in Python under the method's name, on the command line `--knn.neighbours`), and neither method's summary
    settings pull the other's records into its rows, though knn_sweep has records at knn's setting."""
    toolkit.register_method(KnnSweep)
    try:
        with pytest.raises(ToolkitError, match="'neighbours' is an option of knn and knn_sweep: give it under"):
            compare.CompareConfig.make(neighbours=3)
        out = tmp_path / "out"
        result = toolkit.run_comparison(str(tiny_task), weak=str(tiny_causal), strong=str(tiny_causal),
                                        methods=("knn", "knn_sweep"), seeds=1, sizes=SIZES, n_boot=20,
                                        knn={"neighbours": 2}, knn_sweep=KnnOptions(4), out=out, figures=False,
                                        cache_dir=str(tmp_path / "cache"), progress=False)
        assert {r.setting for r in result.records if r.method == "knn_sweep"} >= {"neighbours=2", "neighbours=4"}
        assert set(zip(result.summary.method, result.summary.setting)) == {("knn", "neighbours=2"),
                                                                           ("knn_sweep", "neighbours=4")}
        again = compare.load_config(out / "config.yaml")  # the run's folder keeps them apart too
        assert (again.opts("knn").neighbours, again.opts("knn_sweep").neighbours) == (2, 4)
        report = (out / "report.md").read_text()
        assert "knn.neighbours" in report and "knn_sweep.neighbours" in report
        args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--seeds", "1",
                "--sizes", "10,10,6,10", "--methods", "knn,knn_sweep", "--n-boot", "20", "--quiet", "--no-figures",
                "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "cli")]
        assert compare.main(args + ["--knn.neighbours", "2", "--knn-sweep.neighbours", "4"]) == 0
        cli = compare.load_config(tmp_path / "cli" / "config.yaml")
        assert (cli.opts("knn").neighbours, cli.opts("knn_sweep").neighbours) == (2, 4)
        capsys.readouterr()
        assert compare.main(args + ["--neighbours", "2"]) == 2  # ambiguous: not an option of the comparison
        assert "neighbours" in capsys.readouterr().err
    finally:
        methods.unregister("knn_sweep")


def test_an_unknown_method_suggests_the_nearest():
    with pytest.raises(ToolkitError, match="did you mean 'prompt'"):
        methods.get("promt")
    with pytest.raises(ToolkitError, match="not a Method subclass"):
        methods.register(KnnOptions)


PLUGIN = '''
"""A method in a package of its own: nearest class centroid on the strong model's last layer."""
from dataclasses import dataclass

import numpy as np

import toolkit
from toolkit.extract import extract, for_job
from toolkit.records import Predictions


@dataclass(frozen=True)
class CentroidOptions:
    """Nearest class centroid."""

    temperature: float = 1.0
    """Softness of P(y=1) from the centroid distances."""


@toolkit.register_method
class Centroid(toolkit.Method):
    name = "centroid"
    Options = CentroidOptions

    def summary_settings(self, opts):
        return ("centroid",)

    def run(self, ctx, opts):
        feats = extract(for_job(ctx.job, ctx.strong, ctx.task_spec), progress=False)
        recs = []
        for sup in ctx.sups:
            train = feats.take(sup.splits.strong_train.ids)[-1]
            for role, y in (("student", sup.soft("strong_train") > 0.5), ("ceiling", sup.splits.strong_train.labels)):
                mu = [train[np.asarray(y) == c].mean(0) for c in (0, 1)]
                for split in ("strong_train", "val", "test"):
                    X = feats.take(sup.splits[split].ids)[-1]
                    d = [((X - m) ** 2).sum(1) for m in mu]
                    p = 1 / (1 + np.exp(np.clip((d[1] - d[0]) / opts.temperature / X.shape[1], -50, 50)))
                    recs.append(Predictions(task=ctx.task.name, weak=ctx.weak, strong=ctx.strong, method="centroid",
                                            role=role, loss="none", setting="centroid", seed=sup.seed, split=split,
                                            ids=sup.splits[split].ids, p=p))
        return toolkit.MethodResult(recs)
'''


@pytest.fixture()
def installed_plugin(tmp_path, monkeypatch):
    """A package installed beside the toolkit (a module and its dist-info with an entry point in the group
    `toolkit.methods`), as `pip install` leaves it; removed afterwards."""
    import importlib
    import sys

    site = tmp_path / "site"
    (site / "toy_centroid-0.1.dist-info").mkdir(parents=True)
    (site / "toy_centroid.py").write_text(PLUGIN)
    info = site / "toy_centroid-0.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-centroid\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[toolkit.methods]\ncentroid = toy_centroid\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    methods._PLUGINS_LOADED.clear()
    yield
    methods.unregister("centroid")
    sys.modules.pop("toy_centroid", None)
    methods._PLUGINS_LOADED.clear()


def test_an_installed_package_adds_a_method_without_touching_the_toolkit(installed_plugin, tiny_causal, tiny_task,
                                                                         tmp_path, capsys):
    assert "centroid" in methods.registered()  # found through its entry point
    with pytest.raises(SystemExit):
        compare.main(["--help"])
    assert "Softness of P(y=1) from the centroid distances." in capsys.readouterr().out
    out = tmp_path / "out"
    args = ["--task", str(tiny_task), "--weak", str(tiny_causal), "--strong", str(tiny_causal), "--seeds", "2",
            "--sizes", "10,10,6,10", "--methods", "probe,centroid", "--n-boot", "20", "--cache-dir",
            str(tmp_path / "c"), "--quiet", "--no-figures", "--out", str(out)]
    assert compare.main(args) == 0
    summary = (out / "summary.csv").read_text()
    assert "centroid" in summary and "centroid" in (out / "report.md").read_text()
    ctx = _context(tiny_causal, tiny_task, tmp_path / "c")
    methods.conformance("centroid", ctx)


def _context(model, task_path, cache):
    from toolkit import tasks
    from toolkit.config import JobConfig
    from toolkit.models import resolve
    from toolkit.weak import WeakConfig, supervise

    task = tasks.load(str(task_path))
    job = JobConfig(tasks=(str(task_path),), weak="tfidf", strong=(str(model),), sizes=SIZES, cache_dir=str(cache))
    sups = supervise(task, [0, 1], SIZES, WeakConfig("tfidf"), progress=False)
    return methods.Context(task=task, task_spec=str(task_path), sups=tuple(sups), weak="tfidf", strong=str(model),
                           info=resolve(str(model)), job=job.for_task(task), losses=("xent", "logconf"),
                           progress=False)


@pytest.mark.parametrize("name", [*BUILTIN, "ccs", "crc", "pca", "random", "prompt_random"])
def test_every_builtin_method_passes_the_conformance_check(name, tiny_causal, tiny_task, tmp_path):
    ctx = _context(tiny_causal, tiny_task, tmp_path / "cache")
    opts = {"prompt": methods.get("prompt").Options(ks=(0, 2)), "finetune": methods.get("finetune").Options(epochs=1),
            "ccs": methods.get("ccs").Options(ccs_tries=2, ccs_max_iter=50),
            "prompt_random": methods.get("prompt_random").Options(random_ks=(2,))}
    methods.conformance(name, ctx, opts.get(name))


def test_the_conformance_check_names_what_a_method_breaks(registered, tiny_causal, tiny_task, tmp_path):
    ctx = _context(tiny_causal, tiny_task, tmp_path / "cache")

    @toolkit.register_method
    class Broken(KnnMethod):
        name = "broken"

        def run(self, ctx, opts):
            res = super().run(ctx, opts)
            for r in res.records:
                if r.role == "student":
                    r.p[:] = 2.0  # not a probability
            return toolkit.MethodResult([r for r in res.records if not (r.role == "ceiling" and r.split == "test")])

    try:
        with pytest.raises(ToolkitError, match=r"method broken breaks the protocol: .*P\(y=1\) outside \[0, 1\].*"
                                               r"no test student and ceiling for setting 'neighbours=3'"):
            methods.conformance("broken", ctx)  # (its options share knn's names, whose class it extends: allowed)
    finally:
        methods.unregister("broken")
    methods.conformance("knn", ctx)  # the test file's own method passes


def test_the_conformance_check_catches_a_label_free_method_that_sees_gold(registered, tiny_causal, tiny_task, tmp_path):
    ctx = _context(tiny_causal, tiny_task, tmp_path / "cache")

    @toolkit.register_method
    class Peeking(KnnMethod):
        name, label_free = "peeking", True

        def run(self, ctx, opts):
            res = super().run(ctx, opts)
            gold = {s.seed: s.splits for s in ctx.sups}
            for r in res.records:
                if r.role == "student":
                    r.p[:] = 0.25 + 0.5 * gold[r.seed][r.split].subset(r.ids).labels  # leans towards gold
            return res

    try:
        with pytest.raises(ToolkitError, match="label-free, yet its student .* moved when the gold labels"):
            methods.conformance("peeking", ctx)
    finally:
        methods.unregister("peeking")


def test_plugin_loads_a_module_file_by_hand(tmp_path, capsys):
    import sys

    path = tmp_path / "mine.py"
    path.write_text(PLUGIN)
    try:
        with pytest.raises(SystemExit):
            compare.main(["--plugin", str(path), "--help"])
        assert "Softness of P(y=1)" in capsys.readouterr().out and "centroid" in methods.registered()
        assert compare.main(["--plugin", str(tmp_path / "none.py")]) == 2
        assert "--plugin" in capsys.readouterr().err
    finally:
        methods.unregister("centroid")
        sys.modules.pop("toolkit_plugin_mine", None)
