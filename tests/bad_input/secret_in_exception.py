"""``desired`` fails on a secret setting, and the exception's message holds the secret's value
(``int()`` quotes what it could not parse): the error must still never print it."""

import os

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from converge import File

T = os.environ["CONVERGE_TEST_TARGET"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SECRET_IN_EXCEPTION_")

    admin_pin: SecretStr = SecretStr("4711")


def desired(facts, settings):
    yield File(path=f"{T}/existing.conf", content="replaced\n")
    pin = int(settings.admin_pin.get_secret_value())  # <- error
    yield File(path=f"{T}/created.conf", content=SecretStr(f"pin = {pin:06d}\n"))
