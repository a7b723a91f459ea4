"""Named experiments: overlays merged over the top-level sections, their folders, the ensemble, and what is refused."""

import pytest

from tilepipe import config as tconfig
from tilepipe.errors import InputError
from tilepipe.experiments import (
    DEFAULT_EXPERIMENT,
    ensemble_weights,
    experiment_names,
    experiment_of_root,
    experiment_root,
    experiment_sections,
)

UNETPP = {"model": {"architecture": "UnetPlusPlus", "encoder": "timm/regnety_002"}, "train": {"lr": 3e-3}}


def two_experiments(**ensemble):
    return tconfig.resolve({"experiments": {"main": {}, "unetpp": UNETPP}, "ensemble": ensemble})


def test_without_experiments_there_is_one_main_made_of_the_top_level_sections():
    config = tconfig.defaults()
    assert experiment_names(config) == [DEFAULT_EXPERIMENT] == ["main"]
    sections = experiment_sections(config, "main")
    assert sections == {name: dict(sorted(config[name].items())) for name in ("model", "loss", "train")}
    assert list(sections["train"]) == sorted(sections["train"]), "sorted keys: a stable params repr"
    assert ensemble_weights(config) == {"main": 1.0}


def test_an_overlay_merges_over_the_top_level_sections_and_leaves_them_alone():
    config = tconfig.resolve(
        {"train": {"epochs": 5}, "experiments": {"main": {}, "unetpp": UNETPP}, "loss": {"clf": 0.5}}
    )
    experiments = {name: experiment_sections(config, name) for name in experiment_names(config)}
    assert list(experiments) == ["main", "unetpp"]
    main, unetpp = experiments["main"], experiments["unetpp"]
    assert main["model"]["architecture"] == "unet_1st_place" and main["train"]["lr"] == 1e-3
    assert unetpp["model"]["architecture"] == "UnetPlusPlus" and unetpp["model"]["encoder"] == "timm/regnety_002"
    assert unetpp["train"]["lr"] == 3e-3 and unetpp["train"]["epochs"] == 5, "other keys from the top level"
    assert unetpp["loss"]["clf"] == 0.5 and unetpp["model"]["clf_head"] is True
    assert config["model"]["architecture"] == "unet_1st_place" and config["train"]["lr"] == 1e-3


def test_a_list_in_an_overlay_replaces_the_top_level_list():
    config = tconfig.resolve(
        {"experiments": {"main": {}, "b": {"train": {"augmentations": [{"name": "StainJitter"}]}}}}
    )
    assert experiment_sections(config, "b")["train"]["augmentations"] == [{"name": "StainJitter"}]
    assert experiment_sections(config, "main")["train"]["augmentations"] == "light"


def test_main_keeps_the_single_model_folder_and_others_get_their_own():
    assert experiment_root("main") == "results"
    assert experiment_root("unetpp") == "results/experiments/unetpp"
    for name in ("main", "unetpp", "a-b_1"):
        assert experiment_of_root(experiment_root(name)) == name
    for bad in ("results/experiments/", "results/experiments/a/b", "other"):
        with pytest.raises(ValueError, match="no experiment folder"):
            experiment_of_root(bad)


def test_the_ensemble_is_every_experiment_at_equal_weights_unless_chosen():
    assert ensemble_weights(two_experiments()) == {"main": 0.5, "unetpp": 0.5}
    assert ensemble_weights(two_experiments(experiments=["unetpp"])) == {"unetpp": 1.0}
    assert ensemble_weights(two_experiments(experiments=["unetpp", "main"], weights=[3, 1])) == {
        "unetpp": 0.75,
        "main": 0.25,
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"experiments": {"a": {}, "b": {}}}, "experiments: needs an experiment named 'main'"),
        (
            {"experiments": {"main": {}, "b": {"train": {"lr": -1}}}},
            r"experiments\.b\.train\.lr: -1 is less than or equal to the minimum of 0",
        ),
        ({"experiments": {"main": {}, "b": {"model": {"encodr": "x"}}}}, r"experiments\.b\.model: .*'encodr'"),
        (
            {"experiments": {"main": {}, "b": {"model": {"architecture": "UnetPlusPlus", "cbam": True}}}},
            r"experiments\.b\.model\.cbam: part of the unet_1st_place decoder",
        ),
        (
            {"experiments": {"main": {}, "b": {"model": {"architecture": "PAN"}}}},
            r"experiments\.b\.train\.input_size: PAN needs inputs of at least 128 px",
        ),
        ({"model": {"architecture": "unet"}}, r"^model\.architecture: unknown architecture 'unet'"),
        ({"ensemble": {"experiments": ["main", "x"]}}, r"ensemble\.experiments: expected distinct names"),
        ({"ensemble": {"experiments": ["main", "main"]}}, r"ensemble\.experiments: expected distinct names"),
        ({"ensemble": {"weights": [1, 2]}}, r"ensemble\.weights: expected one weight >= 0 per member \(main\)"),
        ({"ensemble": {"weights": [0]}}, r"ensemble\.weights: expected one weight"),
        (
            {"experiments": {"main": {}, "big": {"train": {"input_size": 128}}}},
            r"ensemble\.experiments: big's train\.input_size 128 differs from main's 64",
        ),
        ({"experiments": {"main": {}, "b": {}}, "ensemble": {"weights": [1, float("nan")]}}, r"ensemble\.weights"),
        ({"experiments": {"main": {}, "b": {}}, "ensemble": {"weights": [2, -1]}}, r"ensemble\.weights"),
        ({"experiments": {"main": {}, "UnetPP": {}, "unetpp": {}}}, r"differ only in case.*UnetPP, unetpp"),
        (
            {"experiments": {"main": {}, "b": {"train": {"num_workers": 0}}}},
            r"experiments\.b\.train\.num_workers: set for the whole run",
        ),
        ({"experiments": {"main": {}, "b": {"train": {"device": "cpu"}}}}, r"experiments\.b\.train\.device"),
        (
            {"experiments": {"main": {}, "b": {"model": {"clf_head": False}}}},
            r"inference\.clf_threshold: b's model has no classification head",
        ),
    ],
)
def test_contradictions_are_refused_naming_the_experiment_and_key(config, message):
    with pytest.raises(InputError, match=message):
        tconfig.resolve(config)


def test_a_headless_member_is_allowed_when_nothing_gates_on_the_head():
    config = tconfig.resolve(
        {"experiments": {"main": {}, "b": {"model": {"clf_head": False}}}, "inference": {"clf_threshold": None}}
    )
    assert experiment_sections(config, "b")["model"]["clf_head"] is False
    tconfig.resolve(
        {"experiments": {"main": {}, "b": {"model": {"clf_head": False}}}, "ensemble": {"experiments": ["main"]}}
    )


def test_a_member_left_out_of_the_ensemble_may_take_another_input_size():
    config = tconfig.resolve(
        {"experiments": {"main": {}, "big": {"train": {"input_size": 128}}}, "ensemble": {"experiments": ["main"]}}
    )
    assert experiment_sections(config, "big")["train"]["input_size"] == 128


def test_the_schema_refuses_other_sections_and_bad_names():
    with pytest.raises(InputError, match=r"experiments\.main\.inference: unknown key \(known: model, loss, train\)"):
        tconfig.resolve({"experiments": {"main": {"inference": {}}}})
    with pytest.raises(InputError, match="does not match"):
        tconfig.resolve({"experiments": {"main": {}, "a/b": {}}})
