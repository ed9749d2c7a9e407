"""Model artifacts are untrusted until verified: digest, format check, and the one loader we use.

MLflow decides how to load a model from the artifact's own ``MLmodel`` file: the serialization
format (``pickle`` runs code on load) and, for skops, the list of types to trust. Anyone who can
write to the artifact store can therefore make a "model" run code wherever it is loaded. So:

- When a model is logged, :func:`artifact_digest` of its files is recorded in the tracking
  database (run tag and model-version tag :data:`MODEL_SHA256_TAG`), which the artifact store
  cannot change.
- Every load and every deploy goes through :func:`fetch_verified_model`: download the artifact
  to a local folder, check it against the recorded digest, check its ``MLmodel`` (sklearn flavor,
  skops format, trusted types a subset of our own ``SKOPS_TRUSTED_TYPES``, nothing that mentions
  pickle), then pin its loader to this module. The caller loads or serves *that* folder; nothing is
  downloaded a second time between the check and the use.
- The pinned loader (:func:`_load_pyfunc`, MLflow's ``loader_module`` protocol) loads the skops
  file with our own trust list, never the one written in ``MLmodel``, and never goes through
  ``mlflow.sklearn``. That is also why a scoring server can run with
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``: in MLflow 3.17 that flag refuses every
  ``mlflow.sklearn`` load, skops included, but not a loader module of our own.

The functions take a model URI and an expected digest, not a registry object, so a cloud serving
target can verify the folder it packages the same way the local scoring server does.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.pipeline import Pipeline

#: Tag (on the training run and on every model version) holding the SHA-256 of the model's files.
MODEL_SHA256_TAG = "mlops.model_sha256"
#: The loader module written into a verified folder's ``MLmodel`` (``python_function.loader_module``).
LOADER_MODULE = "mlops_core.model_integrity"
MLMODEL_FILE = "MLmodel"
SKOPS_FORMAT = "skops"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FLAVORS = frozenset({"python_function", "sklearn"})
# Keys MLflow writes for a skops sklearn model; anything else (code paths, python_model, model_config,
# a data folder) could make MLflow import or unpickle something, so it is refused.
_PYFUNC_KEYS = frozenset({"env", "loader_module", "model_path", "predict_fn", "python_version"})
_SKLEARN_KEYS = frozenset({"code", "pickled_model", "serialization_format", "sklearn_version", "skops_trusted_types"})
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib", ".dill")
_RETRAIN_HINT = (
    "Do not load or serve it. Re-register the model from a trusted training run (run the train DAG, then "
    "evaluate_register) and deploy that version; investigate who can write to the artifact store."
)


class ModelIntegrityError(RuntimeError):
    """A model artifact failed verification (digest mismatch, no recorded digest, refused format)."""


# --------------------------------------------------------------------------- digest
def artifact_digest(folder: str | Path) -> str:
    """SHA-256 over every file under ``folder``, in a canonical order; hex.

    Files are taken in the order of their relative POSIX paths (compared as UTF-8 bytes); for each
    one the hash reads ``<path> NUL <size in decimal> NUL <content>``, so no two different folders
    give the same stream. Empty folders do not count. A symbolic link or any other non-regular
    file raises :class:`ModelIntegrityError`: a model folder holds plain files only.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ModelIntegrityError(f"{root} is not a folder; cannot compute a model digest")
    files: list[tuple[bytes, Path]] = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ModelIntegrityError(f"{root}: {rel} is not a regular file; a model folder holds plain files only")
        if path.is_file():
            files.append((rel.encode("utf-8"), path))
    digest = hashlib.sha256()
    for rel_bytes, path in sorted(files, key=lambda item: item[0]):
        digest.update(rel_bytes + b"\0" + str(path.stat().st_size).encode("ascii") + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- MLmodel
def _read_mlmodel(folder: Path, label: str) -> dict[str, Any]:
    import yaml

    path = folder / MLMODEL_FILE
    if not path.is_file():
        raise ModelIntegrityError(f"{label}: no {MLMODEL_FILE} file in the model artifact. {_RETRAIN_HINT}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"{label}: {MLMODEL_FILE} is not valid YAML ({exc}). {_RETRAIN_HINT}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("flavors"), dict):
        raise ModelIntegrityError(f"{label}: {MLMODEL_FILE} has no 'flavors' mapping. {_RETRAIN_HINT}")
    return raw


def _mentions_pickle(value: Any, where: str = "") -> str | None:
    """The path of the first key or string value that mentions pickle (``pickled_model`` is MLflow's key)."""
    if isinstance(value, str):
        return (where or "(root)") if "pickle" in value.lower() else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if key != "pickled_model" and "pickle" in str(key).lower():
                return here
            found = _mentions_pickle(item, here)
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _mentions_pickle(item, f"{where}[{i}]")
            if found:
                return found
    return None


def check_model_folder(folder: str | Path, label: str) -> dict[str, Any]:
    """Refuse a model folder that is anything but an sklearn pipeline saved with skops by us.

    Checks: the only flavors are ``python_function`` and ``sklearn`` with the keys MLflow writes
    for skops (no code paths, no ``python_model``); ``serialization_format`` is ``skops``;
    ``pickled_model`` is a ``.skops`` file in the folder and ``python_function`` loads that file
    through ``mlflow.sklearn`` with ``predict``; the declared ``skops_trusted_types`` and the
    types the skops file itself references are all in ``SKOPS_TRUSTED_TYPES``; no key or value in
    ``MLmodel`` (outside the signature's column names) mentions pickle or cloudpickle, and no file
    name ends in a pickle, joblib or dill suffix. Reading the skops
    file's type list does not run any of its code. Returns the parsed ``MLmodel``.
    """
    from mlops_core.training.model import SKOPS_TRUSTED_TYPES, import_skops_io

    skops_io = import_skops_io()

    root = Path(folder)
    mlmodel = _read_mlmodel(root, label)

    def refuse(reason: str) -> ModelIntegrityError:
        return ModelIntegrityError(f"{label}: refusing the model artifact: {reason}. {_RETRAIN_HINT}")

    # The signature lists the dataset's column names (data, not loading instructions): a feature may be
    # called "pickled_goods" without making the model suspicious.
    mention = _mentions_pickle({key: value for key, value in mlmodel.items() if key != "signature"})
    if mention:
        raise refuse(f"{MLMODEL_FILE} mentions pickle at {mention!r}; only skops models are loaded")
    pickled = sorted(p.name for p in root.rglob("*") if p.name.lower().endswith(_PICKLE_SUFFIXES))
    if pickled:
        raise refuse(f"it contains pickle-format file(s) {pickled}")
    flavors: dict[str, Any] = mlmodel["flavors"]
    if set(flavors) != _FLAVORS:
        raise refuse(f"its flavors are {sorted(flavors)}, expected exactly {sorted(_FLAVORS)}")
    sk, pyfunc = flavors["sklearn"], flavors["python_function"]
    if not isinstance(sk, dict) or not isinstance(pyfunc, dict):
        raise refuse("its flavor configurations are not mappings")
    extra = sorted(set(sk) - _SKLEARN_KEYS) + sorted(set(pyfunc) - _PYFUNC_KEYS)
    if extra:
        raise refuse(f"its flavors carry unexpected key(s) {extra}")
    if sk.get("serialization_format") != SKOPS_FORMAT:
        raise refuse(f"serialization_format is {sk.get('serialization_format')!r}, only {SKOPS_FORMAT!r} is loaded")
    if sk.get("code") is not None:
        raise refuse("the sklearn flavor ships code paths")
    model_file = sk.get("pickled_model")
    if (
        not isinstance(model_file, str)
        or not model_file.endswith(".skops")
        or PurePosixPath(model_file).name != model_file
        or not (root / model_file).is_file()
    ):
        raise refuse(f"pickled_model {model_file!r} is not a .skops file at the top of the artifact")
    if pyfunc.get("loader_module") != "mlflow.sklearn" or pyfunc.get("model_path") != model_file:
        raise refuse(
            f"python_function loads {pyfunc.get('model_path')!r} with {pyfunc.get('loader_module')!r}, "
            f"expected {model_file!r} with 'mlflow.sklearn'"
        )
    if pyfunc.get("predict_fn", "predict") != "predict":
        raise refuse(f"python_function.predict_fn is {pyfunc.get('predict_fn')!r}, expected 'predict'")
    declared = sk.get("skops_trusted_types") or []
    if not isinstance(declared, list) or not all(isinstance(t, str) for t in declared):
        raise refuse("skops_trusted_types is not a list of type names")
    outside = sorted(set(declared) - set(SKOPS_TRUSTED_TYPES))
    if outside:
        raise refuse(f"{MLMODEL_FILE} trusts type(s) outside SKOPS_TRUSTED_TYPES: {outside}")
    try:
        referenced = skops_io.get_untrusted_types(file=root / model_file)
    except Exception as exc:  # a corrupt or foreign zip: skops raises many kinds of errors
        raise refuse(f"{model_file} is not a readable skops file ({type(exc).__name__}: {exc})") from exc
    outside = sorted(set(referenced) - set(SKOPS_TRUSTED_TYPES))
    if outside:
        raise refuse(f"{model_file} references type(s) outside SKOPS_TRUSTED_TYPES: {outside}")
    return mlmodel


def _pin_loader(folder: Path, mlmodel: dict[str, Any]) -> None:
    """Point ``python_function`` at :data:`LOADER_MODULE` (our trust list), with the skops file as its data."""
    import yaml

    from mlops_core.atomic_files import write_atomic

    pyfunc = mlmodel["flavors"]["python_function"]
    pyfunc["loader_module"] = LOADER_MODULE
    pyfunc["data"] = mlmodel["flavors"]["sklearn"]["pickled_model"]
    write_atomic(folder / MLMODEL_FILE, yaml.safe_dump(mlmodel, default_flow_style=False, sort_keys=True), fsync=False)


# --------------------------------------------------------------------------- fetching
def _check_sha256(value: str | None, label: str) -> str:
    if not value:
        raise ModelIntegrityError(
            f"{label} has no recorded digest (tag {MODEL_SHA256_TAG}): it was logged or registered without "
            f"one (by older code or outside this pipeline), so nothing vouches for its files. {_RETRAIN_HINT}"
        )
    if not _SHA256.match(value):
        raise ModelIntegrityError(
            f"{label}: the recorded digest {value!r} is not a SHA-256 hex string. {_RETRAIN_HINT}"
        )
    return value


def _client(tracking_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """``models:/<name>/<version>`` -> ``(name, version, None)``; ``models:/<name>@<alias>`` ->
    ``(name, None, alias)``; ``models:/<model id>`` -> ``(model id, None, None)``."""
    if not model_uri.startswith("models:/"):
        raise ValueError(f"{model_uri!r} is not a models:/ URI")
    rest = model_uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        return name, None, alias
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return name, version, None
    return rest, None, None


def registered_model_sha256(model_uri: str, tracking_uri: str | None) -> str:
    """The digest recorded on the model version that ``model_uri`` (``models:/<name>/<version|@alias>``) names."""
    name, version, alias = parse_model_uri(model_uri)
    client = _client(tracking_uri)
    mv = client.get_model_version_by_alias(name, alias) if alias else None
    if mv is None:
        if version is None:
            raise ModelIntegrityError(
                f"{model_uri}: no model version in the URI, so there is no recorded digest to check against; "
                "pass the expected digest explicitly"
            )
        mv = client.get_model_version(name, version)
    return _check_sha256(dict(mv.tags or {}).get(MODEL_SHA256_TAG), f"{name} version {mv.version}")


def download_uri(model_uri: str, tracking_uri: str | None) -> str:
    """Where the files of ``model_uri`` live (the registry's own answer for ``models:/`` URIs)."""
    return _download_uri(model_uri, tracking_uri)


def _download_uri(model_uri: str, tracking_uri: str | None) -> str:
    """Where the files of ``model_uri`` live (the registry's own answer for ``models:/`` URIs)."""
    if not model_uri.startswith("models:/"):
        return model_uri
    name, version, alias = parse_model_uri(model_uri)
    client = _client(tracking_uri)
    if alias:
        version = str(client.get_model_version_by_alias(name, alias).version)
    if version is not None:
        return str(client.get_model_version_download_uri(name, version))
    return str(client.get_logged_model(name).artifact_location)


def fetch_verified_model(
    model_uri: str,
    expected_sha256: str | None,
    dest: str | Path,
    *,
    tracking_uri: str | None = None,
    label: str | None = None,
) -> Path:
    """Download ``model_uri`` into ``dest``, verify it, pin its loader; return the folder to load or serve.

    Args:
        model_uri: a ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or ``models:/<model id>``
            URI (resolved through the registry at ``tracking_uri``), or an artifact URI
            (``file://``, ``s3://``, ...) of the model's folder.
        expected_sha256: the digest recorded in the tracking database when the model was logged
            (:data:`MODEL_SHA256_TAG`); never read from the artifact itself.
        dest: a folder for this copy only; replaced if it exists.
        label: how errors name the model (``"dev.churn version 3"``); default ``model_uri``.

    Raises :class:`ModelIntegrityError` (and leaves nothing at ``dest``) when the digest is missing
    or differs, or the folder fails :func:`check_model_folder`. On success the returned folder
    holds exactly the verified files, except that ``MLmodel``'s ``python_function`` now loads the
    skops file through this module with our own trust list.
    """
    import mlflow.artifacts

    what = label or model_uri
    expected = _check_sha256(expected_sha256, what)
    target = Path(dest)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        source = _download_uri(model_uri, tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target)))
        verify_model_files(local, expected, what, source=source)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return local


