"""Each package has one base exception, its tree drawn in its docstring; one table maps all."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

from recorder.errors import status_of
from storage.errors import CallrecError

PACKAGES = ("storage", "consent", "retention", "recorder")
# The storage layer's errors are mostly the environment's (503) or callrec's own (500);
# those of the layers above are about what a caller asked: a 4xx each.
CALLERS_FAULT = ("consent", "retention", "recorder")
# A gateway at its capacity is no caller's fault either: 503, try again later.
AT_CAPACITY = ("CaptureBusy", "PortsExhausted")


def _modules(package: str) -> list[ModuleType]:
    root = importlib.import_module(package)
    names = [package] + [
        info.name
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
        if ".migrations" not in info.name and not info.name.endswith("__main__")
    ]
    return [importlib.import_module(name) for name in names]


def _errors_of(package: str) -> list[type[CallrecError]]:
    found: dict[str, type[CallrecError]] = {}
    for module in _modules(package):
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, CallrecError) and value.__module__.split(".")[0] == package:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


@pytest.mark.parametrize("package", PACKAGES)
def test_one_base_per_package_with_its_tree_drawn(package: str) -> None:
    errors = [e for e in _errors_of(package) if e is not CallrecError]
    bases = [e for e in errors if CallrecError in e.__bases__]
    assert len(bases) == 1, f"{package}: {[b.__name__ for b in bases]}"
    base = bases[0]
    assert base.__module__ in (f"{package}.errors", f"{package}._exceptions"), base.__module__
    module = importlib.import_module(base.__module__)
    tree = module.__doc__ or ""
    for error in errors:
        assert issubclass(error, base), f"{error.__qualname__} is not a {base.__name__}"
        assert error.__module__ == base.__module__, f"{error.__qualname__} in {error.__module__}"
        assert error.__name__ in tree, f"{error.__name__} is not drawn in {module.__name__}"


@pytest.mark.parametrize("package", CALLERS_FAULT)
def test_every_error_a_caller_causes_has_a_4xx_in_the_table(package: str) -> None:
    errors = _errors_of(package)
    for error in errors:
        if any(issubclass(sub, error) and sub is not error for sub in errors):
            continue  # a base: its leaves carry the statuses
        status = status_of(error)
        if error.__name__ in AT_CAPACITY:
            assert status == 503, error
            continue
        assert 400 <= status < 500, f"{error.__qualname__} → {status}"
