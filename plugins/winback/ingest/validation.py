"""Great Expectations suites per entity, built in code, and running them on a chunk.

Every expectation carries a rule name in its meta; `check` returns, per rule, the
positions of the rows that broke it, so bad rows can be quarantined with reasons while
the good ones load. GX is imported lazily: it takes seconds to import.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from winback.ingest.canonical import (
    IDENTITY_COLUMN,
    OUT_OF_RANGE_SUFFIX,
    RAW_SUFFIX,
    UNPARSED_SUFFIX,
)
from winback.ingest.settings import ValidationSettings
from winback.schema import Entity, iso_currencies

# A plausible address: something@domain.tld, no spaces, one "@".
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]{2,}$"
# A plausible phone: 10 to 15 digits, optionally "+", with the usual separators.
# Strict parsing (E.164 per region) is the destinations' job, where the format matters.
# No look-arounds: pandas then matches with Arrow's RE2 instead of Python row by row.
PHONE_PATTERN = r"^\+?[\s().\-]*(?:\d[\s().\-]*){10,15}$"
SCORE_RANGE = (1, 10)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    expectation: str  # GX expectation class name
    kwargs: dict[str, Any] = field(default_factory=dict)
    # The column set to null when a row breaks the rule (the row still loads), or None:
    # the row is quarantined whole. See Column.field_level.
    field: str | None = None


def row_rules(entity: Entity, settings: ValidationSettings, now: datetime | None = None) -> list[Rule]:
    """The per-row rules of an entity (everything except key uniqueness)."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    earliest = pd.Timestamp(settings.earliest_timestamp)
    latest = pd.Timestamp(now + settings.future_tolerance)
    rules: list[Rule] = []
    for column in entity.columns:
        name = column.name
        typed = column.type != "text"
        present_in = name + RAW_SUFFIX if typed else name
        rules_before = len(rules)
        if column.required and not (name in entity.key and entity.derived_key_from):
            rules.append(Rule(f"{name}_present", f"{name}: missing", "ExpectColumnValuesToNotBeNull",
                              {"column": present_in}))
        if typed:
            rules.append(Rule(f"{name}_parses", f"{name}: not a valid {column.type}", "ExpectColumnValuesToBeNull",
                              {"column": name + UNPARSED_SUFFIX}))
        if column.magnitude_checked:
            rules.append(Rule(f"{name}_in_range", f"{name}: infinite or too large for the column",
                              "ExpectColumnValuesToBeNull", {"column": name + OUT_OF_RANGE_SUFFIX}))
        if column.type == "timestamp":
            rules.append(Rule(
                f"{name}_in_range",
                f"{name}: before {earliest.date()} or more than {settings.future_tolerance} in the future",
                "ExpectColumnValuesToBeBetween",
                {"column": name, "min_value": earliest, "max_value": latest},
            ))
        if column.type in ("money", "number", "integer") and column.check != "score":
            rules.append(Rule(f"{name}_non_negative", f"{name}: negative", "ExpectColumnValuesToBeBetween",
                              {"column": name, "min_value": 0}))
        if column.allowed is not None:
            rules.append(Rule(
                f"{name}_allowed", f"{name}: not one of {', '.join(sorted(column.allowed))}",
                "ExpectColumnValuesToBeInSet", {"column": name, "value_set": sorted(column.allowed)},
            ))
        if column.check == "currency":
            codes = settings.currencies or sorted(iso_currencies())
            rules.append(Rule(f"{name}_valid", f"{name}: not an allowed ISO 4217 code",
                              "ExpectColumnValuesToBeInSet", {"column": name, "value_set": list(codes)}))
        elif column.check == "email":
            rules.append(Rule(f"{name}_plausible", f"{name}: not a plausible address",
                              "ExpectColumnValuesToMatchRegex", {"column": name, "regex": EMAIL_PATTERN}))
        elif column.check == "phone":
            rules.append(Rule(f"{name}_plausible", f"{name}: not a plausible phone number",
                              "ExpectColumnValuesToMatchRegex", {"column": name, "regex": PHONE_PATTERN}))
        elif column.check == "score":
            low, high = SCORE_RANGE
            rules.append(Rule(f"{name}_in_range", f"{name}: not between {low} and {high}",
                              "ExpectColumnValuesToBeBetween",
                              {"column": name, "min_value": low, "max_value": high}))
        if column.field_level:
            rules[rules_before:] = [replace(rule, field=name) for rule in rules[rules_before:]]
    if entity.one_of:
        rules.append(Rule(
            f"{'_or_'.join(entity.one_of)}_present", f"none of {', '.join(entity.one_of)} given",
            "ExpectColumnValuesToNotBeNull", {"column": IDENTITY_COLUMN},
        ))
    if entity.name == "orders":
        rules.append(Rule(
            "delivered_after_created", "delivered_at: before created_at",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "delivered_at", "column_B": "created_at", "or_equal": True,
             "ignore_row_if": "either_value_is_missing"},
            field="delivered_at" if entity.column("delivered_at").field_level else None,
        ))
    return rules