def verify_model_files(folder: str | Path, expected_sha256: str | None, label: str, *, source: str = "") -> Path:
    """Verify a local copy of a model's files in place: digest, :func:`check_model_folder`, then pin the loader.

    The step :func:`fetch_verified_model` runs after its download, for a copy that arrived another
    way (the SageMaker serving container gets its model untarred under ``/opt/ml/model``). The folder
    is changed (``MLmodel``'s loader), so pass a copy, never the only one.
    """
    local = Path(folder)
    _pin_loader(local, check_model_files(local, expected_sha256, label, source=source))
    return local


def check_model_files(
    folder: str | Path, expected_sha256: str | None, label: str, *, source: str = ""
) -> dict[str, Any]:
    """The checks of :func:`verify_model_files` without changing the folder: its digest against the
    recorded one, then :func:`check_model_folder`; returns the parsed ``MLmodel``. For a copy that is
    shipped as it is (a cloud serving target packs the original files; its container verifies them
    again against the same digest)."""
    expected = _check_sha256(expected_sha256, label)
    local = Path(folder)
    found = artifact_digest(local)
    if found != expected:
        where = f" at {source}" if source else ""
        raise ModelIntegrityError(
            f"{label}: the model files{where} do not match the digest recorded when the model was logged "
            f"(expected sha256 {expected}, found {found}); they were changed in the artifact store. {_RETRAIN_HINT}"
        )
    return check_model_folder(local, label)


