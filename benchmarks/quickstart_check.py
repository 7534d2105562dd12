"""Re-check the quickstart after changing a default: run `evor quickstart` once per seed, each from
scratch in its own directory (data generation included, as a new user runs it), and print success per N
for every seed with each run's wall time. The claim to check: success rises from N = 1 to the largest N
on every seed, and each run takes under 15 minutes on a 2-core machine (run it on an idle one).

    python benchmarks/quickstart_check.py --seeds 0,1,2 --out runs/quickstart-check
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/quickstart-check")
    parser.add_argument("--keep-data", action="store_true",
                        help="reuse the first seed's dataset (faster; the wall times then leave generation out)")
    args = parser.parse_args()
    rows = []
    for index, seed in enumerate(int(s) for s in args.seeds.split(",")):
        out = Path(args.out) / f"seed{seed}"
        if args.keep_data and index > 0 and not (out / "data").exists():
            out.mkdir(parents=True, exist_ok=True)
            (out / "data").symlink_to((Path(args.out) / f"seed{args.seeds.split(',')[0]}" / "data").resolve())
        started = time.time()
        subprocess.run([sys.executable, "-m", "evor.cli", "quickstart", "--out", str(out), "--seed", str(seed)],
                       check=True)
        minutes = (time.time() - started) / 60
        results = json.loads((out / "run" / "quickstart_eval.json").read_text())["results"]
        success = {r["settings"]["num_candidates"]: r["success_rate"] for r in results}
        rows.append({"seed": seed, "minutes": minutes, "success": success, "episodes": results[0]["episodes"]})
        print(json.dumps(rows[-1]), flush=True)
    ns = sorted(rows[0]["success"])
    print(f"\n| seed | {' | '.join(f'N = {n}' for n in ns)} | rises from N = {ns[0]} to N = {ns[-1]} | minutes |")
    print("|---|" + "---|" * (len(ns) + 2))
    for r in rows:
        rises = r["success"][ns[-1]] > r["success"][ns[0]]
        cells = " | ".join(f"{r['success'][n]:.2f}" for n in ns)
        print(f"| {r['seed']} | {cells} | {'yes' if rises else 'NO'} | {r['minutes']:.1f} |")
    means = [sum(r["success"][n] for r in rows) / len(rows) for n in ns]
    cells = " | ".join(f"{m:.2f}" for m in means)
    print(f"| mean | {cells} | | {max(r['minutes'] for r in rows):.1f} (max) |")
    print(f"\n{rows[0]['episodes']} evaluation episodes per N and seed.")


if __name__ == "__main__":
    main()
