"""The training-loop hooks, kept at their old import path: they live in the library,
``hyperode.nn.callbacks`` (the ODE-ness adaptation callbacks are built on them)."""

from ..nn.callbacks import Batch, Callback, CallbackList, TrainState, as_callback_list

__all__ = ["Batch", "Callback", "CallbackList", "TrainState", "as_callback_list"]
