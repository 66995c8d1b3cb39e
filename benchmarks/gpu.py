"""Every stage of a comparison on one device, at real model shapes, side by side in one run.

    python benchmarks/gpu.py [--shapes 8b,1.7b,135m] [--task reviews.jsonl] [--tokenizer DIR] [--json out.json]
    python benchmarks/gpu.py --smoke          # a tiny shape on the CPU in seconds (the test suite runs it)

The models are random-init Llama models built from real configs: their speed is a trained model's, and nothing is
downloaded (the tokenizer is SmolLM2's, from the installed `smollm2-135m` catalog model or `--tokenizer`). The
task is a jsonl with `text` and `label` (default: a 2,000-example subsample of the installed `sentiment` task,
written to a temporary file). Per shape, on `--device` (default: cuda when there is one):

- extraction: a naive per-example loop against `toolkit.extract.extract_arrays` at its defaults: tok/s, the
  ratio, MFU (2 × non-embedding parameters × real tokens / time / the bf16 matmul peak measured in this run)
  peak device memory and the token budget the default resolved to;
- the cache: `toolkit.extract.extract` cold (a fresh cache) and warm (the same call again), the entry's size and
  its store dtype (auto: float16 on a GPU);
- one seed of probes (`toolkit.probe.probe_students`: every layer × C × loss, the noise controls and the
  ceiling's CV) on the device, and scikit-learn on the host for the same count of fits (timed on a few layers and
  scaled), each as a share of the extraction time;
- prompting at k = 8 with the demonstrations' prefix computed once (`toolkit.prompt.score`);
- fine-tuning steps: full for shapes up to `--full-max`, LoRA (peft) above it: tokens/s and MFU (per token,
  6 FLOPs for each trained matmul weight and 4 for each frozen one) and peak device memory; `--checkpointing`
  recomputes activations in the backward pass.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

# Runnable from a bare copy of the tree (the GPU machine has no installed toolkit): the tree itself, and the
# pure-Python packages the machine lacks in the carried folder (`benchmarks/gpu_carry.py` writes .gpu/site).
ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpu"
sys.path[:0] = [str(ROOT), str(CARRY / "site")]

from toolkit import probe, prompt, tasks  # noqa: E402
from toolkit import trainer as tr  # noqa: E402
from toolkit._util import cache_root  # noqa: E402
from toolkit.cache import _size as entry_size  # noqa: E402
from toolkit.config import JobConfig  # noqa: E402
from toolkit.encoding import batch_budget  # noqa: E402
from toolkit.extract import ExtractConfig, extract, extract_arrays  # noqa: E402
from toolkit.losses import get_loss  # noqa: E402
from toolkit.models import load_model, load_tokenizer, resolve  # noqa: E402
from toolkit.weak import WeakConfig, solver, supervise  # noqa: E402

SHAPES = {  # Llama shapes: hidden, MLP, layers, heads, KV heads, tied embeddings
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, tie_word_embeddings=True),  # SmolLM2-135M
    "1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32, tie_word_embeddings=True),  # SmolLM2-1.7B
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, tie_word_embeddings=False),  # Llama-3-8B (with SmolLM2's vocabulary)
}
SIZE_RANK = list(SHAPES)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(name: str, tokdir: Path, root: Path, device: str) -> Path:
    """A random-init model of shape `name` saved with the tokenizer files of `tokdir`: a local model folder."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    base = json.loads((tokdir / "config.json").read_text())
    keep = {k: base[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "vocab_size") if k in base}
    cfg = LlamaConfig(**keep, max_position_embeddings=8192, rope_theta=100000.0, **SHAPES[name])
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16 if device != "cpu" else torch.float32)
    out = root / name
    model.save_pretrained(out)
    for f in tokdir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(f, out)
    return out


def matmul_peak(device: str, dtype: torch.dtype, n: int) -> float:
    """FLOP/s of an n × n matmul in `dtype`: the peak MFU is measured against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * n**3 * 10 / (time.perf_counter() - t0)


def nonembedding(model) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (a lookup) and an untied
    output head (extraction and prompting compute logits at one position only; a bare backbone has none)."""
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not model.config.tie_word_embeddings:
        n -= head.weight.numel()
    return n


