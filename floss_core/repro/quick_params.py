"""The parameters the runner passes to a figure notebook: its quick-mode values and the device.

A notebook declares its parameters, with their paper-scale defaults, in its cell tagged ``parameters``
(``papermill.inspect_notebook`` reads them without running anything). ``notebooks/quick_params.yaml`` maps a
notebook's stem to the small values of its quick (smoke) run, with an ``_all`` section applied to every notebook
first::

    _all:
      quick: true
    01_fig1_flossing:
      n_networks: 2

Rules: every notebook needs its own section (``stem: {}`` if nothing shrinks), else quick mode would run it at
paper scale unnoticed; ``_all`` entries (and ``device``) that a notebook does not declare are skipped; an entry of a
notebook's own section that it does not declare is an error (a typo would otherwise leave the paper-scale value in
the quick run). The overrides go to ``papermill.execute_notebook(parameters=...)``, which injects them as a cell.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["QUICK_PARAMS_NAME", "NotebookParameters", "declared_parameters", "load_quick_params",
           "notebook_parameters", "quick_parameters", "resolve_parameters"]

QUICK_PARAMS_NAME = "quick_params.yaml"  # in the notebook directory, unless FLOSS_QUICK_PARAMS says otherwise


def load_quick_params(path) -> dict[str, dict[str, Any]]:
    """The mapping {notebook stem or "_all": {parameter: value}} of a quick parameter file (validated).

    Raises OSError when the file cannot be read, yaml.YAMLError or ValueError when it is not such a mapping.
    """
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping notebook-stem -> {{parameter: value}}")  # noqa: TRY004 - bad file
    for stem, section in data.items():
        if not isinstance(section, dict) and section is not None:
            raise ValueError(f"{path}: section {stem!r} must be a mapping {{parameter: value}}")
    return {str(stem): dict(section or {}) for stem, section in data.items()}


def declared_parameters(notebook) -> dict[str, str]:
    """{name: default} of the parameters a notebook declares in its ``parameters`` cell, in the cell's order.

    The defaults are the source text of the assignments (``"5"``, ``'"cpu"'``), as papermill reads them.
    """
    import papermill

    return {name: info.get("default") for name, info in papermill.inspect_notebook(str(notebook)).items()}


def quick_parameters(notebook_stem: str, quick_params, *, declared=None) -> dict[str, Any]:
    """The quick-mode parameters of a notebook: ``_all`` updated by its own section.

    quick_params: the quick parameter file, or its mapping as returned by ``load_quick_params``.
    declared: the names the notebook declares (e.g. ``declared_parameters(path)``); when given, ``_all`` entries
    it does not declare are dropped and undeclared entries of its own section raise ValueError.
    """
    table = quick_params if isinstance(quick_params, Mapping) else load_quick_params(quick_params)
    name = QUICK_PARAMS_NAME if isinstance(quick_params, Mapping) else Path(quick_params).name
    if notebook_stem not in table:
        raise ValueError(f"{name} has no section {notebook_stem!r}: add one with the notebook's small sizes (or "
                         f"`{notebook_stem}: {{}}` if nothing needs shrinking), else quick mode would run it at "
                         "paper scale")
    params = dict(table.get("_all", {}))
    own = table[notebook_stem]
    if declared is not None:
        params = {k: v for k, v in params.items() if k in declared}
        unknown = sorted(set(own) - set(declared))
        if unknown:
            raise ValueError(f"{name} section {notebook_stem!r} sets {', '.join(unknown)}, which the notebook's "
                             f"parameters cell does not declare (it declares {', '.join(declared)})")
    params.update(own)
    return params


@dataclass
class NotebookParameters:
    """What the runner passes to one notebook, where each value comes from, and what is wrong with them."""

    path: Path
    defaults: dict[str, str] = field(default_factory=dict)  # declared name -> default (source text)
    values: dict[str, Any] = field(default_factory=dict)  # the overrides given to papermill
    sources: dict[str, str] = field(default_factory=dict)  # overridden name -> "quick" or "--device"
    error: str | None = None  # set: the notebook fails without running, with this message in its log
    warnings: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return self.path.stem

    def describe(self) -> list[str]:
        """One line per declared parameter, ``name: value`` as papermill would inject it, overrides marked."""
        if self.error:
            return [f"error: {self.error}"]
        from papermill.translators import PythonTranslator

        lines = []
        for name, default in self.defaults.items():
            if name in self.values:
                value = PythonTranslator.translate(self.values[name])
                lines.append(f"{name}: {value}   ({self.sources[name]}; default {default})")
            else:
                lines.append(f"{name}: {default}")
        return lines + [f"warning: {w}" for w in self.warnings]


def resolve_parameters(notebook, *, quick: bool = False, device: str | None = None,
                       quick_params=None) -> NotebookParameters:
    """Everything the runner passes to one notebook: its quick parameters (if ``quick``) and ``device``.

    quick_params: the quick parameter file or its mapping (default: quick_params.yaml next to the notebook).
    Invalid parameters do not raise: they are in ``.error`` (the runner fails that notebook, the others run).
    """
    result = NotebookParameters(Path(notebook))
    try:
        result.defaults = declared_parameters(result.path)
        if quick:
            source = quick_params if quick_params is not None else result.path.parent / QUICK_PARAMS_NAME
            for name, value in quick_parameters(result.stem, source, declared=result.defaults).items():
                result.values[name], result.sources[name] = value, "quick"
    except Exception as err:  # noqa: BLE001 - reported for this notebook; the others go on
        result.error = f"invalid parameters for {result.path}: {type(err).__name__}: {err}"
        return result
    if device is not None:
        if "device" in result.defaults:
            result.values["device"], result.sources["device"] = device, "--device"
        else:
            result.warnings.append(f"{result.path.name} declares no 'device' parameter; --device {device} ignored")
    return result


def notebook_parameters(notebook, *, quick: bool = False, device: str | None = None, quick_params=None) -> dict:
    """The overrides the runner gives one notebook (see ``resolve_parameters``); raises ValueError if invalid."""
    resolved = resolve_parameters(notebook, quick=quick, device=device, quick_params=quick_params)
    if resolved.error:
        raise ValueError(resolved.error)
    for message in resolved.warnings:
        warnings.warn(message, stacklevel=2)
    return resolved.values
