"""Map untrusted raw ids (from log lines) to safe, unique `metadata.name`s.

A raw id may hold `/`, `..`, upper case, spaces or kilobytes of text. Names must
be DNS-1123 subdomains, deterministic, and collision-free. The rule:

* an id that already is a short lower-case DNS-1123 name (and does not look
  like a hashed name) is its own name: Foyle's hex trace ids and UUID block ids;
* anything else becomes `<readable prefix>-h<hash>`: lower-cased, invalid
  characters folded to `-`, cut to 40 characters, and a 16-character base32
  SHA-256 of the exact raw id. ULIDs (upper case) land here: lower-casing
  alone is not injective ("ABC" and "abc" would share a name).

The two forms never collide (verbatim names never end in `-h` + 16 base32
characters); hashed forms differ unless 80-bit hashes collide. The raw id is
always kept in `spec.id`, and the CLI finds a resource by either.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_HASHED = re.compile(r"-h[a-z2-7]{16}$")
_INVALID = re.compile(r"[^a-z0-9.-]+")
MAX_VERBATIM = 63
PREFIX_LEN = 40


def _digest(raw_id: str) -> str:
    digest = hashlib.sha256(raw_id.encode("utf-8", "surrogatepass")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:16]


def is_valid_name(name: str) -> bool:
    """True for a DNS-1123 subdomain of at most 253 characters."""
    return len(name) <= 253 and bool(_DNS1123.match(name)) and ".." not in name


def is_hashed(name: str) -> bool:
    """True for the `<prefix>-h<hash>` form (a verbatim name never has it)."""
    return bool(_HASHED.search(name))


@functools.lru_cache(maxsize=1 << 16)  # the same ids come back on every reconcile
def name_for_id(raw_id: str) -> str:
    """The deterministic, collision-free resource name of a raw id."""
    if (
        len(raw_id) <= MAX_VERBATIM
        and _DNS1123.match(raw_id)
        and ".." not in raw_id
        and not _HASHED.search(raw_id)
    ):
        return raw_id
    prefix = _INVALID.sub("-", raw_id.lower())[:PREFIX_LEN]
    prefix = re.sub(r"\.{2,}", ".", prefix).strip("-.")
    return f"{prefix}-h{_digest(raw_id)}" if prefix else f"h{_digest(raw_id)}"
