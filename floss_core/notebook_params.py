"""Parameters passed to the figure notebooks by run_all.sh and tests/test_notebooks.py (one loader for both).

``notebooks/quick_params.yaml`` maps a notebook's stem to the small values of its quick (smoke) run, with an
``_all`` section applied to every notebook first:

    _all:
      quick: true
    01_fig1_spectra:
      n_networks: 4

Every notebook must have its own section (``stem: {}`` if nothing needs shrinking): a missing one is an error,
not a silent paper-scale "quick" run. Only parameters a notebook declares in its ``parameters`` cell are passed: ``_all`` entries (and ``device``) that
a notebook does not declare are skipped; an entry in a notebook's own section that it does not declare is an
error (a typo would otherwise silently leave the paper-scale value in the quick run).

Command line (used by run_all.sh): print one notebook's parameters as YAML for ``papermill -f``, or, with
``--out-dir``, write ``DIR/<stem>.yaml`` for each notebook (``DIR/<stem>.error`` with the message when its
parameters are invalid; the others are still written), in one process:

    python -m floss_core.notebook_params [--quick] [--device DEV] [--params-file FILE] NOTEBOOK.ipynb
    python -m floss_core.notebook_params [--quick] [--device DEV] [--params-file FILE] --out-dir DIR NB.ipynb...

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

    Every notebook needs a section (``stem: {}`` when nothing shrinks), so that no notebook runs at paper scale
    in quick mode by accident.

    declared: the names the notebook declares (e.g. ``declared_parameters(path)``); when given, ``_all`` entries
    it does not declare are dropped and undeclared entries of its own section raise ValueError.
    """
    table = load_quick_params(params_file)
    if notebook_stem not in table:
        raise ValueError(f"quick_params.yaml has no section {notebook_stem!r}: add one with the notebook's small "
                         f"sizes (or `{notebook_stem}: {{}}` if nothing needs shrinking), else quick mode would run "
                         "it at paper scale")
    params = dict(table.get("_all", {}))
    own = table[notebook_stem]
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
    parser.add_argument("notebooks", nargs="+", help="notebook paths (each stem selects its quick_params.yaml section)")
    parser.add_argument("--quick", action="store_true", help="include the quick-mode parameters")
    parser.add_argument("--device", default=None, help="pass device=DEV (if the notebook declares it)")
    parser.add_argument("--params-file", default=None, help=f"quick parameters file (default {QUICK_PARAMS})")
    parser.add_argument("--out-dir", default=None, help="write DIR/<stem>.yaml (or DIR/<stem>.error) per notebook")
    args = parser.parse_args(argv)
    if args.out_dir is None and len(args.notebooks) != 1:
        parser.error("give one notebook, or --out-dir for several")
    status = 0
    for notebook in args.notebooks:
        try:
            text = yaml.safe_dump(notebook_parameters(notebook, quick=args.quick, device=args.device,
                                                      params_file=args.params_file),
                                  default_flow_style=False, sort_keys=True)
            error = None
        except Exception as err:  # noqa: BLE001 - reported per notebook; the others go on
            text, error, status = None, f"{type(err).__name__}: {err}", 1
        if args.out_dir is None:
            if error:
                print(f"error: {notebook}: {error}", file=sys.stderr)
            else:
                sys.stdout.write(text)
            continue
        stem = Path(notebook).stem
        good, bad = Path(args.out_dir) / f"{stem}.yaml", Path(args.out_dir) / f"{stem}.error"
        good.unlink(missing_ok=True)
        bad.unlink(missing_ok=True)
        if error:
            bad.write_text(f"invalid parameters for {notebook}: {error}\n")
        else:
            good.write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
