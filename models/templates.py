"""Manual prompt templates (several phrasings per task) and how their fields are filled."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.text import item_token

TASKS = ("sequential", "direct")


@dataclass(frozen=True)
class Template:
    name: str
    task: str
    text: str  # fields: {profile} {taste} {history} {candidates}


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "seq-1",
            "sequential",
            "{profile} {taste} here is the watch history of the user : {history} "
            "recommend the next item",
        ),
        # History part first, as in PAP-REC's searched layout: triggers are appended after it.
        Template("seq-2", "sequential", "user history : {history} {profile} {taste}"),
        Template(
            "seq-3",
            "sequential",
            "{profile} {taste} the user has watched {history} . what will the user watch next ?",
        ),
        Template(
            "seq-4",
            "sequential",
            "given the movies {history} watched by a user {profile} {taste} , "
            "predict the next movie",
        ),
        Template(
            "direct-1",
            "direct",
            "{profile} {taste} history : {history} candidates : {candidates} "
            "which candidate will the user pick ?",
        ),
        Template(
            "direct-2",
            "direct",
            "pick the best item for the user from {candidates} given the history "
            "{history} {profile} {taste}",
        ),
    )
}

CONTENT_TEMPLATE = "movie {title} genres {genres}"


def templates_for(task: str) -> list[Template]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return [t for t in TEMPLATES.values() if t.task == task]


@dataclass(frozen=True)
class PromptFields:
    """What a filled prompt says about one user; empty lists leave a field out."""

    history: list[int]
    profile: list[str] = field(default_factory=list)
    taste: list[str] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)


def render_tokens(template: Template, fields: PromptFields, max_history: int) -> list[str]:
    """The template filled in, as tokens (no end-of-sequence token)."""
    parts = {
        "history": [item_token(i) for i in fields.history[-max_history:]],
        "profile": ["profile", ":", *fields.profile] if fields.profile else [],
        "taste": ["taste", ":", *fields.taste] if fields.taste else [],
        "candidates": [item_token(i) for i in fields.candidates],
    }
    out: list[str] = []
    for piece in template.text.split():
        if piece.startswith("{") and piece.endswith("}"):
            out.extend(parts[piece[1:-1]])
        else:
            out.append(piece)
    return out


def render_text(template: Template, fields: PromptFields, max_history: int) -> str:
    return " ".join(render_tokens(template, fields, max_history))


def content_tokens(title: list[str], genres: list[str]) -> list[str]:
    out = ["movie", *title]
    if genres:
        out += ["genres", *genres]
    return out
