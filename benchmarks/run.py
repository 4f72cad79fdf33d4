"""fedleak's performance figures, each measured side by side with its reference in one run.

    python benchmarks/run.py                 # everything (sets up .venv-breaching on first use)
    python benchmarks/run.py --only ig       # ig | quality | restarts | metrics | memory, comma-separated
    python benchmarks/run.py --quick         # fewer iterations and repetitions (a smoke check)
    python benchmarks/run.py --json out.json # also write the figures as JSON

Figures (targets from the performance issue; docs/performance.md discusses them):

* IG iterations/s vs breaching 0.1.2 on ConvNet and ResNet-18 (CIFAR stem), one 32x32x3 image, cosine
  + TV, signed Adam, the same iterations, 2 threads each; breaching runs in .venv-breaching
  (benchmarks/setup_breaching.sh) as a worker process that attacks the identical network and gradient.
  fedleak runs in float32 (its default) and with the opt-in bfloat16 replay. The sides take turns in a
  rotating order and the speed-up is the median of per-pair ratios: on a shared machine the load
  drifts, and only neighbouring measurements are comparable.
* PSNR at equal iterations: after the timed runs, and at a longer budget over several images.
* R restarts as one batch vs R x one restart, ConvNet and ResNet-18 (fedleak alone; target < 0.5).
* PSNR/SSIM of 256 images vs scikit-image's per-image loop (and LPIPS batched vs per image).
* Peak RSS of one IG cell (ConvNet, B=1) run through harness.run.runner in a fresh process.
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
def _timed_attack(case, iterations: int, restarts: int = 1, precision: str = "fp32") -> tuple[float, object]:
    start = time.perf_counter()
    rec = case.attack(iterations, restarts, precision=precision)
    return time.perf_counter() - start, rec


LABELS = {"convnet": "ConvNet", "resnet18": "ResNet-18"}


def _interleaved(case, case_file, reference, iterations: int, reps: int, precisions) -> dict:
    """Seconds per iteration and final PSNR of each side, the sides taking turns in a rotating order."""
    from cases import TV
    from fedleak.metrics.image import psnr
    sides = list(precisions) + (["ref"] if reference else [])
    seconds = {side: [] for side in sides}
    quality = {}
    for rep in range(reps):
        for side in sides[rep % len(sides):] + sides[:rep % len(sides)]:
            if side == "ref":
                answer = reference.attack(case_file, iterations, 1, TV)
                seconds[side].append(answer["s_per_iteration"])
                quality[side] = answer["psnr"]
            else:
                elapsed, rec = _timed_attack(case, iterations, precision=side)
                seconds[side].append(elapsed / iterations)
                quality[side] = float(psnr(rec.images, case.truth))
    return {"seconds": seconds, "psnr": quality}


def ig_vs_breaching(reference: Breaching | None, models, iterations: int, reps: int, precisions) -> list[dict]:
    from cases import TV, build_case, write_case
    rows = []
    for model in models:
        case = build_case(model)
        with tempfile.TemporaryDirectory() as folder:
            case_file = f"{folder}/{model}.pt"
            write_case(case, case_file)
            for precision in precisions:  # warm-up: allocator, oneDNN primitive caches, fx trace
                _timed_attack(case, 2, precision=precision)
            if reference:
                reference.attack(case_file, 2, 1, TV)
            measured = _interleaved(case, case_file, reference, iterations, reps, precisions)
        seconds, quality = measured["seconds"], measured["psnr"]
        theirs = seconds.get("ref")
        for precision in precisions:
            ours = seconds[precision]
            # per-pair ratios: only neighbouring measurements are comparable on a shared machine
            ratio = statistics.median(t / o for t, o in zip(theirs, ours)) if theirs else None
            name = f"IG {LABELS[model]} {precision}"
            rows.append(dict(figure=f"{name}: iterations/s", ours=1 / statistics.median(ours),
                             reference=1 / statistics.median(theirs) if theirs else None, ratio=ratio,
                             target=">= 2x", unit="it/s", ok=(ratio >= 2) if ratio else None))
            difference = quality[precision] - quality["ref"] if theirs else None
            rows.append(dict(figure=f"{name}: PSNR after {iterations} it (dB)", ours=quality[precision],
                             reference=quality.get("ref"), ratio=difference, target=">= ref - 0.5 dB", unit="dB",
                             ok=(difference >= -0.5) if theirs else None, ratio_is_difference=True))
    return rows


def quality_figure(reference: Breaching | None, models, iterations: int, victims: int, precisions) -> list[dict]:
    """PSNR at equal iterations at a budget where the attacks have converged somewhere: 24 iterations
    (the timing runs) is barely past the random start. Mean over several victim images."""
    from cases import build_case, write_case
    rows = []
    for model in models:
        psnrs = {side: [] for side in list(precisions) + ["ref"]}
        for victim in range(victims):
            case = build_case(model, victim)
            with tempfile.TemporaryDirectory() as folder:
                write_case(case, f"{folder}/case.pt")
                measured = _interleaved(case, f"{folder}/case.pt", reference, iterations, 1, precisions)
            for side, value in measured["psnr"].items():
                psnrs[side].append(value)
        theirs = statistics.mean(psnrs["ref"]) if psnrs["ref"] else None
        for precision in precisions:
            ours = statistics.mean(psnrs[precision])
            worst = min(o - t for o, t in zip(psnrs[precision], psnrs["ref"])) if theirs is not None else None
            rows.append(dict(figure=f"IG {LABELS[model]} {precision}: mean PSNR, {victims} images x {iterations} it (dB)",
                             ours=ours, reference=theirs, ratio=None if theirs is None else ours - theirs,
                             target=">= ref - 0.5 dB", unit="dB", ratio_is_difference=True,
                             ok=None if theirs is None else ours - theirs >= -0.5,
                             detail=f"per image ours {[round(v, 2) for v in psnrs[precision]]}, "
                                    f"breaching {[round(v, 2) for v in psnrs['ref']]}, worst image {worst:+.2f} dB"
                             if theirs is not None else None))
    return rows


def restarts_figure(models, restarts: int, iterations: int, reps: int) -> list[dict]:
    from cases import build_case
    rows = []
    for model in models:
        case = build_case(model)
        _timed_attack(case, 2, 1)
        _timed_attack(case, 2, restarts)
        one, many, ratios = [], [], []
        for rep in range(reps):
            for r in ((1, restarts) if rep % 2 == 0 else (restarts, 1)):
                seconds, _ = _timed_attack(case, iterations, r)
                (one if r == 1 else many).append(seconds / iterations)
            ratios.append(many[-1] / (restarts * one[-1]))
        ratio = statistics.median(ratios)
        # ratio: time of R restarts as one batch over R times one restart
        rows.append(dict(figure=f"IG {LABELS[model]}: {restarts} restarts vs {restarts} x 1 (s/it)",
                         ours=statistics.median(many), reference=restarts * statistics.median(one), ratio=ratio,
                         target="< 0.5", unit="s/it", ok=ratio < 0.5))
    return rows


def metrics_figure(reps: int) -> list[dict]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from fedleak.metrics import image as metrics
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
from fedleak.harness.run.config import load_config
from fedleak.harness.run.runner import run_attack
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


def machine_line() -> str:
    """torch, the CPU and what ATen dispatches on it: bfloat16 figures mean nothing without it
    (attacks.precision: native on AVX-512 bf16 / AMX, emulated and far slower on AVX2)."""
    import platform

    from fedleak.attacks.precision import cpu_flags, native_bf16
    flags = cpu_flags() or frozenset()
    model = next((line.partition(":")[2].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    bf16 = "native bf16" if native_bf16("cpu") else "no native bf16"
    extensions = ",".join(sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")))
    return (f"torch {torch.__version__}, CPU {model or '?'} ({extensions or 'flags unknown'}), "
            f"ATen capability {torch.backends.cpu.get_cpu_capability()}, {bf16}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ig,quality,restarts,metrics,memory")
    parser.add_argument("--iterations", type=int, default=24, help="IG iterations per timed run (both sides)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions per figure")
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--models", default="convnet,resnet18")
    parser.add_argument("--precisions", default="fp32,bf16", help="fedleak's IG replay precisions to time (fp32, bf16, auto)")
    parser.add_argument("--quality-iterations", type=int, default=200)
    parser.add_argument("--quality-victims", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip breaching (fedleak figures only)")
    parser.add_argument("--quick", action="store_true", help="--iterations 6 --reps 1")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.iterations, args.reps, args.quality_iterations, args.quality_victims = 6, 1, 6, 1
    torch.set_num_threads(THREADS)
    print(f"fedleak benchmarks: {machine_line()}", flush=True)
    only = set(args.only.split(","))
    load_before = os.getloadavg()
    started = time.perf_counter()
    reference = None if args.no_reference or not ({"ig", "quality", "memory"} & only) else Breaching()
    models, precisions = args.models.split(","), args.precisions.split(",")
    rows: list[dict] = []
    try:
        if "ig" in only:
            rows += ig_vs_breaching(reference, models, args.iterations, args.reps, precisions)
        if "quality" in only:
            rows += quality_figure(reference, models, args.quality_iterations, args.quality_victims, precisions)
        if "restarts" in only:
            rows += restarts_figure(models, args.restarts, max(2, args.iterations // 4), args.reps)
        if "metrics" in only:
            rows += metrics_figure(max(10, args.reps))
        if "memory" in only:
            rows += memory_figure(None if reference is None else reference, max(2, args.iterations // 4))
    finally:
        if reference is not None:
            reference.close()
    load_after = os.getloadavg()
    header = (f"fedleak vs reference, {machine_line()}, {THREADS} threads, {args.iterations} IG iterations x "
              f"{args.reps} interleaved reps; load average {load_before[0]:.1f} -> {load_after[0]:.1f} "
              f"on {os.cpu_count()} CPUs; {time.perf_counter() - started:.0f} s")
    print_table(rows, header)
    for row in rows:
        if row.get("detail"):
            print(f"  {row['figure']}: {row['detail']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
