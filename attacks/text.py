"""The text attacks by name (docs/text.md). They need the `text` extra (transformers), so
attacks/__init__.py does not import them: importing this module registers them in TEXT_ATTACKS."""
from __future__ import annotations

import fedleak.attacks.dager  # noqa: F401 - the text attacks register on import
import fedleak.attacks.tag  # noqa: F401
from fedleak.attacks.text_base import TEXT_ATTACKS, TextAttack


def build_text_attack(name: str, **options) -> TextAttack:
    return TEXT_ATTACKS.get(name).from_options(options, "attack.options")
