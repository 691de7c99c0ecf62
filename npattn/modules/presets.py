"""The book's bonus classes as presets of npattn.Attention: their attributes read the config.

A preset's constructor turns the book's arguments into an AttentionConfig; `m.config` stays
the one source of truth, so `m.num_heads` or `m.sliding_window_size` are read from it, and
the few the book lets a user change (dropout, the window) replace the config, checked as a
new config would be.
"""

from __future__ import annotations

import dataclasses


def preset_property(field: str, settable: bool = False, name: str | None = None) -> property:
    """An attribute read from m.config.<field>; with settable, setting it replaces the config
    (dataclasses.replace: the config's own checks run, naming the attribute)."""

    def fget(self):
        return getattr(self.config, field)

    def fset(self, value) -> None:
        label = name or field
        try:
            config = dataclasses.replace(self.config, **{field: value})
        except (TypeError, ValueError) as e:  # the config names its field; name the attribute
            raise type(e)(str(e).replace(field, label, 1)) from None
        self._config = config
        self._invalidate()  # a new window or dropout: the cache and the last forward are stale

    return property(fget, fset if settable else None, doc=f"config.{field}")
