"""fedleak's performance figures, each measured side by side with its reference in one run.

    python benchmarks/run.py                 # everything (sets up .venv-breaching on first use)
    python benchmarks/run.py --only ig       # ig | restarts | metrics | memory, comma-separated
    python benchmarks/run.py --quick         # fewer iterations and repetitions (a smoke check)
    python benchmarks/run.py --json out.json # also write the figures as JSON

Figures (targets from the performance issue; docs/performance.md discusses them):

* IG iterations/s vs breaching 0.1.2 on ConvNet and ResNet-18 (CIFAR stem), one 32x32x3 image, cosine
  + TV, signed Adam, the same iterations, 2 threads each; breaching runs in .venv-breaching
  (benchmarks/setup_breaching.sh) as a worker process that attacks the identical network and gradient.
  Repetitions alternate which side goes first, and the speed-up is the median of per-pair ratios:
  on a shared machine the load drifts, and only neighbouring measurements are comparable.
* R restarts batched vs R x one restart (fedleak alone; target < 0.5).
* PSNR/SSIM of 256 images vs scikit-image's per-image loop (and LPIPS batched vs per image).
* Peak RSS of one IG cell (ConvNet, B=1) run through harness.runner in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

THREADS = 2
BREACHING_PYTHON = ROOT / ".venv-breaching" / "bin" / "python"


# ----------------------------------------------------------------------------------------
# the reference worker
# ----------------------------------------------------------------------------------------
class Breaching:
    """breaching 0.1.2 in its own environment, answering one JSON request per line."""

    def __init__(self):
        # idempotent: returns at once when the environment is already there
        subprocess.run([str(ROOT / "benchmarks" / "setup_breaching.sh"), sys.executable], check=True)
        self.process = subprocess.Popen(
            [str(BREACHING_PYTHON), str(ROOT / "benchmarks" / "breaching_worker.py"), str(ROOT), str(THREADS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        hello = json.loads(self.process.stdout.readline())
        if hello.get("torch") != torch.__version__:
            print(f"note: breaching runs torch {hello.get('torch')}, fedleak {torch.__version__}", file=sys.stderr)

    def attack(self, case_file: str, iterations: int, restarts: int, tv: float) -> dict:
        request = {"case": case_file, "iterations": iterations, "restarts": restarts, "tv": tv}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"breaching worker: {answer['error']}")
        return answer

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


# ----------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------
def _timed_attack(case, iterations: int, restarts: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    rec = case.attack(iterations, restarts)
    return time.perf_counter() - start, rec


def ig_vs_breaching(reference: Breaching | None, models, iterations: int, reps: int) -> list[dict]:
    from cases import TV, build_case, write_case
    from harness.metrics import psnr
    rows = []
    for model in models:
        case = build_case(model)
        with tempfile.TemporaryDirectory() as folder:
            case_file = f"{folder}/{model}.pt"
            write_case(case, case_file)
            _timed_attack(case, 2)  # warm-up: allocator, oneDNN primitive caches, fx trace
            if reference:
                reference.attack(case_file, 2, 1, TV)
            ours, theirs, ratios = [], [], []
            for rep in range(reps):
                order = ("ours", "ref") if rep % 2 == 0 else ("ref", "ours")
                for side in order:
                    if side == "ours":
                        seconds, rec = _timed_attack(case, iterations)
                        ours.append(seconds / iterations)
                        our_psnr = float(psnr(rec.images, case.truth))
                    elif reference:
                        answer = reference.attack(case_file, iterations, 1, TV)
                        theirs.append(answer["s_per_iteration"])
                        their_psnr = answer["psnr"]
                if reference:
                    ratios.append(theirs[-1] / ours[-1])
        label = {"convnet": "ConvNet", "resnet18": "ResNet-18"}[model]
        rows.append(dict(figure=f"IG {label}: iterations/s", ours=1 / statistics.median(ours),
                         reference=1 / statistics.median(theirs) if theirs else None,
                         ratio=statistics.median(ratios) if ratios else None, target=">= 2x", unit="it/s",
                         ok=(statistics.median(ratios) >= 2) if ratios else None, samples=dict(ours=ours, ref=theirs)))
        rows.append(dict(figure=f"IG {label}: PSNR after {iterations} it (dB)", ours=our_psnr,
                         reference=their_psnr if theirs else None,
                         ratio=(our_psnr - their_psnr) if theirs else None, target=">= ref - 0.5 dB", unit="dB",
                         ok=(our_psnr >= their_psnr - 0.5) if theirs else None, ratio_is_difference=True))
    return rows


def restarts_figure(restarts: int, iterations: int, reps: int) -> list[dict]:
    from cases import build_case
    case = build_case("convnet")
    _timed_attack(case, 2, 1)
    _timed_attack(case, 2, restarts)
    one, many, ratios = [], [], []
    for rep in range(reps):
        pair = []
        for r in ((1, restarts) if rep % 2 == 0 else (restarts, 1)):
            seconds, _ = _timed_attack(case, iterations, r)
            (one if r == 1 else many).append(seconds / iterations)
        ratios.append(many[-1] / (restarts * one[-1]))
    ratio = statistics.median(ratios)
    # ratio: time of R batched restarts over R times one restart
    return [dict(figure=f"IG ConvNet: {restarts} restarts vs {restarts} x 1 (s/it)",
                 ours=statistics.median(many), reference=restarts * statistics.median(one), ratio=ratio,
                 target="< 0.5", unit="s/it", ok=ratio < 0.5)]


def metrics_figure(reps: int) -> list[dict]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from harness import metrics
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    xs, ys = x.double().numpy(), y.double().numpy()
    runs = {
        "psnr": lambda: metrics.psnr(x, y),
        "psnr_ref": lambda: torch.tensor([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(xs, ys)]),
        "ssim": lambda: metrics.ssim(x, y),
        "ssim_ref": lambda: torch.tensor([structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                                                use_sample_covariance=False, data_range=1.0,
                                                                channel_axis=0) for a, b in zip(xs, ys)]),
        "lpips": lambda: metrics.lpips_distance(x, y),
        "lpips_ref": lambda: torch.cat([metrics.lpips_distance(x[i:i + 1], y[i:i + 1]) for i in range(len(x))]),
    }
    times = {k: [] for k in runs}
    values = {}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up: LPIPS weights, oneDNN/MKL kernels, skimage imports
        for _ in range(reps):
            for key, fn in runs.items():
                start = time.perf_counter()
                values[key] = fn()
                times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    err = {k: float((values[k].double() - values[f"{k}_ref"].double()).abs().max()) for k in ("psnr", "ssim", "lpips")}
    rows = []
    for key, label, target, goal in (("ssim", "SSIM", ">= 10x", 10), ("psnr", "PSNR", "(info)", None),
                                     ("lpips", "LPIPS", "(info)", None)):
        reference = "skimage loop" if key != "lpips" else "per-image calls"
        ratio = med[f"{key}_ref"] / med[key]
        rows.append(dict(figure=f"{label}, 256 images: s (vs {reference})", ours=med[key], reference=med[f"{key}_ref"],
                         ratio=ratio, target=target, unit="s", ok=(ratio >= goal) if goal else None))
        rows.append(dict(figure=f"  {label}: max |ours - reference|", ours=err[key], reference=None, ratio=None,
                         target="<= 1e-4", unit="", ok=err[key] <= 1e-4))
    return rows


_CELL = r"""
import json, sys, tempfile
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads({threads})
from harness.config import load_config
from harness.runner import run_attack
with tempfile.TemporaryDirectory() as out:
    config = load_config(None, {{"data.name": "photos", "data.num_victims": 1, "data.batch_size": 1,
                                 "victim.model": "convnet", "threat_model.knowledge": "informed",
                                 "attack.name": "ig", "attack.iterations": {iterations}, "attack.restarts": 1,
                                 "output": out, "device": "cpu"}})
    run_attack(config)
