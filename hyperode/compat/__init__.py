"""Front doors for code written against other libraries' APIs.

``hyperode.compat.torchdyn``: torchdyn's ``NeuralODE`` and functional ``odeint``
(``docs/torchdyn.md``).
"""
