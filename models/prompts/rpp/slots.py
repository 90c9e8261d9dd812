"""RPP's prompt slots: each a handful of alternatives the RLM has seen in training.

A prompt is one alternative per slot, rendered through the same template machinery as every
other prompt (`models.templates.render_parts`, `models.prompts.rendering.render_prompt`):

- `template`: the phrasing, one of the four manual templates (training draws them at random);
- `window`: how many of the most recent history items the prompt shows (training windows are
  read causally, so every position has seen every shorter history);
- `fields`: which user fields are stated, profile and taste, one, or none (training drops each
  at random).

An output-instruction slot ("recommend something new") is not here: the shipped RLM never saw
such a sentence in training, and an untrained sentence is noise to it (README, "Prompt
strategies: RPP").
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from promptrec.models.prompts.rendering import UserPrompt, render_prompt
from promptrec.models.templates import TEMPLATES, PromptFields, templates_for


@dataclass(frozen=True)
class Slot:
    name: str
    alternatives: tuple[str, ...]

    def index(self, alternative: str) -> int:
        try:
            return self.alternatives.index(alternative)
        except ValueError:
            known = ", ".join(self.alternatives)
            raise ValueError(f"slot {self.name!r} has no {alternative!r}; use {known}") from None


WINDOW_ALL = "all"
FIELD_SETS = {"profile+taste": (True, True), "profile": (True, False), "taste": (False, True)}
FIELD_SETS["none"] = (False, False)

SLOTS: tuple[Slot, ...] = (
    Slot("template", tuple(t.name for t in templates_for("sequential"))),
    Slot("window", ("5", "10", "20", "50", WINDOW_ALL)),
    Slot("fields", tuple(FIELD_SETS)),
)
SLOT_NAMES = tuple(s.name for s in SLOTS)

Choice = tuple[int, ...]
"""One alternative index per slot, in the order of `SLOTS`."""

DEFAULT_CHOICE: Choice = (
    SLOTS[0].index("seq-1"),  # the served manual template (models.prompts.rendering)
    SLOTS[1].index(WINDOW_ALL),
    SLOTS[2].index("profile+taste"),
)
"""The plain served prompt: the best manual template, the whole history, both fields."""


def all_choices() -> list[Choice]:
    """Every combination of alternatives (the fixed prompts a single choice is picked from)."""
    return list(itertools.product(*(range(len(s.alternatives)) for s in SLOTS)))


def check_choice(choice: Choice) -> Choice:
    choice = tuple(int(c) for c in choice)
    if len(choice) != len(SLOTS) or any(
        not 0 <= c < len(s.alternatives) for c, s in zip(choice, SLOTS, strict=True)
    ):
        raise ValueError(f"{choice} is not one alternative per slot of {SLOT_NAMES}")
    return choice


def choice_names(choice: Choice) -> dict[str, str]:
    """{slot: alternative} of a choice, as stored and shown."""
    return {s.name: s.alternatives[c] for s, c in zip(SLOTS, check_choice(choice), strict=True)}


def choice_from_names(names: dict[str, str]) -> Choice:
    return tuple(s.index(names[s.name]) for s in SLOTS)


def choice_label(choice: Choice) -> str:
    """A short name, e.g. "seq-1/all/profile+taste" (template/window/fields)."""
    return "/".join(choice_names(choice).values())


def choice_from_label(label: str) -> Choice:
    names = label.split("/")
    if len(names) != len(SLOTS):
        raise ValueError(f"{label!r} does not name one alternative per slot of {SLOT_NAMES}")
    return choice_from_names(dict(zip(SLOT_NAMES, names, strict=True)))


def window_items(choice: Choice, max_history: int) -> int:
    """History items the choice shows, at most the model's `max_history`."""
    window = SLOTS[1].alternatives[choice[1]]
    return max_history if window == WINDOW_ALL else min(int(window), max_history)


def chosen_fields(choice: Choice, fields: PromptFields) -> PromptFields:
    """`fields` with the profile and taste the choice leaves out emptied."""
    profile, taste = FIELD_SETS[SLOTS[2].alternatives[choice[2]]]
    return PromptFields(
        fields.history,
        fields.profile if profile else [],
        fields.taste if taste else [],
        fields.candidates,
    )


NO_TRIGGERS = UserPrompt()


def render_choice(
    choice: Choice, fields: PromptFields, max_history: int, prompt: UserPrompt = NO_TRIGGERS
) -> list[str]:
    """The prompt tokens of `choice` for one user (no begin-of-sequence token); `prompt`'s
    trigger tokens, if any, go where every strategy puts them (`render_prompt`)."""
    choice = check_choice(choice)
    template = TEMPLATES[SLOTS[0].alternatives[choice[0]]]
    return render_prompt(
        template, chosen_fields(choice, fields), prompt, window_items(choice, max_history)
    )


def choice_text(choice: Choice) -> str:
    """The chosen sentences as text, the fields and history left as placeholders."""
    template = TEMPLATES[SLOTS[0].alternatives[check_choice(choice)[0]]].text
    names = choice_names(choice)
    profile, taste = FIELD_SETS[names["fields"]]
    text = template.replace("{profile}", "{profile}" if profile else "")
    text = text.replace("{taste}", "{taste}" if taste else "")
    window = names["window"]
    history = "{history}" if window == WINDOW_ALL else f"{{history: last {window}}}"
    return " ".join(text.replace("{history}", history).split())
