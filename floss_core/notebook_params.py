"""Parameters passed to the figure notebooks by run_all.sh and tests/test_notebooks.py (one loader for both).

``notebooks/quick_params.yaml`` maps a notebook's stem to the small values of its quick (smoke) run, with an
``_all`` section applied to every notebook first:

    _all:
      quick: true
    01_fig1_spectra:
      n_networks: 4

Only parameters a notebook declares in its ``parameters`` cell are passed: ``_all`` entries (and ``device``) that
a notebook does not declare are skipped; an entry in a notebook's own section that it does not declare is an
error (a typo would otherwise silently leave the paper-scale value in the quick run).

Command line (used by run_all.sh), printing the parameters as YAML for ``papermill -f``:

    python -m floss_core.notebook_params NOTEBOOK.ipynb [--quick] [--device DEV] [--params-file FILE]

Needs papermill (and its dependency pyyaml): ``pip install -e ".[notebooks]"``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["QUICK_PARAMS", "load_quick_params", "declared_parameters", "quick_parameters", "notebook_parameters"]

QUICK_PARAMS = Path(__file__).resolve().parent.parent / "notebooks" / "quick_params.yaml"


def load_quick_params(path=None) -> dict:
    """The mapping {notebook stem or "_all": {parameter: value}} from quick_params.yaml (validated)."""
    import yaml

    path = Path(path) if path is not None else QUICK_PARAMS
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping notebook-stem -> {{parameter: value}}")
    for stem, section in data.items():
        if not isinstance(section, dict) and section is not None:
            raise ValueError(f"{path}: section {stem!r} must be a mapping {{parameter: value}}")
    return {stem: dict(section or {}) for stem, section in data.items()}


def declared_parameters(notebook) -> dict:
    """{name: inferred type name} of the parameters a notebook declares in its cell tagged ``parameters``."""
    import papermill

    return {name: info.get("inferred_type_name") for name, info in papermill.inspect_notebook(str(notebook)).items()}


def quick_parameters(notebook_stem: str, *, declared=None, params_file=None) -> dict:
    """The quick-mode parameters of a notebook: ``_all`` updated by its own section of quick_params.yaml.

    declared: the names the notebook declares (e.g. ``declared_parameters(path)``); when given, ``_all`` entries
    it does not declare are dropped and undeclared entries of its own section raise ValueError.
    """
    table = load_quick_params(params_file)
    params = dict(table.get("_all", {}))
    own = table.get(notebook_stem, {})
    if declared is not None:
        params = {k: v for k, v in params.items() if k in declared}
        unknown = sorted(set(own) - set(declared))
        if unknown:
            raise ValueError(f"quick_params.yaml section {notebook_stem!r} sets {', '.join(unknown)}, which the "
                             f"notebook's parameters cell does not declare (it declares {', '.join(declared)})")
    params.update(own)
    return params


def notebook_parameters(notebook, *, quick: bool = False, device: str | None = None, params_file=None) -> dict:
    """Everything run_all.sh passes to one notebook: the quick parameters (if ``quick``) and ``device``."""
    notebook = Path(notebook)
    declared = declared_parameters(notebook)
    params = quick_parameters(notebook.stem, declared=declared, params_file=params_file) if quick else {}
    if device is not None:
        if "device" in declared:
            params["device"] = device
        else:
            print(f"warning: {notebook.name} declares no 'device' parameter; --device {device} ignored",
                  file=sys.stderr)
    return params


def main(argv=None) -> int:
    import yaml

    parser = argparse.ArgumentParser(prog="python -m floss_core.notebook_params", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="path of the notebook (its stem selects the quick_params.yaml section)")
    parser.add_argument("--quick", action="store_true", help="include the quick-mode parameters")
    parser.add_argument("--device", default=None, help="pass device=DEV (if the notebook declares it)")
    parser.add_argument("--params-file", default=None, help=f"quick parameters file (default {QUICK_PARAMS})")
    args = parser.parse_args(argv)
    try:
        params = notebook_parameters(args.notebook, quick=args.quick, device=args.device,
                                     params_file=args.params_file)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump(params, default_flow_style=False, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
