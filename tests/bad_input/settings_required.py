"""A required setting (a secret) given neither on the command line nor in the environment."""

import os

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SETTINGS_REQUIRED_")

    db_password: SecretStr


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    yield File(path=f"{T}/created.conf", content=settings.db_password)
