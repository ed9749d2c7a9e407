"""Contract definitions: names that could never match a header, or that become unsafe paths, are refused."""

from __future__ import annotations

import pytest

from mlops_core.contract import ContractDefinitionError, DatasetContract

BASE = {
    "name": "loans",
    "task": "regression",
    "target": "y",
    "columns": [{"name": "y", "type": "float"}, {"name": "amount", "type": "float"}],
}


def _with_column(name: str) -> dict:
    return {**BASE, "columns": [{"name": "y", "type": "float"}, {"name": name, "type": "float"}]}


def test_a_plain_contract_loads() -> None:
    contract = DatasetContract.from_dict(BASE)
    assert contract.feature_columns == ["amount"]


@pytest.mark.parametrize("name", [" amount", "amount ", "", "a<b", "tab\there", "e\u0301"])
def test_column_names_that_no_header_can_match_are_refused(name: str) -> None:
    with pytest.raises(ContractDefinitionError, match="cannot match a file's header"):
        DatasetContract.from_dict(_with_column(name))


@pytest.mark.parametrize("name", ["-loans", "_loans", "prêts", "my loans", "../x", "a" * 64])
def test_dataset_names_that_would_be_unsafe_paths_are_refused(name: str) -> None:
    with pytest.raises(ContractDefinitionError, match="ASCII letters"):
        DatasetContract.from_dict({**BASE, "name": name})
