"""Resolve `module@Class` names from the config (e.g. `hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1`)."""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import TYPE_CHECKING

from utils.errors import UserError

if TYPE_CHECKING:
    import pydantic


def _split(identifier: str) -> tuple[str, str]:
    if identifier.count("@") != 1:
        raise UserError(
            f"model name {identifier!r} must look like 'module.path@ClassName' (e.g. hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1)"
        )
    module_path, class_name = identifier.split("@")
    return module_path, class_name


def load_model_class(identifier: str, prefix: str = "models.") -> type:
    module_path, class_name = _split(identifier)
    try:
        module = importlib.import_module(prefix + module_path)
    except ModuleNotFoundError:
        raise UserError(f"no module {prefix + module_path!r} for model name {identifier!r}") from None
    if not hasattr(module, class_name):
        raise UserError(f"{prefix + module_path} has no class {class_name!r} (model name {identifier!r})")
    obj = getattr(module, class_name)
    from torch import nn

    # Only the project's model classes are nameable (a command line or a crafted all_config.yaml could name any
    # attribute, `fused@os` the os module): a torch module class defined in that very module.
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__):
        raise UserError(
            f"model name {identifier!r}: {class_name} in {prefix + module_path} is not a model class defined there; "
            "name one of config/arch/*.yaml's (e.g. hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1)"
        )
    return obj


def arch_config_class(arch_name: str) -> type[pydantic.BaseModel] | None:
    """The pydantic config class beside a model class (`<Class>Config` in its module), None if it has none."""
    model_cls = load_model_class(arch_name)
    return getattr(sys.modules[model_cls.__module__], model_cls.__name__ + "Config", None)


def get_model_source_path(identifier: str, prefix: str = "models.") -> str | None:
    module_path, _ = _split(identifier)
    return inspect.getsourcefile(importlib.import_module(prefix + module_path))
