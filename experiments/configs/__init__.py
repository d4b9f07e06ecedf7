"""The ``ml_collections`` configs of the experiments: ``get_config(name)`` of experiments/configs/<experiment>.py.

``name`` is what ``--config`` names ('full', 'local', and for some experiments more, e.g. sela's 'cifar10').
"""
