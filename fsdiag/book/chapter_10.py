"""Chapter 10's bookkeeping: its three problems, one run judged with its denoiser evaluations,
each problem's summary (best runs, floor crossings, cost), the page's table, text, metrics and
verdict. Wall times are reported apart from the claim (they vary from run to run)."""
from __future__ import annotations

import time

__all__ = ["LABELS", "COUNTING", "exactness_problems", "run_and_judge", "judged", "floor_ratio", "summarise", "runs_table",
           "summary_text", "cost_ranges", "timing_text", "exactness_metrics"]

LABELS = {"tds": "TDS", "mcgdiff": "MCGdiff", "mcgdiff_lite": "MCGdiff (no release)", "sigma_dps": "σ-DPS",
          "zeta_dps": "ζ-DPS", "pigdm": "ΠGDM", "tmpd": "TMPD", "fsr": "FSR", "original_dps": "DPS (DDPM code)"}
COUNTING = ("denoiser evaluations = particles x passes, counted by fsdiag.CountingPrior "
            "(moments/denoise = Tweedie mean, denoiser_vjp/cov_matvec = Jacobian pass, x k vectors)")
_KEEP = ("label", "n_particles", "evaluations", "tv_modes", "floor_q95")


def exactness_problems(seed: int, three_atoms_y: float, digits_atoms: int, device="auto") -> dict:
    """{key: (title, prior, lik)}: three atoms measured at three_atoms_y, the 2-D mixture and the
    digits (digits_atoms of them drawn with `seed`, 0 for all), priors on `device`."""
    import torch

    from .. import EmpiricalPrior, GaussianLikelihood, forward
    from ..problems import make_problem
    if not isinstance(digits_atoms, int) or digits_atoms < 0:
        raise ValueError(f"digits_atoms: expected a non-negative integer, got {digits_atoms!r}")
    three, gmm, dig = (make_problem(name, seed=seed) for name in ("three_atoms", "gmm2d", "digits_inpainting"))
    keep = (slice(None) if digits_atoms == 0 else
            torch.randperm(dig.prior.n_atoms, generator=torch.Generator().manual_seed(seed))[:digits_atoms])
    problems = {
        "three_atoms": (f"three atoms, y = {three_atoms_y:g}, σ = 0.3", three.prior,
                        GaussianLikelihood(forward.Identity(), [three_atoms_y], 0.3)),
        "gmm2d": ("2-D mixture, x₁ + x₂ = 0, σ = 0.3", gmm.prior, gmm.lik),
        "digits": ("digits, top half observed, σ = 0.5",
                   EmpiricalPrior(dig.prior.atoms[keep], labels=dig.prior.labels[keep]), dig.lik)}
    return {k: (title, EmpiricalPrior(p.atoms, labels=p.labels, device=device), lik)
            for k, (title, p, lik) in problems.items()}


def run_and_judge(sampler, prior, lik, counter, *, seed: int, **kw) -> dict:
    """Run sampler(counter, lik, ...) (counter: an fsdiag.CountingPrior around prior, reset first)
    and judge its samples with fsdiag.evaluate: evaluations, wall time, TV over modes and its
    floor, excluded mass, TV over atoms."""
    from .. import evaluate
    if not hasattr(counter, "reset") or not hasattr(counter, "evaluations"):
        raise TypeError(f"counter: expected an fsdiag.CountingPrior, got {type(counter).__name__}")
    counter.reset()
    start = time.perf_counter()
    run = sampler(counter, lik, seed=seed, progress=False, record=0, **kw)
    wall = time.perf_counter() - start
    rep = evaluate(run.samples, prior, lik, t_final=run.t_final, seed=seed)
    return {"evaluations": counter.evaluations, "wall_s": wall, "tv_modes": rep.tv_modes,
            "floor_mean": rep.tv_floor_modes, "floor_q95": rep.floor["modes"]["q95"],
            "excluded": rep.excluded_mass, "tv_atoms": rep.tv_atoms, "n_samples": rep.n_particles}


def floor_ratio(r: dict) -> float:
    """TV over modes relative to the 95% quantile of as many exact draws' TV: <= 1 is at the floor."""
    return r["tv_modes"] / max(r["floor_q95"], 1e-12)


