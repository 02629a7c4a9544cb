"""The maths of the quantized activation: the spec (:class:`ActQuant`), the roundings and
optimal α, the STEs (μ′), the kernels (the one forward and backward rule), the autograd
function and modules."""
