"""The environment variables Depot's settings models read, for tests that compare them with
the deployment files and the README."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from depot_common.settings import DepotSettings
from depot_indexer.settings import IndexerSettings
from depot_reconciler.settings import ReconcilerSettings
from depot_upload.settings import UploadSettings


def setting_names(*models: type[BaseSettings]) -> set[str]:
    """Every environment variable the settings models read."""
    names = set()
    for model in models:
        prefix = str(model.model_config.get("env_prefix", ""))
        for field, info in model.model_fields.items():
            alias = info.validation_alias
            names.add(alias if isinstance(alias, str) else (prefix + field).upper())
    return names


ALL_SETTINGS = setting_names(DepotSettings, UploadSettings, IndexerSettings, ReconcilerSettings)
