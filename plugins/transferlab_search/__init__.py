"""Built-in search spaces: `allocation`, how one image budget is spent (classes × images, which classes, label granularity)."""

from transferlab import hookimpl

from .allocation import AllocationSpace


@hookimpl
def register_spaces(register):
    register(AllocationSpace)
