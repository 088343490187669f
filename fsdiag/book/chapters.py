"""Every chapter's parameters, declared once: the spec its validation cell checks
(`check_chapter(globals(), chapter)`), that notebooks/profiles.yml and the tests' parameters are
checked against, plus the few checks that tie two parameters together."""
from __future__ import annotations

from .params import Bool, Choice, Device, Int, ListOf, Methods, OutDir, Real, Seed, check_params

__all__ = ["CHAPTERS", "MANIFOLD_OPERATORS", "IMAGING_OPERATORS", "spec", "check_chapter"]

CHAPTERS = ("01_finite_sample_lens", "02_headline_heatmaps", "03_posterior_spread", "04_early_stopping",
            "05_mode_reweighting", "06_hallucination", "07_minimal_cause", "08_diagnose_your_sampler",
            "09_judging_deepinv", "10_exact_in_the_limit", "11_conventions", "12_whose_error", "13_imaging",
            "14_leaderboard")

# Chapter 6: the nonlinear operators each manifold is measured through.
MANIFOLD_OPERATORS = {"swiss_roll": ["radial", "polar_angle", "mlp"], "torus": ["radial", "mlp"],
                      "sphere": ["polar_angle", "mlp"]}
# Chapter 13: the imaging operators it judges.
IMAGING_OPERATORS = ("inpainting", "box_inpainting", "gaussian_blur", "downsampling", "fourier_magnitude")

_OUT = {"device": Device(), "out_dir": OutDir(), "overwrite": Bool()}
_SAMPLING = {"n_particles": Int(min=1), "n_steps": Int(min=1), "t_min": Real(gt=0, lt=1), "n_record": Int(min=1)}


