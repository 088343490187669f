#!/usr/bin/env bash
# The one script a GPU session runs for issue 11: the CUDA tests, the CUDA benchmark and chapter 13's
# gpu profile (10^6 texture patches of 32x32), from the repository root, within GPU_CHECK_BUDGET_S
# seconds of wall time (default 510, so one 600 s device command holds it).
#
#   bash benchmarks/gpu_check.sh [OUT]                   # OUT: results (default $OUT, else ./gpu_check_out)
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh DIR     # every stage at tiny sizes on the CPU
#   bash benchmarks/gpu_check.sh --fetch-wheels          # on a machine with PyPI: wheels for a box without
#
# Stages, each with its own timeout and header; a failing or timed-out stage never stops the next:
#   env         nvidia-smi, torch's build (torch.version.cuda), the device, memory, CPUs
#   setup       fsdiag from this checkout (PYTHONPATH), papermill and ipykernel: installs them if missing
#   cuda_tests  python -m pytest -q -m cuda, then the unmarked tests named after CUDA (-k cuda)
#   bench       python benchmarks/bench_fsr.py --task cuda (--dry-run on the CPU in a dry run)
#   scale       10^6 texture patches of 32x32: time and host memory to make them, seconds per sampler step
#               and per evaluate at each N of GPU_CHECK_SCALE_N, GPU peak memory, and the chapter's time
#               predicted from them at the profile's sizes (OUT/scale.json)
#   ch13        chapter 13 with the profile's parameters (notebooks/profiles.yml, GPU_CHECK_PROFILE=gpu) by
#               papermill; it prints one line per problem and per sweep size as it goes, so a timeout
#               still leaves those numbers in the log
#   collect     OUT/metrics.json, OUT/13_imaging.ipynb (executed, partial after a timeout) and
#               OUT/ch13_outputs.tar.gz (figures, csv and the parameters), from the finished or the
#               staging folder
# OUT ends with at most 7 files (the device tool returns 8): gpu_check.log, scale.json, metrics.json,
# 13_imaging.ipynb, ch13_outputs.tar.gz, ch13_params.yaml, bench_cuda.json. Exit status: 0 when every stage ran, else 1.
#
# Where torch and papermill come from:
#   * a fresh GPU box with network: `make setup` (GPU_CHECK_INSTALL=1 lets the setup stage run it). On
#     Linux x86_64 `pip install torch==2.13.0` from PyPI is already the CUDA build (it pulls ~3 GB of
#     nvidia-* wheels); the env stage prints torch.version.cuda to confirm it.
#   * this workplace's device machine: no network; its python3 has torch (2.11+cu130 when last read),
#     numpy, pandas, matplotlib, seaborn, scikit-learn, scikit-image, pyyaml, pytest and hypothesis, not
#     papermill or ipykernel. First, here: `bash benchmarks/gpu_check.sh --fetch-wheels` (~15 MB into
#     .whl/, git-ignored through .git/info/exclude), then
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600).
#
# Knobs (environment): GPU_CHECK_BUDGET_S (510), GPU_CHECK_STAGES (comma list, default all),
# GPU_CHECK_PROFILE (gpu), GPU_CHECK_CH13_OVERRIDES (JSON merged last into the chapter's parameters),
# GPU_CHECK_SCALE_N (10000,100000,1000000), GPU_CHECK_BENCH_S (90), GPU_CHECK_TESTS_S (150),
# GPU_CHECK_SCALE_S (150), PYTHON (python3).
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
ALL_STAGES=env,setup,cuda_tests,bench,scale,ch13,collect

# Packages of papermill + ipykernel that the device machine's image lacks (its other needs are there).
WHEELS="papermill nbclient nbformat jupyter_client jupyter_core ipykernel ipython ipython_pygments_lexers
traitlets tornado pyzmq comm debugpy matplotlib_inline nest_asyncio2 entrypoints tenacity fastjsonschema
jsonschema jsonschema_specifications referencing rpds_py platformdirs jedi parso pexpect ptyprocess
prompt_toolkit wcwidth stack_data executing asttokens pure_eval tzdata"

