"""The prompt strategies' names: what settings, stored versions, prompt files, jobs and the API
call them (kept apart from the registry so that reading a name imports no model code)."""

from __future__ import annotations

from enum import StrEnum


class StrategyName(StrEnum):
    PAPREC = "paprec"  # discrete trigger tokens (task-level and personal)
    RPP = "rpp"  # a per-user choice of prompt sentences per slot
    SOFT = "soft"  # per-user soft prompt vectors composed from a shared pool, fitted per user