def load_verified_model(folder: str | Path) -> Any:
    """An MLflow pyfunc model from a folder returned by :func:`fetch_verified_model`.

    Refuses a folder whose loader is not pinned to this module (i.e. one that was not verified).
    """
    import mlflow.pyfunc

    root = Path(folder)
    pyfunc = _read_mlmodel(root, str(root))["flavors"].get("python_function") or {}
    if pyfunc.get("loader_module") != LOADER_MODULE:
        raise ModelIntegrityError(f"{root} was not verified by fetch_verified_model; refusing to load it")
    return mlflow.pyfunc.load_model(str(root))


# --------------------------------------------------------------------------- the loader
class TrustedSklearnModel:
    """What MLflow's pyfunc wraps for a verified folder: the skops pipeline and its predict methods."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        if hasattr(pipeline, "predict_proba"):
            self.predict_proba = pipeline.predict_proba

    def get_raw_model(self) -> Pipeline:
        """The scikit-learn pipeline (``mlops_core.evaluation.score_model`` takes probabilities from it)."""
        return self.pipeline

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """The pipeline's predictions for ``data`` (``params`` are not used)."""
        return self.pipeline.predict(data)


def _load_pyfunc(path: str) -> TrustedSklearnModel:
    """MLflow's ``loader_module`` entry point: ``path`` is the verified folder's skops file.

    Loaded with ``SKOPS_TRUSTED_TYPES`` from our code (``MLmodel``'s list is ignored).
    """
    from mlops_core.training.model import load_skops_pipeline

    file = Path(path)
    if file.suffix != ".skops" or not file.is_file():
        raise ModelIntegrityError(f"{path}: the verified loader loads a .skops file only")
    return TrustedSklearnModel(load_skops_pipeline(file))
