"""Schema migrations from a shell, e.g. to write the next one after changing ``models.py``.

Commands::

    python -m pipeline.db upgrade  sqlite:///geoaudit.db
    python -m pipeline.db current  postgresql://postgres@localhost/geoaudit
    python -m pipeline.db check    postgresql://postgres@localhost/geoaudit   # exit 1 on drift
    python -m pipeline.db revision sqlite:///scratch.db -m "add column x"
"""

from __future__ import annotations

import argparse
import sys

from pipeline.db.engine import make_engine
from pipeline.db.migrate import current_revision, new_revision, schema_diff, upgrade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.db",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["upgrade", "current", "check", "revision"])
    parser.add_argument("url", help="SQLAlchemy database URL")
    parser.add_argument("-m", "--message", help="revision message (for 'revision')")
    args = parser.parse_args(argv)
    engine = make_engine(args.url)
    try:
        match args.command:
            case "upgrade":
                upgrade(engine)
                print(current_revision(engine))
            case "current":
                print(current_revision(engine) or "(not migrated)")
            case "check":
                diff = schema_diff(engine)
                for item in diff:
                    print(item)
                return 1 if diff else 0
            case "revision":
                if not args.message:
                    parser.error("revision needs -m MESSAGE")
                upgrade(engine)
                print(new_revision(engine, args.message))
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
