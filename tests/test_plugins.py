"""Plugin discovery, registration, name errors and the `plugins` command."""
import importlib.metadata
import inspect
import subprocess
import sys
import types
import warnings

import pytest
import torch

from retinaseg import hookimpl, hookspecs, plugins
from retinaseg.cli import cli as retinaseg_cli
from retinaseg.errors import DuplicateNameError, OptionError, PluginError, UnknownNameError
from retinaseg.registry import (DatasetSpec, Lazy, LossSpec, ModelSpec, all_models, check_options, get_dataset,
                                get_loss, get_model)

from conftest import registered

BUILTIN_MODELS = {"vesselnet", "unet", "linkseg", "unet-resnet34", "unet-efficientnet-b0", "av-fusion"}
BUILTIN_LOSSES = {"bce", "dice", "bce-dice", "focal", "focal-dice", "ce", "cldice"}
BUILTIN_DATASETS = {"drive", "drive-av", "les-av", "hrf-av", "les", "hrf", "chase-db1", "stare", "kaggle-retina",
                    "folder", "folder-av", "folder-disc"}


class Identity(torch.nn.Module):
    def __init__(self, in_channels=3, classes=1):
        super().__init__()
        self.classes = classes

    def forward(self, x):
        return x[:, :self.classes]


class FakeModels:
    __name__ = "fake_models"

    @hookimpl
    def register_models(self, register):
        register(ModelSpec(name="fake-model", build=Identity, description="a test model"))


def test_builtins_are_registered():
    from retinaseg.registry import all_datasets, all_losses

    assert BUILTIN_MODELS <= set(all_models())
    assert BUILTIN_LOSSES <= set(all_losses())
    assert BUILTIN_DATASETS <= set(all_datasets())


def test_builtins_load_through_the_entry_point_group():
    names = {ep.name for ep in importlib.metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)}
    assert {"vesselnet", "unet", "linkseg", "smp_unets", "av_fusion", "losses", "datasets"} <= names
    assert get_model("unet").package.startswith("retinaseg ")


def test_register_models_hook_registers_a_fake_model():
    with registered(FakeModels(), "fake-models"):
        spec = get_model("fake-model")
        assert spec.plugin == "fake-models"
        assert spec.package.startswith("registered directly")
    with pytest.raises(UnknownNameError):
        get_model("fake-model")


def test_register_losses_hook_registers_a_fake_loss():
    class FakeLosses:
        @hookimpl
        def register_losses(self, register):
            register(LossSpec("fake-loss", lambda: (lambda logits, target, fov: logits.mean()), "test loss"))

    with registered(FakeLosses(), "fake-losses"):
        loss = get_loss("fake-loss").build()
        assert float(loss(torch.ones(1, 1, 2, 2), None, None)) == 1.0


def test_register_datasets_hook_registers_a_fake_dataset():
    class FakeDatasets:
        @hookimpl
        def register_datasets(self, register):
            register(DatasetSpec("fake-data", lambda root, split: [], "test dataset"))

    with registered(FakeDatasets(), "fake-datasets"):
        assert get_dataset("fake-data").plugin == "fake-datasets"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError) as error:
        get_model("no-such-model")
    message = str(error.value)
    assert "no-such-model" in message and "vesselnet" in message and "unet-resnet34" in message
    with pytest.raises(UnknownNameError, match="focal-dice"):
        get_loss("nope")
    with pytest.raises(UnknownNameError, match="hrf-av"):
        get_dataset("nope")


def test_names_are_case_insensitive_on_lookup():
    assert get_model("UNet").name == "unet"


def test_two_plugins_claiming_one_name_is_an_error_naming_both():
    class Clash:
        @hookimpl
        def register_models(self, register):
            register(ModelSpec(name="unet", build=Identity, description="clash"))

    with registered(Clash(), "clashing-plugin"):
        with pytest.raises(DuplicateNameError) as error:
            all_models()
    message = str(error.value)
    assert "'unet'" in message and "clashing-plugin" in message and "plugin 'unet'" in message