fetch_wheels() {
    # Resolve papermill + ipykernel for CPython 3.12 on manylinux x86_64, keep only what the image lacks.
    local dest=$REPO/.whl tmp
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp" papermill ipykernel || return 1
    mkdir -p "$dest"
    local f name keep
    for f in "$tmp"/*.whl; do
        name=$(basename "$f" | sed 's/-[0-9].*//' | tr 'A-Z-' 'a-z_')
        keep=0
        for w in $WHEELS; do [[ $name == "$w" ]] && keep=1; done
        if (( keep )); then mv "$f" "$dest/"; else echo "left out (on the image): $(basename "$f")"; fi
    done
    rm -rf "$tmp"
    local exclude
    exclude=$(git -C "$REPO" rev-parse --git-path info/exclude 2>/dev/null) && {
        case $exclude in /*) ;; *) exclude=$REPO/$exclude ;; esac
        mkdir -p "$(dirname "$exclude")"
        grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    }
    echo "wheels in $dest: $(ls "$dest" | wc -l) files, $(du -sh "$dest" | cut -f1)"
}

if [[ ${1:-} == --fetch-wheels ]]; then
    fetch_wheels
    exit $?
fi

OUT_DIR=${1:-${OUT:-$REPO/gpu_check_out}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
DRY=${GPU_CHECK_DRY:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-510}
STAGES=${GPU_CHECK_STAGES:-$ALL_STAGES}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
SITE=$WORK/site
export PYTHONPATH="$REPO:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export GPU_CHECK_DRY=$DRY GPU_CHECK_WORK=$WORK GPU_CHECK_OUT=$OUT_DIR REPO PY
export GPU_CHECK_RUN_ID=${GPU_CHECK_RUN_ID:-$$-$RANDOM}     # marks every process of this run
if [[ $DRY == 1 ]]; then
    export GPU_CHECK_SCALE_N=${GPU_CHECK_SCALE_N:-300,1000,2000}
else
    export GPU_CHECK_SCALE_N=${GPU_CHECK_SCALE_N:-10000,100000,1000000}
fi
T0=$(date +%s)
RESERVE=15            # seconds kept for the collect stage and the summary
STATUS=()

left() { echo $((BUDGET - ($(date +%s) - T0))); }

children() {   # pids whose parent is $1 (pgrep, else /proc: a bare image may lack procps)
    if command -v pgrep >/dev/null; then
        pgrep -P "$1"
        return 0
    fi
    local f
    for f in /proc/[0-9]*/status; do
        [[ $(awk '/^PPid:/ {print $2}' "$f" 2>/dev/null) == "$1" ]] && basename "${f%/status}"
    done
    return 0
}

kill_tree() {   # signal, pid: the process and everything below it, children first (a Jupyter kernel
    local sig=$1 pid=$2 c   # runs in a session of its own: a process-group kill would miss it)
    for c in $(children "$pid"); do kill_tree "$sig" "$c"; done
    kill "-$sig" "$pid" 2>/dev/null
}

run_with_deadline() {   # seconds, command...: the command's status, or 124 when it ran out of time
    local secs=$1 flag=$WORK/.timeout.$BASHPID.$RANDOM
    shift
    "$@" &
    local pid=$!
    (   # the watcher: stopped (TERM) as soon as the command ends; its sleep never holds the log's pipe
        sleep "$secs" >/dev/null 2>&1 &
        sp=$!
        trap 'kill $sp 2>/dev/null; exit 0' TERM
        wait "$sp" || exit 0
        touch "$flag"
        echo "!! out of time after ${secs}s: stopping the stage"
        kill_tree TERM "$pid"
        sleep 5
        kill_tree KILL "$pid"
    ) 2>/dev/null &
    local watch=$!
    wait "$pid"
    local rc=$?
    kill -TERM "$watch" 2>/dev/null
    wait "$watch" 2>/dev/null
    if [[ -e $flag ]]; then
        rm -f "$flag"
        return 124
    fi
    return "$rc"
}

stage() {   # name, wanted timeout (s), command...
    local name=$1 want=$2
    shift 2
    if [[ ",$STAGES," != *",$name,"* ]]; then
        STATUS+=("$(printf '%-11s %s' "$name" "not selected")")
        return
    fi
    local reserve=$RESERVE
    [[ $name == collect ]] && reserve=0
    local avail=$(($(left) - reserve)) t
    t=$((want < avail ? want : avail))
    echo
    echo "================================================================ $name"
    echo "== $(date -u +%H:%M:%S) UTC, timeout ${t}s, $(left)s of the ${BUDGET}s budget left"
    if ((t < 5)); then
        echo "== $name: skipped, the budget is spent"
        STATUS+=("$(printf '%-11s %s' "$name" "SKIPPED (no time left)")")
        return
    fi
    local s rc st
    s=$(date +%s)
    export GPU_CHECK_STAGE_TIMEOUT=$t
    run_with_deadline "$t" "$@"
    rc=$?
    case $rc in
        0) st=ok ;;
        124) st="TIMEOUT after ${t}s" ;;
        *) st="FAILED (status $rc)" ;;
    esac
    STATUS+=("$(printf '%-11s %-24s %5ss' "$name" "$st" "$(($(date +%s) - s))")")
}

