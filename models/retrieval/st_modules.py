"""What a sentence-transformers folder adds after its transformer, for the in-process encoder.

``SentenceTransformer.encode`` runs the modules listed in ``modules.json`` in order: the transformer,
a pooling, and optionally ``Dense`` projections and ``Normalize``. Our transformers encoder does the
transformer, the pooling and the normalisation itself; this module loads the ``Dense`` projections
(Instructor-L/XL project 1,024/2,048 to 768 dimensions this way) so the vectors are the ones
``encode`` gives, and refuses a folder whose other modules it would skip. Inputs: a local folder or a
Hub id (only ``modules.json`` and the Dense folders are fetched); outputs: torch modules to apply to
the pooled vectors, in order.

Usage::

    dense = load_dense_modules("hkunlp/instructor-large")      # [Sequential(Linear(1024, 768), Identity)]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Module types we run ourselves (transformer, pooling, normalisation) or through load_dense_modules.
HANDLED_MODULES = ("Transformer", "Pooling", "Normalize")
DENSE_MODULE = "Dense"
# Dense activations by the dotted names sentence-transformers writes into 2_Dense/config.json.
ACTIVATIONS = ("torch.nn.modules.linear.Identity", "torch.nn.modules.activation.Tanh")
DENSE_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_file(name_or_path: str, filename: str, *, required: bool) -> Path | None:
    """``filename`` inside a local folder or a Hub repo (downloaded or from the local Hub cache); ``None``
    when it does not exist. ``required``: a file that exists upstream but cannot be had offline is an error."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(hf_hub_download(name_or_path, filename))
    except LocalEntryNotFoundError as err:  # first: it subclasses EntryNotFoundError
        snapshot = _cached_snapshot(name_or_path)
        if snapshot is not None:  # offline with a downloaded snapshot: what it holds is all we can know
            path = snapshot / filename
            if path.is_file():
                return path
            logger.warning(
                "offline: the cached snapshot %s has no %s; taking it that the repo has none", snapshot, filename
            )
            return None
        if not required:
            return None
        raise ValueError(
            f"{name_or_path}: {filename} is neither cached nor downloadable (offline?); it decides which "
            "sentence-transformers modules run after the transformer. Download the full snapshot "
            f"(`huggingface-cli download {name_or_path}`) or pass a local --model_path"
        ) from err
    except (EntryNotFoundError, RepositoryNotFoundError, HFValidationError):
        return None  # no such file, or not a Hub repo either (then the model load names the problem)


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def module_types(name_or_path: str) -> list[tuple[str, str]]:
    """``(short type, folder)`` of each module in ``modules.json`` after the transformer; ``[]`` without one."""
    path = _read_file(name_or_path, "modules.json", required=True)
    if path is None:
        return []
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [(str(entry["type"]).rsplit(".", 1)[-1], str(entry.get("path", ""))) for entry in entries[1:]]


def load_dense_modules(name_or_path: str) -> list[Any]:
    """The Dense projections of a sentence-transformers folder, as torch modules in their order.

    ``ValueError`` for a module type we would otherwise skip (e.g. ``LayerNorm``, ``WeightedLayerPooling``)
    or a Dense activation other than identity/tanh, since the vectors would then differ from ``encode``.
    """
    modules = []
    for kind, folder in module_types(name_or_path):
        if kind in HANDLED_MODULES:
            continue
        if kind != DENSE_MODULE:
            raise ValueError(
                f"{name_or_path}: modules.json lists a {kind} module ({folder}) that the transformers encoder "
                f"does not run (it runs {', '.join(HANDLED_MODULES)} and {DENSE_MODULE}); its vectors would differ "
                "from SentenceTransformer.encode"
            )
        modules.append(_load_dense(name_or_path, folder))
    if modules:
        logger.info("%s: %d Dense projection(s) after pooling", name_or_path, len(modules))
    return modules


def _load_dense(name_or_path: str, folder: str) -> Any:
    import torch

    config_path = _read_file(name_or_path, f"{folder}/config.json", required=True)
    if config_path is None:
        raise ValueError(f"{name_or_path}: Dense module folder {folder!r} has no config.json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    activation = config.get("activation_function", ACTIVATIONS[1])
    if activation not in ACTIVATIONS:
        raise ValueError(f"{name_or_path}/{folder}: Dense activation {activation!r} is not one of {list(ACTIVATIONS)}")
    linear = torch.nn.Linear(
        int(config["in_features"]), int(config["out_features"]), bias=bool(config.get("bias", True))
    )
    state = _dense_state(name_or_path, folder)
    # sentence-transformers saves the layer as 'linear.weight' / 'linear.bias'.
    linear.load_state_dict({key.removeprefix("linear."): value for key, value in state.items()})
    act = torch.nn.Identity() if activation == ACTIVATIONS[0] else torch.nn.Tanh()
    return torch.nn.Sequential(linear, act).eval()


def _dense_state(name_or_path: str, folder: str) -> dict[str, Any]:
    for filename in DENSE_WEIGHT_FILES:
        path = _read_file(name_or_path, f"{folder}/{filename}", required=False)
        if path is None:
            continue
        if filename.endswith(".safetensors"):
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        import torch

        return dict(torch.load(str(path), map_location="cpu", weights_only=True))
    raise ValueError(
        f"{name_or_path}/{folder}: no Dense weights ({' or '.join(DENSE_WEIGHT_FILES)}) in the folder or the Hub cache"
    )