def test_cli_unknown_model_is_a_one_line_error(cli, tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    result = cli.invoke(retinaseg_cli, ["run", "--model", "nope", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Error: " in result.output and "unknown model 'nope'" in result.output and "vesselnet" in result.output


def test_plugins_command_lists_models_losses_datasets_with_packages(cli):
    with registered(FakeModels(), "fake-models"):
        result = cli.invoke(retinaseg_cli, ["plugins"])
    assert result.exit_code == 0, result.output
    for name in BUILTIN_MODELS | BUILTIN_LOSSES | BUILTIN_DATASETS | {"fake-model"}:
        assert f"  {name} " in result.output
    assert "retinaseg 0.1.0" in result.output
    assert "registered directly" in result.output


def test_listing_plugins_does_not_import_torch():
    """Built-in plugins declare their networks and losses with Lazy, so `retinaseg plugins` starts fast."""
    code = ("import sys; from click.testing import CliRunner; from retinaseg.cli import cli; "
            "result = CliRunner().invoke(cli, ['plugins']); assert result.exit_code == 0, result.output; "
            "assert 'vesselnet' in result.output; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]", shown


def test_a_lazy_builder_imports_on_use_and_checks_options_against_its_target():
    builder = Lazy("collections:OrderedDict.fromkeys")
    assert builder(["a"]) == {"a": None}
    model = get_model("vesselnet")
    assert isinstance(model.build, Lazy)
    checked = check_options("model", "vesselnet", model.build, {"width": 8}, fixed=("in_channels", "classes"))
    assert checked == {"width": 8}
    with pytest.raises(OptionError, match="has no option 'size'.*width=16"):
        check_options("model", "vesselnet", model.build, {"size": 3}, declared=model.options,
                      fixed=("in_channels", "classes"))
    with pytest.raises(PluginError, match="no_such_package.nets:Net: cannot be imported .*ModuleNotFoundError"):
        Lazy("no_such_package.nets:Net")()
    with pytest.raises(PluginError, match="collections:NoSuchThing: cannot be imported .*AttributeError"):
        Lazy("collections:NoSuchThing")()
    with pytest.raises(ValueError, match="package.module:attribute"):
        Lazy("collections.OrderedDict")


class _BrokenEntryPoint:
    name = "broken_plugin"

    class dist:
        name, version = "broken-package", "9.9"

    def load(self):
        raise ImportError("missing dependency xyz")


def _fresh_plugin_manager(monkeypatch, entry_points):
    fresh = plugins.pluggy.PluginManager("retinaseg")
    fresh.add_hookspecs(hookspecs)
    monkeypatch.setattr(plugins, "pm", fresh)
    monkeypatch.setattr(plugins, "_loaded", False)
    monkeypatch.setattr(plugins, "_distributions", {})
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: entry_points)
    import retinaseg.registry as registry
    monkeypatch.setattr(registry, "pm", fresh)
    return fresh


def test_a_plugin_that_fails_to_import_warns_and_the_rest_load(monkeypatch):
    real = [ep for ep in importlib.metadata.entry_points(group="retinaseg") if ep.name == "unet"]
    fresh = _fresh_plugin_manager(monkeypatch, real + [_BrokenEntryPoint()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins.load_plugins()
    messages = [str(w.message) for w in caught]
    assert any("broken_plugin" in m and "broken-package 9.9" in m and "missing dependency xyz" in m
               for m in messages)
    assert fresh.get_plugin("unet") is not None
    assert "unet" in all_models()


def test_environment_allow_list_restricts_loading(monkeypatch):
    everything = list(importlib.metadata.entry_points(group="retinaseg"))
    fresh = _fresh_plugin_manager(monkeypatch, everything)
    monkeypatch.setenv(plugins.ALLOW_LIST_ENV, "unet,losses")
    plugins.load_plugins()
    assert fresh.get_plugin("unet") is not None and fresh.get_plugin("losses") is not None
    assert fresh.get_plugin("linkseg") is None and fresh.get_plugin("datasets") is None
    assert set(all_models()) == {"unet"}


def test_every_hook_has_a_test():
    """Meta-test: each hook in hookspecs.py is exercised by a test in this file."""
    source = inspect.getsource(inspect.getmodule(test_every_hook_has_a_test))
    hooks = [name for name, value in vars(hookspecs).items()
             if isinstance(value, types.FunctionType) and hasattr(value, "retinaseg_spec")]
    assert hooks, "no hooks found"
    for hook in hooks:
        assert f"def test_{hook}_hook" in source, f"hook {hook} has no test_{hook}_hook_* test"