def stage_extraction(info, tok, texts, device, dtype, n_naive, peak) -> dict:
    model = load_model(info, dtype=dtype, device=device)
    layers = list(range(model.config.num_hidden_layers + 1))
    n_flop = 2 * nonembedding(model)
    with torch.inference_mode():
        for s in texts[:2]:  # warm-up
            model(input_ids=torch.tensor([tok(s).input_ids[-512:]], device=device), output_hidden_states=True)
        sync(device)
        t0, n_tok = time.perf_counter(), 0
        for s in texts[:n_naive]:
            ids = tok(s).input_ids[-512:]
            n_tok += len(ids)
            hs = model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True).hidden_states
            torch.stack([hs[i][0, -1] for i in layers]).float().cpu()
        sync(device)
        naive = n_tok / (time.perf_counter() - t0)
    extract_arrays(model, tok, texts[:16], layers=layers, pool="last", causal=True, device=device)  # warm-up
    budget = batch_budget(0, model, device)  # what the default (auto) resolves to here, after the warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    out = extract_arrays(model, tok, texts, layers=layers, pool="last", causal=True, label_words=(" No", " Yes"),
                         device=device)
    sync(device)
    secs = time.perf_counter() - t0
    tok_s = float(out["n_tokens"].sum()) / secs
    res = {"naive_tok_s": naive, "extract_tok_s": tok_s, "extract_x_naive": tok_s / naive,
           "extract_mfu": n_flop * tok_s / peak, "naive_mfu": n_flop * naive / peak, "extract_s": secs,
           "extract_batch_tokens": budget}
    if device.startswith("cuda"):
        res["extract_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    del model
    return res


def stage_cache(model_dir: Path, task_path: Path, cache: Path, device: str) -> tuple[dict, object]:
    cfg = ExtractConfig(model=str(model_dir), task=str(task_path), device=device, cache_dir=str(cache))
    t0 = time.perf_counter()
    extract(cfg, progress=False)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    feats = extract(cfg, progress=False)
    warm = time.perf_counter() - t0
    return {"cache_cold_s": cold, "cache_warm_s": warm, "cache_x": cold / warm,
            "cache_entry_mb": entry_size(Path(feats.path)) / 1e6,
            "cache_store_dtype": feats.manifest.get("store_dtype", "float32")}, feats


def stage_probes(feats, task, sizes, device, sklearn_layers: int) -> dict:
    """One seed of `toolkit.probe` on the device, and scikit-learn on the host for the same count of fits."""
    from sklearn.linear_model import LogisticRegression

    (sup,) = supervise(task, [0], sizes, WeakConfig(model="tfidf"), progress=False)
    opts = probe.ProbeOptions()
    sync(device)
    t0 = time.perf_counter()
    probe.probe_students(feats, sup, opts, ("xent", "logconf"), solver(device), {"weak": "tfidf", "strong": "s"})
    sync(device)
    ours = time.perf_counter() - t0
    # the same solves by count: per layer, each C for 2 losses x (student + control), the ceiling's 3-fold CV at
    # each C, and its final fit
    n_fits = len(feats.layers) * (len(opts.Cs) * 2 * 2 + 3 * len(opts.Cs) + 1)
    X = feats.take(sup.splits.strong_train.ids)
    y = sup.soft("strong_train") > 0.5
    picked = np.linspace(0, len(feats.layers) - 1, min(sklearn_layers, len(feats.layers))).astype(int)
    t0 = time.perf_counter()
    for li in picked:
        for C in opts.Cs:
            LogisticRegression(C=C, max_iter=1000).fit(X[li], y)
    per_fit = (time.perf_counter() - t0) / (len(picked) * len(opts.Cs))
    return {"probe_seed_s": ours, "sklearn_seed_s_est": per_fit * n_fits, "probe_fits": n_fits}


def stage_prompt(info, tok, texts, device, dtype, n_queries: int, k: int = 8) -> dict:
    model = load_model(info, dtype=dtype, device=device)
    demos = [(t, i % 2) for i, t in enumerate(texts[-k:])]
    queries = texts[:n_queries]
    prompt.score(model, tok, "{text}\nAnswer:", (" No", " Yes"), queries[:4], demos, device=device)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    prompt.score(model, tok, "{text}\nAnswer:", (" No", " Yes"), queries, demos, device=device)
    sync(device)
    secs = time.perf_counter() - t0
    del model
    return {"prompt_queries_s": len(queries) / secs, "prompt_k": k}


def stage_finetune(info, tok, texts, device, lora: int, steps: int, batch: int, peak: float,
                   checkpointing: bool = False) -> dict:
    if lora:
        try:
            import peft  # noqa: F401
        except ImportError:
            return {"finetune": "skipped: LoRA needs peft (pip install peft)"}
    cfg = tr.FinetuneConfig(job=JobConfig(device=device), batch_size=batch, micro_batch=batch, lora=lora,
                                  checkpointing=checkpointing)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model = tr.build_classifier(info, "last", lora=lora, bf16_base=device.startswith("cuda"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    backbone = nonembedding(model.backbone.get_base_model() if lora else model.backbone)
    trainer = tr.Trainer(model, cfg, total_steps=steps + 1, pad_id=tok.pad_token_id or 0, side="left")
    seqs = [ids[-512:] for ids in tok(texts[: batch * (steps + 1)], add_special_tokens=True).input_ids]
    w = np.random.default_rng(0).uniform(size=batch)
    loss = get_loss("xent")
    trainer.step(seqs[:batch], w, loss, 0)  # warm-up: optimiser state, kernels
    sync(device)
    t0, n_tok = time.perf_counter(), 0
    for s in range(1, steps + 1):
        part = seqs[s * batch:(s + 1) * batch]
        n_tok += sum(map(len, part))
        trainer.step(part, w[:len(part)], loss, s)
    sync(device)
    secs = time.perf_counter() - t0
    # FLOPs per token: a trained weight costs 6 (forward, input and weight gradients), a frozen one 4 (forward and
    # input gradient); LoRA's adapters are the trained part, the backbone's matmuls the frozen one
    lora_params = trainable - 2 * (model.head.in_features + 1)
    per_token = 4 * backbone + 6 * lora_params if lora else 6 * backbone
    res = {"finetune": "lora" if lora else "full", "finetune_trainable": trainable, "finetune_steps_s": steps / secs,
           "finetune_tok_s": n_tok / secs, "finetune_mfu": per_token * n_tok / secs / peak,
           "finetune_precision": trainer.precision, "finetune_checkpointing": checkpointing}
    if device.startswith("cuda"):
        res["finetune_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    del trainer, model
    return res


def default_task(n: int, smoke: bool, root: Path) -> Path:
    path = root / "task.jsonl"
    if smoke:
        words = "good bad fine awful great poor lovely dull bright grim".split()
        rows = [{"text": " ".join(words[(i + j) % 10] for j in range(4 + i % 9)) + f" #{i}", "label": i % 2}
                for i in range(n)]
    else:
        t = tasks.subsample(tasks.load("sentiment"), n, seed=0)
        rows = [{"text": x, "label": int(y)} for x, y in zip(t.texts, t.labels)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def measure_shape(name: str, res: dict, save, *, args, device, dtype, peak, tokdir, root, task, task_path, texts,
                  sizes, batch) -> None:
    """Every stage on one shape, into `res`, saved after each. A failing stage is recorded as `<stage>_error` and
    costs only itself (and what needs its output: no model, no stage; no features, no probes)."""
    state: dict = {}

    def full() -> bool:
        if args.full_max == "auto":
            cfg = tr.FinetuneConfig(job=JobConfig(device=device), micro_batch=batch)
            return tr.fit_memory(cfg, state["info"]).lora == 0
        return args.full_max != "none" and SIZE_RANK.index(name) <= SIZE_RANK.index(args.full_max)

    def built():
        t0 = time.perf_counter()
        state["dir"] = build(name, tokdir, root / "models", device)
        state["info"] = resolve(str(state["dir"]))
        state["tok"] = load_tokenizer(state["info"])
        return {"build_s": time.perf_counter() - t0}

    def cached():
        out, state["feats"] = stage_cache(state["dir"], task_path, root / "cache" / name, device)
        return out

    def probes():
        out = stage_probes(state["feats"], task, sizes, device, args.sklearn_layers)
        if "extract_s" in res:
            out["probe_share_of_extraction"] = out["probe_seed_s"] / res["extract_s"]
            out["sklearn_share_of_extraction"] = out["sklearn_seed_s_est"] / res["extract_s"]
        return out

    stages = [("build", built),
              ("extraction", lambda: stage_extraction(state["info"], state["tok"], texts, device, dtype, args.naive,
                                                      peak)),
              ("cache", cached), ("probes", probes),
              ("prompt", lambda: stage_prompt(state["info"], state["tok"], texts, device, dtype, args.queries)),
              ("finetune", lambda: stage_finetune(state["info"], state["tok"], texts, device,
                                                  0 if full() else args.lora_rank, args.steps, batch, peak,
                                                  args.checkpointing))]
    for stage, run in stages:
        if (stage != "build" and "build_error" in res) or (stage == "probes" and "cache_error" in res):
            continue
        try:
            res |= run()
        except Exception as e:  # the others still run and report
            res[f"{stage}_error"] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        print(json.dumps({"shape": name, "stage": stage, **{k: round(v, 4) if isinstance(v, float) else v
                                                           for k, v in res.items()}}), flush=True)
        save()
    if "dir" in state:
        shutil.rmtree(state["dir"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny shape on the CPU, seconds")
    parser.add_argument("--shapes", default="8b,1.7b,135m", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--task", type=Path, help="jsonl with text and label (default: .gpu/task.jsonl if carried, "
                                                     "else 2,000 sentiment examples)")
    parser.add_argument("--tokenizer", type=Path, help="folder with SmolLM2's tokenizer and config.json (default: "
                                                       ".gpu/tok if carried, else the installed smollm2-135m)")
    parser.add_argument("--n", type=int, default=2000, help="examples of the task to extract")
    parser.add_argument("--naive", type=int, default=64, help="examples for the naive per-example loop")
    parser.add_argument("--queries", type=int, default=700, help="prompts scored at k = 8")
    parser.add_argument("--steps", type=int, default=10, help="fine-tuning steps timed (after one warm-up step)")
    parser.add_argument("--full-max", default="auto",
                        help="the largest shape fine-tuned in full, LoRA above it (`none`: LoRA for every shape); "
                             "`auto`: the toolkit's own choice from the device's memory (`tr.fit_memory`)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--checkpointing", action="store_true", help="fine-tune with activation checkpointing")
    parser.add_argument("--sklearn-layers", type=int, default=4, help="layers the scikit-learn arm is timed on")
    parser.add_argument("--json", type=Path, help="write the results here, after every stage")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.device, args.n, args.naive, args.queries, args.steps = "tiny", "cpu", 60, 4, 8, 1
    device = args.device
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    carried = CARRY / "tok"
    tokdir = args.tokenizer or (carried if carried.is_dir() else cache_root() / "models" / "smollm2-135m")
    if args.task is None and (CARRY / "task.jsonl").is_file() and not args.smoke:
        args.task = CARRY / "task.jsonl"
    sizes = tasks.SplitSizes(10, 10, 6, 10) if args.smoke else tasks.SplitSizes()
    batch = 4 if args.smoke else 32
    peak = matmul_peak(device, getattr(torch, dtype), 1024 if device == "cpu" else 8192)
    results = {"device": device, "dtype": dtype, "matmul_peak_tflops": peak / 1e12, "shapes": {}}
    if device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    print(json.dumps({k: v for k, v in results.items() if k != "shapes"}), flush=True)

    def save() -> None:  # after every stage: a run cut off by its time limit keeps what it measured
        if args.json:
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(args.json)

    with tempfile.TemporaryDirectory(prefix="toolkit-gpu-") as tmp:
        root = Path(tmp)
        task_path = args.task or default_task(args.n, args.smoke, root)
        task = tasks.load(task_path)
        texts = [task.template.replace("{text}", t) for t in task.texts][: args.n]
        for name in args.shapes.split(","):
            res = results["shapes"][name] = {}
            measure_shape(name, res, save, args=args, device=device, dtype=dtype, peak=peak, tokdir=tokdir,
                          root=root, task=task, task_path=task_path, texts=texts, sizes=sizes, batch=batch)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    save()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
