"""A small made-up bank database (customer -> account -> transfer, branch) for pipeline tests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.conftest import write_csv


def write_bank(folder: Path, *, orphans: int = 0, seed: int = 7) -> Path:
    """Write branch, customer, account, transfer and account_note CSVs; return the folder.

    ``orphans`` transfers reference accounts that do not exist (ids 'ACC-9xxxx').
    """
    rng = random.Random(seed)
    branches = [(f"BR{i:02d}", rng.choice(["north", "south", "east"]), rng.randint(3, 40)) for i in range(1, 13)]
    customers = []
    for i in range(1, 121):
        customers.append((
            i,
            rng.choice(branches)[0],
            rng.choice(["retail", "retail", "retail", "business"]),
            rng.randint(1940, 2004) if rng.random() > 0.1 else None,
            f"2020-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        ))
    accounts = []
    for customer in customers:
        for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3, 5])):
            number = len(accounts) + 1
            accounts.append((
                f"ACC-{number:05d}",
                customer[0],
                rng.choice(["checking", "savings"]),
                round(rng.lognormvariate(7, 1.2), 2),
                rng.random() < 0.8,
            ))
    transfers = []
    for account in accounts:
        for _ in range(int(rng.expovariate(1 / 4))):
            transfers.append([
                len(transfers) + 1,
                account[0],
                round(rng.uniform(1, 900), 2),
                f"2021-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
                rng.choice(["card", "card", "wire", "cash"]),
            ])
    for index in range(orphans):
        transfers[index * 3][1] = f"ACC-9{index:04d}"
    # A channel seen once, below every test's min_category_count: it must never be stored or generated.
    transfers[1][4] = "courier"
    # Composite key: (account_id, note_no), note_no restarting at 1 per account.
    notes = []
    for account in accounts[:150]:
        for number in range(1, rng.randint(1, 3) + 1):
            notes.append((account[0], number, rng.choice(["call", "mail", "visit"])))
    write_csv(folder, "branch.csv", ["branch_id", "region", "staff"], branches)
    write_csv(folder, "customer.csv", ["customer_id", "branch_id", "segment", "birth_year", "since"], customers)
    write_csv(folder, "account.csv", ["account_id", "customer_id", "type", "balance", "active"], accounts)
    write_csv(folder, "transfer.csv", ["transfer_id", "account_id", "amount", "booked_at", "channel"], transfers)
    write_csv(folder, "account_note.csv", ["account_id", "note_no", "kind"], notes)
    return folder


def bank_config(source: Path, output: Path, **overrides: Any) -> dict[str, Any]:
    """Return a config dict for the bank database; ``overrides`` replace top-level sections."""
    config: dict[str, Any] = {
        "name": "bank",
        "source_root": str(source),
        "tables": {
            "branch": {
                "source": {"path": "branch.csv", "format": "csv"},
                "primary_key": "branch_id",
                "columns": {"branch_id": "id", "region": "categorical", "staff": "numerical"},
            },
            "customer": {
                "source": {"path": "customer.csv", "format": "csv"},
                "primary_key": "customer_id",
                "columns": {
                    "customer_id": "id",
                    "branch_id": "id",
                    "segment": "categorical",
                    "birth_year": "numerical",
                    "since": "datetime",
                },
                "foreign_keys": [{"columns": "branch_id", "parent": "branch"}],
            },
            "account": {
                "source": {"path": "account.csv", "format": "csv"},
                "primary_key": "account_id",
                "columns": {
                    "account_id": "id",
                    "customer_id": "id",
                    "type": "categorical",
                    "balance": "numerical",
                    "active": "boolean",
                },
                "foreign_keys": [{"columns": "customer_id", "parent": "customer"}],
            },
            "transfer": {
                "source": {"path": "transfer.csv", "format": "csv"},
                "primary_key": "transfer_id",
                "columns": {
                    "transfer_id": "id",
                    "account_id": "id",
                    "amount": "numerical",
                    "booked_at": {"kind": "datetime", "format": "yyyy-MM-dd HH:mm:ss"},
                    "channel": "categorical",
                },
                "foreign_keys": [{"columns": "account_id", "parent": "account"}],
            },
            "account_note": {
                "source": {"path": "account_note.csv", "format": "csv"},
                "primary_key": ["account_id", "note_no"],
                "columns": {"account_id": "id", "note_no": "id", "kind": "categorical"},
                "foreign_keys": [{"columns": "account_id", "parent": "account"}],
            },
        },
        "generation": {"scale": 1.0, "seed": 11},
        "model": {"min_category_count": 2},
        # The costlier scores are off except in the tests that need them (bank_run in test_pipeline.py).
        "evaluation": {"detection": False, "privacy": False, "max_hops": 1},
        "output": {"format": "delta", "path": str(output), "mode": "error"},
        "tracking": {"experiment": "synthspark-tests"},
    }
    config.update(overrides)
    return config
