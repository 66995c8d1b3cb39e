"""toolkit: weak-to-strong generalization experiments (Burns et al. 2023) with probes,
prompting and fine-tuning compared side by side on the same splits and weak labels.

A notebook needs these names (the rest is in the submodules):

    import toolkit
    result = toolkit.run_comparison("sentiment", weak="minilm-l6", strong="smollm2-135m")
    toolkit.format_summary(result.summary)
    result.write("runs/demo")

- `run_comparison`, `preset`, `CompareConfig`, `Comparison`, `JobConfig`: the main job (`toolkit.compare`).
- `format_summary`, `markdown_table`: the printed tables (`toolkit.report`).
- `load_task`, `prompt_file`, `subsample`, `split`, `SplitSizes`: tasks (`toolkit.tasks`).
- `Method`, `MethodResult`, `Context`, `register_method`, `registered_methods`: a new elicitation method
  (`toolkit.methods`).
- `diagnostics` and `plots` are modules: `from toolkit import diagnostics, plots`.
"""

from toolkit._util import ToolkitError

__version__ = "0.1.0"

_PUBLIC = {
    "run_comparison": ("toolkit.compare", "run"),
    "preset": ("toolkit.compare", "preset"),
    "CompareConfig": ("toolkit.compare", "CompareConfig"),
    "Comparison": ("toolkit.compare", "Comparison"),
    "JobConfig": ("toolkit.config", "JobConfig"),
    "format_summary": ("toolkit.report", "format_summary"),
    "markdown_table": ("toolkit.report", "markdown_table"),
    "load_task": ("toolkit.tasks", "load"),
    "prompt_file": ("toolkit.tasks", "prompt_file"),
    "subsample": ("toolkit.tasks", "subsample"),
    "split": ("toolkit.tasks", "split"),
    "SplitSizes": ("toolkit.tasks", "SplitSizes"),
    "Method": ("toolkit.methods", "Method"),
    "MethodResult": ("toolkit.methods", "MethodResult"),
    "Context": ("toolkit.methods", "Context"),
    "register_method": ("toolkit.methods", "register"),
    "registered_methods": ("toolkit.methods", "registered"),
}

__all__ = ["ToolkitError", "__version__", *_PUBLIC]


def __getattr__(name: str):
    # Resolved on first use (PEP 562): `import toolkit.tasks` or a cache-hit `python -m toolkit.extract` must not
    # pay for importing torch, which the comparison's modules import.
    if name not in _PUBLIC:
        raise AttributeError(f"module 'toolkit' has no attribute '{name}'")
    import importlib

    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
