"""The leaderboard's tables: results.csv (one row per cell), and per problem and budget the
samplers ranked by TV over modes / its Monte Carlo floor, with 95% intervals across seeds
(leaderboard.md, leaderboard.json)."""
from __future__ import annotations

import csv
import io
import math

__all__ = ["results_csv", "rank", "leaderboard_markdown"]


def results_csv(rows: list[dict], fields) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                         for k, v in row.items()})
    return buf.getvalue()


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of values (one value: the value itself)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    from scipy import stats
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def rank(rows: list[dict]) -> dict:
    """{problem: {budget: [entry, ...]}} with entries ranked by mean TV / floor (best first); an
    entry: sampler, family, seeds, ratio (mean, lower, upper), tv_modes, tv_floor, excluded_mass,
    off_support, nfe_used, wall_s (means over seeds), status ('done', 'n/a' or 'failed', error)."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["problem"], {}).setdefault(int(row["nfe"]), {}).setdefault(row["sampler"], []).append(row)
    out = {}
    for problem, budgets in groups.items():
        out[problem] = {}
        for budget, by_sampler in sorted(budgets.items()):
            ranked, others = [], []
            for sampler, rs in by_sampler.items():
                done = [r for r in rs if r["status"] == "done"]
                if not done:
                    others.append({"sampler": sampler, "family": rs[0].get("family"), "status": rs[0]["status"],
                                   "error": rs[0].get("error")})
                    continue
                mean = {k: sum(float(r[k]) for r in done) / len(done)
                        for k in ("tv_modes", "tv_floor", "tv_floor_q95", "excluded_mass", "off_support",
                                  "nfe_used", "wall_s")}
                ranked.append({"sampler": sampler, "family": done[0].get("family"), "status": "done",
                               "seeds": len(done), "failed_seeds": len(rs) - len(done),
                               "ratio": _interval([float(r["tv_ratio"]) for r in done]), **mean})
            ranked.sort(key=lambda e: (e["ratio"][0], e["sampler"]))
            for k, e in enumerate(ranked, 1):
                e["rank"] = k
            out[problem][budget] = ranked + sorted(others, key=lambda e: e["sampler"])
    return out


def leaderboard_markdown(ranking: dict, *, profile: str, descriptions: dict, wall_s: float) -> str:
    lines = [f"# The exact-posterior leaderboard ({profile} profile)", "",
             "Samplers ranked by their TV over modes to the exact posterior divided by the Monte Carlo "
             "floor (the TV of as many exact draws): 1 is as good as exact sampling. Budgets are "
             "denoiser evaluations per particle; intervals are 95% t-intervals across seeds.",
             f"Wall time of the batch: {wall_s:.0f} s.", ""]
    for problem, budgets in ranking.items():
        lines += [f"## {problem}", "", descriptions.get(problem, ""), ""]
        for budget, entries in budgets.items():
            lines += [f"### {budget} evaluations per particle", "",
                      "| rank | sampler | TV / floor [95%] | TV over modes | floor | excluded mass | "
                      "off-support | evaluations used | wall (s) |", "|---|---|---|---|---|---|---|---|---|"]
            for e in entries:
                if e["status"] != "done":
                    why = e.get("error") if e["status"] == "n/a" else f"failed: {e.get('error')}"
                    lines.append(f"| – | {e['sampler']} | {why} | | | | | | |")
                    continue
                m, lo, hi = e["ratio"]
                lines.append(f"| {e['rank']} | {e['sampler']} | {m:.2f} [{lo:.2f}, {hi:.2f}] | {e['tv_modes']:.3f} | "
                             f"{e['tv_floor']:.3f} | {e['excluded_mass']:.3f} | {e['off_support']:.3f} | "
                             f"{e['nfe_used']:.0f} | {e['wall_s']:.2f} |")
            lines.append("")
    return "\n".join(lines)
