import pytest

from fedleak.harness.run.config import RunConfig, config_from_dict, load_config
from fedleak.core.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_presets_load_and_are_typed():
    from fedleak.harness.run.config import SHIPPED as PRESETS
    for preset in PRESETS.glob("demo-*.toml"):
        config = load_config(preset)
        assert isinstance(config, RunConfig)
        assert isinstance(config.attack.iterations, int)


def test_toml_values_reach_the_dataclasses(tmp_path):
    config = load_config(write(tmp_path, '[attack]\nname = "dlg"\niterations = 7\n[victim]\nmodel = "lenet"\nrounds = 2\n'
                                         '[threat_model]\nname = "fedavg"\nlr = 1\nlocal_batch_size = 2\n'))
    assert (config.attack.name, config.attack.iterations) == ("dlg", 7)
    assert (config.victim.model, config.victim.rounds, config.victim.state) == ("lenet", 2, "trained-2")
    assert config.threat_model.lr == 1.0 and isinstance(config.threat_model.lr, float)
    assert config.threat_model.local_batch_size == 2


@pytest.mark.parametrize("text, key", [
    ('[attack]\nnmae = "ig"\n', "attack.nmae"),
    ('[attack]\niterations = "many"\n', "attack.iterations"),
    ('[data]\nvictims = [1, "two"]\n', "data.victims[1]"),
    ('[victim]\nrounds = true\n', "victim.rounds"),
    ('attack = 3\n', "attack"),
    ('[data]\nnum_victims = 3\nbatch_size = 2\n', "data"),
    ('[data]\nnum_victims = 0\n', "data"),
    ('[data]\nvictims = []\n', "data"),
    ('device = "tpu"\n', "device"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert str(err.value).startswith(key), str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_config(write(tmp_path, "[attack\nname = 'ig'"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides_reach_nested_tables():
    config = config_from_dict({"attack": {"options": {"tv": 0.1}}}, {"attack.options.lr": 0.5, "seed": 3})
    assert config.attack.options == {"tv": 0.1, "lr": 0.5} and config.seed == 3


def test_digest_ignores_output_but_not_seed():
    a = config_from_dict({}, {"output": "x"})
    assert a.digest() == config_from_dict({}, {"output": "y"}).digest()
    assert a.digest() != config_from_dict({}, {"seed": 1}).digest()


def test_local_training_options_are_local_training_under_config_names():
    """One source of truth for the client's loop: the threat model's config keys are LocalTraining's
    fields (same order and defaults; batch_size spelled local_batch_size), and they build it back."""
    import dataclasses
    from fedleak.harness.run.config import LocalTrainingOptions, ThreatModelConfig
    from fedleak.models.functional import LocalTraining
    mine = [(f.name, f.default) for f in dataclasses.fields(LocalTrainingOptions)]
    theirs = [("local_batch_size" if f.name == "batch_size" else f.name, f.default) for f in dataclasses.fields(LocalTraining)]
    assert mine == theirs
    config = ThreatModelConfig("fedavg", lr=0.05, local_batch_size=2, optimizer="adam")
    assert config.local_training() == LocalTraining(lr=0.05, batch_size=2, optimizer="adam")


def test_the_harness_configs_check_themselves_when_built():
    """One convention, as every options class: the checks are the dataclass's __post_init__, so a
    RunConfig or GateConfig built in code is checked as one loaded from TOML."""
    from dataclasses import replace
    from fedleak.core.errors import ConfigError
    from fedleak.harness.run.config import DataConfig, RunConfig
    from fedleak.harness.verdict.gate import GateConfig
    with pytest.raises(ConfigError, match="data.batch_size: must be >= 1"):
        RunConfig(data=DataConfig(batch_size=0))
    with pytest.raises(ConfigError, match="device: expected auto"):
        replace(RunConfig(), device="tpu")
    with pytest.raises(ConfigError, match="statistic: expected one of worst, median, mean"):
        GateConfig(statistic="best")
    with pytest.raises(ConfigError, match="gate.min_images: must be >= 1"):
        from fedleak.harness.matrix.config import matrix_from_dict
        matrix_from_dict({"attacks": [{"name": "dlg"}], "defenses": [{"name": "none"}], "gate": {"min_images": 0}})
