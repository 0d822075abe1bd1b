"""experiments.deeplab_lr_sweep: the settings it parses into recipes."""

import pytest

from experiments import deeplab_lr_sweep


def test_adamw_and_sgd_settings_become_the_documented_recipes():
    adamw = deeplab_lr_sweep.recipe("adamw:5e-3", epochs=2)
    sgd = deeplab_lr_sweep.recipe("sgd:0.03", epochs=3)
    assert (adamw.learning_rate, adamw.weight_decay, adamw.sgd_momentum) == (5e-3, 1e-4, None)
    assert (sgd.learning_rate, sgd.weight_decay, sgd.sgd_momentum) == (0.03, 4e-5, 0.9)
    assert (adamw.batch_size, adamw.augment, adamw.epochs, sgd.epochs) == (16, True, 2, 3)


@pytest.mark.parametrize("setting", ["adam:1e-3", "adamw", "sgd:fast"])
def test_a_bad_setting_is_refused(setting):
    with pytest.raises(ValueError):
        deeplab_lr_sweep.recipe(setting, epochs=1)
