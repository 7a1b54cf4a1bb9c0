"""harmonize: remove scanner bias from MRI deep-learning models, and make trained MRI models forget data.

Built on MONAI. The package is layered (each layer imports only those below it)::

    cli -> workflows -> handlers / recon / audit / metrics -> losses / networks / data

See ``docs/architecture.md`` for the picture and ``README.md`` for the two commands that get you started.
"""

__version__ = "0.1.0"
