"""The ``daemon.web:`` block: who may log in, how long a session lasts, the default language, the PDF font.

Users are listed here (``users:``, passwords already hashed) and/or in a users file beside the config
that ``vpp users add`` writes (so no password ever has to be typed into the config). A customer user
is bound to one customer name, as the ``contracts:`` block names it (``customer:`` of energy-as-a-service
and agency contracts, a party of ``stakes_pct`` for co-investment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vpp.web.auth import is_password_hash

LANGUAGES = ("en", "zh-CN")
DEFAULT_PDF_FONTS = ("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",)  # Debian fonts-droid-fallback (Apache-2.0)
LATIN_PDF_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian fonts-dejavu-core: the CJK font has no Latin glyphs


class UserModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$", description="login name")
    role: Literal["operator", "customer"] = Field(description="operator: the console and every statement; customer: its own statements only")
    customer: str | None = Field(None, min_length=1, max_length=128, description="customer users: the customer name of their contracts")
    password: str = Field(max_length=256, description="scrypt hash from `vpp users add` (scrypt$n$r$p$salt$hash), never the password")

    @field_validator("password")
    @classmethod
    def _hashed(cls, value: str) -> str:
        if not is_password_hash(value):
            raise ValueError("a scrypt hash as `vpp users add` writes it, not a plain password")
        return value

    @model_validator(mode="after")
    def _bound(self) -> UserModel:
        if self.role == "customer" and self.customer is None:
            raise ValueError("a customer user needs `customer:` (the customer name of its contracts)")
        if self.role == "operator" and self.customer is not None:
            raise ValueError("an operator sees every customer: give no `customer:`")
        return self


class UsersFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[UserModel] = Field(default_factory=list, max_length=10_000)


class WebModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[UserModel, ...] = Field((), description="users with hashed passwords (or keep them in users_file)")
    users_file: str | None = Field(None, description="YAML users file `vpp users add` writes (default: <config>.users.yaml beside the config)")
    secret_file: str | None = Field(None, description="file holding the session-signing secret (default: <config>.web-secret, created 0600)")
    session_ttl_min: float = Field(480, gt=0, le=7 * 24 * 60, description="a login lasts this long")
    language: Literal["en", "zh-CN"] = Field("zh-CN", description="default page language (each user can switch)")
    pdf_font: str | None = Field(None, description="TrueType font with CJK glyphs for PDF statements (default: Debian's fonts-droid-fallback)")

    def users_path(self, config_path: Path) -> Path:
        return config_path.parent / self.users_file if self.users_file else config_path.with_suffix(".users.yaml")

    def secret_path(self, config_path: Path) -> Path:
        return config_path.parent / self.secret_file if self.secret_file else config_path.with_suffix(".web-secret")
