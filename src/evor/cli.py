"""The `evor` command line: a thin layer over the Python API.

User mistakes (bad files, unknown names, invalid settings) print one paragraph and exit with code 2;
only genuine bugs show a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

import evor  # noqa: F401  (MUJOCO_GL)
from evor.errors import ConfigError, EvorError
from evor.interrupts import dropped_interrupts_reraised


def _list_parser(cast, kind: str):
    """An argparse type for comma-separated values, e.g. '1,4,16,64'."""

    def parse(text: str):
        try:
            values = [cast(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got '{text}'") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of {kind}")
        return values

    return parse


_int_list = _list_parser(int, "integers")
_float_list = _list_parser(float, "numbers")


# --------------------------------------------------------------------------- data


def cmd_data_generate(args):
    from evor.data.generate import generate_dataset

    paths = generate_dataset(args.dataset, out_dir=args.out, episodes=args.episodes, workers=args.workers,
                             seed=args.seed, show_progress=not args.quiet)
    for kind, path in paths.items():
        print(f"{kind:8s} {path}")


def cmd_data_list(args):
    from evor.data.dataset import list_datasets
    from evor.data.files import default_data_dir

    rows = list_datasets(args.dir)
    directory = args.dir or default_data_dir()
    if not rows:
        print(f"No datasets in {directory}.")
        return
    print(f"Datasets in {directory}:")
    for row in rows:
        facts = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("name",) and v is not None)
        print(f"  {row['name']}: {facts}")


def cmd_data_import(args):
    from evor.data.dataset import import_dataset, save_dataset

    dataset = import_dataset(args.file)
    print(json.dumps(dataset.summary(), indent=2))
    if args.out:
        print(f"saved validated dataset to {save_dataset(dataset, args.out)}")


def cmd_data_stats(args):
    from evor.data.dataset import load_task

    _, train, val = load_task(args.task, data_dir=args.dir, env=False)
    print(json.dumps({"train": train.summary(), "val": val.summary()}, indent=2))


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evor", description="Offline RL with expressive value learning (EVOR).")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate, list and import datasets").add_subparsers(dest="data_command",
                                                                                          required=True)
    gen = data.add_parser("generate", help="generate an OGBench dataset with the oracles in the ogbench wheel")
    gen.add_argument("dataset", help="e.g. cube-single-play-v0")
    gen.add_argument("--episodes", type=int, default=None, help="training episodes (default: the upstream recipe)")
    gen.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", default=None, help="output directory (default ~/.ogbench/data or $OGBENCH_DATA_DIR)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=cmd_data_generate)

    lst = data.add_parser("list", help="datasets present, sizes and provenance")
    lst.add_argument("--dir", default=None)
    lst.set_defaults(func=cmd_data_list)

    imp = data.add_parser("import", help="validate a user's .npz/HDF5 dataset (D4RL or Minari keys)")
    imp.add_argument("file")
    imp.add_argument("--out", default=None, help="write the validated dataset as .npz here")
    imp.set_defaults(func=cmd_data_import)

    stats = data.add_parser("stats", help="load an OGBench task's datasets and print their statistics")
    stats.add_argument("task", help="e.g. cube-single-play-singletask-task1-v0")
    stats.add_argument("--dir", default=None)
    stats.set_defaults(func=cmd_data_stats)

    from evor import commands  # training, evaluation and the quickstart

    commands.add_commands(sub, _int_list, _float_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Importing the commands' modules takes seconds; a Ctrl-C then can land where Python drops it.
    with dropped_interrupts_reraised():
        try:
            args = build_parser().parse_args(argv)
            code = args.func(args)  # commands that answer a question (evor diff) return their exit code
        except EvorError as exc:
            print(f"evor: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("evor: interrupted; files being written were not left behind.", file=sys.stderr)
            return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "build_parser", "ConfigError"]
