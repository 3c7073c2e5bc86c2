"""Text as integer ids: a character vocabulary (``nnlite.datasets.CharVocab``), as nanoGPT's
character-level ``stoi``/``itos``, saved as a small JSON file beside a model.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..files.archive import atomic_write

#: A vocabulary file larger than this is refused unread (a character table is a few KB).
MAX_FILE_BYTES = 1 << 20


class CharVocab:
    """The distinct characters of ``text``, sorted: id i is the i-th of them.

    ``encode(str)`` gives int64 ids (an unknown character is a ValueError naming it),
    ``decode(ids)`` the string back; ``save(path)`` and ``CharVocab.load(path)`` keep it
    beside a model as JSON (``get_config``/``from_config``).
    """

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            raise ValueError(f"CharVocab: needs a non-empty str of text, got "
                             f"{type(text).__name__}{'' if text else ' (empty)'}")
        self.chars = "".join(sorted(set(text)))
        self._codes = _codes(self.chars)          # sorted code points: id = rank

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise ValueError(f"CharVocab.encode takes a str, got {type(text).__name__}")
        codes = _codes(text)
        ids = np.searchsorted(self._codes, codes)
        unknown = (ids == len(self)) | (self._codes[np.minimum(ids, len(self) - 1)] != codes)
        if unknown.any():
            at = int(np.argmax(unknown))
            raise ValueError(f"CharVocab.encode: {text[at]!r} (position {at}) is not one of "
                             f"the vocabulary's {len(self)} characters")
        return ids.astype(np.int64)

    def decode(self, ids: Any) -> str:
        ids = np.asarray(ids)
        if ids.ndim > 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"CharVocab.decode takes one sequence of integer ids, got "
                             f"{ids.dtype} of shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"CharVocab.decode: ids must be in [0, {len(self)}), got "
                             f"{int(ids.min())}..{int(ids.max())}")
        return self._codes[ids.astype(np.intp)].tobytes().decode("utf-32-le")

    def get_config(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_config(cls, config: Any) -> CharVocab:
        chars = config.get("chars") if isinstance(config, dict) else None
        if not isinstance(chars, str) or not chars or "".join(sorted(set(chars))) != chars:
            raise ValueError("CharVocab: the config's 'chars' must be distinct characters in "
                             "sorted order")
        return cls(chars)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        data = json.dumps({"format": "nnlite-charvocab", **self.get_config()}).encode()
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharVocab:
        """The vocabulary ``save`` wrote; anything else is a ValueError naming the file."""
        try:
            if os.path.getsize(path) > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            with open(path, "rb") as f:
                config = json.loads(f.read().decode("utf-8"))
            if not isinstance(config, dict) or config.get("format") != "nnlite-charvocab":
                raise ValueError("not an nnlite character vocabulary")
            return cls.from_config(config)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters)"


def _codes(text: str) -> np.ndarray:
    """The code point of every character, as uint32."""
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)
