"""The base of every recipe section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every recipe section: frozen, unknown keys forbidden, defaults validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
