"""The one check of a served request's turns, at the trust boundary: the project's rules and the limits, API-shaped
messages naming the field (`turns.2.text: ...`), and the checked turns as the model's input (Turn).

    turns = check_turns(request.turns, limits, 'turns', media)     # -> [Turn], or RequestError (a 422)
    dialogues = check_dialogues(request.dialogues, limits, media)

A request's JSON is parsed first by serving/api.py's pydantic models (its shape: fields and types); this is the
check of its values, run once, off the event loop (it decodes recordings). A speaker's name and a text need a
visible character (utils.visible, the rule a CSV's rows follow too) and fit the limits; the rules only a CSV
needs (a speaker written as a list, EmoryNLP's quirks) stay in owndata/conversations.py. A run that reads
recordings checks each turn's (media: serving/media_turns.TurnMedia); a text-only run refuses them.
"""
from dataclasses import dataclass

from utils import visible


@dataclass(frozen=True)
class Turn:
    """A checked turn: what prediction.conversations_of makes the model's input of. audio / video: the paths of
    its recordings, written by media_turns (None for a text-only run); start / end: its segment in them."""
    speaker: str
    text: str
    audio: str = None
    video: str = None
    start: float = None
    end: float = None


class RequestError(Exception):
    """A request's value that breaks a rule: the field (turns.2.text, dialogues.0.turns.1.speaker) and why (a 422)."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")


def check_dialogues(dialogues, limits, media=None):
    """check_turns of each dialogue of a request's `dialogues` list."""
    if not 1 <= len(dialogues) <= limits.dialogues:
        raise RequestError('dialogues', f"a request holds 1 to {limits.dialogues} dialogues (dialogues in GET /info), "
                                        f"not {len(dialogues)}")
    checked = []
    try:
        for k, dialogue in enumerate(dialogues):
            checked.append(check_turns(dialogue.turns, limits, f'dialogues.{k}.turns', media))
    except BaseException:
        release(checked, media)
        raise
    return checked


def check_turns(turns, limits, where, media=None):
    """The one check of a request's turns (objects with speaker and text, and recordings for a run that reads
    them, as parsed from its JSON): the model's input, a list of Turn. where: the field path of the list
    ('turns', 'dialogues.1.turns'). A turn that fails leaves no recording of the request behind."""
    if not 1 <= len(turns) <= limits.turns:
        raise RequestError(where, f"a conversation has 1 to {limits.turns} turns (turns in GET /info), not "
                                  f"{len(turns)}")
    checked = []
    try:
        for i, turn in enumerate(turns):
            checked.append(check_turn(turn, limits, f'{where}.{i}.', media))
    except BaseException:
        release([checked], media)
        raise
    return checked


def check_turn(turn, limits, where='', media=None):
    """One turn as a Turn: its speaker's name and its text need a visible character and fit the limits; its
    recordings are media's to check (None: the run reads text only, and a turn carries none). where: the prefix
    of its fields' path ('turns.2.': 'turns.2.text')."""
    for name, most in (('speaker', limits.speaker_chars), ('text', limits.text_chars)):
        value = getattr(turn, name)
        if not visible(value):
            raise RequestError(f"{where}{name}", f"is empty (only white space or invisible characters): give the "
                                                 f"{name}")
        if len(value) > most:
            raise RequestError(f"{where}{name}", f"has {len(value)} characters, at most {most} are taken "
                                                 f"({name}_chars in GET /info)")
    if media is None:
        given = [name for name in ('audio', 'video', 'start', 'end') if getattr(turn, name, None) is not None]
        if given:
            raise RequestError(f"{where}{given[0]}", "is not read by this run, whose model reads text only (GET /info "
                                                     "media.needs is null): leave it out")
        return Turn(turn.speaker.strip(), turn.text)
    return Turn(turn.speaker.strip(), turn.text, **media.check(turn, where))


def release(dialogues, media):
    """The recordings of checked dialogues (lists of Turn) removed, once no request or session holds them."""
    if media is not None:
        for turns in dialogues:
            for turn in turns:
                media.release(dict(audio=turn.audio, video=turn.video))
