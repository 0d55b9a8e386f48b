"""A valid file with a Settings class, run with bad ``--set`` values or environment."""

import os

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAD_SETTINGS_")

    port: int = 8080
    domain: str = "example.org"
    db_password: SecretStr = Field(default=SecretStr("a-long-enough-default"), min_length=12)


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content=f"port = {settings.port}\n")
    yield File(path=f"{T}/created.conf", content=settings.db_password)
