"""Integrations with other projects' code, one module each, imported only on demand:

- `fsdiag.adapters.deepinv`: deepinv's operators as fsdiag forward models, deepinv's samplers on
  the exact denoiser, fsdiag's operators as deepinv physics (`pip install "fsdiag[deepinv]"`);
- `fsdiag.adapters.diffusers`: diffusers' schedulers on the exact epsilon-model, with DPS
  guidance (`pip install "fsdiag[diffusers]"`).

An adapter turns the other project's objects into fsdiag's (a forward model, a likelihood, a
sampler with fsdiag's signature) and never changes how fsdiag judges them.
"""