def _specs(chapter: str) -> dict:
    # Built on demand: chapters 9, 12 and 13 name choices that live in heavier modules.
    if chapter == "01_finite_sample_lens":
        return {"seed": Seed(), "n_atoms_min": Int(min=1), "n_atoms_max": Int(min=2), "n_sizes": Int(min=2),
                "n_seeds": Int(min=1), "noise_std": Real(gt=0), "nonlinear": Choice("radial", "polar_angle"),
                "y_nonlinear": Real(), "noise_nonlinear": Real(gt=0), "n_grid": Int(min=20), "n_bins": Int(min=1)}
    if chapter == "02_headline_heatmaps":
        return {"seed": Seed(), "n_atoms": Int(min=1), **_SAMPLING, "n_bins": Int(min=1), "x_lim": Real(gt=0),
                "n_quad": Int(min=1), "y_linear": ListOf(Real()), "noise_linear": ListOf(Real(gt=0)), "y_abs": Real(),
                "noise_abs": Real(gt=0), "zeta": Real(gt=0), "methods": Methods(), "n_threads": Int(min=1)}
    if chapter == "03_posterior_spread":
        return {"seed": Seed(), "n_atoms": Int(min=1), **_SAMPLING, "n_score_times": Int(min=1),
                "n_score_points": Int(min=1), "zeta": Real(gt=0), "methods": Methods(), "n_threads": Int(min=1)}
    if chapter == "04_early_stopping":
        return {"seed": Seed(), "n_atoms": Int(min=1), **_SAMPLING, "zeta": Real(gt=0), "methods": Methods(),
                "n_threads": Int(min=1)}
    if chapter == "05_mode_reweighting":
        return {"seed": Seed(), "n_atoms": Int(min=1), "mode_means": ListOf(Real(), length=2), "mode_std": Real(gt=0),
                "pi_1": Real(gt=0, lt=1), "y": Real(), "noise_std": Real(gt=0), "zeta": Real(gt=0), **_SAMPLING,
                "sweep_pi": ListOf(Real(gt=0, lt=1)), "sweep_noise": ListOf(Real(gt=0)),
                "n_sweep_particles": Int(min=1), "n_sweep_steps": Int(min=1), "run_digits": Bool(),
                "n_candidates": Int(min=1, max=1786),        # 1797 digits: keep at least 11 as atoms
                "n_observed_rows": Int(min=1, max=7), "digit_noise": Real(gt=0), "digit_methods": Methods(),
                "n_digit_particles": Int(min=1), "n_digit_steps": Int(min=1)}
    if chapter == "06_hallucination":
        return {"seed": Seed(), "n_atoms": Int(min=1), "n_particles": Int(min=1), "n_steps": Int(min=1),
                "t_min": Real(gt=0, lt=1), "zeta": Real(gt=0), "ring_modes": Int(min=2), "ring_radius": Real(gt=0),
                "ring_std": Real(gt=0), "ring_y": Real(), "ring_noise": ListOf(Real(gt=0)),
                "manifold_noise": Real(gt=0), "n_segments": Int(min=1), "mlp_hidden": Int(min=1),
                "sweep_dataset": Choice(*MANIFOLD_OPERATORS), "sweep_operator": Choice("radial", "polar_angle", "mlp"),
                "noise_sweep": ListOf(Real(gt=0))}
    if chapter == "07_minimal_cause":
        return {"seed": Seed(), "atoms": ListOf(Real(), min_len=2), "y": Real(), "noise_std": Real(gt=0),
                "zeta": Real(gt=0), **_SAMPLING, "n_control_atoms": Int(min=1), "control_std": Real(gt=0)}
    if chapter == "08_diagnose_your_sampler":
        return {"seed": Seed(), "n_atoms": Int(min=1), "n_particles": Int(min=1), "n_steps": Int(min=1),
                "n_ddpm_steps": Int(min=1, max=1000), "t_min": Real(gt=0, lt=1), "n_record": Int(min=1),
                "temperature": Real(gt=0), "ddpm_zeta": Real(gt=0), "zeta": Real(gt=0), "noise_std": Real(gt=0),
                "n_lens_samples": Int(min=1), "lens_steps": Int(min=1), "lens_zeta": Real(gt=0),
                "lens_max_tv": Real(ge=0, le=1)}
    if chapter == "09_judging_deepinv":
        from ..adapters import deepinv as fdi
        return {"seed": Seed(), "n_candidates": Int(min=1, max=1700), "noise_std": Real(gt=0), "n_samples": Int(min=1),
                "samplers": ListOf(Choice(*fdi.SAMPLERS), unique=True),
                "settings": ListOf(Choice(*fdi.SETTINGS), unique=True),
                "pd_num_steps": Int(min=2), "langevin_max_iter": Int(min=2),
                "extra_operators": ListOf(Choice("blur", "downsampling"), min_len=0, unique=True),
                "n_extra_samples": Int(min=1), "n_show": Int(min=1)}
    if chapter == "10_exact_in_the_limit":
        return {"seed": Seed(), "particles": ListOf(Int(min=2)), "n_steps": Int(min=2),
                "smc": ListOf(Choice("tds", "mcgdiff", "mcgdiff_lite")), "guidance": Methods(),
                "daps_particles": Int(min=2), "daps_steps": ListOf(Int(min=2)), "daps_lr": Real(gt=0),
                "daps_paper_steps": Int(min=2), "three_atoms_y": Real(), "digits_atoms": Int(min=0),
                "n_threads": Int(min=1)}
    if chapter == "11_conventions":
        return {"seed": Seed(), "observations": ListOf(Real()), "noise_std": Real(gt=0), "n_particles": Int(min=1),
                "n_steps": Int(min=1, max=1000), "step_counts": ListOf(Int(min=1, max=1000)),
                "t_min": Real(gt=0, lt=1), "zeta": Real(gt=0), "ddpm_zeta": Real(gt=0), "n_threads": Int(min=1)}
    if chapter == "12_whose_error":
        from .. import METHODS
        guidance = ListOf(Choice(*sorted(set(METHODS) - {"fsr"})), unique=True)   # "fsr" needs atoms: not a network
        return {"seed": Seed(), "methods": guidance, "zeta": Real(gt=0), "n_particles": Int(min=1),
                "n_steps": Int(min=1), "t_min": Real(gt=0, lt=1), "mlp_width": Int(min=1), "mlp_depth": Int(min=1),
                "mlp_steps": Int(min=0), "run_digits": Bool(), "digit_methods": guidance,
                "n_digit_particles": Int(min=1), "n_digit_steps": Int(min=1), "conv_channels": Int(min=1),
                "conv_depth": Int(min=0), "conv_steps": Int(min=0), "batch_size": Int(min=1), "lr": Real(gt=0),
                "n_threads": Int(min=1)}
    if chapter == "13_imaging":
        from ..data import PATCH_SOURCES
        return {"seed": Seed(), "operators": ListOf(Choice(*IMAGING_OPERATORS), unique=True), "methods": Methods(),
                "noise_std": Real(gt=0), "n_candidates": Int(min=1, max=1000),
                "textures": ListOf(Choice(*PATCH_SOURCES), unique=True), "patch_size": Int(min=2, max=256),
                "n_patches": Int(min=10), "n_particles": Int(min=2), "n_steps": Int(min=1),
                "t_min": Real(gt=0, lt=1), "tweedie_times": ListOf(Real(gt=0, le=1), unique=True),
                "tmpd_cg_iters": Int(min=1), "sweep_sizes": ListOf(Int(min=10), min_len=0, unique=True),
                "sweep_operator": Choice(*IMAGING_OPERATORS), "sweep_methods": Methods(),
                "sweep_particles": Int(min=2), "sweep_steps": Int(min=1), "n_threads": Int(min=1)}
    if chapter == "14_leaderboard":
        from ..leaderboard import ENTRIES
        from ..problems import PROBLEMS
        return {"seed": Seed(), "n_seeds": Int(min=1), "problems": ListOf(Choice(*PROBLEMS), min_len=1),
                "budgets": ListOf(Int(min=2), min_len=1), "n_particles": Int(min=2),
                "samplers": ListOf(Choice(*ENTRIES), min_len=0), "baseline_problem": Choice(*PROBLEMS),
                "baseline_budgets": ListOf(Int(min=2), min_len=1), "n_baseline": Int(min=2),
                "n_threads": Int(min=1)}
    from .._checks import did_you_mean
    raise ValueError(f"chapter: expected one of {', '.join(CHAPTERS)}, got {chapter!r}{did_you_mean(chapter, CHAPTERS)}")


