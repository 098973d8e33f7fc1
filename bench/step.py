"""One ingest step or a build in its own process, as an Airflow task runs: prints its
result as JSON.

    python -m bench.step CONFIG ENTITY extract|validate|load [LOAD_ID]
    python -m bench.step CONFIG build AS_OF
    python -m bench.step CONFIG sync [AUDIENCE [DESTINATION]]
"""

from __future__ import annotations

import json
import sys
from datetime import date

from winback import ingest
from winback.config import load_config


def main(argv: list[str]) -> None:
    if argv[1] == "build":
        from winback.build.builder import build

        print(json.dumps(build(load_config(argv[0]), date.fromisoformat(argv[2])), default=str))
        return
    if argv[1] == "sync":
        from winback.sync.engine import sync

        print(json.dumps(sync(load_config(argv[0]), *argv[2:4]), default=str))
        return
    config_path, entity, step = argv[:3]
    config = load_config(config_path)
    if step == "extract":
        result = ingest.extract(config, entity)
    else:
        result = getattr(ingest, step)(config, entity, argv[3])
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