# ------------------------------------------------------------------ stages
stage_env() {
    date -u
    echo "repo $REPO at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
    echo "dry run: $([[ $DRY == 1 ]] && echo 'yes (tiny sizes, CPU)' || echo no); python: $(command -v "$PY")"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    else
        echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
    fi
    echo "CPUs: $(nproc)"
    free -g 2>/dev/null || head -3 /proc/meminfo
    "$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device 0: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
          f"capability {p.major}.{p.minor}; TF32 matmul allowed: {torch.backends.cuda.matmul.allow_tf32}")
print(f"torch threads {torch.get_num_threads()}")
EOF
}

stage_setup() {
    if ! "$PY" -c "import papermill, ipykernel" 2>/dev/null; then
        if compgen -G "$REPO/.whl/*.whl" >/dev/null; then
            echo "installing $(ls "$REPO"/.whl/*.whl | wc -l) carried wheels into $SITE"
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" "$REPO"/.whl/*.whl || return 1
        elif [[ ${GPU_CHECK_INSTALL:-0} == 1 ]]; then
            make -C "$REPO" setup PYTHON="$PY" || return 1
        else
            echo "papermill/ipykernel missing: carry .whl/ (--fetch-wheels) or set GPU_CHECK_INSTALL=1"
        fi
    fi
    "$PY" - <<'EOF'
import importlib
bad = []
for name in ("torch", "fsdiag", "numpy", "scipy", "pandas", "matplotlib", "seaborn", "sklearn", "skimage", "yaml",
             "papermill", "ipykernel", "pytest"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:11s} {getattr(mod, '__version__', '?'):12s} {getattr(mod, '__file__', '')}")
    except Exception as err:   # noqa: BLE001 - report every missing module
        bad.append(name)
        print(f"{name:11s} MISSING ({type(err).__name__}: {err})")
raise SystemExit(1 if bad else 0)
EOF
}

stage_cuda_tests() {
    # the tests marked cuda, then the other tests that name CUDA (the `device` fixture's [cuda] cases)
    cd "$REPO" || return 1
    "$PY" -m pytest -q -m cuda -p no:cacheprovider --continue-on-collection-errors -rs
    local rc=$?
    echo "---- tests named after CUDA, not marked cuda (the device fixture's [cuda] cases)"
    "$PY" -m pytest -q -k cuda -m "not cuda and not notebooks and not browser" -p no:cacheprovider \
        --continue-on-collection-errors -rs
    local rc2=$?
    ((rc2 == 5)) && rc2=0       # none collected (no CUDA: the device fixture has no [cuda] cases)
    ((rc == 5)) && rc=0
    return $((rc ? rc : rc2))
}

stage_bench() {
    cd "$REPO" || return 1
    if ! "$PY" benchmarks/bench_fsr.py --help 2>/dev/null | grep -q "cuda"; then
        echo "benchmarks/bench_fsr.py has no --task cuda yet: nothing to run"
        return 0
    fi
    if [[ $DRY == 1 ]]; then
        "$PY" benchmarks/bench_fsr.py --task cuda --dry-run
        return
    fi
    # the benchmark skips its remaining problems after --cuda-budget-s, inside this stage's timeout
    "$PY" benchmarks/bench_fsr.py --task cuda --cuda-budget-s 110 --json "$OUT_DIR/bench_cuda.json"
}

