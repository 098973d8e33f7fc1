"""One ingest step in its own process, as an Airflow task runs: prints its result as JSON.

    python -m bench.step CONFIG ENTITY extract|validate|load [LOAD_ID]
"""

from __future__ import annotations

import json
import sys

from winback import ingest
from winback.config import load_config


def main(argv: list[str]) -> None:
    config_path, entity, step = argv[:3]
    config = load_config(config_path)
    if step == "extract":
        result = ingest.extract(config, entity)
    else:
        result = getattr(ingest, step)(config, entity, argv[3])
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
