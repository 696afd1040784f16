"""A restricted unpickler for real-stanford/diffusion_policy `.ckpt` files.

Those files are `torch.save`d with `pickle_module=dill`: a dict `{cfg, state_dicts, pickles}` whose `cfg` is
an OmegaConf `DictConfig`. A pickle can name any importable callable and call it while loading, so an ordinary
`torch.load` of a downloaded checkpoint runs whatever code its author chose. This module loads such files
with `pickle.Unpickler.find_class` limited to an allow-list of the globals these files hold:

    OmegaConf containers, nodes and metadata, `typing.Any`, builtin container and scalar types,
    `collections.OrderedDict/defaultdict`, torch's tensor-rebuild functions, storages, `torch.Size`, dtypes,
    numpy array/scalar reconstruction, `_codecs.encode` (latin-1 only, how protocol 2 stores bytes), and
    dill's `_load_type` for builtin data types (mapped to a fixed table, never to dill itself).

Any other global (e.g. `os.system`, `builtins.eval`, dill's `_create_function`) raises `UnsafePickleError`
naming it, before it can be called. Neither dill nor diffusion_policy needs to be installed.

    data = safe_torch_load(path)        # -> whatever was saved, tensors on CPU
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import os
import pickle
import struct
import types
import zipfile

import torch


class UnsafePickleError(ValueError):
    """The file needs a global outside the allow-list; it was refused before anything was called."""


_BUILTIN_DATA_TYPES = {
    t.__name__: t
    for t in (
        dict,
        list,
        tuple,
        set,
        frozenset,
        str,
        bytes,
        bytearray,
        int,
        float,
        complex,
        bool,
        slice,
        range,
    )
}
_BUILTIN_DATA_TYPES["NoneType"] = type(None)

_OMEGACONF = {
    "omegaconf.dictconfig": ("DictConfig",),
    "omegaconf.listconfig": ("ListConfig",),
    "omegaconf.base": ("ContainerMetadata", "Metadata", "UnionNode"),
    "omegaconf.nodes": (
        "AnyNode",
        "StringNode",
        "IntegerNode",
        "FloatNode",
        "BooleanNode",
        "EnumNode",
        "BytesNode",
        "PathNode",
        "ValueNode",
    ),
}
_TORCH_UTILS = (
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
)
_NUMPY = {
    "numpy": ("ndarray", "dtype"),
    "numpy.core.multiarray": ("_reconstruct", "scalar"),
    "numpy._core.multiarray": ("_reconstruct", "scalar"),
}
# numpy 2 moved `numpy.core` to `numpy._core`; import the new home for both names.
_MODULE_ALIASES = {"numpy.core.multiarray": "numpy._core.multiarray"}


def _dill_load_type(name: str) -> type:
    """Stand-in for `dill._dill._load_type`: only builtin data types, looked up in a fixed table."""
    if name not in _BUILTIN_DATA_TYPES:
        raise UnsafePickleError(
            f"refused dill._dill._load_type({name!r}): only builtin data types are allowed"
        )
    return _BUILTIN_DATA_TYPES[name]


def _codecs_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol-2 pickles use for bytes; text codecs only."""
    if encoding.lower().replace("_", "-") not in (
        "latin1",
        "latin-1",
        "iso-8859-1",
        "utf-8",
        "utf8",
        "ascii",
    ):
        raise UnsafePickleError(f"refused _codecs.encode with codec {encoding!r}")
    return obj.encode(encoding, errors)


def _import_attr(module: str, name: str):
    try:
        mod = importlib.import_module(_MODULE_ALIASES.get(module, module))
    except ImportError as e:
        raise ValueError(
            f"unpickling '{module}.{name}' needs the package {module.split('.')[0]!r} "
            f"(for diffusion_policy checkpoints: pip install omegaconf)"
        ) from e
    return getattr(mod, name)


def allowed_global(module: str, name: str):
    """Return the object for an allow-listed global, else raise UnsafePickleError naming it."""
    if module == "builtins" and name in _BUILTIN_DATA_TYPES:
        return _BUILTIN_DATA_TYPES[name]
    if module == "collections" and name in ("OrderedDict", "defaultdict"):
        return _import_attr(module, name)
    if module == "typing" and name == "Any":
        return _import_attr(module, name)
    if module in ("dill._dill", "dill.dill") and name == "_load_type":
        return _dill_load_type
    if module == "_codecs" and name == "encode":
        return _codecs_encode
    if name in _OMEGACONF.get(module, ()):
        return _import_attr(module, name)
    if module == "torch._utils" and name in _TORCH_UTILS:
        return _import_attr(module, name)
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return _import_attr(module, name)
    if module == "torch":
        obj = getattr(torch, name, None)
        if name in ("Size", "device", "Tensor") or isinstance(obj, torch.dtype):
            return obj
        if name.endswith("Storage") and isinstance(obj, type):
            return obj
    if module == "torch.nn.parameter" and name == "Parameter":
        return torch.nn.Parameter
    if name in _NUMPY.get(module, ()):
        return _import_attr(module, name)
    raise UnsafePickleError(
        f"refused to unpickle global '{module}.{name}': it is not one a diffusion_policy checkpoint holds "
        "(OmegaConf config, containers, tensors), and calling it could run arbitrary code"
    )


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose `find_class` only returns allow-listed globals (see `allowed_global`)."""

    def find_class(self, module: str, name: str):
        # Protocol-2 pickles spell some modules the Python 2 way (`__builtin__.dict`); map as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        return allowed_global(module, name)


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs):
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


# A module object usable as torch.load's `pickle_module` (torch subclasses `pickle_module.Unpickler`).
restricted_pickle = types.ModuleType("parapolicy_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load
restricted_pickle.loads = _restricted_loads
restricted_pickle.UnpicklingError = pickle.UnpicklingError


def safe_torch_load(path: str | os.PathLike):
    """torch.load(path) on CPU through `RestrictedUnpickler`.

    Raises UnsafePickleError for a global outside the allow-list and ValueError naming the file for a file
    that is truncated, corrupt or not a torch checkpoint."""
    path = str(path)
    try:
        return torch.load(path, map_location="cpu", pickle_module=restricted_pickle, weights_only=False)
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (
        RuntimeError,
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        struct.error,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
        UnicodeDecodeError,
        OverflowError,
    ) as e:
        size = os.path.getsize(path)
        raise ValueError(
            f"{path} ({size} bytes) cannot be read as a torch checkpoint: {type(e).__name__}: "
            f"{e}; the file is truncated, corrupt or not a diffusion_policy .ckpt"
        ) from e
