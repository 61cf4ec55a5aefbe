"""rs_lib: attacks, robust trainers and the randomized-smoothing certifier behind the book.

Modules, one concept each (see the README's layout table): ``data``, ``models``, ``attacks``,
``methods``, ``train``, ``evaluate``, ``robustness``, ``smoothing``, ``hessian``, ``store``, ``profiles``,
``plots``, ``paper``.  Inputs are images in [0, 1]; normalisation is the model's first layer.
"""

__version__ = "0.1.0"
