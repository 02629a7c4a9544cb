"""The maths of the quantized activation: the staircase σ, the STEs (μ′), the autograd
function and the in-place kernels the fast training step uses."""