def key_rule(entity: Entity) -> Rule:
    """Keys unique within the batch (checked after exact duplicates and older versions go)."""
    name = "_".join(entity.key) + "_unique"
    description = f"{', '.join(entity.key)}: several different records with the same key and version"
    if len(entity.key) == 1:
        return Rule(name, description, "ExpectColumnValuesToBeUnique", {"column": entity.key[0]})
    return Rule(name, description, "ExpectCompoundColumnsToBeUnique", {"column_list": list(entity.key)})


class Validator:
    """One ephemeral GX context with a pandas asset; validates frames against rule lists."""

    def __init__(self) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        # GX logs its own internals at INFO; our log lines say what was checked.
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every batch below this size by hashing the whole frame; we
        # never read the fingerprint and it cost 40% of validation time on 1M rows.
        pandas_execution_engine.HASH_THRESHOLD = 0

        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = self._context.data_sources.add_pandas("winback").add_dataframe_asset("chunk")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    def suites(self, name: str, rules: list[Rule]) -> Suites:
        """The rules as GX suites, one per set of columns read (see Suites)."""
        groups: dict[tuple[str, ...], list[Rule]] = {}
        for rule in rules:
            groups.setdefault(tuple(rule_columns([rule])), []).append(rule)
        return Suites([
            (list(columns), self._suite(f"{name}.{'+'.join(columns)}", members))
            for columns, members in groups.items()
        ])

    def _suite(self, name: str, rules: list[Rule]):
        suite = self._gx.ExpectationSuite(name=name)
        for rule in rules:
            expectation_class = getattr(self._gx.expectations, rule.expectation)
            suite.add_expectation(expectation_class(**rule.kwargs, meta={"rule": rule.name}))
        return suite

    def check(self, frame: pd.DataFrame, suites: Suites) -> dict[str, np.ndarray]:
        """Positions (0-based, of `frame`) of the rows failing each rule; only failing rules."""
        if frame.empty:
            return {}
        frame = frame.reset_index(drop=True)
        failures: dict[str, np.ndarray] = {}
        for columns, suite in suites.groups:
            # A narrow frame per suite: GX copies the whole frame for every expectation
            # (to drop nulls), which made one wide suite 3x slower.
            batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame[columns]})
            result = batch.validate(
                suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": 0}
            )
            failures.update(_failures(result))
        return failures


@dataclass(frozen=True)
class Suites:
    """GX suites of an entity's rules, grouped by the columns they read."""

    groups: list[tuple[list[str], object]]


def _failures(result) -> dict[str, np.ndarray]:
    failures: dict[str, np.ndarray] = {}
    for item in result.results:
        rule = item.expectation_config.meta["rule"]
        if item.exception_info and item.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"Great Expectations could not evaluate rule {rule}: {item.exception_info.get('exception_message')}"
            )
        if item.success:
            continue
        positions = np.asarray(item.result.get("unexpected_index_list") or [], dtype=np.int64)
        if positions.size:
            failures[rule] = np.unique(positions)
    return failures


@functools.cache
def validator() -> Validator:
    return Validator()


def rule_descriptions(rules: list[Rule]) -> dict[str, str]:
    return {rule.name: rule.description for rule in rules}


def rule_columns(rules: list[Rule]) -> list[str]:
    """The columns a list of rules reads, in first-use order."""
    columns: list[str] = []
    for rule in rules:
        for key in ("column", "column_A", "column_B"):
            if key in rule.kwargs:
                columns.append(rule.kwargs[key])
        columns.extend(rule.kwargs.get("column_list", []))
    return list(dict.fromkeys(columns))


def over_limit(checked: int, failed: int, nulled_per_rule: dict[str, int], limit: float) -> tuple[float, dict[str, int]]:
    """The batch's bad share, and the field-level rules that would set more than `limit`
    of its values to null (a mapping mistake, not bad data). It loads when the share is
    at most the limit and no field rule is over it."""
    rows = checked or 1
    return failed / rows, {rule: n for rule, n in nulled_per_rule.items() if n / rows > limit}
