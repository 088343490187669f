"""Chapter 9's bookkeeping (deepinv's samplers on the exact denoiser): each sampler's settings
under the chapter's budget, the extra operators, the page's tables, sample rows, text, metrics
and verdict."""
from __future__ import annotations

import numpy as np

__all__ = ["chapter_settings", "extra_physics", "supports", "problem_summary", "problem_text", "settings_table",
           "runs_frame", "sample_rows", "extra_results", "sampler_results", "judging_text", "judging_verdict"]

K = 2.0   # a run is far from the exact posterior when its TV over classes exceeds K x its Monte Carlo floor


def chapter_settings(name: str, which: str, *, noise_std: float, pd_num_steps: int, langevin_max_iter: int) -> dict:
    """fsdiag.adapters.deepinv.settings_for(name, which), with the chapter's budget for the runs
    deepinv gives no length to: PosteriorDiffusion's steps, ULA's chain length and as many
    denoiser calls for SKRock (inner_iter calls per iteration)."""
    from ..adapters import deepinv as fdi
    if name not in fdi.SAMPLERS:
        raise ValueError(f"name: expected one of {list(fdi.SAMPLERS)}, got {name!r}")
    st = fdi.settings_for(name, which, noise_std=noise_std)
    if name.startswith("PD-") and "num_steps" not in st:
        st["num_steps"] = pd_num_steps
    if name == "ULA":
        st["max_iter"] = langevin_max_iter
    if name == "SKRock":
        st["max_iter"] = max(2, langevin_max_iter // st.get("inner_iter", 10))
    return st


def extra_physics(dinv, kind: str, *, noise_std: float, seed: int, device, shape=(1, 8, 8)):
    """deepinv's Gaussian blur or 2x bicubic downsampling on images of `shape`, its noise drawn
    from its own generator."""
    if kind not in ("blur", "downsampling"):
        raise ValueError(f"kind: expected 'blur' or 'downsampling', got {kind!r}")
    import torch
    noise = dinv.physics.GaussianNoise(noise_std, rng=torch.Generator(device).manual_seed(seed))
    if kind == "blur":
        kernel = dinv.physics.functional.blur.gaussian_blur(psf_size=None, sigma=(1.0, 1.0))
        return dinv.physics.BlurFFT(img_size=shape, filter=kernel, noise_model=noise, device=device)
    return dinv.physics.Downsampling(img_size=shape, filter="bicubic", factor=2, noise_model=noise, device=device)


def supports(dinv, name: str, physics) -> bool:
    """Whether deepinv's sampler `name` runs on `physics`: DDRM needs a singular value decomposition."""
    return name != "DDRM" or isinstance(physics, dinv.physics.DecomposablePhysics)


def problem_summary(prior, psi, exact_classes) -> dict:
    """The posterior's ESS over atoms, the prior's class weights and the mass the prior alone
    puts on the classes the exact posterior rules out (weight below 1e-3)."""
    import torch
    exact_classes = np.asarray(exact_classes)
    prior_classes = (torch.bincount(prior.labels.cpu(), minlength=len(exact_classes)).double() / prior.n_atoms).numpy()
    return {"ess": 1 / float((psi.double() ** 2).sum()), "prior_classes": prior_classes,
            "prior_excluded": float(prior_classes[exact_classes < 1e-3].sum())}


def problem_text(index: int, true_class: int, n_atoms: int, exact_classes, ess: float) -> str:
    """The page's sentence on the held-out digit and its exact class weights."""
    return (f"Held-out digit {index} (class {true_class}); {n_atoms} atoms; exact class weights "
            + ", ".join(f"{k}: {w:.3f}" for k, w in enumerate(exact_classes) if w >= 1e-3)
            + f"; posterior ESS over atoms {ess:.1f}.")


def _show(st: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in st.items()) or "(none)"


def settings_table(samplers, settings, settings_of, notes: dict):
    """book.table of each sampler's settings (settings_of(name, which) -> dict) and the paper's note."""
    from .tables import table
    return table([{"sampler": name, **{which: _show(settings_of(name, which)) for which in settings},
                   "paper's recommendation": notes[name]} for name in samplers])


def runs_frame(reports: dict, runs: dict):
    """DataFrame, one row per (sampler, settings) run: TVs with their floors, excluded and
    off-atom mass, wall time."""
    import pandas as pd
    return pd.DataFrame([{"sampler": name, "settings": which, "TV classes": rep.tv_modes, "floor": rep.tv_floor_modes,
                          "TV atoms": rep.tv_atoms, "floor (atoms)": rep.tv_floor_atoms, "excluded": rep.excluded_mass,
                          "off atoms": rep.hallucination["off_support"], "time (s)": runs[name, which].wall_s}
                         for (name, which), rep in reports.items()])


def sample_rows(truth, observed, true_class: int, prior, psi, samples: dict, *, n_show: int, seed: int) -> list:
    """plots.image_rows_figure's rows: truth and observation, n_show exact draws (atoms drawn by
    psi with `seed`) and each sampler's first samples, titled by their (nearest atom's) class."""
    import torch
    draws = torch.multinomial(psi.double().cpu(), n_show, replacement=True, generator=torch.Generator().manual_seed(seed))
    rows = [("", torch.stack([truth.reshape(8, 8), observed]).numpy(), [f"truth ({true_class})", "observed"]),
            ("exact", prior.atoms[draws].cpu().reshape(-1, 8, 8).numpy(), [str(int(prior.labels[i])) for i in draws])]
    for name, x in samples.items():
        x = x[:n_show]
        idx = prior.nearest_atoms(x.to(dtype=prior.dtype, device=prior.device))
        rows.append((name, x.reshape(-1, 8, 8).numpy(), [str(int(prior.labels[i])) for i in idx]))
    return rows


def extra_results(extra: dict, samplers, class_weights, supported) -> tuple[dict, list, list]:
    """(metrics per extra operator, table rows, one sentence per operator) of the extra runs
    (extra[kind]: "lik", "physics", "runs" {name: (run, report)}); class_weights(lik) gives the
    exact class weights, supported(name, physics) whether a sampler ran."""
    metrics, rows, lines = {}, [], []
    for kind, ex in extra.items():
        exact = np.asarray(class_weights(ex["lik"]))
        metrics[kind] = {"exact_classes": exact.tolist(), "samplers": {},
                         "unsupported": [s for s in samplers if not supported(s, ex["physics"])]}
        for name, (r, rep) in ex["runs"].items():
            metrics[kind]["samplers"][name] = {
                "tv_modes": rep.tv_modes, "tv_floor_modes": rep.tv_floor_modes, "excluded_mass": rep.excluded_mass,
                "off_support": rep.hallucination["off_support"], "wall_s": r.wall_s, "labels": rep.modes["labels"],
                "classes": rep.modes["sampler"], "lower": rep.modes["lower"], "upper": rep.modes["upper"]}
            rows.append({"operator": kind, "sampler": name, "TV classes": rep.tv_modes, "floor": rep.tv_floor_modes,
                         "excluded": rep.excluded_mass, "time (s)": r.wall_s})
        lines.append(f"{kind}: exact class weights "
                     + ", ".join(f"{k}: {w:.3f}" for k, w in enumerate(exact) if w >= 1e-3) + ".")
    return metrics, rows, lines


def sampler_results(reports: dict, runs: dict) -> dict:
    """{sampler: {settings: its settings, wall time, TVs with floors, excluded and off-atom mass,
    class weights with intervals}}."""
    results = {}
    for (name, which), rep in reports.items():
        m = rep.modes
        results.setdefault(name, {})[which] = {
            "settings": runs[name, which].settings, "wall_s": runs[name, which].wall_s,
            "tv_modes": rep.tv_modes, "tv_floor_modes": rep.tv_floor_modes, "tv_atoms": rep.tv_atoms,
            "tv_floor_atoms": rep.tv_floor_atoms, "excluded_mass": rep.excluded_mass,
            "off_support": rep.hallucination["off_support"], "labels": m["labels"], "classes": m["sampler"],
            "lower": m["lower"], "upper": m["upper"], "exact": m["exact"]}
    return results


def judging_text(results: dict, n_samples: int, prior_excluded: float) -> str:
    """The page's summary of every run."""
    tvs = [v["tv_modes"] for s in results.values() for v in s.values()]
    floors = [v["tv_floor_modes"] for s in results.values() for v in s.values()]
    walls = [v["wall_s"] for s in results.values() for v in s.values()]
    excl = {f"{n} ({w})": v["excluded_mass"] for n, s in results.items() for w, v in s.items()}
    chains = [n for n in ("ULA", "SKRock") if "defaults" in results.get(n, {})]
    return (f"On this problem ({n_samples} samples each) deepinv's samplers are at TV {min(tvs):.2f}–{max(tvs):.2f} "
            f"from the exact class weights, against a Monte Carlo floor of {np.mean(floors):.3f}; "
            f"{sum(v > 0.05 for v in excl.values())} of the {len(excl)} runs put more than 5% of their mass on "
            f"classes the exact posterior rules out (up to {max(excl.values()):.2f}, by {max(excl, key=excl.get)}). "
            + (f"DPS at deepinv's default weight puts {results['DPS']['defaults']['excluded_mass']:.2f} there, "
               f"where sampling the prior alone would put {prior_excluded:.2f}. "
               if "defaults" in results.get("DPS", {}) else "")
            + ("At their default step size the Langevin chains leave the atoms: "
               + ", ".join(f"{n} {results[n]['defaults']['off_support']:.2f}" for n in chains)
               + " of their samples are off the prior's support. " if chains else "")
            + f"The fastest run took {min(walls):.2f} s, the slowest {max(walls):.1f} s.")


def _closest(recs):
    # The run nearest the exact posterior relative to its floor: (TV / floor, label).
    return min((rec["tv_modes"] / max(rec["tv_floor_modes"], 1e-12), label) for label, rec in recs)


def judging_verdict(results: dict, operators: dict, *, settings, shown_setting: str, noise_std: float,
                    n_samples: int, n_extra_samples: int, samplers) -> dict:
    """Chapter 9's verdict (shown on the page): on every problem and setting, even the closest
    run's TV over classes exceeds K x its floor."""
    from .pages import verdict
    evidence = []
    for which in settings:
        ratio, label = _closest([(name, results[name][which]) for name in results])
        evidence.append((f"inpainting, {which} settings: smallest TV / Monte Carlo floor ({label})", ratio, ">", K))
    for kind, op in operators.items():
        if op["samplers"]:
            ratio, label = _closest(list(op["samplers"].items()))
            evidence.append((f"{kind}, {shown_setting} settings: smallest TV / Monte Carlo floor ({label})", ratio,
                             ">", K))
    short = [e[0].split(":")[0] for e in evidence if not e[1] > K]
    held = [e[0].split(":")[0] for e in evidence if e[1] > K]
    return verdict(
        f"deepinv's samplers, run on the exact denoiser, are far from the exact posterior: every run's TV over "
        f"classes exceeds {K:g} × its Monte Carlo floor.",
        evidence,
        regime=f"8×8 digits, top half missing, noise {noise_std:g}; {n_samples} samples per run "
               f"({n_extra_samples} on the other operators); samplers {', '.join(samplers)}."
               + ("" if not short else f" It holds on {'; '.join(held) or 'none of them'}; not on {'; '.join(short)}."))
