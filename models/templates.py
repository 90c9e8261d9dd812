"""Manual prompt templates (several phrasings) and how their fields are filled.

The RLM is decoder-only and reads a user's items last: every template ends with `{history}`,
so the prompt's last position is the last item, whose next-item logits rank the catalogue.
Whatever a prompt strategy adds (trigger tokens) goes between the template's words and the
history (`render_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promptrec.models.text import item_token

TASKS = ("sequential", "direct")
HISTORY_FIELD = "{history}"


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # fields: {profile} {taste}, and {history} last

    def __post_init__(self) -> None:
        if not self.text.endswith(HISTORY_FIELD) or self.text.count(HISTORY_FIELD) != 1:
            raise ValueError(f"template {self.name!r} must end with its one {HISTORY_FIELD}")


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("seq-1", "{profile} {taste} here is the watch history of the user : {history}"),
        Template("seq-2", "{profile} {taste} user history : {history}"),
        Template(
            "seq-3",
            "{profile} {taste} what will the user watch next ? the user has watched {history}",
        ),
        Template(
            "seq-4",
            "predict the next movie watched by a user {profile} {taste} given the movies {history}",
        ),
    )
}

CONTENT_TEMPLATE = "movie {title} genres {genres}"


def templates_for(task: str) -> list[Template]:
    """Both tasks read the same prompts: `direct` ranks the same scores among its candidates."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return list(TEMPLATES.values())


@dataclass(frozen=True)
class PromptFields:
    """What a filled prompt says about one user; empty lists leave a field out.

    `candidates` restrict the ranking of the direct task; they are not part of the prompt."""

    history: list[int]
    profile: list[str] = field(default_factory=list)
    taste: list[str] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)


def render_parts(
    template: Template, fields: PromptFields, max_history: int
) -> tuple[list[str], list[str]]:
    """(prefix words, history item tokens) of the filled template."""
    parts = {
        "profile": ["profile", ":", *fields.profile] if fields.profile else [],
        "taste": ["taste", ":", *fields.taste] if fields.taste else [],
    }
    prefix: list[str] = []
    for piece in template.text.split()[:-1]:
        if piece.startswith("{") and piece.endswith("}"):
            prefix.extend(parts[piece[1:-1]])
        else:
            prefix.append(piece)
    history = [item_token(i) for i in fields.history[-max_history:]] if max_history else []
    return prefix, history


def render_tokens(template: Template, fields: PromptFields, max_history: int) -> list[str]:
    """The template filled in, as tokens (no begin-of-sequence token)."""
    prefix, history = render_parts(template, fields, max_history)
    return prefix + history


def render_text(template: Template, fields: PromptFields, max_history: int) -> str:
    return " ".join(render_tokens(template, fields, max_history))


def content_tokens(title: list[str], genres: list[str]) -> list[str]:
    out = ["movie", *title]
    if genres:
        out += ["genres", *genres]
    return out
