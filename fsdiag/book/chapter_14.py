"""Chapter 14's bookkeeping: the leaderboard's tables, where every sampler fails and where one
wins, the solver baseline (diffusers' schedulers on the prior alone, with and without their
default clip_sample), the page's text, metrics and verdict."""
from __future__ import annotations

__all__ = ["FAIL_FACTOR", "largest_budget", "board_tables", "exact_control", "failures_and_wins", "findings_text",
           "solver_baseline", "baseline_table", "leaderboard_metrics", "leaderboard_verdict"]

# A sampler fails a problem when its TV over modes exceeds this many times its Monte Carlo floor.
FAIL_FACTOR = 2.0


def largest_budget(ranking: dict, problem: str) -> int:
    return max(int(b) for b in ranking[problem])


def _done(entries):
    return [e for e in entries if e["status"] == "done"]


def board_tables(ranking: dict, *, budget: int | None = None) -> list:
    """[(problem, book.table)]: each problem's samplers ranked at `budget` (default its largest)."""
    from .tables import table
    out = []
    for problem in ranking:
        b = budget if budget is not None else largest_budget(ranking, problem)
        rows = [{"rank": e["rank"], "sampler": e["sampler"], "family": e["family"],
                 "TV / floor [95%]": f"{e['ratio'][0]:.2f} [{e['ratio'][1]:.2f}, {e['ratio'][2]:.2f}]",
                 "TV over modes": e["tv_modes"], "floor": e["tv_floor"], "excluded mass": e["excluded_mass"],
                 "off-support": e["off_support"], "evaluations used": round(e["nfe_used"])}
                for e in _done(ranking[problem][b])]
        na = [e["sampler"] for e in ranking[problem][b] if e["status"] != "done"]
        out.append((f"{problem} at {b} evaluations per particle"
                    + (f" (not run: {', '.join(na)})" if na else ""), table(rows)))
    return out


def exact_control(ranking: dict) -> dict:
    """{problem: {"tv", "q95", "within", "ratio"}}: the exact sampler at the largest budget, against
    the 95% quantile of its Monte Carlo floor, and its TV / floor."""
    out = {}
    for problem in ranking:
        e = next(e for e in ranking[problem][largest_budget(ranking, problem)] if e["sampler"] == "exact")
        out[problem] = {"tv": e["tv_modes"], "q95": e["tv_floor_q95"], "within": e["tv_modes"] <= e["tv_floor_q95"],
                        "ratio": e["ratio"][0]}
    return out


def failures_and_wins(ranking: dict, *, factor: float = FAIL_FACTOR) -> dict:
    """At each problem's largest budget: {"fails": {sampler: [problems where TV / floor > factor]},
    "never_fails": samplers judged on every problem and within factor on each, "wins": {problem: the
    first-ranked sampler other than the exact one}, "top3"/"bottom3": {problem: [samplers]}}."""
    fails, judged, wins, top, bottom = {}, {}, {}, {}, {}
    for problem in ranking:
        entries = _done(ranking[problem][largest_budget(ranking, problem)])
        approx = [e for e in entries if e["sampler"] != "exact"]
        for e in approx:
            judged.setdefault(e["sampler"], []).append(problem)
            if e["ratio"][0] > factor:
                fails.setdefault(e["sampler"], []).append(problem)
        if approx:
            wins[problem] = approx[0]["sampler"]
            top[problem] = [e["sampler"] for e in approx[:3]]
            bottom[problem] = [e["sampler"] for e in approx[-3:]][::-1]
    every = [s for s, ps in judged.items() if len(ps) == len(ranking)]
    return {"fails": fails, "never_fails": sorted(s for s in every if s not in fails), "wins": wins,
            "top3": top, "bottom3": bottom, "judged_everywhere": sorted(every)}


def findings_text(ranking: dict, found: dict, control: dict) -> str:
    lines = []
    for problem in ranking:
        c = control[problem]
        lines.append(f"- **{problem}**: best {', '.join(found['top3'].get(problem, []))}; worst "
                     f"{', '.join(found['bottom3'].get(problem, []))}. The exact sampler's TV {c['tv']:.3f} "
                     f"({'within' if c['within'] else 'above'} its floor's 95% quantile {c['q95']:.3f}).")
    never = found["never_fails"]
    lines.append(f"- Within {FAIL_FACTOR:g}× the floor on every problem: "
                 + (", ".join(never) if never else "no approximate sampler") + ".")
    lines.append("- First among the approximations: " + "; ".join(f"{p}: {s}" for p, s in found["wins"].items()) + ".")
    return "\n".join(lines)


def solver_baseline(problem: str, *, n: int, budgets, seed: int) -> dict:
    """diffusers' schedulers on the prior of `problem` alone, clip_sample off and on (diffusers'
    default for DDIM and DDPM): {"clean": {scheduler: {budget: TV}}, "clipped": {...}} (TV to the
    exact prior over modes); {} without diffusers."""
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        return {}
    from ..adapters.diffusers import solver_baseline as baseline
    from ..problems import make_problem
    prior = make_problem(problem, seed=0).prior
    return {"clean": baseline(prior, n, budgets, seed=seed),
            "clipped": baseline(prior, n, budgets, schedulers=["DDIM", "DDPM"], seed=seed, clip_sample=True)}


def baseline_table(baseline: dict):
    from .tables import table
    rows = []
    for name, by_budget in baseline.get("clean", {}).items():
        for budget, tv in by_budget.items():
            clipped = baseline["clipped"].get(name, {}).get(budget)
            rows.append({"scheduler": name, "evaluations": int(budget), "TV, clip_sample=False": tv,
                         "TV, clip_sample=True (the default)": "" if clipped is None else clipped})
    return table(rows)


def leaderboard_metrics(params: dict, ranking: dict, rows: list, found: dict, control: dict, baseline: dict,
                        wall_s: float) -> dict:
    return {"params": params, "ranking": ranking, "rows": rows, "findings": found, "exact_control": control,
            "solver_baseline": baseline, "timing": {"wall_s": wall_s}}


def leaderboard_verdict(found: dict, control: dict, baseline: dict, *, n_problems: int):
    """The chapter's verdict, from the numbers above."""
    from .pages import verdict
    worst_exact = max(c["ratio"] for c in control.values())
    evidence = [
        ("the exact sampler: largest TV / floor over the problems", worst_exact, "<=", FAIL_FACTOR),
        (f"approximate samplers judged on all {n_problems} problems and within {FAIL_FACTOR:g}x the floor on each",
         len(found["never_fails"]), "<", 1),
        ("distinct approximate samplers ranked first across the problems", len(set(found["wins"].values())), ">=", 2),
    ]
    if baseline.get("clipped"):
        ddim = baseline["clipped"]["DDIM"]
        b = max(ddim)
        evidence.append((f"diffusers' DDIM on the prior at {b} evaluations: TV with clip_sample=True / without",
                         ddim[b] / max(baseline["clean"]["DDIM"][b], 1e-12), ">", 2.0))
    return verdict("Judged against the exact posterior at equal budgets of denoiser evaluations, the exact sampler "
                   "stays near its Monte Carlo floor on every problem, no approximate sampler does, and which one "
                   "ranks first depends on the problem.", evidence,
                   regime=f"Largest budget of each problem; 'near the floor' is within {FAIL_FACTOR:g}x its mean.")