def summarise(res: dict, *, smc, guidance, particles, daps_lr: float) -> dict:
    """A problem's summary: best SMC run at the most particles, best guidance method at its largest
    run, floor crossings, cost of each SMC sampler against guidance[0] with equal particles,
    excluded mass per family, DAPS at its paper step size and at best."""
    from ..plots import floor_crossings
    runs, nmax = res["runs"], max(particles)
    fam = {f: [r for r in runs if r["family"] == f] for f in ("smc", "guidance", "daps")}
    best_smc = min((r for r in fam["smc"] if r["n_particles"] == nmax), key=floor_ratio)
    largest = {r["method"]: r for r in sorted(fam["guidance"], key=lambda r: r["n_particles"])}
    best_guidance = min(largest.values(), key=floor_ratio)
    ref = guidance[0]
    cost = {}
    for name in smc:
        pairs = [(a, b) for a in fam["smc"] for b in fam["guidance"] if a["method"] == name and b["method"] == ref
                 and a["n_particles"] == b["n_particles"]]
        if pairs:
            a, b = max(pairs, key=lambda p: p[0]["n_particles"])
            cost[name] = {"n_particles": a["n_particles"], "evaluations": a["evaluations"] / b["evaluations"],
                          "wall": a["wall_s"] / b["wall_s"]}
    return {"best_smc": {k: best_smc[k] for k in _KEEP} | {"ratio": floor_ratio(best_smc)},
            "best_guidance": {k: best_guidance[k] for k in _KEEP} | {"ratio": floor_ratio(best_guidance)},
            "crossings": floor_crossings(runs), "cost_vs": ref, "cost": cost,
            "excluded_smc": max(r["excluded"] for r in fam["smc"]),
            "excluded_guidance": max(r["excluded"] for r in fam["guidance"]),
            "daps_paper": next(r for r in fam["daps"] if r["lr"] == 1e-4)["tv_modes"],
            "daps_best": min(r["tv_modes"] for r in fam["daps"] if r["lr"] != 1e-4 or daps_lr == 1e-4)}


def runs_table(results: dict):
    """book.table of every run: sampler, particles, steps, evaluations, wall time, TV, floor, excluded mass."""
    from .tables import table
    return table([{"problem": res["title"], "sampler": r["label"], "particles": r["n_particles"],
                   "steps": r["n_steps"], "denoiser evaluations": r["evaluations"], "wall (s)": r["wall_s"],
                   "TV over modes": r["tv_modes"], "floor (95%)": r["floor_q95"], "excluded mass": r["excluded"]}
                  for res in results.values() for r in res["runs"]])


def _crossings_text(cross: dict) -> str:
    at = [f"{lab} from {ev:,} evaluations on" for lab, ev in cross.items() if ev is not None]
    never = [lab for lab, ev in cross.items() if ev is None]
    return ((f"reach the floor: {', '.join(at)}" if at else "no sampler reaches the floor")
            + (f"; never at these sizes: {', '.join(never)}" if never else ""))


def summary_text(results: dict, daps_lr: float) -> str:
    """The page's paragraph per problem (after summarise)."""
    lines = []
    for res in results.values():
        s = res["summary"]
        bs, bg = s["best_smc"], s["best_guidance"]
        cost = "; ".join(f"{LABELS[k]} costs {c['evaluations']:.2f}× the denoiser evaluations and {c['wall']:.1f}× "
                         f"the wall time of {LABELS[s['cost_vs']]} at {c['n_particles']} particles"
                         for k, c in s["cost"].items())
        lines.append(
            f"**{res['title']}.** Samplers that {_crossings_text(s['crossings'])}. Best SMC run at "
            f"{bs['n_particles']} particles: {bs['label']}, TV {bs['tv_modes']:.3f} against a floor of "
            f"{bs['floor_q95']:.3f} ({bs['ratio']:.2f}×); best guidance method at its largest run: {bg['label']} at "
            f"{bg['n_particles']} particles, TV {bg['tv_modes']:.3f} ({bg['ratio']:.2f}× its floor). Largest mass on "
            f"excluded modes: {s['excluded_smc']:.3f} (SMC) against {s['excluded_guidance']:.3f} (guidance). DAPS: TV "
            f"{s['daps_paper']:.3f} at its paper defaults, {s['daps_best']:.3f} at best with lr {daps_lr:g}. {cost}.")
    return "\n\n".join(lines)


