"""What every vse-recsys model shares beyond implicit's base classes: scikit-learn's parameter
protocol (``get_params`` / ``set_params``), from the constructor's own arguments."""

import inspect

__all__ = ["ParamsMixin"]


class ParamsMixin:
    """``get_params`` / ``set_params`` as in scikit-learn.

    The parameters are the constructor's arguments, each stored under its own name by
    ``__init__`` (as scikit-learn requires), so ``type(model)(**model.get_params())`` is an
    unfitted model with the same settings.
    """

    @classmethod
    def _param_names(cls):
        signature = inspect.signature(cls.__init__)
        return [name for name in signature.parameters if name != "self"]

    def get_params(self, deep=True):
        """The constructor's arguments as they are set now (``deep`` is accepted and ignored:
        a model holds no estimators)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor arguments by name; an unknown name is a ValueError. Returns self."""
        names = self._param_names()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no parameter {unknown[0]!r}; its parameters are "
                f"{', '.join(names)}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self
