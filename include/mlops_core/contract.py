"""Dataset contracts: what a dataset must look like, written by the user in YAML.

A contract names every column with its type, nullability and allowed values, the target and the
task type, and optionally an entity key and an event-time column. Nothing in the pipeline is
specific to one dataset: everything downstream (validation, features, training, drift) reads the
contract.

Example (``include/contracts/churn.yaml``)::

    name: churn
    task: classification          # classification | regression
    target: churned
    entity_key: customer_id       # optional: without it a row key is derived from the row content
    event_time: event_time        # optional: without it the ingestion time is used
    unknown_columns: reject       # reject (default) | drop
    columns:
      - {name: customer_id, type: string}
      - {name: event_time, type: timestamp}
      - {name: tenure_months, type: int, min: 0, max: 120}
      - {name: plan, type: category, allowed: [basic, standard, premium]}
      - {name: churned, type: int, allowed: [0, 1]}
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlops_core.errors import PermanentError

COLUMN_TYPES = ("int", "float", "string", "bool", "timestamp", "category")
TASK_TYPES = ("classification", "regression")
UNKNOWN_COLUMN_POLICIES = ("reject", "drop")

# Columns the pipeline adds to accepted rows. Users may not name their columns like this.
ROW_KEY_COLUMN = "_row_key"  # stable key of a row: entity key + event time, or a content hash
EVENT_TIME_COLUMN = "_event_time"  # the contract's event time, or the ingestion time (UTC)
ENTITY_COLUMN = "_entity"  # the contract's entity key, or the row key
SOURCE_COLUMN = "_source"  # where the row came from (file name or SQL table + watermark)
RESERVED_PREFIX = "_"


_CONTRACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_BAD_COLUMN_CHARS = re.compile(r"[\x00-\x1f\x7f<>]")


class ContractDefinitionError(PermanentError, ValueError):
    """The contract YAML itself is invalid."""


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    description: str = ""

    @property
    def is_numeric(self) -> bool:
        return self.type in ("int", "float")

    @property
    def is_categorical(self) -> bool:
        return self.type in ("category", "string", "bool")


@dataclass(frozen=True)
class DatasetContract:
    name: str
    task: str
    target: str
    columns: tuple[ColumnSpec, ...]
    entity_key: str | None = None
    event_time: str | None = None
    unknown_columns: str = "reject"
    description: str = ""
    source_path: str | None = field(default=None, compare=False)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetContract:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ContractDefinitionError(f"dataset contract not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ContractDefinitionError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> DatasetContract:
        if not isinstance(raw, dict):
            raise ContractDefinitionError(f"{source}: a contract is a mapping with name, task, target, columns")
        missing = [k for k in ("name", "task", "target", "columns") if k not in raw]
        if missing:
            raise ContractDefinitionError(f"{source}: missing required key(s): {', '.join(missing)}")
        known = {"name", "task", "target", "columns", "entity_key", "event_time", "unknown_columns", "description"}
        extra = sorted(set(raw) - known)
        if extra:
            raise ContractDefinitionError(f"{source}: unknown key(s) {extra}; allowed: {sorted(known)}")
        if not isinstance(raw["columns"], list) or not raw["columns"]:
            raise ContractDefinitionError(f"{source}: 'columns' must be a non-empty list")
        columns = tuple(_column_from_dict(c, source, i) for i, c in enumerate(raw["columns"]))
        contract = cls(
            name=str(raw["name"]),
            task=str(raw["task"]),
            target=str(raw["target"]),
            columns=columns,
            entity_key=raw.get("entity_key"),
            event_time=raw.get("event_time"),
            unknown_columns=str(raw.get("unknown_columns", "reject")),
            description=str(raw.get("description", "")),
            source_path=source,
        )
        contract._check(source)
        return contract

    def _check(self, source: str) -> None:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ContractDefinitionError(f"{source}: duplicate column name(s): {dupes}")
        if not _CONTRACT_NAME.fullmatch(self.name):
            raise ContractDefinitionError(
                f"{source}: name {self.name!r} must start with a letter or digit and use only ASCII letters, digits, "
                "'_' and '-' (it names the dataset's folders, the Feast project and the registered model)"
            )
        if self.task not in TASK_TYPES:
            raise ContractDefinitionError(f"{source}: task must be one of {TASK_TYPES}, got {self.task!r}")
        if self.unknown_columns not in UNKNOWN_COLUMN_POLICIES:
            raise ContractDefinitionError(
                f"{source}: unknown_columns must be one of {UNKNOWN_COLUMN_POLICIES}, got {self.unknown_columns!r}"
            )
        for role in ("target", "entity_key", "event_time"):
            value = getattr(self, role)
            if value is not None and value not in names:
                raise ContractDefinitionError(f"{source}: {role} {value!r} is not one of the columns {names}")
        if self.event_time and self.column(self.event_time).type != "timestamp":
            raise ContractDefinitionError(f"{source}: event_time column {self.event_time!r} must have type timestamp")
        if self.column(self.target).nullable:
            raise ContractDefinitionError(f"{source}: target column {self.target!r} cannot be nullable")
        if self.task == "classification" and not (
            self.column(self.target).allowed or self.column(self.target).is_categorical
        ):
            raise ContractDefinitionError(
                f"{source}: a classification target needs 'allowed' classes or a category/string/bool type"
            )
        if self.task == "regression" and not self.column(self.target).is_numeric:
            raise ContractDefinitionError(f"{source}: a regression target must be int or float")
        if not self.feature_columns:
            raise ContractDefinitionError(f"{source}: no feature columns left besides target/entity/event time")

    # ----------------------------------------------------------------- views
    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_columns(self) -> list[str]:
        roles = {self.target, self.entity_key, self.event_time}
        return [c.name for c in self.columns if c.name not in roles]

    @property
    def numeric_features(self) -> list[str]:
        return [n for n in self.feature_columns if self.column(n).is_numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [n for n in self.feature_columns if self.column(n).is_categorical]

    @property
    def key_columns(self) -> list[str]:
        """Columns that identify a row: entity key + event time when both exist."""
        return [c for c in (self.entity_key, self.event_time) if c]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source_path")
        out["columns"] = [{k: v for k, v in asdict(c).items() if v not in (None, "")} for c in self.columns]
        for c in out["columns"]:
            if "allowed" in c:
                c["allowed"] = list(c["allowed"])
        return out

    @property
    def fingerprint(self) -> str:
        """Stable hash of the contract's meaning; part of every dataset version id."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _column_from_dict(raw: Any, source: str, index: int) -> ColumnSpec:
    where = f"{source}: columns[{index}]"
    if not isinstance(raw, dict) or "name" not in raw or "type" not in raw:
        raise ContractDefinitionError(f"{where}: each column needs at least 'name' and 'type'")
    known = {"name", "type", "nullable", "min", "max", "allowed", "description"}
    extra = sorted(set(raw) - known)
    if extra:
        raise ContractDefinitionError(f"{where} ({raw['name']}): unknown key(s) {extra}; allowed: {sorted(known)}")
    name = str(raw["name"])
    if name.startswith(RESERVED_PREFIX):
        raise ContractDefinitionError(f"{where}: column names starting with '_' are reserved ({name!r})")
    if not name or name != name.strip() or unicodedata.normalize("NFC", name) != name or _BAD_COLUMN_CHARS.search(name):
        raise ContractDefinitionError(
            f"{where}: column name {name!r} cannot match a file's header: use a non-empty name without outer "
            "whitespace, control characters or '<>', in Unicode NFC form (headers are compared after normalising)"
        )
    ctype = str(raw["type"])
    if ctype not in COLUMN_TYPES:
        raise ContractDefinitionError(f"{where} ({name}): type must be one of {COLUMN_TYPES}, got {ctype!r}")
    if ("min" in raw or "max" in raw) and ctype not in ("int", "float"):
        raise ContractDefinitionError(f"{where} ({name}): min/max only apply to int and float columns")
    allowed = raw.get("allowed")
    if allowed is not None and (not isinstance(allowed, list) or not allowed):
        raise ContractDefinitionError(f"{where} ({name}): 'allowed' must be a non-empty list")
    return ColumnSpec(
        name=name,
        type=ctype,
        nullable=bool(raw.get("nullable", False)),
        min=None if raw.get("min") is None else float(raw["min"]),
        max=None if raw.get("max") is None else float(raw["max"]),
        allowed=None if allowed is None else tuple(allowed),
        description=str(raw.get("description", "")),
    )
