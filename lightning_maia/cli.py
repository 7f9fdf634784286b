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
    bench.add_argument(
        "--suite", default="standard", help="which suite, where a benchmark has several (neurons)"
    )
    demo = commands.add_parser("demo", help="the end-to-end demo on the procedural world")
    demo.add_argument("--out", type=Path, default=Path("maia_demo"), help="output folder")
    demo.add_argument("--quick", action="store_true", help="a smaller run, for CI")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--cache-dir", type=Path, help="where the pretrained backbone is cached")
    _add_audit_parser(commands)
    report = commands.add_parser("report", help="re-render the HTML report from saved results")
    report.add_argument("results", type=Path, help="a results folder written by `audit`")
    report.add_argument("--out", type=Path, help="HTML file to write (default RESULTS/report.html)")
    report.add_argument("--title", default="lightning-maia report", help="the page title")
    return parser


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_audit_parser(commands: Any) -> None:
    from lightning_maia.agents.scientist_designers import DESIGNERS
    from lightning_maia.recipes._backend_registry import describe_backends

    audit = commands.add_parser(
        "audit",
        help="audit a trained model: interpret units, check spurious features, flag inputs",
        description="Exit codes: 0 every check passed, 1 a check failed, 2 usage or "
        "configuration error. Data yield display images in [0, 1]; --preprocess maps them to "
        "the model's input. The current folder is on the import path.",
    )
    source = audit.add_argument_group("model and data")
    source.add_argument(
        "--model",
        help="the model: a LightningModule or nn.Module class, or a function returning one, "
        "e.g. my_models.resnet (a module in the current folder) or pkg.module:Classifier",
    )
    source.add_argument(
        "--ckpt",
        type=Path,
        help="weights to load: a Lightning checkpoint or a state_dict file (default: the "
        "weights the model's constructor loads)",
    )
    source.add_argument("--config", type=Path, help="a LightningCLI config (model and data)")
    source.add_argument("--datamodule", help="LightningDataModule class path (its val data)")
    source.add_argument("--image-folder", type=Path, help="a folder of images (class subfolders)")
    source.add_argument("--image-size", type=int, default=224, help="image side for the folder")
    source.add_argument(
        "--preprocess",
        help="display images [0, 1] -> model input: none, imagenet, imagenet:SIZE, or a "
        "function path (default: none)",
    )
    source.add_argument(
        "--val-fraction",
        type=float,
        default=0.25,
        help="share of an image folder held out for the spurious task's refit (default 0.25)",
    )
    source.add_argument(
        "--class-names",
        type=_comma_list,
        help="comma-separated class names (default: the image folder's subfolders)",
    )
    what = audit.add_argument_group("what to check")
    what.add_argument("--units", nargs="+", required=True, help="unit specs, e.g. layer4:0-9")
    what.add_argument(
        "--tasks",
        type=_comma_list,
        default=["interpret"],
        help="comma-separated: interpret, spurious, flagging",
    )
    what.add_argument(
        "--strategy",
        choices=["top_active", "most_changed", "random"],
        help="pick --max-units of the units",
    )
    what.add_argument("--max-units", type=int, default=8)
    what.add_argument("--k", type=int, default=15, help="exemplars per unit")
    what.add_argument("--spurious-attributes", type=_comma_list, default=["background"])
    agent = audit.add_argument_group("agent and backends")
    agent.add_argument("--agent", default="scientist", help="scientist, vlm or vlm-code")
    agent.add_argument("--vlm-model", help="VLM model name (else OPENAI_MODEL)")
    agent.add_argument("--vlm-base-url", help="OpenAI-compatible endpoint (else OPENAI_BASE_URL)")
    agent.add_argument(
        "--describer", help=f"what describes images: {describe_backends('describer')}"
    )
    agent.add_argument(
        "--designer",
        choices=list(DESIGNERS),
        help="how the offline agent designs experiments (default: from the data)",
    )
    agent.add_argument(
        "--attributes",
        type=Path,
        help="CSV of the image folder's attributes: a `file` column, one column per attribute",
    )
    agent.add_argument("--generator", help=f"image designer: {describe_backends('generator')}")
    agent.add_argument("--editor", help=f"image editor: {describe_backends('editor')}")
    agent.add_argument(
        "--vocabulary", type=_comma_list, default=[], help="comma-separated concept terms"
    )
    agent.add_argument("--generator-pipeline", help="same as --generator diffusers:PATH")
    agent.add_argument("--editor-pipeline", help="same as --editor diffusers:PATH")
    gates = audit.add_argument_group("CI gates")
    gates.add_argument(
        "--fail-on",
        action="append",
        default=[],
        help="fail when a condition holds, e.g. 'spurious_units>0' (repeatable)",
    )
    gates.add_argument("--baseline", type=Path, help="earlier audit results, for label_drift")
    audit.add_argument("--out", type=Path, default=Path("maia_audit"), help="output folder")
    audit.add_argument("--seed", type=int, default=0)


