"""Flow primitives: integrators against an ODE with a closed-form solution; the flow-matching loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evor.flows import flow_matching_loss, integrate


def exact_linear(x0, t=1.0):
    # dx/dt = x cos(t) (time-dependent, so integrators must evaluate t correctly): x(t) = x0 exp(sin t)
    return x0 * np.exp(np.sin(t))


@pytest.mark.parametrize("method, steps, tol", [("euler", 200, 5e-3), ("midpoint", 50, 1e-4), ("rk4", 10, 1e-6)])
def test_integrators_solve_time_dependent_linear_ode(method, steps, tol):
    x0 = jnp.array([[1.0], [-0.5], [2.0]])
    x1 = integrate(lambda x, t: x * jnp.cos(t), x0, steps, method)
    np.testing.assert_allclose(np.asarray(x1), exact_linear(np.asarray(x0)), rtol=tol)


def test_integrator_orders_are_as_stated():
    # Halving the step divides the error by ~2 (Euler), ~4 (midpoint), ~16 (RK4); step counts are
    # chosen so the error stays well above float32 round-off.
    x0 = jnp.ones((1, 1))
    exact = exact_linear(1.0)
    for method, order, steps in (("euler", 1, 8), ("midpoint", 2, 32), ("rk4", 4, 2)):
        e1 = abs(float(integrate(lambda x, t: x * jnp.cos(t), x0, steps, method)[0, 0]) - exact)
        e2 = abs(float(integrate(lambda x, t: x * jnp.cos(t), x0, 2 * steps, method)[0, 0]) - exact)
        assert 0.7 * 2**order < e1 / e2 < 1.4 * 2**order, (method, e1 / e2)


def test_flow_matching_loss_is_zero_for_the_straight_line_velocity():
    key = jax.random.PRNGKey(0)
    x0 = jax.random.normal(key, (64, 2))
    x1 = jax.random.normal(jax.random.PRNGKey(1), (64, 2))
    t = jax.random.uniform(jax.random.PRNGKey(2), (64, 1))
    # the conditional velocity x1 - x0 (known per pair) gives zero loss; a wrong one does not
    assert float(flow_matching_loss(lambda xt, tt: x1 - x0, x1, x0, t)) == pytest.approx(0.0, abs=1e-10)
    assert float(flow_matching_loss(lambda xt, tt: jnp.zeros_like(xt), x1, x0, t)) > 1.0


def test_unknown_integrator_is_rejected():
    with pytest.raises(ValueError, match="unknown integrator"):
        integrate(lambda x, t: x, jnp.ones((1, 1)), 2, "heun3")
