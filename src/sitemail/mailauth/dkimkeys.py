"""This site's DKIM keys: made at `init`, rotated, loaded for signing, published as TXT records.

One job: the key files and the selectors that name them. Each site signs with keys of its
own (no private key leaves its site), under selectors derived from the site's name: site
SiteA signs with `sitea` (RSA-2048, RFC 6376) and `sitea-ed25519` (Ed25519, RFC 8463); a
rotation makes `sitea2` / `sitea2-ed25519`, then `sitea3`...

A key set goes through three states, kept in `keys/dkim/selectors.json`:
- next: made by `sitemail dkim rotate`, published in DNS but not yet used to sign, so
  the record is in every resolver before the first signature that needs it;
- active: the set that signs (`dkim rotate --activate` promotes next to active);
- previous: the set that signed until the last activation; still published, so that mail
  signed with it and still in transit somewhere verifies; dropped at the next activation.

Private keys are PEM files mode 0600 under `keys/dkim/` (RSA as PKCS#1, which OpenDKIM and
dkimpy both read; Ed25519 as PKCS#8). The state file is replaced atomically.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key

from sitemail.core.errors import ConfigError, ConflictError, NotFoundError

__all__ = [
    "DKIM_DIR",
    "DkimKeyState",
    "DkimPublicRecord",
    "SigningKey",
    "activate_next",
    "dkim_key_files",
    "dkim_public_records",
    "generate_dkim_keys",
    "load_signing_keys",
    "load_state",
    "rotate",
    "selector_base",
    "state_stamp",
]

DKIM_DIR = "keys/dkim"
_STATE_FILE = "selectors.json"
_RSA_BITS = 2048
_ED_SUFFIX = "-ed25519"
RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
_K = TypeVar("_K", RSAPrivateKey, Ed25519PrivateKey)


@dataclass(frozen=True)
class DkimPublicRecord:
    """One TXT record to publish: ``txt`` at ``name`` (``<selector>._domainkey.<domain>``)."""

    domain: str
    selector: str
    txt: str  # the whole value: "v=DKIM1; k=rsa; p=..."

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def zone_text(self) -> str:
        """The TXT value as zone-file text: quoted strings of at most 255 octets each (an
        RSA-2048 key does not fit in one), ready for a zone file or the lab's DNS server."""
        return " ".join(f'"{self.txt[i : i + 255]}"' for i in range(0, len(self.txt), 255))


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private key ready for dkimpy: ``private`` is PEM (RSA) or the base64 seed (Ed25519)."""

    selector: str
    algorithm: str  # RSA_SHA256 or ED25519_SHA256
    private: bytes


@dataclass(frozen=True, slots=True)
class DkimKeyState:
    """Which key sets exist: ``active`` signs; ``next`` and ``previous`` are only published."""

    base: str  # the site's selector stem, e.g. "sitea"
    serial: int  # the last number given to a key set (1 for the first, unnumbered one)
    active: str
    next: str | None = None
    previous: str | None = None

    def published(self) -> list[str]:
        """The key sets whose records belong in DNS, active first."""
        return [s for s in (self.active, self.next, self.previous) if s is not None]


def selector_base(site: str) -> str:
    """The selector stem for a site name: lowercase letters, digits and inner hyphens."""
    stem = re.sub(r"[^a-z0-9-]+", "", site.lower()).strip("-")
    return stem[:40] or "sitemail"


def _dir(data_dir: Path) -> Path:
    return data_dir / DKIM_DIR


def _rsa_file(data_dir: Path, key_set: str) -> Path:
    return _dir(data_dir) / f"{key_set}.rsa.pem"


def _ed_file(data_dir: Path, key_set: str) -> Path:
    return _dir(data_dir) / f"{key_set}.ed25519.pem"


def dkim_key_files(data_dir: Path) -> list[Path]:
    """Every DKIM private key file present (for the file-mode checks)."""
    directory = _dir(data_dir)
    return sorted(directory.glob("*.pem")) if directory.is_dir() else []


def _write_private(path: Path, data: bytes) -> None:
    """Write a new secret file 0600 (never over an existing one) and fsync it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path} exists already: a DKIM key is never replaced") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _make_key_set(data_dir: Path, key_set: str) -> None:
    _dir(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    rsa_key = generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
    _write_private(
        _rsa_file(data_dir, key_set),
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1: dkimpy and OpenDKIM
            serialization.NoEncryption(),
        ),
    )
    _write_private(
        _ed_file(data_dir, key_set),
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _save_state(data_dir: Path, state: DkimKeyState) -> None:
    path = _dir(data_dir) / _STATE_FILE
    temporary = path.with_suffix(".tmp")
    text = json.dumps(
        {
            "base": state.base,
            "serial": state.serial,
            "active": state.active,
            "next": state.next,
            "previous": state.previous,
        },
        indent=2,
    )
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_state(data_dir: Path) -> DkimKeyState | None:
    """The key sets of this data dir; None when it has none (made before DKIM existed)."""
    path = _dir(data_dir) / _STATE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return DkimKeyState(
            base=str(raw["base"]),
            serial=int(raw["serial"]),
            active=str(raw["active"]),
            next=raw.get("next"),
            previous=raw.get("previous"),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged ({exc}): restore it from a backup") from exc


def state_stamp(data_dir: Path) -> tuple[int, int] | None:
    """(mtime in ns, size) of the key-set state file, None without one: changes on rotation."""
    try:
        stat = (_dir(data_dir) / _STATE_FILE).stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def generate_dkim_keys(data_dir: Path, site: str) -> DkimKeyState:
    """Make the site's first key set (at `init`, or for a data dir that has none)."""
    if load_state(data_dir) is not None:
        raise ConflictError(f"{_dir(data_dir)} has DKIM keys already: use `sitemail dkim rotate`")
    base = selector_base(site)
    _make_key_set(data_dir, base)
    state = DkimKeyState(base=base, serial=1, active=base)
    _save_state(data_dir, state)
    return state


def _require_state(data_dir: Path) -> DkimKeyState:
    state = load_state(data_dir)
    if state is None:
        raise NotFoundError(
            f"this data dir has no DKIM keys ({_dir(data_dir)}): make them with `sitemail dkim init`"
        )
    return state


def rotate(data_dir: Path) -> DkimKeyState:
    """Make the next key set, to publish now and activate once DNS serves it."""
    state = _require_state(data_dir)
    if state.next is not None:
        raise ConflictError(
            f"key set {state.next} is already waiting to be activated: publish its records, "
            "then run `sitemail dkim rotate --activate`"
        )
    serial = state.serial + 1
    key_set = f"{state.base}{serial}"
    _make_key_set(data_dir, key_set)
    new = DkimKeyState(state.base, serial, state.active, key_set, state.previous)
    _save_state(data_dir, new)
    return new


def activate_next(data_dir: Path) -> DkimKeyState:
    """Sign with the next key set from now on; the active one becomes previous."""
    state = _require_state(data_dir)
    if state.next is None:
        raise ConflictError("no key set waits to be activated: run `sitemail dkim rotate` first")
    new = DkimKeyState(state.base, state.serial, state.next, None, state.active)
    _save_state(data_dir, new)
    if state.previous is not None:  # out of DNS now: its private keys have no more use
        _rsa_file(data_dir, state.previous).unlink(missing_ok=True)
        _ed_file(data_dir, state.previous).unlink(missing_ok=True)
    return new


def _load_key(path: Path, kind: type[_K]) -> _K:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(f"DKIM key {path} is missing: restore it or rotate the keys") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"DKIM key {path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, kind):
        raise ConfigError(f"DKIM key {path} is not an {kind.__name__} key")
    return key


def _rsa(data_dir: Path, key_set: str) -> RSAPrivateKey:
    return _load_key(_rsa_file(data_dir, key_set), RSAPrivateKey)  # type: ignore[type-abstract]


def _ed(data_dir: Path, key_set: str) -> Ed25519PrivateKey:
    return _load_key(_ed_file(data_dir, key_set), Ed25519PrivateKey)  # type: ignore[type-abstract]


def load_signing_keys(data_dir: Path) -> tuple[SigningKey, ...]:
    """The active key set as dkimpy takes it, RSA first; () when the data dir has no keys."""
    state = load_state(data_dir)
    if state is None:
        return ()
    rsa_pem = _rsa_file(data_dir, state.active)
    _rsa(data_dir, state.active)  # a damaged file is a ConfigError at start, not at send
    seed = _ed(data_dir, state.active).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return (
        SigningKey(state.active, RSA_SHA256, rsa_pem.read_bytes()),
        SigningKey(state.active + _ED_SUFFIX, ED25519_SHA256, base64.b64encode(seed)),
    )


def _public_txts(data_dir: Path, key_set: str) -> list[tuple[str, str]]:
    """(selector, TXT value) for both keys of a set."""
    rsa_der = (
        _rsa(data_dir, key_set)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ed_raw = (
        _ed(data_dir, key_set)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return [
        (key_set, f"v=DKIM1; k=rsa; p={base64.b64encode(rsa_der).decode('ascii')}"),
        (
            key_set + _ED_SUFFIX,
            f"v=DKIM1; k=ed25519; p={base64.b64encode(ed_raw).decode('ascii')}",
        ),
    ]


def dkim_public_records(data_dir: Path, domains: Sequence[str]) -> list[DkimPublicRecord]:
    """The TXT records of this site's published key sets (active, next, previous) per domain."""
    state = load_state(data_dir)
    if state is None:
        return []
    txts = [pair for key_set in state.published() for pair in _public_txts(data_dir, key_set)]
    return [
        DkimPublicRecord(domain.lower().rstrip("."), selector, txt)
        for domain in domains
        for selector, txt in txts
    ]
