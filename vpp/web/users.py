"""Users and the session secret on disk: the users file ``vpp users add`` writes, read at each login.

The file is YAML (``users: [{name, role, customer, password: scrypt$...}]``), read with the bounded
loader and the same one-line errors as any config; it is re-read at every login so that adding a user
needs no restart. The secret that signs sessions lives in its own file, created on first use with mode
0600 (never in the config, which is often committed).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import yaml
from pydantic import ValidationError

from vpp import safe_yaml
from vpp.errors import InputError, from_validation_error
from vpp.web.config import UserModel, UsersFileModel, WebModel

log = logging.getLogger(__name__)


def load_users(web: WebModel, config_path: Path) -> dict[str, UserModel]:
    """The config's users, then the users file's (a name in both: the file's entry wins)."""
    users = {u.name: u for u in web.users}
    path = web.users_path(config_path)
    if path.is_file():
        users.update({u.name: u for u in _read(path).users})
    return users


def add_user(web: WebModel, config_path: Path, user: UserModel) -> Path:
    """Add or replace ``user`` in the users file (written atomically, mode 0600)."""
    path = web.users_path(config_path)
    current = _read(path).users if path.is_file() else []
    kept = [u for u in current if u.name != user.name] + [user]
    text = "# Users of the console and portal (vpp users add). Passwords are scrypt hashes.\n"
    text += yaml.safe_dump({"users": [u.model_dump(exclude_none=True) for u in kept]}, sort_keys=False, allow_unicode=True)
    _write_private(path, text)
    return path


def session_secret(web: WebModel, config_path: Path) -> bytes:
    """The signing secret, created (32 random bytes, hex) the first time."""
    path = web.secret_path(config_path)
    if not path.is_file():
        _write_private(path, secrets.token_hex(32) + "\n")
        log.info("created session secret %s", path)
    value = path.read_text().strip()
    if len(value) < 32:
        raise InputError(str(config_path), "daemon.web.secret_file", str(path), "a secret of at least 32 characters")
    return value.encode()


def _read(path: Path) -> UsersFileModel:
    raw = safe_yaml.read(path, safe_yaml.OVERRIDES) or {}
    try:
        return UsersFileModel.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(err, str(path), data=raw) from None


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
