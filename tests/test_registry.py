"""One registry shape: every registry of fsdiag is a `Registry` (name -> entry, a `register`
decorator, lookups that name the argument and suggest the closest name)."""
import pytest

import fsdiag
from fsdiag import problems
from fsdiag.registry import Registry


def test_every_registry_has_the_one_shape():
    for reg in (fsdiag.METHODS, fsdiag.SAMPLERS, fsdiag.forward.FORWARD_MODELS, problems.PROBLEMS):
        assert isinstance(reg, Registry) and len(reg) >= 4
        assert all(callable(entry) for entry in reg.values())


def test_register_takes_the_name_attribute_then_the_function_name_then_an_explicit_one():
    reg = Registry("thing")

    class Named:
        name = "alpha"

    @reg.register
    def beta():
        return 2

    reg.register(name="gamma")(lambda: 3)
    assert reg.register(Named) is Named
    assert sorted(reg) == ["alpha", "beta", "gamma"] and reg["gamma"]() == 3 and reg["beta"]() == 2


def test_lookup_names_the_argument_and_suggests_the_closest_name():
    reg = Registry("thing", {"sigma_dps": 1, "zeta_dps": 2})
    assert reg.lookup("zeta_dps", "method") == 2
    with pytest.raises(ValueError, match=r"method: expected one of \['sigma_dps', 'zeta_dps'\].*did you mean 'sigma_dps'"):
        reg.lookup("sigma_dsp", "method")
    with pytest.raises(ValueError, match="method: expected one of"):
        reg.lookup(3, "method")


def test_a_refused_or_nameless_entry_raises_type_error():
    reg = Registry("number", check=lambda e: None if isinstance(e, int) else "expected an int")
    with pytest.raises(TypeError, match="register: expected an int"):
        reg.register("x", name="x")
    with pytest.raises(TypeError, match="name"):
        Registry("thing").register(object())
    with pytest.raises(TypeError, match="Approximation"):
        fsdiag.register(int)