def spec(chapter: str) -> dict:
    """The chapter's parameters, {name: kind}, in the order of its parameters cell."""
    if not isinstance(chapter, str):
        raise TypeError(f"chapter: expected a chapter name (str), got {chapter!r} ({type(chapter).__name__})")
    return {**_specs(chapter), **_OUT}


def _tied(chapter: str, p: dict) -> None:
    # The checks that tie two parameters together (each names the parameter it refuses).
    if chapter == "01_finite_sample_lens" and p["n_atoms_max"] <= p["n_atoms_min"]:
        raise ValueError(f"n_atoms_max: expected more than n_atoms_min = {p['n_atoms_min']}, got {p['n_atoms_max']}")
    if chapter == "02_headline_heatmaps" and len(p["noise_linear"]) != len(p["y_linear"]):
        raise ValueError(f"noise_linear: expected {len(p['y_linear'])} noise levels (one per y_linear), "
                         f"got {p['noise_linear']!r}")
    if chapter == "06_hallucination" and p["sweep_operator"] not in MANIFOLD_OPERATORS[p["sweep_dataset"]]:
        raise ValueError(f"sweep_operator: expected one of {MANIFOLD_OPERATORS[p['sweep_dataset']]} for "
                         f"{p['sweep_dataset']}, got {p['sweep_operator']!r}")
    if chapter == "08_diagnose_your_sampler" and 1000 % p["n_ddpm_steps"]:
        raise ValueError(f"n_ddpm_steps: expected a divisor of the 1000 DDPM timesteps, got {p['n_ddpm_steps']}")
    if chapter == "11_conventions":
        for name, counts in (("n_steps", [p["n_steps"]]), ("step_counts", p["step_counts"])):
            if any(1000 % n for n in counts):
                raise ValueError(f"{name}: expected divisors of the 1000 DDPM timesteps, got {counts}")
    if chapter == "13_imaging" and p["patch_size"] % 2 and "downsampling" in [*p["operators"], p["sweep_operator"]]:
        raise ValueError(f"patch_size: 2x downsampling needs an even patch size, got {p['patch_size']}")


def check_chapter(namespace: dict, chapter: str) -> None:
    """Check a chapter's parameters (its notebook's `globals()`) against `spec(chapter)` with
    `check_params`, then the checks that tie two of them together. Raises ValueError or TypeError
    whose message starts with the offending parameter's name."""
    kinds = spec(chapter)
    check_params(namespace, kinds)
    _tied(chapter, {name: namespace[name] for name in kinds})
