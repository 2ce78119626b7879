"""State dicts to and from torch tensors, for ``torch.save`` / ``torch.load(weights_only=True)``.

The facade's ``state_dict()`` holds NumPy arrays; torch's holds tensors. These
two helpers convert between them (torch is imported only when they are
called), so a gradtx optimizer's state can be saved with ``torch.save`` and
loaded by a ``torch.optim`` optimizer, and a torch optimizer's state loaded
into the gradtx one. Within gradtx, :func:`gradtx.save_state_dict_npz` is the
recommended format: no torch, no pickle, and schedules kept as data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["from_torch_state_dict", "to_torch_state_dict"]


def _to_torch(value: Any, where: str) -> Any:
    import torch

    if isinstance(value, (np.ndarray, jax.Array)):
        array = np.array(jax.device_get(value), copy=True)
        if array.dtype.kind == "V" or array.dtype.name == "bfloat16":  # ml_dtypes: move the bits
            if array.dtype.name != "bfloat16":
                raise TypeError(f"{where}: torch has no dtype for {array.dtype.name} arrays")
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(array)
    if isinstance(value, np.generic):  # torch.load(weights_only=True) takes Python numbers, not NumPy scalars
        return value.item()
    if value is None or type(value) in (bool, int, float, complex, str):
        return value
    if type(value) in (list, tuple):
        return type(value)(_to_torch(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return {k: _to_torch(v, f"{where}[{k!r}]") for k, v in value.items()}
    if callable(value):
        raise TypeError(f"{where} is a schedule ({value!r}), which torch's optimizers cannot use and "
                        "torch.load(weights_only=True) cannot read: set that option to a number (torch drives a "
                        "changing lr with torch.optim.lr_scheduler), or keep the schedule and save with "
                        "gradtx.save_state_dict_npz, which stores it as data")
    raise TypeError(f"{where} is a {type(value).__qualname__}, which torch.load(weights_only=True) cannot read")


def to_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a facade ``state_dict()`` with torch tensors for arrays, ready for ``torch.save``.

    NumPy scalars become Python numbers, so ``torch.load(path, weights_only=True)``
    reads the file; a ``torch.optim`` optimizer of the same class loads the
    result with ``load_state_dict``.

    Raises ``TypeError`` naming the entry for what torch cannot hold (a schedule option).

    Example::

        torch.save(gradtx.optim.to_torch_state_dict(opt.state_dict()), "opt.pt")
        torch_opt.load_state_dict(torch.load("opt.pt", weights_only=True))
    """
    return _to_torch(dict(state_dict), "state_dict")


def _from_torch(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().copy().view(jax.numpy.bfloat16)
        return tensor.numpy().copy()
    if type(value) in (list, tuple):
        return type(value)(_from_torch(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _from_torch(v) for k, v in value.items()}
    return value


def from_torch_state_dict(state_dict: Mapping[str, Any], names: Sequence[str] | None = None) -> dict[str, Any]:
    """A copy of a torch optimizer's ``state_dict()`` with NumPy arrays for tensors, for ``opt.load_state_dict``.

    Args:
      state_dict: ``torch_optimizer.state_dict()`` (or ``torch.load``'s result).
      names: the name of each of torch's parameter indices, for a state dict
        saved without ``param_names`` (an optimizer built from
        ``model.parameters()``): ``[n for n, _ in model.named_parameters()]``.
        They are written into each group's ``param_names``, so
        ``opt.load_state_dict(sd, match="name")`` pairs parameters by name.

    Raises ``ValueError`` when ``names`` does not name every index of the groups.

    Example::

        sd = gradtx.optim.from_torch_state_dict(torch_opt.state_dict(),
                                                names=[n for n, _ in model.named_parameters()])
        opt.load_state_dict(sd, match="name")
    """
    converted = _from_torch(dict(state_dict))
    if names is not None:
        names = list(names)
        for i, group in enumerate(converted.get("param_groups", [])):
            indices = list(group.get("params", []))
            outside = [j for j in indices if not 0 <= j < len(names)]
            if outside:
                raise ValueError(f"from_torch_state_dict: param group {i} has parameter indices {outside[:5]} but "
                                 f"names has {len(names)} names; give one name per parameter, in torch's order "
                                 "([n for n, _ in model.named_parameters()])")
            group["param_names"] = [names[j] for j in indices]
    return converted
