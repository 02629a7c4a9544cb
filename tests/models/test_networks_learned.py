"""Library models with a learned-step activation."""

import coarsegrad as cg


def test_learned_mlp_has_no_fast_two_layer_form():
    """The fast step reads the fixed α: a learned activation must take the autograd path."""
    fixed = cg.MLP(6, 4, 3, quant=cg.ActQuant(2, rounding="nearest"))
    learned = cg.MLP(6, 4, 3, quant=cg.ActQuant(2, rounding="nearest", learn="lsq"))
    assert fixed.two_layer_form() is not None and learned.two_layer_form() is None
    assert "act.step" in learned.state_dict()
