"""Atoms sharded over 2 processes (gloo, CPU): every kernel of a ShardedPrior gives what one
EmpiricalPrior holding all the atoms gives, and `fsdiag.sample` (every method) and
`fsdiag.sample_exact` run on it.

The 2-process group is started once for the module (`sharded` fixture): the workers compute
everything on each case and save it; the tests compare with one process here."""
import math
import os
import socket

import pytest
import scipy.stats
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fsdiag

WORLD = 2
ABARS = (0.9, 0.3, 0.02)
RUN = dict(n_particles=32, n_steps=12, seed=5, record=3, progress=False)
EXACT = dict(n_particles=2000, n_steps=30, seed=3, record=0, progress=False)
N_DRAWS = 20000        # Gumbel-max draws at one query, per case


def _case(name):
    """atoms, weights, lik, queries x, shard sizes (rank order)."""
    g = torch.Generator().manual_seed(7)
    if name == "even":       # the streamed and flash routes (>= 128 atoms), several chunks
        atoms = torch.randn(301, 3, generator=g, dtype=torch.float64) * 1.3 + 0.5
        weights = torch.rand(301, generator=g, dtype=torch.float64) + 0.2
        lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine.example(3, seed=1), torch.tensor([0.4]), 0.6)
        sizes = (150, 151)
    elif name in ("uneven", "zero"):     # 5 + 2 atoms; "zero": the first shard holds no prior mass
        atoms = torch.randn(7, 2, generator=g, dtype=torch.float64)
        weights = torch.rand(7, generator=g, dtype=torch.float64) + 0.2
        sizes = (5, 2)
        if name == "uneven":     # one atom on both shards: exact ties across shards (lowest index
            atoms[6], weights[6] = atoms[1], weights[1]        # wins; independent Gumbel noise)
        if name == "zero":
            weights[:2] = 0.0
            sizes = (2, 5)
        lik = fsdiag.GaussianLikelihood(fsdiag.forward.Affine.example(2, seed=2), torch.tensor([0.3]), 0.7)
    elif name == "tiny":     # sample_exact: 6 atoms in 1-D, uniform weights, labels = atom index
        atoms = torch.linspace(-2.5, 2.5, 6, dtype=torch.float64).unsqueeze(1)
        weights = None
        sizes = (4, 2)
        lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), torch.tensor([0.3]), 0.8)
    elif name == "twin":     # equal shards holding the same atoms: the shards' noise must differ
        atoms = torch.tensor([[-1.0], [0.5], [-1.0], [0.5]], dtype=torch.float64)
        weights = None
        sizes = (2, 2)
        lik = fsdiag.GaussianLikelihood(fsdiag.forward.Identity(), torch.tensor([0.1]), 1.0)
    else:
        raise KeyError(name)
    x = torch.randn(40, atoms.shape[1], generator=g, dtype=torch.float64) * 1.5
    return atoms, weights, lik, x, sizes


CASES = ("even", "uneven", "zero", "tiny", "twin")


def _vectors(x, k=3):
    g = torch.Generator().manual_seed(11)
    return (torch.randn(x.shape, generator=g, dtype=torch.float64),
            torch.randn(x.shape[0], k, x.shape[1], generator=g, dtype=torch.float64))


def _index(n):
    return torch.randint(0, n, (4, 5), generator=torch.Generator().manual_seed(13))


def _kernels(prior, lik, x, ll):
    """Every kernel's output on this prior (a ShardedPrior or one EmpiricalPrior)."""
    v2, v3 = _vectors(x)
    res = {"log_post": prior.log_posterior_weights(ll), "atoms_at": prior.atoms_at(_index(sum_n(prior))),
           "denoiser": _denoiser(prior, x)}
    for abar in ABARS:
        mo = prior.moments(x, abar, ll)
        res[abar] = {
            "moments": (mo.log_norm, mo.mean, mo.log_norm_cond, mo.mean_cond),
            "log_density": prior.log_density(x, abar),
            "posterior_mean": prior.posterior_moments(x, abar, ll).mean,
            "cov_v": prior.cov_matvec(x, abar, v2),
            "cov_v_moments": prior.cov_matvec(x, abar, v2, moments=mo),
            "cov_k": prior.cov_matvec(x, abar, v3),
            "cov_k_moments": prior.cov_matvec(x, abar, v3, moments=mo),
            "vjp": prior.denoiser_vjp(x, abar, v2),
            "resp": prior.responsibilities(x, abar),
            "resp_cond": prior.responsibilities(x, abar, ll),
            "nearest": prior.nearest_atoms(x, abar),
            "argmax_cond": prior.sample_atoms(x, abar, None, ll),
        }
    return res


