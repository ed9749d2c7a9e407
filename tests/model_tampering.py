"""Test helper: tamper with a logged model's files the way an attacker with artifact-store access would.

The one place in the project that imports ``pickle``: building the malicious payload needs it (the
ruff ban on pickle imports is lifted for this import only). Nothing here ever unpickles anything.
"""

from __future__ import annotations

import pathlib
import pickle  # noqa: TID251 - builds the attack payload; never used to load anything
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

CANARY_TEXT = "the pickled payload ran\n"


class _WriteCanary:
    """Unpickling this object writes ``CANARY_TEXT`` to ``path``: a harmless stand-in for any code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.write_text, (pathlib.Path(self.path), CANARY_TEXT))


def pickle_payload(canary: Path) -> bytes:
    """Bytes that write ``canary`` when unpickled."""
    return pickle.dumps(_WriteCanary(canary))


def artifact_folder(registry, model_name: str, version: str) -> Path:
    """The local folder (``file://`` artifact store) holding a registered version's files."""
    uri = registry.client.get_model_version_download_uri(model_name, str(version))
    assert uri.startswith("file://"), uri
    return Path(unquote(urlparse(uri).path))


def tamper_to_pickle(folder: Path, canary: Path) -> None:
    """Edit ``MLmodel`` to the pickle format and replace the skops file with a payload writing ``canary``."""
    mlmodel_path = folder / "MLmodel"
    mlmodel = yaml.safe_load(mlmodel_path.read_text())
    sklearn_flavor = mlmodel["flavors"]["sklearn"]
    (folder / sklearn_flavor["pickled_model"]).unlink()
    sklearn_flavor["serialization_format"] = "pickle"
    sklearn_flavor["pickled_model"] = "model.pkl"
    mlmodel["flavors"]["python_function"]["model_path"] = "model.pkl"
    mlmodel_path.write_text(yaml.safe_dump(mlmodel))
    (folder / "model.pkl").write_bytes(pickle_payload(canary))


def swap_skops(folder: Path, other: Path) -> None:
    """Replace the skops file in ``folder`` with the (valid) one of another model in ``other``."""
    shutil.copyfile(other / "model.skops", folder / "model.skops")


@contextmanager
def restored_afterwards(folder: Path) -> Iterator[Path]:
    """Yield ``folder``; whatever happens to it inside the block, its original files come back afterwards."""
    backup = folder.with_name(folder.name + ".backup")
    shutil.copytree(folder, backup)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        backup.rename(folder)
