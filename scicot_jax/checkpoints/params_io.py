"""Parameters-only orbax checkpoints: `<dir>/params` (orbax pytree) + `<dir>/config.json`."""

from __future__ import annotations

import json
import logging
from typing import Any

import jax

from scicot_jax.files import atomic_write
from scicot_jax.model.config import T5Config, read_json_file
from scicot_jax.paths import Path, PathLike, as_path

Params = dict[str, Any]
PARAMS_DIR = "params"
CONFIG_FILE = "config.json"
ITEM_DIRS = ("params", "opt_state")  # pytree items of a step (or a save_params dir)


class _ItemMetadataNoise(logging.Filter):
    """Orbax looks for a checkpoint-level _CHECKPOINT_METADATA inside an item directory
    (`<step>/params`) and warns on every load that it is missing: it never is there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "Metadata file does not exist: %s" or not record.args:
            return True
        return Path(str(record.args[0])).parent.name not in ITEM_DIRS


def quiet_item_metadata_warning() -> None:
    """Installs the filter once on the logger orbax warns through (absl's)."""
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _ItemMetadataNoise) for f in logger.filters):
        logger.addFilter(_ItemMetadataNoise())


def save_params(path: PathLike, params: Params, config: T5Config, *, force: bool = False) -> Path:
    """Write params with orbax StandardCheckpointer and config.json beside them; returns path."""
    import orbax.checkpoint as ocp

    directory = as_path(path)
    target = directory / PARAMS_DIR
    if target.exists() and not force:
        raise FileExistsError(f"{target}: already exists (pass force=True to overwrite)")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(target, params, force=force)
    # Written last, atomically: a directory with config.json holds a complete checkpoint.
    atomic_write(
        directory / CONFIG_FILE, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    )
    return directory


def read_config(path: PathLike) -> T5Config:
    """The T5Config stored in `<path>/config.json`."""
    file = as_path(path) / CONFIG_FILE
    data = read_json_file(file, "not a checkpoint written by save_params")
    try:
        return T5Config.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{file}: not a T5Config ({e})") from e


def load_params(path: PathLike, *, shardings: Any = None) -> tuple[T5Config, Params]:
    """(config, params) from a save_params directory.

    `shardings` (a pytree of jax.sharding.Sharding matching params, or one Sharding for all)
    restores straight onto a mesh; by default every array lands on the first local device.
    """
    directory = as_path(path)
    config = read_config(directory)
    target = directory / PARAMS_DIR
    if not target.is_dir():
        raise FileNotFoundError(f"{target}: missing orbax params directory")
    return config, restore_tree(target, shardings=shardings)


def tree_metadata(directory: PathLike) -> Any:
    """The stored pytree of array metadata (shape, dtype) of an orbax StandardSave directory."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as checkpointer:
        meta = checkpointer.metadata(as_path(directory))
    return getattr(getattr(meta, "item_metadata", meta), "tree", meta)


def restore_tree(directory: PathLike, *, shardings: Any = None) -> Any:
    """A pytree saved by orbax StandardSave (ours or a trainer step's `params`), re-placed.

    Restoring against the stored shapes with explicit shardings works whatever device layout
    the tree was saved from.
    """
    import orbax.checkpoint as ocp

    quiet_item_metadata_warning()
    target = as_path(directory)
    tree = tree_metadata(target)
    with ocp.StandardCheckpointer() as checkpointer:
        if shardings is None or isinstance(shardings, jax.sharding.Sharding):
            one = shardings or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            shardings = jax.tree.map(lambda _: one, tree)
        abstract = jax.tree.map(
            lambda m, s: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=s), tree, shardings
        )
        return checkpointer.restore(target, abstract)
