"""Wall time of scoring one new patient from one GM map: ``python -m src.predict input=<image>``.

Times the whole command (median of ``--repeats`` runs) with and without the HTML card, and the Python
start-up plus imports alone (``python -c "import src.predict"``), so that the time of the work itself (image
checks, features, model load and verification, scoring, regions, card) is their difference. The experiment
must have been trained into ``--output`` (``python -m src.train +experiment=<name> paths.output=<output>``).

Usage::

    python benchmarks/predict_patient.py --experiment gm_only --output outputs \\
        --image data/cohorts/external_a/derivatives/simvbm/sub-ea002/anat/*label-GM_probseg.nii.gz \\
        --patient age=35.5 sex=F site=exta
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--output", default="outputs", help="paths.output of the trained experiment")
    parser.add_argument("--image", required=True)
    parser.add_argument("--patient", nargs="*", default=[], help="covariates as key=value")
    parser.add_argument("--tracking-root", default="mlruns")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = [
            sys.executable,
            "-m",
            "src.predict",
            f"+experiment={args.experiment}",
            f"paths.output={args.output}",
            f"tracking.root={args.tracking_root}",
            f"input={args.image}",
            f"predict.dir={tmp}",
            f"hydra.run.dir={tmp}/hydra",
            *[f"patient.{kv}" for kv in args.patient],
        ]
        startup = _timed([sys.executable, "-c", "import src.predict"], args.repeats)
        with_card = _timed(base, args.repeats)
        without_card = _timed([*base, "predict.card=false"], args.repeats)
    print(f"one GM map, {args.experiment}, median of {args.repeats} runs")
    print(f"  python start-up + imports      {startup:6.2f} s")
    print(f"  src.predict with the card      {with_card:6.2f} s  (work: {with_card - startup:.2f} s)")
    print(f"  src.predict without the card   {without_card:6.2f} s  (work: {without_card - startup:.2f} s)")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("predict_patient", main)