stage_scale() {
    "$PY" - <<'EOF'
"""Seconds per sampler step and per evaluate at N texture patches of 32x32 (box inpainting, one y), the
memory the 10^6 patches take, and the chapter's time predicted from these at the profile's sizes."""
import json, os, resource, time
import torch
import fsdiag
from fsdiag import data
from fsdiag.book.regenerate import expand

dry = os.environ["GPU_CHECK_DRY"] == "1"
dev = "cuda" if torch.cuda.is_available() and not dry else "cpu"
if dry:
    torch.set_num_threads(1)
p = dict(expand(os.environ.get("GPU_CHECK_PROFILE", "gpu"), only=["13_imaging"], out=os.environ["GPU_CHECK_WORK"])[0].params)
if dry:
    p.update(n_patches=400, sweep_sizes=[300, 1000], n_particles=16, n_steps=10, sweep_particles=16, sweep_steps=10)
sizes = sorted(int(s) for s in os.environ["GPU_CHECK_SCALE_N"].split(","))
B, cg, size = p.get("n_particles", 64), p.get("tmpd_cg_iters", 5), p.get("patch_size", 8)
steps = (1, 3) if dry else (2, 6)
sources = ["brick", "grass", "gravel", "moon", "camera"]      # the chapter's default textures


# float32 flops per sampler step in units of B N d (particles x atoms x dim), counted at 32x32:
# exact draws an atom (one logits pass), FSR one conditional mean, DPS/PiGDM a mean and one
# covariance-vector pass, TMPD a mean, one covariance pass per CG iteration and one more.
FLOPS = {"exact": lambda cg: 2.4, "fsr": lambda cg: 4.4, "sigma_dps": lambda cg: 10.4, "pigdm": lambda cg: 10.4,
         "zeta_dps": lambda cg: 10.4, "tmpd": lambda cg: 4.4 + 6.0 * (cg + 1)}


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def host_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


res = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__,
       "particles": B, "patch_size": size, "tmpd_cg_iters": cg, "profile_params": p, "sizes": {}}
t = time.perf_counter()
ds = data.patches(max(sizes) + 10, size, sources=sources, seed=0)
res["patches_s"] = time.perf_counter() - t
res["coverage"] = {k: v for k, v in data.patch_coverage(max(sizes) + 10, size, sources=sources).items() if k != "sources"}
t = time.perf_counter()
held = data.hold_out(ds, 10, seed=0)
res["hold_out_s"] = time.perf_counter() - t
del ds
res["host_peak_gib_data"] = host_gib()
print(f"{max(sizes) + 10} patches of {size}x{size}: {res['patches_s']:.1f} s, hold_out {res['hold_out_s']:.1f} s, "
      f"host peak {res['host_peak_gib_data']:.2f} GiB; {res['coverage']['repeat_fraction']:.1%} repeat a position, "
      f"{res['coverage']['neighbours']:.1f} one-pixel neighbours per patch", flush=True)
