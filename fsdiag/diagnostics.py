from .methods import Problem
def posterior_weights(prior, lik):
    p = Problem.build(prior, lik)
    return prior.log_posterior_weights(p.log_lik).exp()
def diagnose(*a, **k): raise NotImplementedError
class Report: pass
