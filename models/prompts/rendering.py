"""The prompt layout: `[template words, profile/taste] T1..Tm P1..Pd [history items]`.

A manual template fills the words and the profile and taste fields; the task-level trigger
tokens T shared by all users and the user's personal tokens P follow them, right before the
history, whose last item's position ranks the catalogue. With no trigger tokens this is
exactly the manual template.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptrec.models.templates import PromptFields, Template, render_parts

# The served manual template per task: the best on validation (bench/results/rlm_quality.json);
# PAP-REC searches its tokens after the same template (PaprecConfig.template), and
# `db load-prompts` refuses a prompt set searched on another.
DEFAULT_TEMPLATE = {"sequential": "seq-1", "direct": "seq-1"}


@dataclass(frozen=True)
class UserPrompt:
    """What a user's prompt adds to the template: shared task tokens, then personal tokens."""

    task_tokens: tuple[str, ...] = ()
    personal_tokens: tuple[str, ...] = ()

    @property
    def personalized(self) -> bool:
        return bool(self.personal_tokens)

    def text(self) -> str:
        return " ".join((*self.task_tokens, *self.personal_tokens))


def render_prompt(
    template: Template, fields: PromptFields, prompt: UserPrompt, max_history: int
) -> list[str]:
    prefix, history = render_parts(template, fields, max_history)
    return [*prefix, *prompt.task_tokens, *prompt.personal_tokens, *history]
