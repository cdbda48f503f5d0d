"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import os

from amazon_llm_rec.hooks import ProjectHooks
from amazon_llm_rec.tracking import TrackingHooks

# No network here and none expected: Kedro's telemetry is off unless a user opts in.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Nothing is downloaded from a model hub unless the user names a hub id and allows it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HOOKS = (ProjectHooks(), TrackingHooks())
# kedro-mlflow's hook runs inside TrackingHooks, only when `tracking.enabled` (MLflow is imported only then)
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-telemetry", "kedro_mlflow")  # distribution names as installed

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/gpu and conf/paper override single keys of the base parameters, not whole blocks
    "merge_strategy": {"parameters": "soft"},
    # conf/<env>/mlflow.yml: kedro-mlflow's settings (its own hook registers this pattern, but it is disabled above)
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
}