def _denoiser(prior, x):
    """ExactDenoiser on this prior: a noise level per row (the per-row pass), sigma = 0 (the
    exact nearest atom; rows 0-1 sit on an atom, tied across shards in "uneven"), sigma = inf,
    a mixed batch, its VJP; and the exact search's ties at abar = 1."""
    den = fsdiag.ExactDenoiser(prior)
    x = x.clone()
    x[:2] = prior.atoms_at(torch.tensor([1, 1]))
    per_row = torch.linspace(0.05, 3.0, x.shape[0], dtype=torch.float64)
    mixed = torch.tensor([0.0, math.inf, 0.3, 0.3] * (x.shape[0] // 4), dtype=torch.float64)
    v2, _ = _vectors(x)
    _, vjp = torch.func.vjp(lambda z: den(z, per_row), x)
    nn = prior.nearest(x, 1.0)
    return {"rows": den(x, per_row), "zero": den(x, 0.0), "inf": den(x, math.inf),
            "mixed": den(x, mixed), "one": den(x, 0.7), "vjp_rows": vjp(v2)[0],
            "nearest": (nn.index, nn.distance, nn.tie_rows, nn.tie_index, nn.score)}


def sum_n(prior):
    return getattr(prior, "n_total", prior.n_atoms)


def _runs(prior, lik, name):
    methods = list(fsdiag.METHODS) if name == "even" else ["sigma_dps", "pigdm", "tmpd"]
    res = {m: fsdiag.sample(prior, lik, method=m, **RUN) for m in methods}
    if name == "even":      # TMPD's conjugate-gradient route (cov_matvec inside CG)
        res["tmpd_cg"] = fsdiag.sample(prior, lik, method="tmpd", dense_max=0, **RUN)
    return {m: (r.samples, r.tweedie) for m, r in res.items()}


def _draws(prior, ll):
    """N_DRAWS Gumbel-max draws at one query, with and without the likelihood, and one draw of
    the generator afterwards (the ranks' generators must stay in step)."""
    gen = torch.Generator().manual_seed(17)
    xq = torch.full((N_DRAWS, prior.dim), 0.2, dtype=torch.float64)
    prior_draw = prior.sample_atoms(xq, 0.3, gen)
    cond_draw = prior.sample_atoms(xq, 0.3, gen, ll)
    return prior_draw, cond_draw, torch.rand(3, generator=gen, dtype=torch.float64)


def _errors(prior, atoms, sl):
    """What the sharded prior refuses (every rank raises the same error; no collective hangs)."""
    from fsdiag.distributed import ShardedPrior

    out = {}
    for key, call in {"float_index": lambda: prior.atoms_at(torch.zeros(2)),
                      "index_range": lambda: prior.atoms_at(torch.tensor([prior.n_total])),
                      "log_lik_shape": lambda: prior.log_posterior_weights(torch.zeros(prior.n_atoms + 1)),
                      "mixed_weights": lambda: ShardedPrior(atoms[sl], torch.ones(sl.stop - sl.start)
                                                            if dist.get_rank() == 0 else None, device="cpu")}.items():
        try:
            call()
            out[key] = None
        except (TypeError, ValueError) as err:
            out[key] = (type(err).__name__, str(err))
    return out


def _shard(rank, sizes):
    lo = sum(sizes[:rank])
    return slice(lo, lo + sizes[rank])


def _worker(rank, port, out_dir):
    from fsdiag.distributed import ShardedPrior

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        res = {}
        for name in CASES:
            atoms, weights, lik, x, sizes = _case(name)
            sl = _shard(rank, sizes)
            prior = ShardedPrior(atoms[sl], None if weights is None else weights[sl], device="cpu", chunk_size=64)
            ll = fsdiag.Problem.build(prior, lik).log_lik
            res[name] = {"offset": prior.offset, "n_total": prior.n_total, "scale": prior.scale,
                         "kernels": _kernels(prior, lik, x, ll), "draws": _draws(prior, ll),
                         "errors": _errors(prior, atoms, sl)}
            if name != "tiny":
                res[name]["runs"] = _runs(prior, lik, name)
            else:
                res[name]["exact"] = fsdiag.sample_exact(prior, lik, **EXACT).samples
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """Both ranks' results, from one 2-process gloo group for the whole module."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path_factory.mktemp("sharded")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def _whole(name):
    atoms, weights, lik, x, sizes = _case(name)
    prior = fsdiag.EmpiricalPrior(atoms, weights, device="cpu", chunk_size=64)
    return prior, lik, x, sizes, fsdiag.Problem.build(prior, lik).log_lik


def _close(got, want, tol=1e-10):
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", CASES)
def test_every_kernel_matches_one_process(sharded, name):
    whole, lik, x, sizes, ll = _whole(name)
    want = _kernels(whole, lik, x, ll)
    for rank, res in enumerate(sharded):
        r = res[name]
        assert (r["offset"], r["n_total"]) == (sum(sizes[:rank]), whole.n_atoms)
        assert r["scale"] == whole.scale
        got = r["kernels"]
        _close(got["log_post"], want["log_post"])            # the full (N,) vector on every rank
        assert torch.equal(got["atoms_at"], want["atoms_at"])
        for abar in ABARS:
            for key, ref in want[abar].items():
                if key in ("nearest", "argmax_cond"):         # global indices, exactly one process's
                    assert torch.equal(got[abar][key], ref), (name, abar, key)
                elif key.startswith("resp"):                  # this shard's columns
                    _close(got[abar][key], ref[:, _shard(rank, sizes)])
                else:
                    for g, w in zip(*((got[abar][key], ref) if key == "moments" else ((got[abar][key],), (ref,)))):
                        _close(g, w)
    # the ranks' columns, side by side, are one process's matrix (rows sum to 1)
    for abar in ABARS:
        full = torch.cat([res[name]["kernels"][abar]["resp_cond"] for res in sharded], 1)
        _close(full.sum(1), torch.ones(x.shape[0], dtype=torch.float64))


@pytest.mark.parametrize("name", CASES)
def test_exact_denoiser_on_a_sharded_prior_is_one_process(sharded, name):
    """ExactDenoiser calls only the engine's seam, so on a ShardedPrior it gives one process's
    answer at every noise level: per-row levels, sigma = 0 (exact ties across shards kept),
    sigma = inf, mixed batches and the closed-form VJP."""
    whole, _, x, _, _ = _whole(name)
    want = _denoiser(whole, x)
    if name == "uneven":     # rows 0-1 sit on atom 1 = atom 6 (on the other shard): a tie
        assert want["nearest"][2][:4].tolist() == [0, 0, 1, 1]
        assert want["nearest"][3][:4].tolist() == [1, 6, 1, 6]
    for res in sharded:
        got = res[name]["kernels"]["denoiser"]
        for key in ("rows", "zero", "inf", "mixed", "one", "vjp_rows"):
            _close(got[key], want[key])
        for g, w in zip(got["nearest"], want["nearest"]):
            assert torch.equal(g, w), (name, "nearest")


def test_zero_mass_shard_contributes_nothing(sharded):
    whole, _, _, sizes, ll = _whole("zero")
    r0 = sharded[0]["zero"]["kernels"]
    assert float(r0["log_post"][:sizes[0]].exp().sum()) == 0.0
    for abar in ABARS:
        assert float(r0[abar]["resp"].abs().max()) == 0.0
        assert bool((sharded[0]["zero"]["kernels"][abar]["nearest"] >= sizes[0]).all())
    for prior_draw, cond_draw, _ in (sharded[0]["zero"]["draws"], sharded[1]["zero"]["draws"]):
        assert bool((prior_draw >= sizes[0]).all()) and bool((cond_draw >= sizes[0]).all())


@pytest.mark.parametrize("name", ["even", "uneven", "zero", "twin"])
def test_sample_every_method_matches_one_process(sharded, name):
    whole, lik, _, _, _ = _whole(name)
    runs = sharded[0][name]["runs"]
    if name == "even":
        assert set(runs) == set(fsdiag.METHODS) | {"tmpd_cg"}
    for method, (samples, tweedie) in runs.items():
        kw = dict(method="tmpd", dense_max=0) if method == "tmpd_cg" else dict(method=method)
        ref = fsdiag.sample(whole, lik, **kw, **RUN)
        for res in sharded:
            _close(res[name]["runs"][method][0], ref.samples, 1e-8)
            _close(res[name]["runs"][method][1], ref.tweedie, 1e-8)
        # every rank combines the same gathered numbers: bit-identical particles
        assert torch.equal(sharded[1][name]["runs"][method][0], samples)


def _binomial_bound(counts, p, n):
    """Per-atom |count/n - p| within 5 binomial standard deviations, and a chi-square test
    over the atoms with p > 0 (fixed seeds: deterministic; the bounds fail with p < 1e-5)."""
    freq = counts / n
    sd = torch.sqrt(p * (1 - p) / n)
    assert bool((freq - p).abs().le(5 * sd + 1e-12).all()), (freq, p)
    pos = p > 0
    assert float(counts[~pos].sum()) == 0.0
    stat = float(((counts[pos] - n * p[pos]) ** 2 / (n * p[pos])).sum())
    assert scipy.stats.chi2.sf(stat, int(pos.sum()) - 1) > 1e-5, stat


@pytest.mark.parametrize("name", ["uneven", "zero", "tiny", "twin"])
def test_gumbel_draws_follow_the_responsibilities(sharded, name):
    whole, _, _, _, ll = _whole(name)
    xq = torch.full((1, whole.dim), 0.2, dtype=torch.float64)
    (p0, c0, after0), (p1, c1, after1) = sharded[0][name]["draws"], sharded[1][name]["draws"]
    assert torch.equal(p0, p1) and torch.equal(c0, c1)        # GLOBAL indices, the same on every rank
    assert torch.equal(after0, after1)                         # the shared generator stays in step
    for draw, lik_ in ((p0, None), (c0, ll)):
        w = whole.responsibilities(xq, 0.3, lik_)[0]
        assert float(w.max()) < 0.9                            # a spread law: the test can fail
        _binomial_bound(torch.bincount(draw, minlength=whole.n_atoms).to(torch.float64), w, N_DRAWS)


def test_sample_exact_gives_every_rank_the_exact_posterior(sharded):
    whole, lik, _, _, ll = _whole("tiny")
    s0, s1 = sharded[0]["tiny"]["exact"], sharded[1]["tiny"]["exact"]
    assert torch.equal(s0, s1)
    assert s0.shape == (EXACT["n_particles"], 1)
    psi = whole.log_posterior_weights(ll).exp()
    assert float(psi.max()) < 0.6
    abar = fsdiag.VPSchedule().alpha_bar(1e-2)
    labels = whole.nearest_atoms(s0, abar)                    # labels = atom index
    counts = torch.bincount(labels, minlength=whole.n_atoms).to(torch.float64)
    _binomial_bound(counts, psi, EXACT["n_particles"])
    # the particles sit on atoms (within a few b at t_min)
    assert float((s0 - whole.atoms[labels]).abs().max()) < 6 * math.sqrt(1 - abar)


def test_sharded_prior_refuses_bad_arguments_on_every_rank(sharded):
    for res in sharded:
        err = res["uneven"]["errors"]
        assert err["float_index"][0] == "TypeError" and "index" in err["float_index"][1]
        assert err["index_range"][0] == "ValueError" and "[0, 7)" in err["index_range"][1]
        assert err["log_lik_shape"][0] == "ValueError" and "log_lik" in err["log_lik_shape"][1]
        assert err["mixed_weights"][0] == "ValueError" and "every rank" in err["mixed_weights"][1]


def test_sharded_prior_needs_an_initialised_process_group():
    from fsdiag.distributed import ShardedPrior

    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match="init_process_group"):
        ShardedPrior(torch.zeros(4, 2), device="cpu")
