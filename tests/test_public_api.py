"""The public API: exported names, docstrings, a light ``import zylax``, one registry."""

import importlib
import inspect
import subprocess
import sys

import pytest

import zylax
import zylax.codecs
import zylax.coding
import zylax.transforms


def test_top_level_modules_resolve_lazily_and_import_zylax_stays_light():
    for name in zylax.__all__:
        assert inspect.ismodule(getattr(zylax, name)), name
    assert zylax.nets.TapConv is importlib.import_module("zylax.nets.layers").TapConv
    with pytest.raises(AttributeError):
        zylax.not_a_module  # noqa: B018
    code = "import sys, zylax; print(sorted(m for m in ('jax', 'tensorflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", [*zylax.__all__,
                                    *(f"transforms.{m}" for m in zylax.transforms.__all__),
                                    *(f"codecs.{m}" for m in zylax.codecs.CODECS),
                                    *(f"coding.{m}" for m in zylax.coding.__all__),
                                    "methods.base", "methods.pruning", "methods.sharing",
                                    "methods.ttq", "methods.bnn", "methods.patterns",
                                    "methods.casting"])
def test_every_public_function_and_class_has_a_docstring(module):
    mod = importlib.import_module(f"zylax.{module}")
    assert mod.__doc__, module
    missing = [name for name, obj in vars(mod).items()
               if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
               and getattr(obj, "__module__", None) == mod.__name__ and not obj.__doc__]
    assert not missing, f"{module}: {missing}"


def test_one_registry_resolves_every_named_net_and_its_preset_fits_it():
    import jax
    import jax.numpy as jnp

    from zylax import compress, registry

    for name, spec in registry.NETS.items():
        model = spec.factory(10)
        assert model.num_classes == 10, name  # scene nets see 96x96 canvases:
        size = 96 if spec.task != "classification" else spec.recipe.pad_to or 28
        params = jax.eval_shape(lambda m=model, s=size: m.init(
            jax.random.key(0), jnp.zeros((1, s, s, 1))))["params"]
        for preset in spec.compression.values():
            for method in compress.Preset(**preset).chain():
                method.check(params)
    with pytest.raises(ValueError, match="unknown net 'vgg'"):
        registry.get("vgg")
    registry.register("my_lenet", lambda n: zylax.nets.LeNet5(num_classes=n),
                      zylax.train.Recipe(epochs=1))
    try:
        assert registry.get("my_lenet").factory(3).num_classes == 3
    finally:
        del registry.NETS["my_lenet"]


def test_package_metadata_is_spdx_with_a_license_file():
    """setuptools >= 77 warns on a ``license = {text = ...}`` table; the SPDX string does not."""
    import os
    import tomllib

    root = os.path.join(os.path.dirname(__file__), "..")
    project = tomllib.load(open(os.path.join(root, "pyproject.toml"), "rb"))["project"]
    assert project["license"] == "Apache-2.0"
    assert all(os.path.isfile(os.path.join(root, f)) for f in project["license-files"])
    assert "Apache License" in open(os.path.join(root, "LICENSE")).read(200)
