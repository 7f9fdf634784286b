"""The ``lightning-maia`` command: ``bench`` (and, as they land, ``demo``, ``audit``, ``report``).

Exit codes: 0 pass, 1 a check failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_maia.errors import MaiaError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-maia",
        description="MAIA interpretability agents for PyTorch Lightning models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    from lightning_maia.bench import BENCHMARKS

    bench = commands.add_parser("bench", help="run a benchmark and write its figures as JSON")
    bench.add_argument("name", choices=[*sorted(BENCHMARKS), "all"], help="which benchmark")
    bench.add_argument("--out", type=Path, help="JSON file to write (for `all`: a directory)")
    bench.add_argument("--quick", action="store_true", help="a smaller version, for CI")
    bench.add_argument("--seed", type=int, default=0, help="seed for everything random")
    bench.add_argument(
        "--agent", default="scientist", help="the agent a benchmark runs, where it runs one"
    )
    return parser


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(partial, path)


def _print_table(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}")
    width = max((len(k) for k in figures), default=0)
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = json.dumps(value, default=str)
        print(f"  {key:<{width}}  {value}")


def _run_bench(args: argparse.Namespace) -> int:
    from lightning_maia.bench import BENCHMARKS, get_benchmark

    names = sorted(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        run = get_benchmark(name)
        # Only benchmarks that run an agent take --agent.
        extra = {"agent": args.agent} if "agent" in inspect.signature(run).parameters else {}
        figures = run(quick=args.quick, seed=args.seed, **extra)
        if args.out is not None:
            out = args.out / f"{name}.json" if args.name == "all" else args.out
            _write_json_atomically(out, figures)
        _print_table(name, figures)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "bench":
            return _run_bench(args)
    except MaiaError as error:
        print(f"lightning-maia: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
