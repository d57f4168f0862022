"""Argument checks shared by every config and function in minivid: each raises a ValueError that names the
argument, its value and what is allowed, before any work is done."""

from __future__ import annotations

import numbers
from typing import Any, Iterable, Sequence


def is_int(value) -> bool:
    """Python and NumPy integers (any ``numbers.Integral``), but not bools."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value) -> bool:
    """Real numbers (ints, floats, NumPy scalars), but not bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None,
              what: str | None = None) -> int:
    """``value`` as a Python int, or a ValueError if it is not an integer in [minimum, maximum] (either bound
    may be None). ``what`` replaces the generated description of what is allowed."""
    ok = is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        if what is None:
            if minimum is not None and maximum is not None:
                what = f"an integer in [{minimum}, {maximum}]"
            elif minimum is not None:
                what = f"an integer >= {minimum}"
            elif maximum is not None:
                what = f"an integer <= {maximum}"
            else:
                what = "an integer"
        raise ValueError(f"{name}={value!r} is invalid: expected {what}")
    return int(value)


def check_positive_ints(obj: Any, names: Iterable[str]) -> None:
    """Check that every attribute ``names`` of ``obj`` (a config dataclass) is an integer >= 1."""
    for name in names:
        check_int(name, getattr(obj, name), 1, what="a positive integer")


def check_number(name: str, value, minimum: float | None = None, maximum: float | None = None,
                 strict_minimum: bool = False) -> float:
    """``value`` as a float, or a ValueError if it is not a real number in the range (``strict_minimum``:
    value > minimum rather than >=)."""
    ok = is_number(value) and value == value  # NaN fails
    if ok and minimum is not None:
        ok = value > minimum if strict_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        lo = "" if minimum is None else (f"> {minimum}" if strict_minimum else f">= {minimum}")
        hi = "" if maximum is None else f"<= {maximum}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise ValueError(f"{name}={value!r} is invalid: expected a number{' ' + bounds if bounds else ''}")
    return float(value)


def check_choice(name: str, value, allowed: Sequence) -> Any:
    """``value`` if it is one of ``allowed``, else a ValueError listing them."""
    if isinstance(value, bool) or value not in tuple(allowed):
        raise ValueError(f"{name}={value!r} is invalid: expected one of {tuple(allowed)}")
    return value


def check_int_tuple(name: str, value, minimum: int = 1) -> tuple[int, ...]:
    """A non-empty sequence of integers >= ``minimum``, returned as a tuple."""
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value
            or not all(is_int(v) and v >= minimum for v in value)):
        raise ValueError(f"{name}={value!r} is invalid: expected a non-empty tuple of integers >= {minimum}")
    return tuple(int(v) for v in value)


def check_device(name: str, value):
    """``value`` ("cpu", "cuda", "cuda:N" or a ``torch.device`` of those) as a ``torch.device``, or a ValueError
    naming the argument: another device type, or a CUDA device this machine does not have."""
    import torch

    device = None
    if isinstance(value, (str, torch.device)):
        try:
            device = torch.device(value)
        except RuntimeError:
            pass
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}={value!r} is invalid: expected 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={value!r} is invalid: CUDA is not available here "
                             "(torch.cuda.is_available() is False); use 'cpu'")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise ValueError(f"{name}={value!r} is invalid: this machine has {n} CUDA device(s), expected "
                             f"'cuda' or cuda:0..cuda:{n - 1}")
    return device
