"""Scale benchmark: decomposed co-optimization of heterogeneous fleets, against the monolith where it finishes.

Same fleets and market as ``bench/optimizer.py`` (96 × 15-minute intervals,
energy + reg up + reg down + spin + one DR event over every site; 10 units per
site, sites never binding). Each case runs in a fresh process; peak memory is
that process's (the coordinator: Dask workers are separate processes).

    python bench/scale.py                                   # 1,000 / 10,000 / 50,000 units: 1 and 2 threads, 2 Dask workers
    python bench/scale.py --sizes 100 1000 --monolith 100 1000 --workers 1
    python bench/scale.py --sizes 1000 --monolith --relaxation 1000   # the monolith's LP bound (~10 min)
    python bench/scale.py --sizes 1000 10000 --threads --workers --cluster 1 2   # a standing cluster of 1, 2 workers

``--workers N`` starts a LocalCluster inside the timed solve (as ``vpp optimize --workers N`` does);
``--cluster N`` starts one first and hands the solve its address (as ``--scheduler tcp://host:8786``
does for a cluster that is already running), so the time is the solve's alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def run(n_units: int, mode: str, workers: int, threads: int, time_limit_s: float, scheduler: str | None = None) -> dict:
    from optimizer import fleet_problem

    from optimizers.model import optimize
    from vpp.schedule import SolverOptions

    t0 = time.perf_counter()
    problem = fleet_problem(n_units)
    prepare_s = time.perf_counter() - t0
    options = SolverOptions(time_limit_s=time_limit_s, mip_gap=1e-3, decomposition="off" if mode == "relaxation" else mode, workers=1 if scheduler else workers, piece_threads=threads, scheduler=scheduler)
    t1 = time.perf_counter()
    if mode == "relaxation":  # the monolith's LP relaxation alone: the bound every answer is compared with
        from optimizers.model import build_model

        built = build_model(problem, options)
        relaxed = built.lm.session(time_limit_s, 1e-3, options.threads).relax()
        nan = float("nan")
        return {"units": n_units, "mode": "monolith LP", "workers": 1, "threads": 1, "prepare_s": prepare_s, "solve_s": time.perf_counter() - t1, "revenue": nan, "bound": relaxed.objective, "gap": nan, "status": relaxed.status, "pieces": 1, "pricing_rounds": 0, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    s = optimize(problem, options)
    return {
        "units": n_units,
        "mode": ("cluster" if scheduler else "decomposed") if mode == "on" else "monolithic",
        "workers": workers,
        "threads": threads if workers == 1 else 1,
        "prepare_s": prepare_s,
        "solve_s": time.perf_counter() - t1,
        "revenue": s.total_revenue,
        "bound": s.stats.bound,
        "gap": s.stats.mip_gap,
        "status": s.stats.status,
        "pieces": s.stats.pieces,
        "pricing_rounds": s.stats.pricing_rounds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 50000])
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="Dask worker processes (1: in this process)")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="solver threads in this process (workers = 1)")
    ap.add_argument("--monolith", type=int, nargs="*", default=[100], help="sizes to also solve as one model (1,000 units: over 10 minutes for its LP alone)")
    ap.add_argument("--relaxation", type=int, nargs="*", default=[], help="sizes to solve the one model's LP relaxation for (its bound)")
    ap.add_argument("--cluster", type=int, nargs="*", default=[], help="workers of a standing local Dask cluster, started before the timed solve")
    ap.add_argument("--time-limit", type=float, default=600.0)
    ap.add_argument("--child", nargs=4, metavar=("UNITS", "MODE", "WORKERS", "THREADS"), help=argparse.SUPPRESS)
    ap.add_argument("--scheduler", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run(int(args.child[0]), args.child[1], int(args.child[2]), int(args.child[3]), args.time_limit, args.scheduler)))
        return
    print(f"{'units':>7} {'mode':<11}{'workers':>8}{'threads':>8}{'prepare s':>10}{'solve s':>9}{'peak MB':>9}{'revenue':>14}{'bound':>14}{'gap':>9} {'status':<9}{'pieces':>7}{'rounds':>7}", flush=True)
    decomposed = [(n, "on", 1, t) for n in args.sizes for t in args.threads] + [(n, "on", w, 1) for n in args.sizes for w in args.workers if w > 1]
    cases = decomposed + [(n, "off", 1, 1) for n in args.monolith] + [(n, "relaxation", 1, 1) for n in args.relaxation]
    cases += [(n, "cluster", w, 1) for n in args.sizes for w in args.cluster]
    for n, mode, w, t in sorted(cases):
        command = [sys.executable, __file__, "--child", str(n), "on" if mode == "cluster" else mode, str(w), str(t), "--time-limit", str(args.time_limit)]
        if mode == "cluster":
            from vpp.compute import dask_client

            with dask_client(w) as client:  # a fresh cluster per case: no case inherits another's warm workers
                out = subprocess.run([*command, "--scheduler", client.scheduler.address], capture_output=True, text=True)
        else:
            out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{n:>7} {mode:<11}{w:>8}{t:>8}  failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['units']:>7} {r['mode']:<11}{r['workers']:>8}{r['threads']:>8}{r['prepare_s']:>10.2f}{r['solve_s']:>9.2f}{r['peak_mb']:>9.0f}"
            f"{r['revenue']:>14.1f}{r['bound']:>14.1f}{r['gap']:>9.3%} {r['status']:<9}{r['pieces']:>7}{r['pricing_rounds']:>7}",
            flush=True,
        )


if __name__ == "__main__":
    main()
