"""The step type registry: the single source of truth for palette, forms, validation and execution.

One module per type; each defines a StepType subclass. `REGISTRY` maps type name to an instance.
"""

from importlib import import_module

from .base import StepType

_MODULES = (
    "transform",
    "lookup",
    "branch",
    "http",
    "python",
    "celery_task",
    "kafka_produce",
    "delay",
    "wait_for_event",
    "approval",
    "subworkflow",
    "foreach",
    "fail",
)


def _load() -> dict[str, StepType]:
    registry: dict[str, StepType] = {}
    for module_name in _MODULES:
        module = import_module(f"{__name__}.{module_name}")
        step_type = module.STEP_TYPE
        registry[step_type.name] = step_type
    return registry


REGISTRY: dict[str, StepType] = _load()


def get(type_name: str) -> StepType:
    """The step type called `type_name`; KeyError if there is none."""
    return REGISTRY[type_name]


def describe_all() -> list[dict]:
    return [step_type.describe() for step_type in REGISTRY.values()]
