"""The multi-table plan: relationships, generation order and how each foreign key is filled.

Built from a validated :class:`~synthspark.config.SynthConfig` without touching data,
so every structural problem (cycles, overlapping keys) is reported before Spark runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from synthspark.config import ForeignKeySpec, SynthConfig
from synthspark.errors import ConfigError


@dataclass(frozen=True, eq=False)
class Relationship:
    """One foreign key, resolved: ``child.columns -> parent.parent_columns``."""

    name: str
    child: str
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    spec: ForeignKeySpec

    def describe(self) -> str:
        """Return the relationship as ``child.(a, b) -> parent.(x, y)``."""

        def cols(table: str, columns: tuple[str, ...]) -> str:
            return f"{table}.{columns[0]}" if len(columns) == 1 else f"{table}.({', '.join(columns)})"

        return f"{cols(self.child, self.columns)} -> {cols(self.parent, self.parent_columns)}"


@dataclass(frozen=True)
class TablePlan:
    """How one table is generated.

    ``driver`` is the table's first foreign key: its per-parent child counts
    decide the row count. ``assigned`` are the other foreign keys, filled by
    mapping each row to a parent. ``implied`` are foreign keys whose columns are
    all copied from another relationship's parent. They are valid because that
    parent's own foreign key covers the same columns.
    ``self_reference`` is a foreign key to the table itself (an employee's
    manager), filled as a tree once the table's keys exist. ``deferred`` are
    foreign keys that close a cycle between tables, filled after every table's
    keys exist.
    """

    name: str
    driver: Relationship | None
    assigned: tuple[Relationship, ...] = ()
    implied: tuple[Relationship, ...] = ()
    self_reference: Relationship | None = None
    deferred: tuple[Relationship, ...] = ()

    @property
    def is_root(self) -> bool:
        """Whether the table has no foreign key and so its row count comes from the scale."""
        return self.driver is None


@dataclass(frozen=True)
class Plan:
    """Tables in generation order (parents first) and every relationship."""

    order: tuple[str, ...]
    tables: dict[str, TablePlan]
    relationships: tuple[Relationship, ...]
    children: dict[str, tuple[Relationship, ...]] = field(default_factory=dict)


def _relationships(config: SynthConfig) -> list[Relationship]:
    result = []
    for child, table in config.tables.items():
        for fk in table.foreign_keys:
            parent_columns = tuple(config.foreign_key_parent_columns(fk))
            name = f"{child}.{'+'.join(fk.columns)}->{fk.parent}.{'+'.join(parent_columns)}"
            result.append(Relationship(name, child, tuple(fk.columns), fk.parent, parent_columns, fk))
    return result


def _topological_order(config: SynthConfig, relationships: list[Relationship]) -> list[str]:
    parents: dict[str, set[str]] = {name: set() for name in config.tables}
    for rel in relationships:
        if rel.parent == rel.child or rel.spec.deferred:
            continue
        parents[rel.child].add(rel.parent)
    order: list[str] = []
    remaining = dict(parents)
    while remaining:
        # Sorted so that the order does not depend on how the config lists tables.
        ready = sorted(name for name, deps in remaining.items() if deps <= set(order))
        if not ready:
            cycle = _find_cycle(remaining)
            raise ConfigError(
                "foreign keys form a cycle: "
                + " -> ".join(cycle)
                + ". Tables in a cycle cannot all be generated parents first: mark one foreign key of the "
                "cycle with 'deferred: true' (usually the one that may be null, such as country.Capital -> "
                "city); it is filled after both tables exist"
            )
        order.extend(ready)
        for name in ready:
            del remaining[name]
    return order


def _find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """Return one cycle of ``graph`` (child -> parents) as a list of table names."""
    for start in sorted(graph):
        path = [start]
        seen = {start}
        node = start
        while True:
            nexts = sorted(p for p in graph.get(node, set()) if p in graph)
            if not nexts:
                break
            node = nexts[0]
            if node in seen:
                return path[path.index(node) :] + [node]
            path.append(node)
            seen.add(node)
    return sorted(graph)


def _covering_relationship(
    rel: Relationship, filled: dict[str, Relationship], by_child: dict[str, list[Relationship]]
) -> bool:
    """Check whether ``rel``'s columns, already filled from another parent, are valid through that parent's own key."""
    sources = {filled[column].name for column in rel.columns}
    if len(sources) != 1:
        return False
    source = filled[rel.columns[0]]
    # Child column c was copied from source.parent column p; p must reference rel.parent the same way.
    mapped = tuple(source.parent_columns[source.columns.index(column)] for column in rel.columns)
    for parent_rel in by_child.get(source.parent, []):
        if parent_rel.parent == rel.parent and parent_rel.parent_columns == rel.parent_columns:
            if parent_rel.columns == mapped:
                return True
    return False


def build_plan(config: SynthConfig) -> Plan:
    """Resolve relationships, order tables parents first and decide how each foreign key is filled."""
    relationships = _relationships(config)
    order = _topological_order(config, relationships)
    by_child: dict[str, list[Relationship]] = {}
    for rel in relationships:
        by_child.setdefault(rel.child, []).append(rel)

    tables: dict[str, TablePlan] = {}
    for name in order:
        own = by_child.get(name, [])
        self_refs = [rel for rel in own if rel.parent == name]
        deferred = tuple(rel for rel in own if rel.spec.deferred and rel.parent != name)
        if len(self_refs) > 1:
            raise ConfigError(
                f"table '{name}' has {len(self_refs)} foreign keys to itself "
                f"({', '.join(rel.describe() for rel in self_refs)}); one self-reference per table is supported"
            )
        self_reference = self_refs[0] if self_refs else None
        rels = [rel for rel in own if rel.parent != name and not rel.spec.deferred]
        used = {column for rel in rels for column in rel.columns}
        for extra in [*self_refs, *deferred]:
            shared = sorted(used & set(extra.columns))
            if shared:
                raise ConfigError(
                    f"foreign key {extra.describe()} shares column(s) {shared} with another foreign key of "
                    f"'{name}'; a self-reference or deferred key must have columns of its own"
                )
            used.update(extra.columns)
        if not rels:
            tables[name] = TablePlan(name, None, self_reference=self_reference, deferred=deferred)
            continue
        filled: dict[str, Relationship] = {}
        assigned: list[Relationship] = []
        implied: list[Relationship] = []
        for position, rel in enumerate(rels):
            overlap = [column for column in rel.columns if column in filled]
            if not overlap:
                if position > 0:
                    assigned.append(rel)
                for column in rel.columns:
                    filled[column] = rel
                continue
            if len(overlap) == len(rel.columns) and _covering_relationship(rel, filled, by_child):
                implied.append(rel)
                continue
            raise ConfigError(
                f"foreign key {rel.describe()} shares column(s) {overlap} with another foreign key of "
                f"'{name}', and its validity does not follow from that key's parent. Overlapping foreign keys "
                f"are supported only when the shared columns are all filled from a parent whose own foreign key "
                f"references '{rel.parent}' through the same columns. List the wider key first (for example the "
                f"composite key) or remove one of the two keys"
            )
        tables[name] = TablePlan(
            name, rels[0], tuple(assigned), tuple(implied), self_reference=self_reference, deferred=deferred
        )

    children: dict[str, tuple[Relationship, ...]] = {
        name: tuple(rel for rel in relationships if rel.parent == name) for name in order
    }
    return Plan(tuple(order), tables, tuple(relationships), children)