A = fsdiag.forward.FORWARD_MODELS["box_inpainting"]((1, size, size))
truth = held.truths[0]
g = torch.Generator().manual_seed(0)
y = A(truth[None].double())[0] + 0.1 * torch.randn(A.out_dim(truth.numel()), generator=g, dtype=torch.float64)
lik = fsdiag.GaussianLikelihood(A, y, 0.1)
sweep_methods = ["exact", *p.get("sweep_methods", ["sigma_dps", "pigdm"])]
for n in sizes:
    if n > held.atoms.shape[0]:
        continue
    t = time.perf_counter()
    prior = fsdiag.EmpiricalPrior(held.atoms[:n], labels=held.labels[:n], device=dev)
    sync()
    row = {"to_device_s": time.perf_counter() - t}
    methods = ["exact", "fsr", "sigma_dps", "pigdm", "tmpd"] if n <= max(100000, p.get("n_patches", 0)) else sweep_methods
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for m in methods:
        took = []
        for k in steps:
            kw = dict(n_particles=B, n_steps=k, seed=0, progress=False, record=None)
            t = time.perf_counter()
            run = (fsdiag.sample_exact(prior, lik, **kw) if m == "exact" else
                   fsdiag.sample(prior, lik, method=m, **kw, **({"dense_max": 0, "cg_iters": cg} if m == "tmpd" else {})))
            sync()
            took.append(time.perf_counter() - t)
        per = (took[1] - took[0]) / (steps[1] - steps[0])
        if per <= 0:                       # timing noise on tiny problems: the mean is an upper bound
            per = took[1] / steps[1]
        # float32 flops per step, counted pass by pass (logits 2BNd per query row, values 2BNd per head)
        flops = FLOPS[m](cg) * B * n * prior.dim
        row[m] = {"step_s": per, "fixed_s": took[0] - steps[0] * per, "tflops": flops / per / 1e12}
        print(f"N {n:>8}: {m:9s} {per * 1e3:9.1f} ms per step ({B} particles), {row[m]['tflops']:6.2f} TFLOP/s, "
              f"fixed {row[m]['fixed_s']:.2f} s", flush=True)
    t = time.perf_counter()
    fsdiag.evaluate(run.samples, prior, lik, t_final=run.t_final, method="last", seed=0)
    row["evaluate_s"] = time.perf_counter() - t
    if dev == "cuda":
        row["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    row["host_peak_gib"] = host_gib()
    print(f"N {n:>8}: evaluate {row['evaluate_s']:.2f} s; peak GPU {row.get('gpu_peak_gib', 0):.2f} GiB, "
          f"host {row['host_peak_gib']:.2f} GiB", flush=True)
    res["sizes"][n] = row
    del prior


def step(n, m):
    """Seconds per step at n atoms: the nearest measured size, scaled linearly in n."""
    have = [k for k, r in res["sizes"].items() if m in r]
    if not have:
        return float("nan")
    k = min(have, key=lambda k: abs(k - n))
    return res["sizes"][k][m]["step_s"] * n / k


ops = p.get("operators", ["inpainting", "box_inpainting", "gaussian_blur", "downsampling", "fourier_magnitude"])
linear = [o for o in ops if o != "fourier_magnitude"]
methods = ["exact", *p.get("methods", ["fsr", "sigma_dps", "pigdm", "tmpd"])]
n0, k_main = p.get("n_patches", 3000), len(linear) * len(methods) + (len(ops) - len(linear)) * len([m for m in methods if m not in ("pigdm", "tmpd")])
main = p.get("n_steps", 60) * (len(linear) * sum(step(n0, m) for m in methods)
                                + (len(ops) - len(linear)) * sum(step(n0, m) for m in methods if m not in ("pigdm", "tmpd")))
sw_b = p.get("sweep_particles", 32) / B
sweep = p.get("sweep_steps", 30) * sw_b * sum(step(n, m) for n in p.get("sweep_sizes", []) for m in sweep_methods)


def ev(n):
    k = min(res["sizes"], key=lambda k: abs(k - n))
    return res["sizes"][k]["evaluate_s"] * n / k


evaluate = k_main * ev(n0) + sum(len(sweep_methods) * ev(n) for n in p.get("sweep_sizes", []))
res["predicted_chapter_s"] = {"texture_problems": main, "sweep": sweep, "evaluate": evaluate,
                              "total_without_digits": main + sweep + evaluate}
print("predicted chapter 13 time at the profile's sizes (textures only, from the steps above): "
      + ", ".join(f"{k} {v:.0f} s" for k, v in res["predicted_chapter_s"].items()), flush=True)
with open(os.path.join(os.environ["GPU_CHECK_OUT"], "scale.json"), "w") as f:
    json.dump(res, f, indent=1, default=str)
EOF
}