def cost_ranges(results: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    """((min, max) evaluation ratio, (min, max) wall-time ratio) of SMC against guidance over the problems."""
    costs = [c for r in results.values() for c in r["summary"]["cost"].values()]
    if not costs:
        return (float("nan"),) * 2, (float("nan"),) * 2
    return ((min(c["evaluations"] for c in costs), max(c["evaluations"] for c in costs)),
            (min(c["wall"] for c in costs), max(c["wall"] for c in costs)))


def timing_text(results: dict, guidance0: str) -> str:
    """The wall-time sentence that accompanies the verdict (it varies from run to run)."""
    _, wall = cost_ranges(results)
    return (f"*Timing (varies from run to run):* the asymptotically exact samplers took {wall[0]:.1f}–{wall[1]:.1f}× "
            f"the wall time of {LABELS[guidance0]} with as many particles.")


def exactness_metrics(params: dict, results: dict) -> dict:
    """metrics.json of chapter 10 with its verdict (shown on the page); the wall-time ratios go to
    "cost"/"wall" and "timing", not into the claim."""
    from .pages import verdict
    smc, guidance, particles = params["smc"], params["guidance"], params["particles"]
    ev, wall = cost_ranges(results)
    summ = {k: r["summary"] for k, r in results.items()}
    smc_ok = [r["title"] for r in results.values() if r["summary"]["best_smc"]["ratio"] <= 1]
    guid_ok = [r["title"] for r in results.values() if r["summary"]["best_guidance"]["ratio"] <= 1]
    metrics = {"params": params, "counting": COUNTING, "problems": results,
               "cost": {"evaluations": list(ev), "wall": list(wall), "against": guidance[0]},
               "timing": timing_text(results, guidance[0])}
    regime = (f"{params['n_steps']} reverse steps, particles {list(particles)}, exact denoiser. SMC at the floor on: "
              f"{'; '.join(smc_ok) or 'none'}. A guidance method at the floor on: {'; '.join(guid_ok) or 'none'}.")
    metrics["verdict"] = verdict(
        f"Asymptotically exact samplers ({', '.join(LABELS[s] for s in smc)}) reach the Monte Carlo floor where "
        f"guidance methods ({', '.join(LABELS[g] for g in guidance)}) do not, at a cost of {ev[0]:.2f}–{ev[1]:.2f}× "
        f"the denoiser evaluations of {LABELS[guidance[0]]} with as many particles.",
        [row for key, s in summ.items() for row in (
            (f"{results[key]['title']}: best SMC TV / floor (95%) at {max(particles)} particles",
             s["best_smc"]["ratio"], "<=", 1.0),
            (f"{results[key]['title']}: best guidance TV / floor (95%), each at its largest run",
             s["best_guidance"]["ratio"], ">", 1.0))],
        regime=regime)
    return metrics


def judged(sampler, prior, lik, counter, row: dict, *, seed: int, n_particles: int, n_steps: int, **kw) -> dict:
    """One row of the chapter's table: `row` (method, family, optional label and lr) with the
    particles, steps and run_and_judge's numbers of sampler(counter, lik, n_particles=...,
    n_steps=..., **kw); the label defaults to the method's name on the page."""
    if "method" not in row or "family" not in row:
        raise ValueError(f"row: expected at least 'method' and 'family', got {sorted(row)}")
    out = {"method": row["method"], "family": row["family"], "label": row.get("label", LABELS.get(row["method"])),
           "n_particles": n_particles, "n_steps": n_steps, **{k: v for k, v in row.items() if k not in
                                                              ("method", "family", "label")}}
    return out | run_and_judge(sampler, prior, lik, counter, seed=seed, n_particles=n_particles, n_steps=n_steps,
                               **kw)
