"""Command line of the engine: ``slidewise-engine``."""

from __future__ import annotations

import argparse
import json
import sys

from slidewise.engine.core.protocol import Reporter


def main(argv: list[str] | None = None) -> int:
    """Run a job file, or print the engine check as JSON."""
    parser = argparse.ArgumentParser(prog="slidewise-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a job description (JSON file, '-' for stdin)")
    run.add_argument("job")
    sub.add_parser("check", help="print what this engine environment can do")
    sub.add_parser("jobs", help="list the engine's jobs")
    args = parser.parse_args(argv)
    if args.command == "check":
        from slidewise.engine.maintenance.checkengine import engine_report

        print(json.dumps(engine_report(), indent=2))
        return 0
    if args.command == "jobs":
        from slidewise.engine.jobs import JOBS

        print("\n".join(sorted(JOBS)))
        return 0
    from slidewise.engine import worker

    if args.job == "-":
        job = json.load(sys.stdin)
        return worker.run(job, Reporter(sys.stdout))
    return worker.main([args.job])


if __name__ == "__main__":
    sys.exit(main())
