"""What code a job runs and how an artifact was made.

Code hashes. Snakemake reruns a job when its script changes, not when a
module the script imports changes. Rules therefore take a code hash as a
param (``script_code_hash``): it changes exactly when the source of one of
the ``tilepipe`` modules the job's script can import changes (touching a
file does not change it). The import graph is read with ``ast``; a module
brings its parent packages' ``__init__.py`` along, as Python runs them.

Provenance. Every job writes ``<first output>.provenance.json`` (a declared
output, written last and atomically, so its presence means the job ended):
the rule, its wildcards and outputs, the params it was made with (the
config values it uses, without runtime-only ones), the seed among them, the
code hash, and the versions of Python and of the packages the job imported.
No time stamps, host names or paths outside the run: two clean runs write
identical files, and ``python -m tilepipe.provenance RUN_A RUN_B`` names
what differs between two runs' artifacts.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = "tilepipe"
PACKAGE_DIR = Path(__file__).resolve().parent

SUFFIX = ".provenance.json"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
FORMAT = "tilepipe.provenance/1"

# Distributions whose version can change a result, by import name; each is
# recorded only when the job imported it (torch-free jobs record no torch).
PACKAGES = {
    "albumentations": "albumentations",
    "cv2": "opencv-python-headless",
    "imagecodecs": "imagecodecs",
    "matplotlib": "matplotlib",
    "numcodecs": "numcodecs",
    "numpy": "numpy",
    "pandas": "pandas",
    "pretrainedmodels": "pretrainedmodels",
    "pyarrow": "pyarrow",
    "rasterio": "rasterio",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
    "snakemake": "snakemake",
    "tifffile": "tifffile",
    "tilepipe": "tilepipe",
    "timm": "timm",
    "torch": "torch",
    "torchvision": "torchvision",
    "zarr": "zarr",
}


# ------------------------------------------------------------------ code hash
def _module_path(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _tilepipe_imports(path: Path) -> frozenset[str]:
    """The ``tilepipe`` names a Python file imports (modules, or attributes that may be modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(n for n in found if n.split(".")[0] == PACKAGE)


@cache
def _direct_imports(path: Path) -> frozenset[str]:
    return _tilepipe_imports(path)


def module_closure(modules: tuple[str, ...] | list[str]) -> list[Path]:
    """Return the source files of ``modules``, their parent packages and every tilepipe module they import, sorted."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        path = _module_path(name)
        if path is None or name in seen:
            continue
        seen[name] = path
        todo.extend(_direct_imports(path))
        todo.extend(name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1))
    return sorted(set(seen.values()))


def code_hash(modules: tuple[str, ...] | list[str]) -> str:
    """Return a 16-hex-digit sha256 over the sources in ``module_closure(modules)``."""
    digest = hashlib.sha256()
    for path in module_closure(modules):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def script_modules(script: str | os.PathLike) -> list[str]:
    """Return the tilepipe names the script at ``script`` imports, sorted."""
    return sorted(_tilepipe_imports(Path(script)))


def script_code_hash(script: str | os.PathLike) -> str:
    """Return the code hash of what the script at ``script`` imports from tilepipe (the script itself is
    tracked by Snakemake)."""
    modules = script_modules(script)
    if not modules:
        raise ValueError(f"{script} imports nothing from {PACKAGE}: no code to hash")
    return code_hash(modules)


# ----------------------------------------------------------------- provenance
def provenance_path(artifact: str | os.PathLike) -> Path:
    """The provenance file of ``artifact``: ``<artifact>.provenance.json`` beside it."""
    return Path(f"{os.fspath(artifact).rstrip('/')}{SUFFIX}")


def package_versions(modules: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Versions of Python and of the ``PACKAGES`` among the imported ``modules`` (default: ``sys.modules``)."""
    modules = sys.modules if modules is None else modules
    versions = {"python": platform.python_version()}
    for name, distribution in PACKAGES.items():
        if name in modules:
            try:
                versions[distribution] = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                versions[distribution] = str(getattr(modules[name], "__version__", "unknown"))
    return dict(sorted(versions.items()))


def find_seed(params: Mapping[str, Any]) -> int | None:
    """The ``seed`` among ``params``, at the top or one level down (``settings.seed``); None if absent."""
    if "seed" in params:
        return params["seed"]
    for value in params.values():
        if isinstance(value, Mapping) and "seed" in value:
            return value["seed"]
    return None


def provenance_record(
    artifact: str | os.PathLike,
    params: Mapping[str, Any],
    code: str,
    *,
    rule: str | None = None,
    wildcards: Mapping[str, str] | None = None,
    outputs: Iterable[str | os.PathLike] = (),
    threads: int | None = None,
    modules: Mapping[str, Any] | None = None,
    device: Mapping[str, Any] | None = None,
    checkpoints: Iterable[str | os.PathLike] = (),
) -> dict[str, Any]:
    """The provenance of ``artifact`` as a plain dict (see the module docstring); ``device`` only when given.

    Directory outputs get their :func:`content_digest` under ``content``,
    the ``checkpoints`` (input files) theirs under ``checkpoints``.
    """
    params = dict(params)
    record = {
        "format": FORMAT,
        "artifact": os.fspath(artifact),
        "outputs": sorted(os.fspath(o) for o in outputs) or [os.fspath(artifact)],
        "rule": rule,
        "wildcards": dict(sorted((wildcards or {}).items())),
        "params": params,
        "seed": find_seed(params),
        "code": code,
        "threads": threads,
        "packages": package_versions(modules),
        "platform": f"{platform.system()} {platform.machine()}",
    }
    if device is not None:
        record["device"] = dict(device)
    stores = [o for o in record["outputs"] if os.path.isdir(o)]
    if stores:
        record["content"] = {o: content_digest(o) for o in stores}
    checkpoints = sorted(os.fspath(c) for c in checkpoints)
    if checkpoints:
        record["checkpoints"] = {c: content_digest(c) for c in checkpoints}
    return record


def content_digest(path: str | os.PathLike) -> str:
    """``"sha256:<hex>"`` of a file's bytes, or of a folder's files (relative paths, sizes and bytes, sorted).

    Equal for two folders exactly when they hold the same files with the same
    bytes; independent of mtimes and of the order files were written in.
    """
    path = Path(path)
    if not path.is_dir():
        with open(path, "rb") as f:
            return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with open(file, "rb") as f:
            file_hash = hashlib.file_digest(f, "sha256").hexdigest()
        digest.update(f"{file.relative_to(path).as_posix()}\0{file.stat().st_size}\0{file_hash}\n".encode())
    return "sha256:" + digest.hexdigest()


def dumps(record: Mapping[str, Any]) -> str:
    """``record`` as the provenance file's text: sorted keys, two-space indent, a final newline."""
    return json.dumps(record, sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_provenance(artifact_path: str | os.PathLike, params: Mapping[str, Any], code: str, **job: Any) -> Path:
    """Write the provenance of the artifact at ``artifact_path`` beside it; return its path.

    ``params`` are the job's result-relevant params (plain JSON types),
    ``code`` its code hash; ``job`` as :func:`provenance_record`. Raises
    FileNotFoundError when the artifact is missing (the file is written
    after it, to say it is complete) and TypeError/ValueError for params
    JSON cannot represent exactly, before anything is written.
    """
    from tilepipe.atomic import atomic_output

    if not os.path.lexists(artifact_path):
        raise FileNotFoundError(f"{artifact_path}: no artifact to record the provenance of")
    text = dumps(provenance_record(artifact_path, params, code, **job))
    path = provenance_path(artifact_path)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def record_job(smk: Any, runtime: Iterable[str] = (), device: Mapping[str, Any] | None = None) -> Path:
    """Write the provenance of a Snakemake script job (its ``snakemake`` object) beside its first output.

    The rule must declare ``provenance=<first output>.provenance.json`` among
    its outputs and a ``code`` param; ``runtime`` names params that do not
    change the result (left out of the record). ``device``: the GPU the job
    ran on (``tilepipe.gpu_slots.GpuClaim.describe()``), recorded when given.
    Call it last in the script.
    """
    outputs = [str(o) for o in smk.output if str(o) != str(smk.output.provenance)]
    declared = Path(smk.output.provenance)
    if declared != provenance_path(outputs[0]):
        raise ValueError(f"rule {smk.rule}: provenance output {declared} is not {provenance_path(outputs[0])}")
    params = {name: value for name, value in _named(smk.params) if name not in {"code", *runtime}}
    inputs = _plain(list(getattr(smk, "input", ())))
    inputs = [f for item in inputs for f in (item if isinstance(item, list) else [item])]
    checkpoints = [f for f in inputs if f.endswith(CHECKPOINT_SUFFIXES)]
    return write_provenance(
        outputs[0],
        params,
        smk.params.code,
        rule=smk.rule,
        wildcards=dict(_named(smk.wildcards)),
        outputs=outputs,
        threads=smk.threads,
        device=device,
        checkpoints=checkpoints,
    )


def _named(namedlist: Any) -> list[tuple[str, Any]]:
    """The named entries of a Snakemake Namedlist as (name, plain value) pairs."""
    return [(name, _plain(value)) for name, value in namedlist.items()]


def _plain(value: Any) -> Any:
    """``value`` with Snakemake's list and string subclasses turned into plain list and str."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


# ---------------------------------------------------------------- comparison
def read_run(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every provenance record under ``root``, by artifact path (relative to ``root``)."""
    root = Path(root)
    records = {}
    for path in sorted(root.rglob(f"*{SUFFIX}")):
        record = json.loads(path.read_text(encoding="utf-8"))
        records[record.get("artifact", str(path.relative_to(root))[: -len(SUFFIX)])] = record
    return records


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def compare_runs(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """Lines naming every artifact whose provenance differs between runs ``a`` and ``b``, and how."""
    run_a, run_b = read_run(a), read_run(b)
    lines = []
    for artifact in sorted(set(run_a) | set(run_b)):
        if artifact not in run_b or artifact not in run_a:
            lines.append(f"{artifact}: only in {a if artifact in run_a else b}")
            continue
        flat_a, flat_b = _flatten(run_a[artifact]), _flatten(run_b[artifact])
        lines.extend(
            f"{artifact}: {key}: {flat_a.get(key)!r} != {flat_b.get(key)!r}"
            for key in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(key) != flat_b.get(key)
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m tilepipe.provenance RUN_A RUN_B``: print what differs; exit 1 if anything does."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tilepipe.provenance RUN_A RUN_B  (two workflow folders)", file=sys.stderr)
        return 2
    lines = compare_runs(*args)
    print("\n".join(lines) if lines else "no provenance differences")
    return 1 if lines else 0


if __name__ == "__main__":
    raise SystemExit(main())
