"""The operators' command line: `python -m winback --config FILE check|ingest|quarantine|build|sync|report|generate|demo`.

Commands call the same functions as the DAG tasks. Expected failures (bad
configuration, a broken source file, too many bad rows) print one clear message and
exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime
from pathlib import Path

from winback.config import CONFIG_ENV, ConfigError, default_config_path, load_config

log = logging.getLogger("winback")


def _moment(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or time") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m winback", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=None,
        help=f"configuration file (default: ${CONFIG_ENV} or {default_config_path()})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="extract, validate and load the configured sources")
    ingest.add_argument("--entity", action="append", help="only this entity (repeatable)")
    ingest.add_argument("--start", type=_moment, help="read records updated from (ISO 8601, UTC if naive)")
    ingest.add_argument("--end", type=_moment, help="read records updated before (ISO 8601, UTC if naive)")
    ingest.add_argument("--reload", action="store_true",
                        help="read again what was loaded before (needs --entity): all files, or those registered "
                             "as modified in [--start, --end); a database's or API's window from --start (default "
                             "ingest.start_date), whatever its watermark")

    quarantine = commands.add_parser("quarantine", help="re-check or purge quarantined records")
    actions = quarantine.add_subparsers(dest="action", required=True)
    recheck = actions.add_parser("recheck", help="validate quarantined rows again under the current mapping and "
                                                 "rules: load the ones that pass, keep the others")
    recheck.add_argument("--entity", action="append", help="only this entity (repeatable)")
    purge = actions.add_parser("purge", help="delete quarantine rows quarantined before a day")
    purge.add_argument("--before", type=_moment, required=True,
                       help="delete rows first quarantined before this (ISO 8601 day or time, UTC if naive)")
    purge.add_argument("--entity", action="append", help="only this entity (repeatable)")

    check = commands.add_parser(
        "check", help="read every source through its mapping, load nothing, and say what a load would do "
                      "and what the build would lack; exit 2 if an entity would not load")
    check.add_argument("--entity", action="append", help="only this entity (repeatable)")
    check.add_argument("--sample", type=int, help="read at most this many rows per entity (fast)")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")

    build = commands.add_parser("build", help="rebuild the segment marts from the staging tables")
    build.add_argument("--as-of", type=date.fromisoformat, dest="as_of",
                       help="point-in-time rebuild: use only data dated on or before this day (default: today)")

    report = commands.add_parser("report", help="write the report page (one self-contained HTML file)")
    report.add_argument("--out", type=Path, default=None,
                        help="folder of index.html (default: build.report_dir, data/report)")

    generate = commands.add_parser("generate", help="write a realistic sample shop to files")
    generate.add_argument("--out", type=Path, default=Path("data/shop"), help="folder (default: data/shop)")
    generate.add_argument("--scale", default="demo", help="preset: demo (20k customers) or large (1M)")
    generate.add_argument("--customers", type=int, help="override the preset's number of customers")
    generate.add_argument("--months", type=int, help="months of history")
    generate.add_argument("--end", type=date.fromisoformat, help="last day of history (default: today)")
    generate.add_argument("--seed", type=int, help="random seed (same seed, same files)")
    generate.add_argument("--bad-share", type=float, help="share of deliberately bad rows")

    sync = commands.add_parser("sync", help="push audiences to their destinations, sending only what changed")
    sync.add_argument("--audience", help="only this audience")
    sync.add_argument("--destination", help="only this destination")
    sync.add_argument("--dry-run", action="store_true", dest="dry_run", default=None,
                      help="write the requests to files; send nothing, change no state")

    commands.add_parser("pools", help="print the Airflow pools the sync needs (JSON for `airflow pools import`)")

    demo = commands.add_parser("demo", help="generate the sample shop and run the DAGs on it")
    demo.add_argument("--regenerate", action="store_true", help="write the sample shop again")
    demo.add_argument("--campaign", action="store_true",
                      help="live through a call campaign on a simulated clock and measure its lift "
                           "(data/campaign/; docs/measurement.md)")
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _configured(config, entities: list[str] | None) -> None:
    unknown = sorted(set(entities or []) - set(config.sources))
    if unknown:
        raise ConfigError(f"--entity {', '.join(unknown)}: not configured under sources")


def cmd_ingest(args) -> int:
    from winback.ingest import IngestError, ingest

    config = load_config(args.config)
    _configured(config, args.entity)
    if args.reload and not args.entity:
        raise IngestError("--reload reads everything of an entity again: name it with --entity")
    results = ingest(config, args.entity, args.start, args.end, reload=args.reload)
    for r in results:
        print(
            f"{r['entity']:>15}: {r['rows']:>9} read, {r['rows_valid']:>9} valid, "
            f"{r['rows_quarantined']:>7} quarantined, {r['inserted']:>9} new, {r['updated']:>7} updated"
        )
    return 0


def cmd_check(args) -> int:
    import json

    from winback.ingest.check import check, format_report

    config = load_config(args.config)
    _configured(config, args.entity)
    if args.sample is not None and args.sample < 1:
        raise ConfigError("--sample must be at least 1")
    report = check(config, args.entity, args.sample)
    print(json.dumps(report.as_dict(), indent=2, default=str) if args.json else format_report(report, config))
    return 0 if report.ok else 2


def cmd_quarantine(args) -> int:
    from winback.ingest.recheck import purge, recheck_entities
    from winback.schema import ENTITIES

    config = load_config(args.config)
    if args.action == "purge":
        # Rows of an entity no longer configured may be purged too.
        unknown = sorted(set(args.entity or []) - set(ENTITIES))
        if unknown:
            raise ConfigError(f"--entity {', '.join(unknown)}: no such entity ({', '.join(ENTITIES)})")
        purged = purge(config, args.before, args.entity)
        for entity, rows in purged.items():
            print(f"{entity:>15}: {rows:>9} purged")
        if not purged:
            print(f"nothing was quarantined before {args.before.isoformat(sep=' ')}")
        return 0
    _configured(config, args.entity)
    for r in recheck_entities(config, args.entity):
        if not r["rechecked"]:
            print(f"{r['entity']:>15}: nothing quarantined to re-check")
            continue
        still = r["still_quarantined"]
        rules = ", ".join(f"{rule} {n}" for rule, n in r["failed_per_rule"].items())
        print(f"{r['entity']:>15}: {r['rechecked']:>9} rechecked, {r['released']:>9} released, "
              f"{still:>7} still quarantined{f' ({rules})' if still else ''}, {r['inserted']:>9} new, "
              f"{r['updated']:>7} updated")
    return 0


def cmd_build(args) -> int:
    from winback.build import build

    summary = build(load_config(args.config), args.as_of)
    print(f"build {summary['build_id']} as of {summary['as_of']}: {summary['customers']} customers "
          f"in {summary['seconds']:.1f}s")
    for stage, count in sorted(summary["stage_counts"].items(), key=lambda item: -item[1]):
        print(f"{stage:>15}: {count:>9}")
    if summary["alert"]:
        print(f"alert: {summary['alert']}")
    if "measurement" in summary:  # live builds: campaign_lift's verdicts (docs/measurement.md)
        verdicts = summary["measurement"]["verdicts"]
        print("campaign_lift: " + ", ".join(f"{count} {verdict}" for verdict, count in verdicts.items()))
    return 0


def cmd_report(args) -> int:
    from winback.report import write_report

    written = write_report(load_config(args.config), args.out)
    print(f"report as of {written['as_of'] or '(no build yet)'} with {written['figures']} charts: {written['path']}")
    return 0


def cmd_sync(args) -> int:
    from winback.sync import format_runs, sync

    runs = sync(load_config(args.config), args.audience, args.destination, dry_run=args.dry_run)
    print(format_runs(runs))
    return 0 if all(r["status"] == "succeeded" for r in runs) else 1


def cmd_pools(args) -> int:
    import json

    from winback.sync import pools

    print(json.dumps(pools(load_config(args.config).destinations), indent=2))
    return 0


def cmd_generate(args) -> int:
    from winback.sample_shop import generate_shop, spec_for

    config = load_config(args.config) if args.config or default_config_path().exists() else None
    out = config.resolve(args.out) if config else args.out
    spec = spec_for(
        args.scale, customers=args.customers, months=args.months, end=args.end,
        seed=args.seed, bad_share=args.bad_share,
    )
    manifest = generate_shop(out, spec, progress=log.info)
    for entity, facts in manifest["entities"].items():
        print(f"{entity:>15}: {facts['rows']:>10} rows in {facts['files']:>4} files")
    print(f"sample shop written to {out}")
    return 0


def cmd_demo(args) -> int:
    if args.campaign:
        from winback.campaign_demo import run_campaign_demo

        run_campaign_demo(load_config(args.config))
        return 0
    from winback.demo import run_demo

    return run_demo(load_config(args.config), regenerate=args.regenerate)


COMMANDS = {"check": cmd_check, "ingest": cmd_ingest, "quarantine": cmd_quarantine, "build": cmd_build,
            "sync": cmd_sync, "report": cmd_report, "pools": cmd_pools, "generate": cmd_generate, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    from winback.build import BuildError
    from winback.credentials import SecretError
    from winback.ingest import (
        IngestError,
        MappingError,
        SourceError,
        ValidationThresholdError,
    )
    from winback.sync import SyncError
    from winback.warehouse import WarehouseLocked

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, SourceError, MappingError, ValidationThresholdError, IngestError, SecretError,
            WarehouseLocked, BuildError, SyncError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