def _print_table(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}")
    width = max((len(k) for k in figures), default=0)
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = json.dumps(value, default=str)
        print(f"  {key:<{width}}  {value}")


def _run_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from lightning_maia.bench import get_benchmark
    from lightning_maia.bench._provenance import git_state, write_bench_json

    # The checkout as it was when the code was imported, not after edits made while it ran.
    git = git_state()
    for name, file_stem, chosen in _bench_jobs(args):
        run = get_benchmark(name)
        # Only benchmarks that run an agent take --agent.
        parameters = inspect.signature(run).parameters
        extra = {key: chosen[key] for key in ("agent", "suite") if key in parameters}
        figures = run(quick=args.quick, seed=args.seed, **extra)
        if args.out is not None:
            out = args.out / f"{file_stem}.json" if args.name == "all" else args.out
            write_bench_json(out, figures, seed=args.seed, argv=argv, git=git)
        _print_table(file_stem, figures)
    return EXIT_OK


#: Benchmarks that ``bench all`` runs more than once: name -> (file stem, option overrides).
_EXTRA_RUNS_OF_ALL: dict[str, list[tuple[str, dict[str, str]]]] = {
    "neurons": [("neurons_hard", {"suite": "hard"})],
    "spurious": [("spurious_shortcut", {"suite": "shortcut"})],
}


def _bench_jobs(args: argparse.Namespace) -> list[tuple[str, str, dict[str, str]]]:
    """(benchmark, file stem, options) for each run: one for a name; for ``all``, every
    benchmark, plus the other suites whose files the README quotes (``neurons_hard``,
    ``spurious_shortcut``)."""
    from lightning_maia.bench import BENCHMARKS

    chosen = {"agent": args.agent, "suite": args.suite}
    if args.name != "all":
        return [(args.name, args.name, chosen)]
    jobs = []
    for name in sorted(BENCHMARKS):
        jobs.append((name, name, chosen))
        jobs += [
            (name, stem, {**chosen, **more}) for stem, more in _EXTRA_RUNS_OF_ALL.get(name, [])
        ]
    return jobs


def _run_audit(args: argparse.Namespace) -> int:
    from lightning_maia.recipes._audit import AuditOptions, run_audit

    # A model or preprocess module beside the user (``my_models.py``) imports without PYTHONPATH.
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)
    options = AuditOptions(
        units=args.units,
        model=args.model,
        ckpt=args.ckpt,
        config=args.config,
        datamodule=args.datamodule,
        image_folder=args.image_folder,
        image_size=args.image_size,
        preprocess=args.preprocess,
        val_fraction=args.val_fraction,
        describer=args.describer,
        designer=args.designer,
        attributes=args.attributes,
        generator=args.generator,
        editor=args.editor,
        vocabulary=args.vocabulary,
        tasks=args.tasks,
        agent=args.agent,
        vlm_model=args.vlm_model,
        vlm_base_url=args.vlm_base_url,
        generator_pipeline=args.generator_pipeline,
        editor_pipeline=args.editor_pipeline,
        class_names=args.class_names,
        strategy=args.strategy,
        max_units=args.max_units,
        k=args.k,
        seed=args.seed,
        out=args.out,
        fail_on=args.fail_on,
        baseline=args.baseline,
        spurious_attributes=args.spurious_attributes,
    )
    outcome = run_audit(options)
    for check in outcome.checks:
        mark = "PASS" if check.passed else "FAIL"
        print(f"{mark}  {check.name}: {check.message}")
    print(f"results, report and JUnit XML in {outcome.out}")
    return EXIT_OK if outcome.exit_code == 0 else EXIT_CHECK_FAILED


def _run_demo(args: argparse.Namespace) -> int:
    from lightning_maia.recipes._demo import print_summary, run_demo

    summary = run_demo(args.out, quick=args.quick, seed=args.seed, cache_dir=args.cache_dir)
    print_summary(summary)
    return EXIT_OK


def _run_report(args: argparse.Namespace) -> int:
    from lightning_maia.reporting._html_report import write_report
    from lightning_maia.reporting._results_store import load_audit, load_results

    sections, meta = load_results(args.results)
    target = args.out or (args.results / "report.html")
    audit = load_audit(args.results)
    print(write_report(target, sections, title=args.title, meta=meta, audit=audit))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "bench":
            return _run_bench(args, sys.argv if argv is None else ["lightning-maia", *argv])
        if args.command == "demo":
            return _run_demo(args)
        if args.command == "audit":
            return _run_audit(args)
        if args.command == "report":
            return _run_report(args)
    except MaiaError as error:
        print(f"lightning-maia: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