stage_ch13() {
    local params=$OUT_DIR/ch13_params.yaml
    "$PY" - "$params" <<'EOF' || return 1
import json, os, sys
import yaml
from fsdiag.book.regenerate import expand

profile = os.environ.get("GPU_CHECK_PROFILE", "gpu")
p = dict(expand(profile, only=["13_imaging"], out=os.environ["GPU_CHECK_WORK"])[0].params)
p.setdefault("n_threads", min(8, os.cpu_count() or 1))     # CPU work between GPU calls (data, evaluate)
if os.environ["GPU_CHECK_DRY"] == "1":                     # the same code path at tiny counts, on the CPU
    p.update(device="cpu", n_patches=400, sweep_sizes=[300, 1000], n_particles=16, n_steps=10,
             sweep_particles=16, sweep_steps=10, n_threads=1)
p.update(json.loads(os.environ.get("GPU_CHECK_CH13_OVERRIDES") or "{}"))
p["out_dir"] = os.path.join(os.environ["GPU_CHECK_WORK"], "ch13_out")
with open(sys.argv[1], "w") as f:
    yaml.safe_dump(p, f, sort_keys=True)
print(f"chapter 13, profile {profile}: " + json.dumps(p, sort_keys=True))
scale = os.path.join(os.environ["GPU_CHECK_OUT"], "scale.json")
if os.path.isfile(scale) and os.environ["GPU_CHECK_DRY"] != "1":
    t = json.load(open(scale)).get("predicted_chapter_s", {}).get("total_without_digits", float("nan"))
    left = float(os.environ.get("GPU_CHECK_STAGE_TIMEOUT", "nan"))
    print(f"predicted by the scale stage: {t:.0f} s for the texture problems, sweep and evaluate; {left:.0f} s "
          "left" + (": the chapter will be stopped, the lines it printed by then stay in the log" if t > left else ""))
EOF
    cd "$REPO/notebooks" && "$PY" -m papermill 13_imaging.ipynb "$WORK/13_imaging.ipynb" -f "$params" \
        -k python3 --log-output --no-progress-bar --autosave-cell-every 10
}

stage_collect() {
    local src=$WORK/ch13_out staged
    if [[ ! -d $src ]]; then      # a run stopped early leaves its outputs in the staging folder
        staged=$(ls -d "$WORK"/.ch13_out.staging-* 2>/dev/null | head -1)
        [[ -n $staged ]] && src=$staged
    fi
    [[ -f $WORK/13_imaging.ipynb ]] && cp "$WORK/13_imaging.ipynb" "$OUT_DIR/"
    if [[ -d $src ]]; then
        [[ -f $src/metrics.json ]] && cp "$src/metrics.json" "$OUT_DIR/"
        tar -czf "$OUT_DIR/ch13_outputs.tar.gz" -C "$src" . && echo "outputs of $src:" && ls -l "$src"
    else
        echo "chapter 13 left no outputs"
    fi
    if [[ -f $OUT_DIR/metrics.json ]]; then
        "$PY" - "$OUT_DIR/metrics.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
v = m.get("verdict", {})
print(f"verdict: {v.get('status')}: {v.get('claim', '')}")
for r in v.get("evidence", []):
    print(f"  {'holds' if r['holds'] else 'FAILS'}  {r['label']}: {r['value']:.4g} {r['op']} {r['threshold']}")
sw = m.get("sweep", {})
for i, n in enumerate(sw.get("sizes", [])):
    print(f"  sweep N {n}: ESS {sw['ess'][i]:.1f}, {sw['wall_s'][i]:.1f} s, "
          + ", ".join(f"{k} TV {v['tv_modes'][i]:.3f}" for k, v in sw.get("methods", {}).items()))
EOF
    fi
    ls -l "$OUT_DIR"
}

main() {
    echo "gpu_check: $(date -u), budget ${BUDGET}s, stages $STAGES, results in $OUT_DIR, scratch $WORK"
    stage env 30 stage_env
    stage setup 120 stage_setup
    stage cuda_tests "${GPU_CHECK_TESTS_S:-150}" stage_cuda_tests
    stage bench "${GPU_CHECK_BENCH_S:-150}" stage_bench
    stage scale "${GPU_CHECK_SCALE_S:-150}" stage_scale
    stage ch13 "${GPU_CHECK_CH13_S:-100000}" stage_ch13
    stage collect 60 stage_collect
    echo
    echo "================================================================ summary ($(($(date +%s) - T0))s)"
    printf '%s\n' "${STATUS[@]}"
    for s in "${STATUS[@]}"; do
        [[ $s == *FAILED* || $s == *TIMEOUT* || $s == *SKIPPED* ]] && return 1
    done
    return 0
}

main 2>&1 | tee "$OUT_DIR/gpu_check.log"
rc=${PIPESTATUS[0]}
rm -rf "$WORK"
exit "$rc"
