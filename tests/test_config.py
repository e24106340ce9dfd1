"""Config validation and the multi-table plan: every error is raised before Spark starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthspark.cli import main
from synthspark.config import load_config, parse_config
from synthspark.errors import ConfigError
from synthspark.plan import build_plan
from synthspark.sources import check_sources
from tests.bank import bank_config, write_bank
from tests.conftest import REPO


@pytest.mark.parametrize("name", ["berka.yaml", "nycflights13.yaml", "demo.yaml"])
def test_shipped_configs_build_a_plan(name: str) -> None:
    config = load_config(REPO / "conf" / name)
    plan = build_plan(config)
    assert set(plan.order) == set(config.tables)
    for rel in plan.relationships:
        assert plan.order.index(rel.parent) < plan.order.index(rel.child)


def test_nycflights13_plan_fills_origin_from_weather() -> None:
    plan = build_plan(load_config(REPO / "conf" / "nycflights13.yaml"))
    flights = plan.tables["flights"]
    assert flights.driver is not None and flights.driver.parent == "weather"
    assert [rel.describe() for rel in flights.implied] == ["flights.origin -> airports.faa"]
    assert {rel.parent for rel in flights.assigned} == {"airlines", "planes", "airports"}


def test_unknown_key_names_its_path(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["account"]["foreign_keys"][0]["parnt"] = "customer"
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    assert "tables.account.foreign_keys.0.parnt: unknown key" in str(error.value)


def test_foreign_key_to_missing_parent(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["account"]["foreign_keys"][0]["parent"] = "client"
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    message = str(error.value)
    assert "parent table 'client' is not declared" in message
    assert "tables.account.foreign_keys[0]" in message


def test_cycle_is_rejected_with_its_path(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["branch"]["columns"]["manager"] = "id"
    data["tables"]["branch"]["foreign_keys"] = [{"columns": "manager", "parent": "account"}]
    with pytest.raises(ConfigError) as error:
        build_plan(parse_config(data))
    message = str(error.value)
    assert "cycle" in message
    assert "account -> customer -> branch -> account" in message
    assert "deferred: true" in message


def test_cycle_with_a_deferred_key_is_planned(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["branch"]["columns"]["manager"] = "id"
    data["tables"]["branch"]["foreign_keys"] = [{"columns": "manager", "parent": "account", "deferred": True}]
    plan = build_plan(parse_config(data))
    assert plan.tables["branch"].is_root
    assert [rel.parent for rel in plan.tables["branch"].deferred] == ["account"]
    assert plan.order.index("branch") < plan.order.index("account")


def test_self_reference_is_planned_as_a_tree(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["customer"]["columns"]["referrer"] = "id"
    data["tables"]["customer"]["foreign_keys"].append({"columns": "referrer", "parent": "customer"})
    plan = build_plan(parse_config(data))
    customer = plan.tables["customer"]
    assert customer.self_reference is not None and customer.self_reference.columns == ("referrer",)
    assert customer.driver is not None and customer.driver.parent == "branch"
    assert customer.assigned == ()


def test_two_self_references_are_rejected(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    for column in ("referrer", "mentor"):
        data["tables"]["customer"]["columns"][column] = "id"
        data["tables"]["customer"]["foreign_keys"].append({"columns": column, "parent": "customer"})
    with pytest.raises(ConfigError, match="2 foreign keys to itself"):
        build_plan(parse_config(data))


def test_key_column_count_mismatch(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["transfer"]["foreign_keys"] = [
        {"columns": "account_id", "parent": "account_note"}
    ]
    with pytest.raises(ConfigError, match=r"1 column\(s\) \['account_id'\] reference 2 parent column\(s\)"):
        parse_config(data)


def test_primary_key_not_among_columns(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["branch"]["primary_key"] = "branch_code"
    with pytest.raises(ConfigError, match="tables.branch.primary_key: column 'branch_code' is not listed"):
        parse_config(data)


def test_impossible_scale_is_rejected(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out", generation={"scale": 0})
    with pytest.raises(ConfigError, match="generation.scale"):
        parse_config(data)


def test_missing_source_table_file(tmp_path: Path) -> None:
    write_bank(tmp_path / "src")
    (tmp_path / "src" / "transfer.csv").unlink()
    config = parse_config(bank_config(tmp_path / "src", tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"source of table 'transfer' not found: .*transfer.csv"):
        check_sources(config)


def test_unknown_column_in_config(tmp_path: Path) -> None:
    write_bank(tmp_path / "src")
    data = bank_config(tmp_path / "src", tmp_path / "out")
    data["tables"]["account"]["columns"]["overdraft"] = "numerical"
    with pytest.raises(ConfigError) as error:
        check_sources(parse_config(data))
    message = str(error.value)
    assert "table 'account': column(s) ['overdraft']" in message
    assert "'balance'" in message


def test_cli_reports_bad_config_without_writing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(
        "tables:\n  a:\n    source: {path: a.csv}\n    primary_key: id\n"
        "    foreign_keys: [{columns: b_id, parent: b}]\n",
        encoding="utf-8",
    )
    output = tmp_path / "out"
    code = main(["run", str(config_file), "--output", str(output), "--no-tracking"])
    assert code == 2
    assert "parent table 'b' is not declared" in caplog.text
    assert not output.exists()


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_column_declarations_are_checked_before_spark(tmp_path: Path) -> None:
    data = bank_config(tmp_path, tmp_path / "out")
    columns = data["tables"]["customer"]["columns"]
    columns["customer_id"] = {"kind": "id", "format": "C-[A-Z]{3}"}
    with pytest.raises(ConfigError, match=r"key format 'C-\[A-Z\]\{3\}' is invalid"):
        parse_config(data)
    columns["customer_id"] = "id"
    columns["extra"] = {"kind": "numerical", "type": "string"}
    with pytest.raises(ConfigError, match="kind 'numerical' cannot have type 'string'"):
        parse_config(data)


def test_on_invalid_null_reads_from_unquoted_yaml(tmp_path: Path) -> None:
    import yaml

    spec = yaml.safe_load("{kind: datetime, format: yyyy-MM-dd, on_invalid: null}")
    data = bank_config(tmp_path, tmp_path / "out")
    data["tables"]["customer"]["columns"]["since"] = spec
    assert parse_config(data).tables["customer"].columns["since"].on_invalid == "null"
