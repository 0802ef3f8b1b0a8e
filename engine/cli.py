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
    export = sub.add_parser(
        "export", help="export a mapping model to ONNX with Deepness metadata (job exportmodel)"
    )
    export.add_argument("model", help="mapping model (.safetensors)")
    export.add_argument("output", help="ONNX file to write (.onnx)")
    export.add_argument("--region", default=None, help="multi-region models: the region")
    export.add_argument("--tile-size", type=int, default=None, help="fixed input tile (px)")
    export.add_argument("--dynamic-size", action="store_true", help="free height and width")
    args = parser.parse_args(argv)
    if args.command == "export":
        return run_export_command(args)
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


def run_export_command(args: argparse.Namespace) -> int:
    """Run the ``exportmodel`` job from ``slidewise-engine export`` arguments."""
    from slidewise.engine import worker

    params = {
        "MODEL": args.model,
        "OUTPUT": args.output,
        "REGION": args.region,
        "TILE_SIZE": args.tile_size,
        "DYNAMIC_SIZE": args.dynamic_size,
    }
    job = {"job": "exportmodel", "params": {k: v for k, v in params.items() if v is not None}}
    return worker.run(job, Reporter(sys.stdout))


if __name__ == "__main__":
    sys.exit(main())