# VmHWM, not ru_maxrss: Linux carries the parent's peak RSS across fork+exec into ru_maxrss
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(json.dumps({{"maxrss_kb": int(peak)}}))
"""

def memory_figure(reference: Breaching | None, iterations: int) -> list[dict]:
    script = _CELL.format(root=str(ROOT), threads=THREADS, iterations=iterations)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"IG cell failed:\n{done.stderr[-2000:]}")
    ours_mb = json.loads(done.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024
    theirs_mb = None
    if reference is not None:
        # a fresh worker: its peak is one breaching attack of the same case, nothing else
        from cases import TV, build_case, write_case
        with tempfile.TemporaryDirectory() as folder:
            write_case(build_case("convnet"), f"{folder}/case.pt")
            worker = Breaching()
            theirs_mb = worker.attack(f"{folder}/case.pt", iterations, 1, TV)["maxrss_kb"] / 1024
            worker.close()
    # ours: the whole cell (data, victim, attack, PSNR/SSIM/LPIPS scoring); breaching: its attack alone
    return [dict(figure="Peak RSS, one IG cell (ConvNet, B=1), MB", ours=ours_mb, reference=theirs_mb,
                 ratio=(ours_mb / theirs_mb) if theirs_mb else None, target="< 1536 MB", unit="MB",
                 ok=ours_mb < 1536)]


# ----------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------
def _fmt(value, unit="") -> str:
    if value is None:
        return "-"
    if unit in ("s", "s/it") or (isinstance(value, float) and abs(value) < 1e-2 and value != 0):
        return f"{value:.3g}"
    return f"{value:.2f}"


def print_table(rows: list[dict], header: str) -> None:
    print()
    print(header)
    columns = ("figure", "ours", "reference", "ratio", "target", "ok")
    def ratio(r):
        if r["ratio"] is None:
            return "-"
        return f"{r['ratio']:+.2f} dB" if r.get("ratio_is_difference") else f"{r['ratio']:.2f}x"

    table = [[r["figure"], _fmt(r["ours"], r.get("unit", "")), _fmt(r["reference"], r.get("unit", "")), ratio(r),
              r["target"], {True: "yes", False: "NO", None: ""}[r["ok"]]] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *table)]
    line = " | ".join(f"{c:<{w}}" for c, w in zip(columns, widths))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(f"{c:<{w}}" for c, w in zip(row, widths)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ig,restarts,metrics,memory")
    parser.add_argument("--iterations", type=int, default=24, help="IG iterations per timed run (both sides)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions per figure")
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--models", default="convnet,resnet18")
    parser.add_argument("--no-reference", action="store_true", help="skip breaching (fedleak figures only)")
    parser.add_argument("--quick", action="store_true", help="--iterations 6 --reps 1")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.reps = 6, 1
    torch.set_num_threads(THREADS)
    only = set(args.only.split(","))
    load_before = os.getloadavg()
    started = time.perf_counter()
    reference = None if args.no_reference or not ({"ig", "memory"} & only) else Breaching()
    rows: list[dict] = []
    try:
        if "ig" in only:
            rows += ig_vs_breaching(reference, args.models.split(","), args.iterations, args.reps)
        if "restarts" in only:
            rows += restarts_figure(args.restarts, max(2, args.iterations // 4), args.reps)
        if "metrics" in only:
            rows += metrics_figure(max(10, args.reps))
        if "memory" in only:
            rows += memory_figure(None if reference is None else reference, max(2, args.iterations // 4))
    finally:
        if reference is not None:
            reference.close()
    load_after = os.getloadavg()
    header = (f"fedleak vs reference, torch {torch.__version__}, {THREADS} threads, {args.iterations} IG iterations x "
              f"{args.reps} interleaved reps; load average {load_before[0]:.1f} -> {load_after[0]:.1f} "
              f"on {os.cpu_count()} CPUs; {time.perf_counter() - started:.0f} s")
    print_table(rows, header)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
