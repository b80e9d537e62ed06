"""Stores the tests share: a tracking store made once per module, holding one finished tiny pretraining run."""

import pytest


def pretrained_store(empty_store, folder, experiment: str, **specs) -> tuple[str, str]:
    """A store in `folder` holding one finished tiny pretraining run of `specs` (pipeline.pretrain_run's keywords), made
    once for a module's tests: (tracking URI, run id)."""
    from transferlab import pipeline

    (folder / "mlflow.db").write_bytes(empty_store.read_bytes())
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TRANSFERLAB_CACHE", str(folder / "cache"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        run_id = pipeline.pretrain_run(**specs, experiment=experiment)
    return uri, run_id
